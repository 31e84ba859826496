"""A1111/Forge infotexts read as recipes: every field A1111 writes, both UserComment encodings, clear errors."""

from __future__ import annotations

import re

import piexif.helper
import pytest
from foreign_files import a1111_unicode_comment, jpeg_with_user_comment, png_with_chunks, read

from diffusers_repro.interop.a1111 import decode_user_comment, infotext_of, recipe_from_infotext
from diffusers_repro.interop.read import recipe_from_image_file
from diffusers_repro.interop.recipe import ForeignMetadataError

LONG_PROMPT = ", ".join(f"detail number {i} of a very intricate scene" for i in range(80))
FULL = (
    "masterpiece, (a fox:1.2) in the snow,\n"
    "Negative prompt: is a phrase inside the prompt\n"
    "Negative prompt: lowres, bad hands\n"
    "blurry\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3456789012, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, Denoising strength: 0.45, "
    "Clip skip: 2, ENSD: 31337, RNG: CPU, Variation seed: 42, Variation seed strength: 0.3, "
    'Seed resize from: 448x640, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, Lora hashes: "fox: '
    'a1b2c3d4e5f6, snow_v2: 0f0f0f0f0f0f", TI hashes: "bad_hands: 1234abcd", Refiner: sdxl_refiner [7440042bbd], '
    "Refiner switch at: 0.8, Version: v1.10.1"
)


def test_every_field_a1111_writes():
    recipe = recipe_from_infotext(FULL.replace("masterpiece,", "masterpiece, <lora:fox:0.7>"))
    assert recipe.prompt == "masterpiece, <lora:fox:0.7> (a fox:1.2) in the snow,"
    # The first line starting with "Negative prompt:" starts the negative prompt, as in A1111's own parser.
    assert recipe.negative_prompt == "is a phrase inside the prompt\nNegative prompt: lowres, bad hands\nblurry"
    assert (recipe.seed, recipe.steps, recipe.guidance_scale, recipe.width, recipe.height) == (
        3456789012,
        28,
        6.5,
        512,
        768,
    )
    assert (recipe.sampler, recipe.schedule_type) == ("DPM++ 2M", "Karras")
    assert (recipe.scheduler, recipe.scheduler_config) == ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})
    assert recipe.model == {"name": "v1-5-pruned-emaonly", "hash": "6ce0161689", "hash_kind": "a1111-sha256-prefix-10"}
    assert recipe.clip_skip == 1 and recipe.extras["a1111_clip_skip"] == 2
    assert recipe.rng == "cpu" and recipe.source_version == "v1.10.1"
    assert recipe.loras == (
        {"name": "fox", "weight": 0.7, "hash": "a1b2c3d4e5f6"},
        {"name": "snow_v2", "weight": None, "hash": "0f0f0f0f0f0f"},
    )
    for key in ("variation_seed", "variation_seed_strength", "seed_resize_from", "ensd", "hires_upscale"):
        assert key in recipe.extras
    assert recipe.extras["denoising_strength"] == "0.45"
    blockers = "\n".join(recipe.blockers)
    for words in (
        "LoRA 'fox'",
        "LoRA 'snow_v2'",
        "prompt weighting",
        "textual inversion",
        "hires fix",
        "refiner model ('sdxl_refiner [7440042bbd]')",
    ):
        assert words in blockers, words
    # The tools' noise is made (diffusers_repro.interop.a1111_noise): named in the notes, not a blocker.
    notes = "\n".join(recipe.notes)
    assert "variation seed" in notes and "Seed resize from" in notes and "variation seed" not in blockers
    assert "ENSD" not in blockers + notes  # DPM++ 2M draws no noise after the first


def test_old_and_new_sampler_forms_give_the_same_scheduler():
    old = recipe_from_infotext("a fox\nSteps: 20, Sampler: DPM++ 2M Karras, Seed: 1, Version: v1.6.0")
    new = recipe_from_infotext("a fox\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, Seed: 1")
    assert (old.scheduler, old.scheduler_config) == (new.scheduler, new.scheduler_config)
    plain_old = recipe_from_infotext("a fox\nSteps: 20, Sampler: DPM++ 2M, Seed: 1")
    assert plain_old.scheduler_config == {} and any("before A1111 1.9" in note for note in plain_old.notes)


def test_ancestral_sampler_with_ensd_and_missing_rng():
    recipe = recipe_from_infotext("a fox\nSteps: 20, Sampler: Euler a, Seed: 1, ENSD: 31337, Eta: 0.67")
    assert recipe.rng == "gpu"  # A1111 reads a missing RNG as GPU
    assert any(note.startswith("ENSD 31337 re-seeds") for note in recipe.notes)
    assert any(blocker.startswith("Eta 0.67 scales the ancestral noise") for blocker in recipe.blockers)


def test_sampler_without_equivalent_is_a_blocker():
    recipe = recipe_from_infotext("a fox\nSteps: 20, Sampler: DPM adaptive, Schedule type: Automatic, Seed: 1")
    assert recipe.scheduler is None and recipe.sampler == "DPM adaptive"
    assert recipe.blockers[0].startswith("A1111 sampler 'DPM adaptive' has no diffusers equivalent")


