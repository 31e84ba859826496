"""reproducible(PipelineClass) and ReproDiffusionPipeline: DDPM, SD img2img, SDXL, UnCLIP, stochastic schedulers."""

import json
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionPipeline,
)
from PIL import Image
from tiny_components import (
    build_tiny_ddpm,
    build_tiny_img2img,
    build_tiny_sdxl,
    build_tiny_unclip,
    generators,
    repro_of,
)

import diffusers_repro.pipelines.factory as factory
from diffusers_repro import ReproDDIMPipeline, ReproStableDiffusionPipeline
from diffusers_repro.pipelines.factory import ReproDiffusionPipeline, reproducible
from diffusers_repro.records.provenance import image_digest, jsonable, tensor_digest
from diffusers_repro.tiny import build_tiny_pipeline

SD_CALL = {"num_inference_steps": 2, "output_type": "np", "height": 32, "width": 32}
UNCLIP_CALL = {
    "prior_num_inference_steps": 2,
    "decoder_num_inference_steps": 2,
    "super_res_num_inference_steps": 2,
    "output_type": "np",
}


def assert_one_complete_record_per_image(out, seeds):
    assert [record.seed for record in out.provenance] == seeds
    for index, record in enumerate(out.provenance):
        assert record.batch["index"] == index and record.batch["seeds"] == seeds
        assert record.result["output_digest"] == image_digest(out.images[index])
        assert record.result["noise_digest"].startswith("sha256:")
        assert record.recipe["model"]["components"] and record.recipe["call"]
        json.loads(record.to_json())  # self-contained JSON


# ------------------------------------------------------------------------------------------------ the factory


def test_reproducible_makes_one_named_published_class_per_pipeline():
    repro = reproducible(DDPMPipeline)
    assert repro is reproducible(DDPMPipeline) and reproducible(repro) is repro
    assert repro.__name__ == "ReproDDPMPipeline" and repro.__module__ == "diffusers_repro.pipelines.factory"
    assert issubclass(repro, DDPMPipeline) and factory.ReproDDPMPipeline is repro
    assert pickle.loads(pickle.dumps(repro)) is repro
    assert reproducible(StableDiffusionPipeline) is ReproStableDiffusionPipeline
    assert reproducible(DDIMPipeline) is ReproDDIMPipeline


def test_repro_classes_are_made_on_first_lookup_for_unpickling():
    # A fresh process unpickling a Repro class looks it up in diffusers_repro.pipelines.factory before anything
    # made it.
    cls = factory.ReproDDPMPipeline
    assert cls is reproducible(DDPMPipeline)
    with pytest.raises(AttributeError, match="has no attribute 'ReproNotAPipeline'"):
        factory.ReproNotAPipeline  # noqa: B018


class NoGeneratorPipeline(DiffusionPipeline):
    def __call__(self, batch_size: int = 1, num_inference_steps: int = 2):
        return None


def test_pipeline_without_generator_is_a_clear_type_error_and_not_cached():
    message = (
        "reproducible(NoGeneratorPipeline) failed: test_factory.NoGeneratorPipeline.__call__ takes no "
        "`generator` argument (its parameters are batch_size, num_inference_steps), so ReproducibleMixin cannot seed "
        "it per image; only pipelines whose __call__ accepts generator= can be made reproducible"
    )
    for _ in range(2):  # the failure is not cached as a half-made class
        with pytest.raises(TypeError, match=re.escape(message)):
            reproducible(NoGeneratorPipeline)
    assert NoGeneratorPipeline not in factory._REPRO_CLASSES
    assert "ReproNoGeneratorPipeline" not in vars(factory)


