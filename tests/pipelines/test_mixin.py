"""ReproDDIMPipeline and ReproStableDiffusionPipeline: drop-in compatibility, seeds, loading and saving."""

import inspect
import json
import re
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DiffusionPipeline, StableDiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from diffusers_repro import ReproDDIMPipeline, ReproStableDiffusionPipeline, full_determinism
from diffusers_repro.generation.determinism import determinism_status

SD_CALL = {"num_inference_steps": 2, "output_type": "np"}


def vanilla(pipe):
    """The vanilla diffusers pipeline over the very same component objects."""
    cls = {ReproDDIMPipeline: DDIMPipeline, ReproStableDiffusionPipeline: StableDiffusionPipeline}[type(pipe)]
    plain = cls(**pipe.components)
    plain.set_progress_bar_config(disable=True)
    return plain


# ------------------------------------------------------------------------------------------------ bitwise drop-in


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_seed_matches_vanilla_generator_list(ddim_pipe, cpu_generators, eta):
    ours = ddim_pipe(batch_size=4, seed=10, eta=eta, num_inference_steps=3, output_type="np")
    theirs = vanilla(ddim_pipe)(
        batch_size=4, generator=cpu_generators([10, 11, 12, 13]), eta=eta, num_inference_steps=3, output_type="np"
    )
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert [record.seed for record in ours.provenance] == [10, 11, 12, 13]


def test_ddim_eta_noise_comes_from_the_per_image_generators(ddim_pipe):
    # With eta > 0 the scheduler draws noise at every step: if it came from anywhere but the image's own generator,
    # image 1 of seed=[5, 6] would differ from image 0 of seed=[6, 5].
    first = ddim_pipe(batch_size=2, seed=[5, 6], eta=1.0, num_inference_steps=3, output_type="np").images
    swapped = ddim_pipe(batch_size=2, seed=[6, 5], eta=1.0, num_inference_steps=3, output_type="np").images
    np.testing.assert_allclose(first[1], swapped[0], atol=1e-5)
    assert np.abs(first[0] - first[1]).max() > 1e-3


