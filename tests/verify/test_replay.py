"""reproduce(): regenerate one image from its record, compare bits and pixels, explain differences."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest
import torch

from diffusers_repro.files.imagefile import read_image_file
from diffusers_repro.files.save import save_image
from diffusers_repro.verify.replay import DEFAULT_TOLERANCE, ReproductionError, reproduce
from diffusers_repro.verify.reproduction import Difference, Reproduction, record_differences

PROMPTS = ["a fox", "a bear", "a cat"]
STEPS = 2


@pytest.fixture(scope="module")
def invariant_batch(sd):
    """SD with classifier-free guidance, a batch of 3 in batch-invariant mode."""
    return sd(PROMPTS, negative_prompt=["blurry"] * 3, num_inference_steps=STEPS, seed=42, batch_invariant=True)


@pytest.fixture(scope="module")
def plain_batch(sd):
    return sd(PROMPTS, num_inference_steps=STEPS, seed=42, output_type="np")


def _tamper(path, row, column, channel, delta):
    """Rewrites the PNG with one pixel value changed and every text chunk kept, as an editor that keeps metadata."""
    with PIL.Image.open(path) as image:
        image.load()
        chunks = dict(image.text)
        pixels = np.asarray(image).copy()
    pixels[row, column, channel] = (int(pixels[row, column, channel]) + delta) % 256
    info = PIL.PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_itxt(key, value)
    PIL.Image.fromarray(pixels).save(path, format="PNG", pnginfo=info)


# -------------------------------------------------------------------------------------------------------- bitwise


def test_batch_invariant_image_reproduces_bitwise_from_its_file(invariant_batch, tmp_path):
    paths = invariant_batch.save(tmp_path)
    # No pipeline given: the recorded model folder is loaded with the recorded pipeline class.
    result = reproduce(paths[1])

    assert isinstance(result, Reproduction)
    assert result.verdict == "bitwise" and result.summary == "bitwise"
    assert result.bitwise_equal and result.output_digest_equal and result.pixels_equal
    assert result.max_abs_diff == 0.0 and result.psnr == math.inf
    assert result.differences == []
    assert result.path == paths[1]
    assert np.array_equal(np.asarray(result.image), np.asarray(invariant_batch.images[1]))
    assert result.provenance.seed == 43 and result.provenance.call_arguments["prompt"] == "a bear"
    assert result.recorded == invariant_batch.provenance[1]


def test_batch_invariant_image_reproduces_bitwise_from_its_record(sd, invariant_batch):
    result = reproduce(invariant_batch.provenance[1], pipe=sd)
    assert result.verdict == "bitwise" and result.bitwise_equal
    # A record holds digests, not pixels: nothing to measure a difference against.
    assert (result.max_abs_diff, result.psnr, result.pixels_equal) == (None, None, None)
    assert result.differences == []


def test_np_output_reproduces_bitwise(sd):
    out = sd(PROMPTS, num_inference_steps=STEPS, seed=7, output_type="np", batch_invariant=True)
    result = reproduce(out.provenance[2], pipe=sd)
    assert result.verdict == "bitwise"
    assert np.array_equal(result.image, out.images[2])


def test_ddim_with_eta_reproduces_bitwise(ddim_pipe):
    # eta > 0 draws fresh noise at every step from the image's own generator.
    out = ddim_pipe(batch_size=3, num_inference_steps=STEPS, eta=0.5, seed=5, output_type="np", batch_invariant=True)
    result = reproduce(out.provenance[2], pipe=ddim_pipe)
    assert result.verdict == "bitwise" and result.differences == []


def test_image_made_alone_reproduces_bitwise(sd, tmp_path):
    out = sd("a fox", num_inference_steps=STEPS, seed=3)
    result = reproduce(save_image(out.images[0], tmp_path / "fox.png", out.provenance[0]), pipe=sd)
    assert result.verdict == "bitwise" and result.differences == []


def test_tensor_arguments_are_passed_back(sd):
    embeds, negative = sd.encode_prompt("a fox", "cpu", 1, True, "blurry")
    out = sd(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=STEPS, seed=1)
    record = out.provenance[0]
    digest, negative_digest = (
        record.call_arguments[name]["tensor_digest"] for name in ("prompt_embeds", "negative_prompt_embeds")
    )
    shape = list(embeds.shape)
    message = (
        f"the record's call argument(s) prompt_embeds (a tensor of shape {shape} ({digest[:19]}...)); "
        f"negative_prompt_embeds (a tensor of shape {shape} ({negative_digest[:19]}...)) cannot be rebuilt from "
        "JSON, which keeps only a digest; pass the value(s) to reproduce: "
        "reproduce(..., prompt_embeds=..., negative_prompt_embeds=...)"
    )
    with pytest.raises(ReproductionError, match=f"^{re.escape(message)}$"):
        reproduce(record, pipe=sd)
    result = reproduce(record, pipe=sd, prompt_embeds=embeds, negative_prompt_embeds=negative)
    assert result.verdict == "bitwise" and result.differences == []


def test_deterministic_image_is_replayed_deterministically(sd):
    from diffusers_repro.generation.determinism import determinism_status

    record = sd("a fox", num_inference_steps=STEPS, seed=11, deterministic=True).provenance[0]
    before = determinism_status()
    result = reproduce(record, pipe=sd)
    assert result.verdict == "bitwise" and result.differences == []
    assert result.provenance.environment["determinism"]["full_determinism"] is True
    assert determinism_status() == before


def test_image_made_with_its_own_generator_reproduces(sd):
    generators = [torch.Generator().manual_seed(seed) for seed in (21, 22)]
    out = sd(["a fox", "a bear"], num_inference_steps=STEPS, generator=generators, batch_invariant=True)
    assert out.provenance[1].seed_source == "generator"
    result = reproduce(out.provenance[1], pipe=sd)
    assert result.verdict == "bitwise" and result.differences == []


def test_generator_shared_by_the_batch_is_reported(sd):
    out = sd(["a fox", "a bear"], num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0))
    result = reproduce(out.provenance[1], pipe=sd)
    assert Difference("recipe.generator", "one generator shared by the batch", "its own generator") in (
        result.differences
    )
    assert result.verdict == "different"


def test_hub_model_is_loaded_from_the_cache_at_the_recorded_revision(tiny_sd_path, tmp_path, make_hub_cache):
    from diffusers_repro import ReproStableDiffusionPipeline

    cache = tmp_path / "hub"
    repo_id, commit = make_hub_cache(tiny_sd_path, cache)
    pipe = ReproStableDiffusionPipeline.from_pretrained(repo_id, cache_dir=cache)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a fox", num_inference_steps=STEPS, seed=4)
    path = save_image(out.images[0], tmp_path / "fox.png", out.provenance[0])
    assert (out.provenance[0].recipe["model"]["repo_id"], out.provenance[0].recipe["model"]["revision"]) == (
        repo_id,
        commit,
    )

    result = reproduce(path, cache_dir=cache)
    assert result.verdict == "bitwise" and result.differences == []

    record = copy.deepcopy(out.provenance[0])
    record.recipe["model"]["revision"] = "f" * 40
    prefix = (
        f"cannot load the record's model {repo_id} at revision {'f' * 40} (HF_HUB_OFFLINE is set: only the local "
        "cache is searched): "
    )
    with pytest.raises(ReproductionError, match=f"^{re.escape(prefix)}"):
        reproduce(record, cache_dir=cache)


# -------------------------------------------------------------------------------------------------------- not bitwise


def test_tampered_pixel_is_caught(invariant_batch, sd, tmp_path):
    path = invariant_batch.save(tmp_path)[1]
    _tamper(path, row=10, column=20, channel=0, delta=100)
    result = reproduce(path, pipe=sd)

    assert not result.bitwise_equal and result.verdict == "different"
    assert result.output_digest_equal is True  # the regeneration matches the record ...
    assert result.pixels_equal is False  # ... but not the file
    assert result.max_abs_diff == pytest.approx(100 / 255) or result.max_abs_diff == pytest.approx(156 / 255)
    stored = invariant_batch.provenance[1].result["output_digest"]
    assert Difference("file.pixel_digest", stored, read_image_file(path).pixel_digest) in result.differences
    assert result.summary.startswith("different (max abs diff ")


def test_one_step_tamper_is_close_within_tolerance(invariant_batch, sd, tmp_path):
    path = invariant_batch.save(tmp_path)[0]
    _tamper(path, row=0, column=0, channel=2, delta=1)
    result = reproduce(path, pipe=sd)
    assert result.verdict == "close" and not result.bitwise_equal
    assert result.max_abs_diff == pytest.approx(1 / 255) and result.max_abs_diff <= DEFAULT_TOLERANCE
    assert 80 < result.psnr < math.inf
    assert reproduce(path, pipe=sd, tolerance=0).verdict == "different"


def test_plain_batch_image_is_regenerated_within_its_batch_bitwise(sd, plain_batch, tmp_path):
    record = plain_batch.provenance[1]
    # The record names its batch and holds only its own prompt; the siblings' records give theirs.
    assert "prompt_lists" not in record.batch and record.call_arguments["prompt"] == PROMPTS[1]
    assert record.batch["prompt_list_lengths"] == {"prompt": 3} and record.batch["same_prompts"] is False
    result = reproduce(record, pipe=sd, batch_from=plain_batch.provenance)
    assert result.whole_batch is True
    assert result.bitwise_equal and result.verdict == "bitwise" and result.differences == []
    np.testing.assert_array_equal(result.image, plain_batch.images[1])
    # From the file too: the pixels of the regenerated batch image equal the saved ones.
    path = plain_batch.save(tmp_path)[2]
    from_file = reproduce(path, pipe=sd)
    assert from_file.whole_batch and from_file.verdict == "bitwise"


def test_ddim_plain_batch_is_regenerated_within_its_batch(ddim_pipe):
    out = ddim_pipe(batch_size=3, num_inference_steps=STEPS, eta=0.5, seed=5, output_type="np")
    result = reproduce(out.provenance[2], pipe=ddim_pipe)
    assert result.whole_batch and result.verdict == "bitwise"


def test_whole_batch_true_refuses_an_image_made_alone(sd):
    out = sd("a fox", num_inference_steps=STEPS, seed=1)
    with pytest.raises(
        ReproductionError, match="cannot regenerate the whole batch of this image: the image was made alone"
    ):
        reproduce(out.provenance[0], pipe=sd, whole_batch=True)


def test_whole_batch_must_be_a_bool_or_none(sd, plain_batch):
    with pytest.raises(TypeError, match="whole_batch must be None, True or False, got 'yes'"):
        reproduce(plain_batch.provenance[0], pipe=sd, whole_batch="yes")


def test_plain_batch_reports_the_batch_when_made_alone(sd, plain_batch):
    result = reproduce(plain_batch.provenance[1], pipe=sd, whole_batch=False)
    assert result.whole_batch is False
    batch_id = plain_batch.provenance[1].batch["id"]
    described = f"image 1 of a batch of 3 (batch_invariant=False, batch {batch_id[:19]}...)"
    assert Difference("recipe.batch", described, "generated alone") in result.differences
    # Measured: the float output alone differs from the batched one by ~1e-6, so the digests differ.
    assert result.output_digest_equal is False and result.verdict == "different"


def test_changed_thread_count_is_reported(sd, invariant_batch):
    recorded = invariant_batch.provenance[0].environment["torch_num_threads"]
    changed = recorded + 1 if recorded == 1 else 1
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(changed)
        result = reproduce(invariant_batch.provenance[0], pipe=sd)
    finally:
        torch.set_num_threads(previous)
    assert Difference("environment.torch_num_threads", recorded, changed) in result.differences


def test_recorded_scheduler_is_used_and_the_pipeline_keeps_its_own(sd):
    from diffusers import EulerDiscreteScheduler

    own = sd.scheduler
    sd.scheduler = EulerDiscreteScheduler.from_config(own.config)
    try:
        record = sd("a fox", num_inference_steps=STEPS, seed=9).provenance[0]
    finally:
        sd.scheduler = own
    assert record.recipe["scheduler"]["class"] == "EulerDiscreteScheduler"
    result = reproduce(record, pipe=sd)
    assert result.verdict == "bitwise" and result.differences == []
    assert sd.scheduler is own


def test_unknown_scheduler_is_reported(sd, invariant_batch):
    record = copy.deepcopy(invariant_batch.provenance[0])
    record.recipe["scheduler"]["class"] = "FutureScheduler"
    result = reproduce(record, pipe=sd)
    assert Difference("recipe.scheduler.class", "FutureScheduler", "DDIMScheduler") in result.differences


def test_scheduler_setting_missing_from_an_older_record_is_reported(sd, invariant_batch):
    record = copy.deepcopy(invariant_batch.provenance[0])
    del record.recipe["scheduler"]["config"]["timestep_spacing"]
    result = reproduce(record, pipe=sd)
    assert result.differences == [Difference("recipe.scheduler.config.timestep_spacing", None, "leading")]
    assert result.verdict == "bitwise"  # the default is the value the image was made with


def test_overridden_argument_is_reported(sd, invariant_batch):
    result = reproduce(invariant_batch.provenance[0], pipe=sd, num_inference_steps=3)
    assert Difference("recipe.call.num_inference_steps", 2, 3) in result.differences
    assert result.verdict == "different"


def test_record_differences_between_two_images(invariant_batch):
    first, second = invariant_batch.provenance[:2]
    differences = {field: (a, b) for field, a, b in record_differences(first, second)}
    assert differences["seed"] == (42, 43)
    assert differences["recipe.call.prompt"] == ("a fox", "a bear")
    assert differences["recipe.batch.index"] == (0, 1)
    assert "environment.torch_num_threads" not in differences


def test_to_dict_is_json(invariant_batch, sd, tmp_path):
    path = invariant_batch.save(tmp_path)[2]
    _tamper(path, row=1, column=1, channel=1, delta=50)
    data = reproduce(path, pipe=sd).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["verdict"] == "different" and data["differences"][0]["field"] == "file.pixel_digest"


# -------------------------------------------------------------------------------------------------------- errors


def test_seed_cannot_be_overridden(sd, invariant_batch):
    with pytest.raises(TypeError, match=r"^reproduce\(\) takes seed from the record; pass only call arguments"):
        reproduce(invariant_batch.provenance[0], pipe=sd, seed=1)


def test_model_built_in_code_needs_a_pipeline():
    from diffusers_repro import ReproDDIMPipeline
    from diffusers_repro.tiny import build_tiny_pipeline

    pipe = ReproDDIMPipeline(**build_tiny_pipeline("ddim").components)
    pipe.set_progress_bar_config(disable=True)
    record = pipe(num_inference_steps=1, seed=0, output_type="np").provenance[0]
    message = (
        "the record's model was not loaded from a folder or the hub (source type 'in-memory'), so there is nothing "
        "to load; pass pipe= the pipeline (same weights) to reproduce with"
    )
    with pytest.raises(ReproductionError, match=f"^{re.escape(message)}$"):
        reproduce(record)
    assert reproduce(record, pipe=pipe).verdict == "bitwise"


def test_missing_model_folder(invariant_batch, tmp_path):
    record = copy.deepcopy(invariant_batch.provenance[0])
    record.recipe["model"]["path"] = str(tmp_path / "gone")
    message = (
        f"the record's model folder {str(tmp_path / 'gone')!r} does not exist on this machine; pass pipe= a pipeline "
        "loaded from the same weights"
    )
    with pytest.raises(ReproductionError, match=f"^{re.escape(message)}$"):
        reproduce(record)


def test_unknown_pipeline_class(invariant_batch):
    record = copy.deepcopy(invariant_batch.provenance[0])
    record.recipe["pipeline_class"] = "NoSuchPipeline"
    message = "the record's pipeline_class 'NoSuchPipeline' is not a pipeline class of diffusers "
    with pytest.raises(ReproductionError, match=f"^{re.escape(message)}"):
        reproduce(record)


def test_pipe_must_be_reproducible(invariant_batch, tiny_sd_path):
    from diffusers import StableDiffusionPipeline

    vanilla = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    with pytest.raises(TypeError, match="^pipe must be a reproducible pipeline .* got StableDiffusionPipeline$"):
        reproduce(invariant_batch.provenance[0], pipe=vanilla)


@pytest.mark.parametrize("tolerance", [-0.1, 2, "0.01", True])
def test_bad_tolerance(invariant_batch, sd, tolerance):
    message = f"tolerance must be a number between 0 and 1 (in [0, 1] pixel units), got {tolerance!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        reproduce(invariant_batch.provenance[0], pipe=sd, tolerance=tolerance)


def test_bad_source():
    message = (
        "path_or_provenance must be a path to an image written by diffusers-repro, an ImageFile or a Provenance, "
        "got dict"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        reproduce({"seed": 1})


def test_weights_variant_is_recorded_and_loaded_again(tiny_sd_path, tmp_path):
    # A folder with plain and fp16-variant files holding different weights: the replay must load the same variant.
    import shutil

    from diffusers_repro import ReproStableDiffusionPipeline
    from diffusers_repro.verify.replay import load_pipeline

    folder = tmp_path / "variants"
    shutil.copytree(tiny_sd_path, folder)
    plain = ReproStableDiffusionPipeline.from_pretrained(folder)
    with torch.no_grad():
        for parameter in plain.unet.parameters():
            parameter.mul_(1.01)
    plain.save_pretrained(folder, variant="fp16")
    pipe = ReproStableDiffusionPipeline.from_pretrained(folder, variant="fp16")
    pipe.set_progress_bar_config(disable=True)
    record = pipe("a fox", num_inference_steps=STEPS, seed=3, output_type="np").provenance[0]
    assert record.recipe["model"]["variant"] == "fp16"
    assert list(record.recipe["model"]["components"]["unet"]["files"]) == ["diffusion_pytorch_model.fp16.safetensors"]
    loaded = load_pipeline(record)
    loaded.set_progress_bar_config(disable=True)
    result = reproduce(record, pipe=loaded)
    assert result.verdict == "bitwise", result.differences