@pytest.mark.parametrize(
    "value, message",
    [
        (DiffusionPipeline, "use ReproDiffusionPipeline.from_pretrained(path_or_id)"),
        (int, "reproducible() takes a diffusers DiffusionPipeline subclass, got the class builtins.int"),
        ("DDPMPipeline", "reproducible() takes a diffusers pipeline class, got 'DDPMPipeline' of type str"),
    ],
)
def test_reproducible_rejects_what_is_not_a_pipeline_class(value, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        reproducible(value)


def test_reproducible_of_an_instance_points_to_from_pipe():
    with pytest.raises(TypeError, match=re.escape("got an instance of DDPMPipeline (pass type(pipe), or use")):
        reproducible(build_tiny_ddpm())


def test_repro_diffusion_pipeline_loads_the_class_named_in_model_index(tmp_path):
    build_tiny_ddpm().save_pretrained(tmp_path / "ddpm")
    pipe = ReproDiffusionPipeline.from_pretrained(tmp_path / "ddpm")
    assert type(pipe) is reproducible(DDPMPipeline)
    pipe.set_progress_bar_config(disable=True)
    record = pipe(batch_size=2, seed=4, num_inference_steps=2).provenance[1]
    assert record.recipe["model"]["type"] == "local" and record.seed == 5
    assert record.recipe["model"]["components"]["unet"]["digest_of"] == "files"
    # The folder it saves still names the vanilla class.
    pipe.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_repro_diffusion_pipeline_reads_the_hub_cache_offline(tmp_path, monkeypatch, make_hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    build_tiny_ddpm().save_pretrained(tmp_path / "ddpm")
    _, commit = make_hub_cache(tmp_path / "ddpm", tmp_path / "cache", "tiny-org/tiny-ddpm")
    pipe = ReproDiffusionPipeline.from_pretrained("tiny-org/tiny-ddpm", cache_dir=tmp_path / "cache")
    assert type(pipe) is reproducible(DDPMPipeline)
    pipe.set_progress_bar_config(disable=True)
    model = pipe(seed=0, num_inference_steps=2).provenance[0].recipe["model"]
    assert (model["type"], model["repo_id"], model["revision"]) == ("hub", "tiny-org/tiny-ddpm", commit)


def test_repro_diffusion_pipeline_from_pipe_shares_components_and_is_not_instantiated():
    plain = build_tiny_ddpm()
    pipe = ReproDiffusionPipeline.from_pipe(plain)
    assert type(pipe) is reproducible(DDPMPipeline) and pipe.unet is plain.unet
    with pytest.raises(TypeError, match="ReproDiffusionPipeline is a loader and is not instantiated"):
        ReproDiffusionPipeline()
    with pytest.raises(TypeError, match="from_pipe\\(\\) takes a pipeline, got 'ddpm' of type str"):
        ReproDiffusionPipeline.from_pipe("ddpm")


# ------------------------------------------------------------------------------------------------ DDPM


@pytest.fixture(scope="module")
def ddpm():
    plain = build_tiny_ddpm()
    return plain, repro_of(plain)


def test_ddpm_matches_vanilla_with_per_image_generators(ddpm):
    plain, pipe = ddpm
    ours = pipe(batch_size=3, seed=10, num_inference_steps=2, output_type="np")
    theirs = plain(batch_size=3, generator=generators(10, 11, 12), num_inference_steps=2, output_type="np")
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert_one_complete_record_per_image(ours, [10, 11, 12])
    assert ours.provenance[0].recipe["scheduler"]["class"] == "DDPMScheduler"


def test_repro_pipelines_pickle_by_reference(ddpm):
    _, pipe = ddpm
    copy = pickle.loads(pickle.dumps(pipe))
    assert type(copy) is type(pipe) and type(copy).__module__ == "diffusers_repro.pipelines.factory"


def test_ddpm_batch_invariant_image_equals_the_image_alone(ddpm):
    plain, pipe = ddpm
    batched = pipe(batch_size=2, seed=[7, 8], batch_invariant=True, num_inference_steps=2, output_type="np")
    alone = plain(batch_size=1, generator=generators(8), num_inference_steps=2, output_type="np")
    np.testing.assert_array_equal(batched.images[1], alone.images[0])
    assert batched.provenance[1].batch["batch_invariant"] is True


# ------------------------------------------------------------------------------------------------ SD img2img


@pytest.fixture(scope="module")
def img2img():
    plain = build_tiny_img2img()
    return plain, repro_of(plain)


def input_images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]


def test_img2img_matches_vanilla_and_records_each_images_input(img2img):
    plain, pipe = img2img
    images = input_images()
    call = {"strength": 0.6, "num_inference_steps": 3, "output_type": "np"}
    ours = pipe(["a fox", "a bear"], image=images, seed=20, **call)
    theirs = plain(["a fox", "a bear"], image=images, generator=generators(20, 21), **call)
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert_one_complete_record_per_image(ours, [20, 21])
    for index, record in enumerate(ours.provenance):
        assert record.call_arguments["image"] == [jsonable(images[index])]
        assert record.call_arguments["strength"] == 0.6
        assert record.recipe["requires_inputs"] == ["image"]


def test_img2img_vae_sampling_and_noise_come_from_each_images_generator(img2img):
    plain, pipe = img2img
    image = input_images()[0]
    # One input image tiled to 2 images: image 1 must be the image of seed 31 made alone, which holds only if both the
    # VAE's latent sample and the added noise come from image 1's own generator (a wrong draw is off by far more than
    # the ~1e-6 that batching alone changes).
    batched = pipe(["a fox", "a fox"], image=image, seed=[30, 31], num_inference_steps=2, output_type="np")
    alone = plain("a fox", image=image, generator=generators(31), num_inference_steps=2, output_type="np")
    np.testing.assert_allclose(batched.images[1], alone.images[0], atol=1e-5, rtol=0)
    assert batched.provenance[1].call_arguments["image"]["image_digest"] == image_digest(image)


def test_img2img_batch_invariant_image_equals_the_image_alone(img2img):
    plain, pipe = img2img
    image = input_images()[0]
    call = {"num_inference_steps": 2, "output_type": "np"}
    batched = pipe(["a fox", "a fox"], image=image, seed=[30, 31], batch_invariant=True, **call)
    alone = plain("a fox", image=image, generator=generators(31), **call)
    np.testing.assert_array_equal(batched.images[1], alone.images[0])


def test_img2img_tensor_batch_records_the_row_each_image_used(img2img):
    _, pipe = img2img
    batch = torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1).float() / 255 for i in input_images()])
    out = pipe(["a fox", "a bear"], image=batch, num_images_per_prompt=2, seed=0, num_inference_steps=2)
    # diffusers tiles the 2 input rows to the 4 images: image i starts from row i % 2.
    rows = [record.call_arguments["image"]["tensor_digest"] for record in out.provenance]
    assert rows == [tensor_digest(batch[i % 2 : i % 2 + 1]) for i in range(4)]
    assert [record.call_arguments["prompt"] for record in out.provenance] == ["a fox", "a fox", "a bear", "a bear"]