def test_sd_several_prompts_and_images_per_prompt_match_vanilla(sd_pipe, cpu_generators):
    prompts = ["a fox", "a bear"]
    ours = sd_pipe(prompts, num_images_per_prompt=2, seed=42, **SD_CALL)
    theirs = vanilla(sd_pipe)(prompts, num_images_per_prompt=2, generator=cpu_generators([42, 43, 44, 45]), **SD_CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert [(r.seed, r.call_arguments["prompt"]) for r in ours.provenance] == [
        (42, "a fox"),
        (43, "a fox"),
        (44, "a bear"),
        (45, "a bear"),
    ]


def test_sd_seed_list_with_repeats_matches_vanilla(sd_pipe, cpu_generators):
    prompts = ["a fox", "a red fox", "a fox at night", "a fox, watercolor"]
    ours = sd_pipe(prompts, seed=[7, 7, 7, 7], negative_prompt=["blurry"] * 4, **SD_CALL)
    theirs = vanilla(sd_pipe)(prompts, generator=cpu_generators([7] * 4), negative_prompt=["blurry"] * 4, **SD_CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert {record.result["noise_digest"] for record in ours.provenance} == {ours.provenance[0].result["noise_digest"]}
    assert [r.call_arguments["negative_prompt"] for r in ours.provenance] == ["blurry"] * 4


def test_generator_keeps_working_like_vanilla(sd_pipe, cpu_generators):
    ours = sd_pipe("a fox", generator=torch.Generator().manual_seed(3), **SD_CALL)
    theirs = vanilla(sd_pipe)("a fox", generator=torch.Generator().manual_seed(3), **SD_CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)
    record = ours.provenance[0]
    assert record.seed == 3 and record.seed_source == "generator"
    assert record.recipe["generator"]["seed_certain"] is True
    assert record.recipe["generator"]["device"] == "cpu"


def test_used_generator_is_recorded_as_uncertain(sd_pipe):
    generator = torch.Generator().manual_seed(3)
    torch.randn(5, generator=generator)
    record = sd_pipe("a fox", generator=generator, **SD_CALL).provenance[0]
    assert record.seed == 3
    assert record.recipe["generator"]["seed_certain"] is False
    assert "used before the call" in record.recipe["generator"]["note"]


def test_seed_and_generator_together_is_an_error(sd_pipe):
    with pytest.raises(ValueError, match="pass either seed or generator, not both"):
        sd_pipe("a fox", seed=1, generator=torch.Generator().manual_seed(1), **SD_CALL)


def test_return_dict_false_returns_the_vanilla_tuple(sd_pipe, cpu_generators):
    ours = sd_pipe(["a fox", "a bear"], seed=1, return_dict=False, **SD_CALL)
    theirs = vanilla(sd_pipe)(["a fox", "a bear"], generator=cpu_generators([1, 2]), return_dict=False, **SD_CALL)
    assert type(ours) is tuple and len(ours) == len(theirs) == 2
    np.testing.assert_array_equal(ours[0], theirs[0])
    assert ours[1] == theirs[1]
    assert [record.seed for record in sd_pipe.last_provenance] == [1, 2]


def test_outputs_stay_diffusers_classes(sd_pipe, ddim_pipe):
    sd_out = sd_pipe("a fox", seed=0, **SD_CALL)
    ddim_out = ddim_pipe(seed=0, num_inference_steps=2)
    assert isinstance(sd_out, StableDiffusionPipelineOutput)
    assert isinstance(ddim_out, ImagePipelineOutput)
    assert sd_out.nsfw_content_detected is None and len(sd_out.provenance) == 1
    assert ddim_out.images[0].size == (16, 16) or ddim_out.images[0].size[0] > 0


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_every_output_type_gets_a_digest(sd_pipe, output_type):
    out = sd_pipe(["a fox", "a bear"], seed=0, num_inference_steps=2, output_type=output_type)
    digests = [record.result["output_digest"] for record in out.provenance]
    assert all(d.startswith("sha256:") for d in digests) and digests[0] != digests[1]


# ------------------------------------------------------------------------------------------------ seeds


def test_unseeded_calls_draw_recorded_random_seeds_without_touching_global_rng(sd_pipe):
    state = torch.random.get_rng_state()
    first = sd_pipe(["a fox", "a bear"], **SD_CALL)
    second = sd_pipe(["a fox", "a bear"], **SD_CALL)
    assert torch.equal(state, torch.random.get_rng_state())
    seeds = [record.seed for record in first.provenance]
    assert seeds[1] == seeds[0] + 1 and first.provenance[0].seed_source == "random"
    assert seeds != [record.seed for record in second.provenance]
    # The recorded seed regenerates the image.
    again = sd_pipe("a bear", seed=seeds[1], **SD_CALL)
    np.testing.assert_allclose(again.images[0], first.images[1], atol=1e-5)


def test_seeded_call_leaves_global_rng_alone(ddim_pipe):
    state = torch.random.get_rng_state()
    ddim_pipe(batch_size=2, seed=1, eta=1.0, num_inference_steps=2)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seed": True}, TypeError, "seed must be an int between 0 and 18446744073709551615, got the bool True"),
        ({"seed": 1.5}, TypeError, "seed must be an int between 0 and 18446744073709551615, got 1.5 of type float"),
        ({"seed": "7"}, TypeError, "seed must be an int or a list of ints, got the string '7'"),
        ({"seed": -2}, ValueError, "seed must be between 0 and 18446744073709551615, got the negative value -2"),
        ({"seed": 2**64}, ValueError, "got 18446744073709551616"),
        ({"seed": 2**64 - 2}, ValueError, "past the largest seed 18446744073709551615"),
        (
            {"seed": [1, 2, 3]},
            ValueError,
            "seed has 3 values but the call makes 4 images (2 prompts x num_images_per_prompt=2)",
        ),
        ({"seed": []}, ValueError, "seed must be an int or a non-empty list of ints, got an empty list"),
        ({"seed": [[1, 2], 3, 4, 5]}, TypeError, "seed must be a flat list of ints, but seed[0] is a nested [1, 2]"),
        (
            {"seed": [1, 2, "3", 4]},
            TypeError,
            "seed[2] must be an int between 0 and 18446744073709551615, got '3' of type str",
        ),
        ({"num_images_per_prompt": 0, "seed": 1}, ValueError, "num_images_per_prompt must be a positive int, got 0"),
        ({"seed": 1, "deterministic": "yes"}, TypeError, "deterministic must be a bool, got 'yes'"),
        ({"seed": 1, "batch_invariant": 1}, TypeError, "batch_invariant must be a bool, got 1"),
    ],
)
def test_bad_input_fails_before_any_work(sd_pipe, monkeypatch, kwargs, error, message):
    calls = []
    monkeypatch.setattr(sd_pipe.unet, "forward", lambda *a, **k: calls.append(1))
    arguments = {"num_images_per_prompt": 2, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        sd_pipe(["a fox", "a bear"], **arguments, **SD_CALL)
    assert calls == []


def test_numpy_seed_is_accepted(ddim_pipe):
    out = ddim_pipe(batch_size=2, seed=np.int64(4), num_inference_steps=2)
    assert [record.seed for record in out.provenance] == [4, 5]


def test_ddim_batch_size_counts_images(ddim_pipe):
    with pytest.raises(ValueError, match=re.escape("seed has 2 values but the call makes 3 images (batch_size=3)")):
        ddim_pipe(batch_size=3, seed=[1, 2], num_inference_steps=2)


def test_prompt_embeds_define_the_batch(sd_pipe, cpu_generators):
    embeds, negative = sd_pipe.encode_prompt(["a fox", "a bear"], "cpu", 1, True)
    ours = sd_pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, seed=5, **SD_CALL)
    theirs = vanilla(sd_pipe)(
        prompt_embeds=embeds, negative_prompt_embeds=negative, generator=cpu_generators([5, 6]), **SD_CALL
    )
    np.testing.assert_array_equal(ours.images, theirs.images)
    recorded = ours.provenance[1].call_arguments["prompt_embeds"]
    assert recorded["shape"] == [1, *embeds.shape[1:]]
    assert ours.provenance[1].batch["description"] == "prompt_embeds with 2 rows x num_images_per_prompt=1"


