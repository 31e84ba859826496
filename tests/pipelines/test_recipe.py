"""What a record says a call used where vanilla diffusers resolved or overrode the caller's values
(`diffusers_repro.pipelines.recipe.used_call_values`): sizes, step counts, img2img's steps run."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from tiny_components import build_tiny_img2img, build_tiny_sdxl, generators, repro_of

from diffusers_repro.pipelines.recipe import used_call_values
from diffusers_repro.verify.replay import reproduce


def test_sd_height_without_width_records_the_size_made_and_replays_bitwise(sd, tmp_path):
    # Vanilla SD replaces both sizes by the model's default when either is missing: height=32 alone makes 64x64.
    out = sd("a fox", seed=0, height=32, num_inference_steps=2)
    record = out.provenance[0]
    assert out.images[0].size == (64, 64)
    assert (record.call_arguments["height"], record.call_arguments["width"]) == (64, 64)
    assert record.recipe["requested"] == {"height": 32, "width": None}
    assert record.recipe["defaults_resolved"] == ["height", "width"]
    result = reproduce(out.save(tmp_path)[0], pipe=sd)
    assert result.verdict == "bitwise" and result.bitwise_equal
    assert [d.field for d in result.differences] == []


def test_sd_sizes_both_unset_keep_the_request_apart(sd):
    record = sd("a fox", seed=0, num_inference_steps=2, output_type="np").provenance[0]
    assert (record.call_arguments["height"], record.call_arguments["width"]) == (64, 64)
    assert record.recipe["requested"] == {"height": None, "width": None}


def test_sd_sizes_as_asked_record_no_request(sd):
    record = sd("a fox", seed=0, height=32, width=32, num_inference_steps=2).provenance[0]
    assert record.recipe["defaults_resolved"] == []
    assert "requested" not in record.recipe


def test_timesteps_record_the_steps_used(sd_pipe, cpu_generators, tmp_path):
    sd_pipe.scheduler = EulerDiscreteScheduler.from_config(sd_pipe.scheduler.config)
    call = {"timesteps": [999, 600, 200], "height": 32, "width": 32, "output_type": "np"}
    out = sd_pipe("a fox", seed=5, **call)
    record = out.provenance[0]
    # retrieve_timesteps sets num_inference_steps to len(timesteps); the default 50 was never used.
    assert record.call_arguments["num_inference_steps"] == 3
    assert record.recipe["requested"] == {"num_inference_steps": 50}
    assert record.recipe["defaults_resolved"] == ["num_inference_steps"]
    vanilla = StableDiffusionPipeline(**sd_pipe.components)
    vanilla.set_progress_bar_config(disable=True)
    theirs = vanilla("a fox", generator=cpu_generators([5]), num_inference_steps=3, **call)
    np.testing.assert_array_equal(out.images, theirs.images)


def test_sigmas_record_the_steps_used(sd_pipe):
    sd_pipe.scheduler = EulerDiscreteScheduler.from_config(sd_pipe.scheduler.config)
    out = sd_pipe("a fox", seed=5, sigmas=[14.0, 3.0, 1.0, 0.3], height=32, width=32, num_inference_steps=7)
    record = out.provenance[0]
    # What retrieve_timesteps sets: the length of the scheduler's timesteps (Euler makes 3 of these 4 sigmas).
    assert record.call_arguments["num_inference_steps"] == len(sd_pipe.scheduler.timesteps) == 3
    assert record.recipe["requested"] == {"num_inference_steps": 7}


@pytest.fixture(scope="module")
def img2img():
    plain = build_tiny_img2img()
    return plain, repro_of(plain)


def test_img2img_strength_records_the_denoising_steps_run(img2img):
    plain, pipe = img2img
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    steps = []

    def count(pipeline, step, timestep, kwargs):
        steps.append(int(timestep))
        return kwargs

    call = {"strength": 0.6, "num_inference_steps": 5, "output_type": "np"}
    out = pipe("a fox", image=image, seed=1, callback_on_step_end=count, **call)
    record = out.provenance[0]
    assert len(steps) == 3  # int(5 * 0.6)
    assert record.recipe["denoising_steps"] == 3
    # num_inference_steps stays as asked: a replay passes it with the same strength.
    assert record.call_arguments["num_inference_steps"] == 5
    assert record.recipe["defaults_resolved"] == ["denoising_steps"]
    theirs = plain("a fox", image=image, generator=generators(1), **call)
    np.testing.assert_array_equal(out.images, theirs.images)
    full = pipe("a fox", image=image, seed=1, strength=1.0, num_inference_steps=2).provenance[0]
    assert "denoising_steps" not in full.recipe and full.recipe["defaults_resolved"] == []


def test_sdxl_one_size_set_records_the_other_as_made():
    plain = build_tiny_sdxl()
    pipe = repro_of(plain)
    call = {"num_inference_steps": 2, "output_type": "np"}
    out = pipe("a fox", seed=2, height=32, **call)
    record = out.provenance[0]
    assert out.images.shape[1:3] == (32, 64)  # SDXL defaults each size on its own
    sizes = {name: record.call_arguments[name] for name in ("height", "width", "original_size", "target_size")}
    assert sizes == {"height": 32, "width": 64, "original_size": [32, 64], "target_size": [32, 64]}
    assert record.recipe["requested"] == {"width": None, "original_size": None, "target_size": None}
    assert record.recipe["defaults_resolved"] == ["original_size", "target_size", "width"]
    explicit = {name: tuple(sizes[name]) if isinstance(sizes[name], list) else sizes[name] for name in sizes}
    theirs = plain("a fox", generator=generators(2), **explicit, **call)
    np.testing.assert_array_equal(out.images, theirs.images)


def test_latent_output_uses_the_default_size_only_with_both_unset():
    parameters = {"height": None, "width": None, "num_inference_steps": None}
    latents = torch.zeros(4, 8, 8)
    both_unset = used_call_values(parameters, {"output_type": "latent"}, latents, (64, 64), None)
    assert both_unset.call == {"height": 64, "width": 64}
    one_set = used_call_values(parameters, {"output_type": "latent", "height": 32}, latents, (64, 64), None)
    assert one_set.call == {} and one_set.names == []
    pixels = used_call_values(parameters, {"output_type": "pt", "height": 32}, torch.zeros(3, 48, 40), None, None)
    assert pixels.call == {"height": 48, "width": 40}
    assert pixels.recipe_fields() == {"requested": {"height": 32, "width": None}}