# ------------------------------------------------------------------------------------------------ SDXL


@pytest.fixture(scope="module")
def sdxl():
    plain = build_tiny_sdxl()
    return plain, repro_of(plain)


def test_sdxl_matches_vanilla_and_records_size_conditioning_defaults(sdxl):
    plain, pipe = sdxl
    call = {"num_inference_steps": 2, "output_type": "np"}
    ours = pipe(["a fox", "a bear"], prompt_2=["red", "brown"], seed=3, **call)
    theirs = plain(["a fox", "a bear"], prompt_2=["red", "brown"], generator=generators(3, 4), **call)
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert_one_complete_record_per_image(ours, [3, 4])
    record = ours.provenance[1]
    conditioning = {name: record.call_arguments[name] for name in ("height", "width", "original_size", "target_size")}
    assert conditioning == {"height": 64, "width": 64, "original_size": [64, 64], "target_size": [64, 64]}
    assert record.call_arguments["crops_coords_top_left"] == [0, 0]
    assert record.recipe["defaults_resolved"] == ["height", "original_size", "target_size", "width"]
    assert (record.call_arguments["prompt"], record.call_arguments["prompt_2"]) == ("a bear", "brown")
    assert set(record.recipe["model"]["components"]) >= {"text_encoder", "text_encoder_2", "tokenizer_2", "unet"}
    # The recorded values, passed explicitly, make the same image.
    explicit = {name: tuple(record.call_arguments[name]) for name in ("original_size", "target_size")}
    again = pipe("a bear", prompt_2="brown", seed=4, height=64, width=64, **explicit, **call)
    alone = plain("a bear", prompt_2="brown", generator=generators(4), **call)
    np.testing.assert_array_equal(again.images, alone.images)