def test_callbacks_work_unchanged(sd_pipe):
    seen = []

    def on_step_end(pipe, step, timestep, tensors):
        seen.append((step, tuple(tensors["latents"].shape)))
        return tensors

    sd_pipe("a fox", seed=0, callback_on_step_end=on_step_end, **SD_CALL)
    assert [step for step, _ in seen] == [0, 1]


# ------------------------------------------------------------------------------------------------ signature


@pytest.mark.parametrize(
    "repro, plain", [(ReproDDIMPipeline, DDIMPipeline), (ReproStableDiffusionPipeline, StableDiffusionPipeline)]
)
def test_signatures_extend_vanilla(repro, plain):
    ours = inspect.signature(repro.__call__).parameters
    theirs = inspect.signature(plain.__call__).parameters
    assert list(theirs)[: len(theirs)] == [name for name in ours if name in theirs]
    assert {"seed", "deterministic", "batch_invariant"} <= set(ours)
    assert inspect.signature(repro.__init__) == inspect.signature(plain.__init__)


def test_bound_method_signature_lists_new_parameters(sd_pipe):
    parameters = inspect.signature(sd_pipe.__call__).parameters
    assert "self" not in parameters and parameters["seed"].default is None


# ------------------------------------------------------------------------------------------------ loading, saving


def test_construction_from_components_and_from_pipe_give_repro_classes(sd_pipe):
    plain = vanilla(sd_pipe)
    assert type(ReproStableDiffusionPipeline(**plain.components)) is ReproStableDiffusionPipeline
    assert type(ReproStableDiffusionPipeline.from_pipe(plain)) is ReproStableDiffusionPipeline


def test_components_are_in_eval_mode_when_built_in_code(tiny_sd_path):
    from diffusers_repro.tiny import build_tiny_pipeline

    plain = build_tiny_pipeline("sd")
    for module in plain.components.values():
        if isinstance(module, torch.nn.Module):
            module.train()
    pipe = ReproStableDiffusionPipeline(**plain.components)
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert modules and not any(m.training for m in modules)


def test_save_pretrained_writes_vanilla_class_name_and_loads_both_ways(sd_pipe, tmp_path):
    sd_pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    plain = DiffusionPipeline.from_pretrained(tmp_path / "saved")
    assert type(plain) is StableDiffusionPipeline
    plain.set_progress_bar_config(disable=True)
    again = ReproStableDiffusionPipeline.from_pretrained(tmp_path / "saved")
    again.set_progress_bar_config(disable=True)
    first = sd_pipe("a fox", seed=9, **SD_CALL).images
    second = again("a fox", seed=9, **SD_CALL).images
    third = plain("a fox", generator=[torch.Generator().manual_seed(9)], **SD_CALL).images
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, third)


def test_ddim_save_pretrained_vanilla_name(ddim_pipe, tmp_path):
    ddim_pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["_class_name"] == "DDIMPipeline"
    assert type(DiffusionPipeline.from_pretrained(tmp_path)) is DDIMPipeline


def test_from_pretrained_passes_kwargs_through(tiny_sd_path):
    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_sd_path, torch_dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16
    pipe.set_progress_bar_config(disable=True)
    record = pipe("a fox", seed=0, num_inference_steps=2, output_type="pt").provenance[0]
    assert record.environment["dtype"] == "torch.bfloat16"
    assert record.result["noise"]["dtype"] == "torch.bfloat16"


