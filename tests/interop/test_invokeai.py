"""InvokeAI's invokeai_metadata chunk read as a recipe."""

from __future__ import annotations

import json
import re

import pytest
from foreign_files import invokeai_metadata, invokeai_png, png_with_chunks, read

from diffusers_repro.interop.invokeai import recipe_from_invokeai
from diffusers_repro.interop.read import recipe_from_image_file
from diffusers_repro.interop.recipe import ForeignMetadataError


def test_invokeai_metadata():
    recipe = recipe_from_image_file(read(invokeai_png(invokeai_metadata())))
    assert recipe.source == "invokeai" and recipe.source_version == "5.6.0"
    assert (recipe.prompt, recipe.negative_prompt) == ("a fox in the snow, ünïcödé 狐", "blurry")
    assert (recipe.seed, recipe.steps, recipe.guidance_scale, recipe.width, recipe.height) == (
        1234567,
        30,
        7.5,
        64,
        48,
    )
    assert (recipe.sampler, recipe.scheduler) == ("dpmpp_2m_k", "DPMSolverMultistepScheduler")
    assert recipe.scheduler_config == {"use_karras_sigmas": True}
    assert recipe.model["hash_kind"] == "invokeai-blake3" and recipe.model["name"] == "Dreamshaper 8"
    assert recipe.rng == "cpu" and recipe.clip_skip is None and recipe.blockers == ()


def test_loras_sde_seed_clip_skip_and_blockers():
    lora = {
        "model": {"key": "k", "hash": "blake3:00", "name": "fox-lora", "base": "sd-1", "type": "lora"},
        "weight": 0.75,
    }
    data = invokeai_metadata(
        scheduler="dpmpp_sde",
        loras=[lora],
        clip_skip=1,
        rand_device="cuda",
        hrf_enabled=True,
        generation_mode="img2img",
        positive_prompt="a (fox)1.2 in snow++",
    )
    recipe = recipe_from_invokeai({"invokeai_metadata": json.dumps(data)})
    assert recipe.scheduler_config == {"noise_sampler_seed": 1234567}
    assert recipe.loras == ({"name": "fox-lora", "weight": 0.75, "hash": "blake3:00", "hash_kind": "invokeai-blake3"},)
    assert recipe.clip_skip == 1 and recipe.rng == "cuda"
    text = "\n".join(recipe.blockers)
    for words in ("LoRA 'fox-lora'", "high resolution fix", "generation_mode 'img2img'", '"(words)1.2"', "word+"):
        assert words in text, words


@pytest.mark.parametrize(
    "data, message",
    [
        ("{", "the 'invokeai_metadata' chunk is not valid JSON"),
        ("[]", "the 'invokeai_metadata' chunk must be a JSON object, got list"),
        (json.dumps({"steps": 3}), "invokeai_metadata has no 'seed'"),
        (json.dumps(invokeai_metadata(seed="x")), "invokeai_metadata: seed must be an integer from 0 to"),
        (json.dumps(invokeai_metadata(steps=0)), "steps must be an integer from 1 to 10000, got 0"),
        (json.dumps(invokeai_metadata(width=True)), "width must be an integer from 1 to 65536, got True"),
        (json.dumps(invokeai_metadata(rand_device="tpu")), "rand_device must be 'cpu' or 'cuda', got 'tpu'"),
        (json.dumps(invokeai_metadata(model=[1])), "model must be an object, got list"),
        (json.dumps(invokeai_metadata(loras={"a": 1})), "loras must be a list"),
        (json.dumps(invokeai_metadata(positive_prompt=5)), "positive_prompt must be a string, got int"),
    ],
)
def test_malformed_metadata_names_the_field(data, message):
    with pytest.raises(ForeignMetadataError, match=re.escape(message)):
        recipe_from_image_file(read(png_with_chunks({"invokeai_metadata": data})))


def test_unknown_scheduler_is_a_blocker_naming_it():
    recipe = recipe_from_invokeai({"invokeai_metadata": json.dumps(invokeai_metadata(scheduler="my_sched"))})
    assert recipe.scheduler is None and "InvokeAI scheduler 'my_sched' is not one" in recipe.blockers[0]