def test_sdxl_passed_size_conditioning_is_recorded_as_passed(sdxl):
    _, pipe = sdxl
    record = pipe("a fox", seed=0, original_size=(128, 96), crops_coords_top_left=(4, 8), **SD_CALL).provenance[0]
    assert record.call_arguments["original_size"] == [128, 96]
    assert record.call_arguments["crops_coords_top_left"] == [4, 8]
    assert record.call_arguments["target_size"] == [32, 32]
    assert record.recipe["defaults_resolved"] == ["target_size"]


def test_sdxl_batch_invariant_image_equals_the_image_alone(sdxl):
    plain, pipe = sdxl
    batched = pipe(["a fox", "a bear"], seed=[5, 6], batch_invariant=True, **SD_CALL)
    alone = plain("a bear", generator=generators(6), **SD_CALL)
    np.testing.assert_array_equal(batched.images[1], alone.images[0])


# ------------------------------------------------------------------------------------------------ UnCLIP


@pytest.fixture(scope="module")
def unclip():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        plain = build_tiny_unclip()
        return plain, repro_of(plain)


def test_unclip_matches_vanilla_through_all_three_noise_stages(unclip):
    plain, pipe = unclip
    ours = pipe("a horse", num_images_per_prompt=2, seed=40, **UNCLIP_CALL)
    theirs = plain("a horse", num_images_per_prompt=2, generator=generators(40, 41), **UNCLIP_CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert_one_complete_record_per_image(ours, [40, 41])
    record = ours.provenance[1]
    assert record.batch["description"] == "1 prompt x num_images_per_prompt=2"
    schedulers = record.recipe["schedulers"]
    assert list(schedulers) == ["prior_scheduler", "decoder_scheduler", "super_res_scheduler"]
    assert schedulers["decoder_scheduler"]["config"]["variance_type"] == "learned_range"
    # The starting noise is the prior's: the first draw of the image's generator, one image embedding.
    assert record.result["noise"]["shape"] == [plain.prior.config.embedding_dim]
    assert {"prior", "decoder", "super_res_first", "super_res_last", "text_proj"} <= set(
        record.recipe["model"]["components"]
    )


def test_unclip_counts_prompts_times_images_per_prompt(unclip):
    _, pipe = unclip
    message = "seed has 3 values but the call makes 4 images (2 prompts x num_images_per_prompt=2)"
    with pytest.raises(ValueError, match=re.escape(message)):
        pipe(["a horse", "a cat"], num_images_per_prompt=2, seed=[1, 2, 3], **UNCLIP_CALL)


def test_unclip_counts_the_rows_of_text_model_output(unclip):
    plain, pipe = unclip
    tokens = plain.tokenizer(["a horse", "a cat"], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        text_model_output = plain.text_encoder(tokens.input_ids)
    out = pipe(text_model_output=text_model_output, text_attention_mask=tokens.attention_mask, seed=3, **UNCLIP_CALL)
    assert [record.seed for record in out.provenance] == [3, 4]
    record = out.provenance[1]
    assert record.batch["description"] == "text_model_output with 2 rows x num_images_per_prompt=1"
    assert record.recipe["requires_inputs"] == ["text_attention_mask", "text_model_output"]
    assert record.call_arguments["text_attention_mask"]["tensor_digest"] == tensor_digest(tokens.attention_mask[1:])


def test_unclip_refuses_batch_invariant_batches_clearly(unclip):
    _, pipe = unclip
    message = "batch_invariant=True is not supported for UnCLIPPipeline with 2 images (2 prompts x"
    with pytest.raises(ValueError, match=re.escape(message)):
        pipe(["a horse", "a cat"], seed=1, batch_invariant=True, **UNCLIP_CALL)


# ------------------------------------------------------------------------------------------------ schedulers


@pytest.fixture(scope="module")
def sd_plain():
    return build_tiny_pipeline("sd")


def sd_with(plain, scheduler_class, **config):
    """A vanilla SD pipeline over ``plain``'s models with a fresh scheduler, and its Repro twin."""
    scheduler = scheduler_class.from_config(plain.scheduler.config, **config)
    vanilla = StableDiffusionPipeline(**{**plain.components, "scheduler": scheduler})
    vanilla.set_progress_bar_config(disable=True)
    return vanilla, repro_of(vanilla)


@pytest.mark.parametrize("scheduler_class", [EulerAncestralDiscreteScheduler, DDPMScheduler])
def test_stochastic_schedulers_match_vanilla_and_draw_from_each_images_generator(sd_plain, scheduler_class):
    plain, pipe = sd_with(sd_plain, scheduler_class)
    ours = pipe(["a fox", "a bear"], seed=[5, 6], **SD_CALL)
    theirs = plain(["a fox", "a bear"], generator=generators(5, 6), **SD_CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert_one_complete_record_per_image(ours, [5, 6])
    assert ours.provenance[0].recipe["scheduler"]["class"] == scheduler_class.__name__
    # Per-step noise from the image's own generator: the image of seed 6 does not depend on its neighbour.
    swapped = pipe(["a bear", "a fox"], seed=[6, 5], batch_invariant=True, **SD_CALL)
    alone = plain("a bear", generator=generators(6), **SD_CALL)
    np.testing.assert_array_equal(swapped.images[0], alone.images[0])


@pytest.fixture(scope="module")
def sde(sd_plain):
    return sd_with(sd_plain, DPMSolverSDEScheduler)


@pytest.mark.filterwarnings("ignore:Should have ta>=t0")
def test_dpm_sde_is_reproducible_with_a_brownian_tree_per_image(sde):
    plain, pipe = sde
    # Vanilla diffusers: the Brownian tree's seed comes from torch's global RNG, so the same generators differ.
    first = plain("a fox", generator=generators(5), **SD_CALL).images
    second = plain("a fox", generator=generators(5), **SD_CALL).images
    assert np.abs(first - second).max() > 0

    state = torch.random.get_rng_state()
    ours = pipe(["a fox", "a bear"], seed=[5, 6], **SD_CALL)
    again = pipe(["a fox", "a bear"], seed=[5, 6], **SD_CALL)
    np.testing.assert_array_equal(ours.images, again.images)
    assert torch.equal(state, torch.random.get_rng_state())
    assert plain.scheduler.noise_sampler_seed is None  # the scheduler is left as found

    # What diffusers-repro does is what vanilla does with one tree seed per image.
    plain.scheduler.noise_sampler_seed = [5, 6]
    try:
        theirs = plain(["a fox", "a bear"], generator=generators(5, 6), **SD_CALL)
    finally:
        plain.scheduler.noise_sampler_seed = None
    np.testing.assert_array_equal(ours.images, theirs.images)
    record = ours.provenance[1]
    assert record.recipe["scheduler"]["noise_sampler"]["seed"] == 6
    assert record.recipe["scheduler"]["noise_sampler"]["seeded_by"] == "diffusers-repro"
    assert record.batch["global_rng_used"] is False


@pytest.mark.filterwarnings("ignore:Should have ta>=t0")
def test_dpm_sde_image_depends_on_its_seed_alone(sde):
    plain, pipe = sde
    batched = pipe(["a bear", "a fox"], seed=[6, 5], batch_invariant=True, **SD_CALL)
    by_generators = pipe(["a bear", "a fox"], generator=generators(6, 5), batch_invariant=True, **SD_CALL)
    np.testing.assert_array_equal(batched.images, by_generators.images)
    plain.scheduler.noise_sampler_seed = [5]
    try:
        alone = plain("a fox", generator=generators(5), **SD_CALL)
    finally:
        plain.scheduler.noise_sampler_seed = None
    np.testing.assert_array_equal(batched.images[1], alone.images[0])


@pytest.mark.filterwarnings("ignore:Should have ta>=t0")
def test_dpm_sde_seed_set_by_the_user_is_kept_and_recorded(sd_plain):
    _, pipe = sd_with(sd_plain, DPMSolverSDEScheduler, noise_sampler_seed=123)
    out = pipe(["a fox", "a bear"], seed=[5, 6], **SD_CALL)
    sampler = out.provenance[1].recipe["scheduler"]["noise_sampler"]
    assert sampler["seed"] == 123 and sampler["seeded_by"] == "scheduler"
    assert "depends on its batch" in sampler["note"]
    assert pipe.scheduler.noise_sampler_seed == 123


# ------------------------------------------------------------------------------------------------ latents, swaps


def test_user_latents_are_recorded_and_the_seed_still_drives_scheduler_noise(sd_plain):
    _, pipe = sd_with(sd_plain, EulerAncestralDiscreteScheduler)
    latents = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(99))
    first = pipe(["a fox", "a fox"], latents=latents, seed=[1, 2], **SD_CALL)
    same = pipe(["a fox", "a fox"], latents=latents, seed=[1, 2], **SD_CALL)
    other = pipe(["a fox", "a fox"], latents=latents, seed=[3, 4], **SD_CALL)
    np.testing.assert_array_equal(first.images, same.images)
    assert np.abs(first.images - other.images).max() > 1e-3
    record = first.provenance[1]
    assert record.call_arguments["latents"]["tensor_digest"] == tensor_digest(latents[1:2])
    assert record.recipe["requires_inputs"] == ["latents"]
    assert record.result["noise_digest"] == tensor_digest(latents[1:2])
    assert "latents passed by the caller" in record.result["noise"]["draw"]


def test_scheduler_swapped_after_loading_is_what_gets_recorded(sd_pipe):
    sd_pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(sd_pipe.scheduler.config)
    sd_pipe.scheduler = DDIMScheduler.from_config(sd_pipe.scheduler.config, timestep_spacing="trailing")
    recorded = sd_pipe("a fox", seed=0, **SD_CALL).provenance[0].recipe["scheduler"]
    assert recorded["class"] == "DDIMScheduler"
    expected = {key: value for key, value in sd_pipe.scheduler.config.items() if not key.startswith("_")}
    assert recorded["config"] == jsonable(expected)
    assert recorded["config"]["timestep_spacing"] == "trailing"


def test_unclip_image_reproduces_with_its_three_recorded_schedulers(unclip):
    from diffusers import DDPMScheduler

    from diffusers_repro import reproduce

    _, pipe = unclip
    records = pipe(["a horse", "a cat"], seed=[8, 9], **UNCLIP_CALL).provenance
    record = records[1]
    # A replay restores every recorded scheduler, not only one named `scheduler`, and puts the pipe's back.
    swapped = DDPMScheduler.from_config(pipe.decoder_scheduler.config)
    original = pipe.decoder_scheduler
    pipe.decoder_scheduler = swapped
    try:
        # A mixed batch: the other image's prompt comes from its own record.
        result = reproduce(record, pipe=pipe, batch_from=records)
        assert pipe.decoder_scheduler is swapped
    finally:
        pipe.decoder_scheduler = original
    assert result.whole_batch and result.verdict == "bitwise", result.differences