def test_local_folder_source_and_file_digests(sd_pipe, tiny_sd_path):
    record = sd_pipe("a fox", seed=0, **SD_CALL).provenance[0]
    model = record.recipe["model"]
    assert model["type"] == "local" and model["path"] == str(tiny_sd_path.resolve())
    unet = model["components"]["unet"]
    assert unet["class"] == "diffusers.UNet2DConditionModel" and unet["digest_of"] == "files"
    assert list(unet["files"]) == ["diffusion_pytorch_model.safetensors"]
    import hashlib

    expected = hashlib.sha256((tiny_sd_path / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    assert unet["files"]["diffusion_pytorch_model.safetensors"] == "sha256:" + expected
    assert model["components"]["tokenizer"]["digest_of"] == "files"
    assert "scheduler" not in model["components"]
    assert record.recipe["scheduler"]["class"] == "DDIMScheduler"
    assert record.recipe["scheduler"]["config"]["num_train_timesteps"] == sd_pipe.scheduler.config.num_train_timesteps


def test_digests_are_computed_at_load_not_per_call(sd_pipe, monkeypatch):
    import diffusers_repro.records.provenance as provenance

    sd_pipe("a fox", seed=0, **SD_CALL)
    monkeypatch.setattr(provenance, "file_digest", lambda *a: pytest.fail("file read during a call"))
    monkeypatch.setattr(provenance, "state_dict_digest", lambda *a: pytest.fail("tensors digested during a call"))
    sd_pipe("a fox", seed=1, **SD_CALL)


def test_hub_id_from_cache_records_commit(tiny_sd_path, tmp_path, monkeypatch, make_hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo_id, commit = make_hub_cache(tiny_sd_path, tmp_path)
    pipe = ReproStableDiffusionPipeline.from_pretrained(repo_id, cache_dir=tmp_path)
    pipe.set_progress_bar_config(disable=True)
    model = pipe("a fox", seed=0, **SD_CALL).provenance[0].recipe["model"]
    assert (model["type"], model["repo_id"], model["revision"]) == ("hub", repo_id, commit)
    unet_file = tiny_sd_path / "unet" / "diffusion_pytorch_model.safetensors"
    import hashlib

    assert model["components"]["unet"]["files"]["diffusion_pytorch_model.safetensors"] == (
        "sha256:" + hashlib.sha256(unet_file.read_bytes()).hexdigest()
    )


# ------------------------------------------------------------------------------------------------ determinism


def test_deterministic_call_records_and_restores(sd_pipe):
    before = determinism_status()
    out = sd_pipe("a fox", seed=0, deterministic=True, **SD_CALL)
    assert out.provenance[0].environment["determinism"]["full_determinism"] is True
    assert determinism_status() == before
    plain = sd_pipe("a fox", seed=0, **SD_CALL)
    assert plain.provenance[0].environment["determinism"]["full_determinism"] is False


def test_determinism_in_force_around_the_call_is_recorded(ddim_pipe):
    with full_determinism():
        record = ddim_pipe(seed=0, num_inference_steps=2).provenance[0]
    assert record.environment["determinism"]["deterministic_algorithms"] is True


def test_thread_count_is_recorded(ddim_pipe):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        record = ddim_pipe(seed=0, num_inference_steps=2).provenance[0]
    finally:
        torch.set_num_threads(threads)
    assert record.environment["torch_num_threads"] == 1


def test_noise_digest_matches_the_cpu_draw_of_the_seed(ddim_pipe):
    from diffusers_repro.records.provenance import tensor_digest

    record = ddim_pipe(batch_size=2, seed=[3, 8], num_inference_steps=2).provenance[1]
    shape = record.result["noise"]["shape"]
    noise = torch.randn((1, *shape), generator=torch.Generator().manual_seed(8))
    assert record.result["noise_digest"] == tensor_digest(noise)


def test_tiny_folder_copy_is_unaffected(tiny_sd_path, tmp_path):
    # The shared tiny folder must not be written by tests that load it.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_sd_path, copy)
    ReproStableDiffusionPipeline.from_pretrained(tiny_sd_path)
    assert sorted(p.name for p in copy.rglob("*")) == sorted(p.name for p in tiny_sd_path.rglob("*"))


def test_a_call_finds_the_execution_device_once(sd_pipe, monkeypatch):
    original = DiffusionPipeline._execution_device
    walks = []

    def counted(self):
        walks.append(self)
        return original.fget(self)

    monkeypatch.setattr(DiffusionPipeline, "_execution_device", property(counted))
    inside = []

    def on_step_end(pipe, step, timestep, callback_kwargs):
        inside.append(pipe._execution_device)
        return callback_kwargs

    sd_pipe("a fox", seed=1, num_inference_steps=2, output_type="np", callback_on_step_end=on_step_end)
    # diffusers' walk over every module ran once, at the start of the call; the vanilla __call__ read that value.
    assert walks == [sd_pipe] and inside == [torch.device("cpu")] * 2
    assert sd_pipe._execution_device == torch.device("cpu") and walks == [sd_pipe, sd_pipe]  # outside a call: walks