def test_quoted_values_non_ascii_and_long_prompts():
    text = f'狐 ünïcödé {LONG_PROMPT}\nSteps: 2, Sampler: Euler, Seed: 9, Model: "my, model: v2", Size: 64x48'
    recipe = recipe_from_infotext(text)
    assert len(recipe.prompt) > 3000 and recipe.prompt.startswith("狐 ünïcödé detail")
    assert recipe.model["name"] == "my, model: v2" and recipe.model["hash"] is None
    assert recipe.blockers == ()


@pytest.mark.parametrize(
    "text, message",
    [
        ("just a prompt, with: colons", "has no parameters line"),
        ("a fox\nSampler: Euler, CFG scale: 7, Size: 64x64", "has no 'Steps' field"),
        ("a fox\nSteps: 20, Sampler: Euler, CFG scale: 7", "has no 'Seed' field"),
        ("a fox\nSteps: many, Sampler: Euler, Seed: 1", "'Steps' must be an integer from 1 to 10000, got 'many'"),
        ("a fox\nSteps: 20, Sampler: Euler, Seed: -5", "'Seed' must be an integer from 0 to"),
        ("a fox\nSteps: 20, Sampler: Euler, Seed: 1, Size: big", "'Size' must be WIDTHxHEIGHT, got 'big'"),
        ("a fox\nSteps: 20, Sampler: Euler, Seed: 1, CFG scale: nan", "'CFG scale' must be a finite number, got nan"),
        ("a fox\nSteps: 20, Sampler: Euler, Seed: 1, RNG: TPU", "'RNG' must be CPU, GPU or NV, got 'TPU'"),
        ("a fox\nSteps: 20, Sampler: Euler, Seed: 1, Model hash: zz", "'Model hash' must be 8 or 10 hex digits"),
        ("a fox\nSteps: 20, Sampler: Euler, Seed: 1, Seed: 2", "gives 'Seed' twice with different values"),
        ("a fox\nSteps: 20, Sampler: Euler, Seed: 1, Clip skip: 0", "'Clip skip' must be an integer from 1 to 12"),
    ],
)
def test_malformed_partial_and_contradictory_infotexts_name_the_field(text, message):
    with pytest.raises(ForeignMetadataError, match=re.escape(message)):
        recipe_from_infotext(text, "x.png")


def test_png_parameters_chunk_through_the_reading_edge():
    data = png_with_chunks({"parameters": FULL}, size=(512, 768))
    recipe = recipe_from_image_file(read(data))
    assert recipe.source == "a1111" and recipe.seed == 3456789012


def test_resized_file_is_a_blocker():
    text = "a fox\nSteps: 20, Sampler: Euler, Seed: 1, Size: 512x512"
    recipe = recipe_from_image_file(read(png_with_chunks({"parameters": text}, size=(64, 48))))
    assert recipe.blockers == (
        "the image is 64x48 but its infotext says 512x512 (resized or cropped after generation)",
    )


@pytest.mark.parametrize("format, name", [("JPEG", "a.jpg"), ("WEBP", "a.webp")])
def test_both_user_comment_encodings_decode(format, name):
    text = "狐 ünïcödé fox\nNegative prompt: dark\nSteps: 20, Sampler: Euler, Seed: 5, Size: 64x48"
    # A1111's own: piexif's UNICODE (UTF-16, big-endian as piexif writes it).
    unicode_file = read(jpeg_with_user_comment(a1111_unicode_comment(text), format), name)
    assert infotext_of(unicode_file) == text
    # What A1111's reader falls back to: no known prefix, UTF-8 (the reading edge's piexif decoding gives none).
    utf8_file = read(jpeg_with_user_comment(text.encode("utf-8"), format), name)
    assert utf8_file.infotext is None and infotext_of(utf8_file) == text
    for image_file in (unicode_file, utf8_file):
        recipe = recipe_from_image_file(image_file)
        assert (recipe.prompt, recipe.negative_prompt, recipe.seed) == ("狐 ünïcödé fox", "dark", 5)


def test_user_comment_byte_orders_and_prefixes():
    text = "a fox, ünïcödé\nSteps: 1, Sampler: Euler, Seed: 1"
    assert decode_user_comment(b"UNICODE\x00" + text.encode("utf-16-be")) == text
    assert decode_user_comment(b"UNICODE\x00" + text.encode("utf-16-le")) == text
    assert decode_user_comment(b"UNICODE\x00" + text.encode("utf-16")) == text
    assert decode_user_comment(b"ASCII\x00\x00\x00a fox") == "a fox"
    assert decode_user_comment(piexif.helper.UserComment.dump("狐", encoding="unicode")) == "狐"
    assert decode_user_comment(b"") is None and decode_user_comment(b"UNICODE\x00\x00") is None
    assert decode_user_comment(b"UNICODE\x00\x00a\x00") == "a"  # odd length: the last byte is dropped
