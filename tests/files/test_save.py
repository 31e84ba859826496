"""PNG files that carry their provenance: round trip, atomic writes, broken files, infotext."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest
import torch

from diffusers_repro import ProvenanceError
from diffusers_repro.files.fingerprints import fingerprint
from diffusers_repro.files.imagefile import (
    INFOTEXT_KEY,
    PIXELS_KEY,
    PROVENANCE_KEY,
    ImageProvenanceError,
    read_image_file,
    read_pixels,
    read_provenance,
)
from diffusers_repro.files.infotext import format_infotext, parse_infotext
from diffusers_repro.files.save import pixel_digest, save_image, save_outputs, to_pil_image
from diffusers_repro.records.provenance import image_digest

PROMPTS = ["a fox", "a bear"]
NEGATIVE = ["blurry", "dark"]


@pytest.fixture(scope="module")
def sd(tiny_sd_path):
    from diffusers_repro import ReproStableDiffusionPipeline

    # A str path: the record then holds only JSON values and compares equal to the one read back from the file.
    pipe = ReproStableDiffusionPipeline.from_pretrained(str(tiny_sd_path))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd_pil(sd):
    return sd(PROMPTS, negative_prompt=NEGATIVE, num_inference_steps=2, seed=42)


@pytest.fixture(scope="module")
def sd_np(sd):
    return sd(PROMPTS, negative_prompt=NEGATIVE, num_inference_steps=2, seed=42, output_type="np")


def _chunks(path):
    with PIL.Image.open(path) as image:
        image.load()
        return dict(image.text)


def _write_png(path, chunks, pixels=None):
    info = PIL.PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_itxt(key, value)
    image = PIL.Image.fromarray(pixels if pixels is not None else np.zeros((4, 4, 3), dtype=np.uint8))
    image.save(path, format="PNG", pnginfo=info)
    return path


def _unet_file_sha256(tiny_sd_path):
    data = (tiny_sd_path / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    return hashlib.sha256(data).hexdigest()


# -------------------------------------------------------------------------------------------------------- round trip


def test_round_trip_pil_output(sd_pil, tmp_path):
    record = sd_pil.provenance[1]
    before = record.to_dict()
    path = save_image(sd_pil.images[1], tmp_path / "fox.png", record)

    assert path == tmp_path / "fox.png"
    assert read_provenance(path) == record
    assert record.to_dict() == before, "the caller's record must not change"
    chunks = _chunks(path)
    assert set(chunks) == {PROVENANCE_KEY, PIXELS_KEY, INFOTEXT_KEY, "XML:com.adobe.xmp"}
    assert "trainedAlgorithmicMedia</Iptc4xmpExt:DigitalSourceType>" in chunks["XML:com.adobe.xmp"]
    assert chunks[PROVENANCE_KEY] == record.to_json()
    assert np.array_equal(read_pixels(path), np.asarray(sd_pil.images[1]))
    # For PIL outputs the pixel digest is the record's output digest.
    assert json.loads(chunks[PIXELS_KEY]) == {
        "pixel_digest": record.result["output_digest"],
        "mode": "RGB",
        "size": [64, 64],
        "converted_from": "pil",
        "conversion": None,
        "fingerprint": fingerprint(sd_pil.images[1]),
    }


def test_provenance_chunk_is_utf8_itxt(sd, tmp_path):
    out = sd("un renard roux, «ça» — 狐", num_inference_steps=1, seed=0)
    path = save_image(out.images[0], tmp_path / "utf8.png", out.provenance[0])
    raw = path.read_bytes()
    assert b"iTXt" + PROVENANCE_KEY.encode() + b"\x00\x00\x00" in raw  # not compressed, no language tag
    assert read_provenance(path).call_arguments["prompt"] == "un renard roux, «ça» — 狐"
    # Not latin-1: the infotext goes into an iTXt chunk too, which web UIs read the same way.
    assert _chunks(path)[INFOTEXT_KEY].startswith("un renard roux, «ça» — 狐\n")


def test_np_output_gets_8_bit_pixels_and_a_pixel_digest(sd_np, sd_pil, tmp_path):
    record = sd_np.provenance[0]
    path = save_image(sd_np.images[0], tmp_path / "np.png", record)
    image_file = read_image_file(path)

    expected = (np.clip(sd_np.images[0], 0, 1) * 255).round().astype(np.uint8)
    assert np.array_equal(image_file.pixels, expected)
    # The same call with output_type="pil" gives exactly these pixels.
    assert np.array_equal(image_file.pixels, np.asarray(sd_pil.images[0]))
    # The record's output digest is of the float array; the file carries a second digest for its own pixels.
    assert record.result["output_digest"] != image_file.pixel_digest
    assert image_file.stored_pixel_digest == image_file.pixel_digest == pixel_digest(sd_np.images[0])
    assert image_file.pixels_intact is True
    assert image_file.provenance == record
    pixels = json.loads(_chunks(path)[PIXELS_KEY])
    assert pixels["converted_from"] == "numpy float32 (64, 64, 3)"
    assert pixels["conversion"] == "round(clip(x, 0, 1) * 255) to uint8, as diffusers' numpy_to_pil"


def test_pt_output_is_saved_channels_first(sd_np, tmp_path):
    tensor = torch.from_numpy(sd_np.images[0]).permute(2, 0, 1)
    path = save_image(tensor, tmp_path / "pt.png", sd_np.provenance[0])
    assert np.array_equal(read_pixels(path), np.asarray(to_pil_image(sd_np.images[0])))
    assert json.loads(_chunks(path)[PIXELS_KEY])["converted_from"] == "torch float32 (3, 64, 64)"


def test_grayscale_and_rgba_arrays(sd_np, tmp_path):
    record = sd_np.provenance[0]
    gray = save_image(np.full((5, 7, 1), 0.5, dtype=np.float32), tmp_path / "gray.png", record)
    rgba = save_image(np.zeros((5, 7, 4), dtype=np.uint8), tmp_path / "rgba.png", record)
    assert read_pixels(gray).shape == (5, 7) and read_pixels(gray)[0, 0] == 128
    assert read_pixels(rgba).shape == (5, 7, 4)


def test_record_with_a_path_object_saves(sd_pipe, tmp_path, tiny_sd_path):
    # sd_pipe is loaded from a pathlib.Path, which the record may keep as the model's name_or_path.
    out = sd_pipe("a fox", num_inference_steps=1, seed=0)
    path = save_image(out.images[0], tmp_path / "path.png", out.provenance[0])
    assert read_provenance(path).recipe["model"]["name_or_path"] == str(tiny_sd_path)


def test_existing_file_is_replaced(sd_pil, tmp_path):
    path = tmp_path / "image.png"
    save_image(sd_pil.images[0], path, sd_pil.provenance[0])
    save_image(sd_pil.images[1], path, sd_pil.provenance[1])
    assert read_provenance(path) == sd_pil.provenance[1]
    assert os.listdir(tmp_path) == ["image.png"]


# -------------------------------------------------------------------------------------------------------- bad input


def test_path_must_be_an_image_format_we_write(sd_pil, tmp_path):
    with pytest.raises(ValueError, match=re.escape("path must end in .png, .jpg, .jpeg or .webp, got")):
        save_image(sd_pil.images[0], tmp_path / "image.gif", sd_pil.provenance[0])


def test_latents_are_not_saved_as_images(sd, tmp_path):
    out = sd("a fox", num_inference_steps=1, seed=0, output_type="latent")
    message = (
        "the record says output_type='latent': the output is latents, not an image; call the pipeline with "
        "output_type='pil' (or 'np', 'pt') to save images"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        out.save(tmp_path)
    assert os.listdir(tmp_path) == []


def test_provenance_must_be_a_record(sd_pil, tmp_path):
    with pytest.raises(TypeError, match="^provenance must be a diffusers_repro.Provenance, got dict$"):
        save_image(sd_pil.images[0], tmp_path / "image.png", sd_pil.provenance[0].to_dict())


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            np.zeros((2, 8, 8, 3), dtype=np.float32),
            "image is an array of shape (2, 8, 8, 3); expected one image (H, W, C) with 1, 3 or 4 channels, or "
            "(H, W); save a batch with save_outputs",
        ),
        (
            torch.zeros(8, 8, 3),
            "image is a tensor of shape (8, 8, 3); expected one image (C, H, W) with 1, 3 or 4 channels first, as "
            "output_type='pt' returns",
        ),
        (np.zeros((8, 8, 3), dtype=np.int32), "image array has dtype int32; expected floats in [0, 1] or uint8"),
        ("image.png", "image must be a PIL image, a numpy array or a torch tensor, got str"),
    ],
)
def test_bad_images(image, message):
    with pytest.raises((ValueError, TypeError), match=f"^{re.escape(message)}$"):
        to_pil_image(image)


# -------------------------------------------------------------------------------------------------------- atomic


def test_crash_mid_write_leaves_no_file(sd_pil, tmp_path, monkeypatch):
    def crash(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n half an image")
        raise OSError("disk full")

    monkeypatch.setattr(PIL.Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_image(sd_pil.images[0], tmp_path / "image.png", sd_pil.provenance[0])
    assert os.listdir(tmp_path) == []


def test_crash_mid_write_keeps_the_old_file(sd_pil, tmp_path, monkeypatch):
    path = save_image(sd_pil.images[0], tmp_path / "image.png", sd_pil.provenance[0])
    old = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_image(sd_pil.images[1], path, sd_pil.provenance[1])
    assert os.listdir(tmp_path) == ["image.png"]
    assert path.read_bytes() == old


def test_write_is_flushed_before_the_rename(sd_pil, tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("replace", os.path.dirname(a))), real_replace(a, b))[1]
    )
    save_image(sd_pil.images[0], tmp_path / "image.png", sd_pil.provenance[0])
    # The temporary file lives in the target's folder, so the rename never crosses file systems.
    assert events[:2] == ["fsync", ("replace", str(tmp_path))]


# -------------------------------------------------------------------------------------------------------- broken files


def _expect(path, message):
    with pytest.raises(ImageProvenanceError, match=f"^{re.escape(message)}$") as info:
        read_provenance(path)
    assert isinstance(info.value, ProvenanceError) and isinstance(info.value, ValueError)
    assert info.value.path == path
    return info.value


def test_not_a_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    _expect(
        path,
        f"{path} is not a PNG, JPEG or WebP file (it starts with b'hell'); diffusers-repro reads PNG, JPEG and WebP "
        "files",
    )


def test_a_jpeg_from_another_tool(tmp_path):
    path = tmp_path / "photo.jpg"
    PIL.Image.new("RGB", (4, 4)).save(path, format="JPEG")
    _expect(
        path,
        f"{path} has no 'diffusers-repro' record in its XMP: it was not saved by diffusers-repro, or its metadata "
        "was stripped (image editors and upload sites often do)",
    )


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _expect(
        path, f"{path} is not a PNG, JPEG or WebP file (it is empty); diffusers-repro reads PNG, JPEG and WebP files"
    )


def test_truncated_png(sd_pil, tmp_path):
    path = save_image(sd_pil.images[0], tmp_path / "image.png", sd_pil.provenance[0])
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ImageProvenanceError, match=f"^{re.escape(str(path))} is a damaged PNG file: "):
        read_provenance(path)


def test_png_without_our_chunk(tmp_path):
    path = _write_png(tmp_path / "plain.png", {})
    _expect(
        path,
        f"{path} has no 'diffusers-repro' text chunk: it was not saved by diffusers-repro, or its metadata "
        "was stripped (image editors and upload sites often do)",
    )


def test_png_from_another_tool(tmp_path):
    path = _write_png(tmp_path / "webui.png", {"parameters": "a fox\nSteps: 20, Sampler: Euler a, Seed: 1"})
    _expect(
        path,
        f"{path} has no 'diffusers-repro' text chunk: it was not saved by diffusers-repro, or its metadata "
        "was stripped (image editors and upload sites often do); it has a 'parameters' infotext from another "
        "tool, which is not enough to reproduce it",
    )


def test_broken_json(tmp_path):
    path = _write_png(tmp_path / "broken.png", {PROVENANCE_KEY: '{"schema": "diffusers-repro/provenance", '})
    _expect(
        path,
        f"provenance record in {path} is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 42 (char 41)",
    )


def test_unknown_schema_version(sd_pil, tmp_path):
    data = sd_pil.provenance[0].to_dict()
    data["schema_version"] = 99
    path = _write_png(tmp_path / "future.png", {PROVENANCE_KEY: json.dumps(data)})
    _expect(
        path,
        f"provenance record in {path} has schema_version 99, but this diffusers-repro reads versions 1, 2; "
        "upgrade diffusers-repro to read newer records",
    )


def test_json_that_is_not_a_record(tmp_path):
    path = _write_png(tmp_path / "list.png", {PROVENANCE_KEY: "[1, 2]"})
    _expect(path, f"provenance record in {path} must be a JSON object, got list")


def test_broken_pixel_chunk(sd_pil, tmp_path):
    path = _write_png(tmp_path / "pixels.png", {PROVENANCE_KEY: sd_pil.provenance[0].to_json(), PIXELS_KEY: "{"})
    assert read_provenance(path) == sd_pil.provenance[0]
    with pytest.raises(ImageProvenanceError, match=re.escape(f"{path}: the 'diffusers-repro-pixels' text chunk is")):
        read_image_file(path)


def test_a_folder(tmp_path):
    _expect(tmp_path, f"{tmp_path} is a folder, expected a PNG, JPEG or WebP file")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_provenance(tmp_path / "missing.png")


def test_tampered_pixels_are_seen_in_the_file(sd_pil, tmp_path):
    path = save_image(sd_pil.images[0], tmp_path / "image.png", sd_pil.provenance[0])
    chunks = _chunks(path)
    pixels = read_pixels(path).copy()
    pixels[3, 5, 1] ^= 1
    _write_png(path, chunks, pixels)
    image_file = read_image_file(path)
    assert image_file.pixels_intact is False
    assert image_file.stored_pixel_digest == sd_pil.provenance[0].result["output_digest"] != image_file.pixel_digest


# -------------------------------------------------------------------------------------------------------- infotext


def test_infotext_of_sd_image(sd_pil, tiny_sd_path):
    from diffusers_repro import __version__

    text = format_infotext(sd_pil.provenance[1], size=(64, 64))
    unet_hash = _unet_file_sha256(tiny_sd_path)[:10]
    assert text == (
        "a bear\n"
        "Negative prompt: dark\n"
        f"Steps: 2, Sampler: DDIM, Schedule type: Automatic, CFG scale: 7.5, Seed: 43, Size: 64x64, "
        f"Model hash: {unet_hash}, Model: {tiny_sd_path.name}, RNG: CPU, Version: diffusers-repro {__version__}"
    )


def test_infotext_round_trip(sd_pil, tmp_path, tiny_sd_path):
    path = save_image(sd_pil.images[0], tmp_path / "image.png", sd_pil.provenance[0])
    fields = parse_infotext(read_image_file(path).infotext)
    assert fields == {
        "prompt": "a fox",
        "negative_prompt": "blurry",
        "steps": 2,
        "sampler": "DDIM",
        "schedule_type": "Automatic",
        "cfg_scale": 7.5,
        "seed": 42,
        "width": 64,
        "height": 64,
        "model_hash": _unet_file_sha256(tiny_sd_path)[:10],
        "model": tiny_sd_path.name,
        "rng": "CPU",
        "version": fields["version"],
    }
    assert fields["version"].startswith("diffusers-repro ")


def test_values_with_commas_and_colons_are_quoted(sd_pil):
    record = copy.deepcopy(sd_pil.provenance[0])
    record.recipe["call"]["prompt"] = "a fox, red: bright\nsecond line"
    record.recipe["call"]["negative_prompt"] = "blurry, dark"
    record.recipe["model"]["path"] = '/models/sd, v1: "best"'
    record.recipe["scheduler"]["class"] = "Sampler\nwith newline"
    text = format_infotext(record, size=(32, 48))
    assert 'Model: "sd, v1: \\"best\\""' in text
    assert 'Diffusers scheduler: "Sampler\\nwith newline"' in text and "Sampler:" not in text
    fields = parse_infotext(text)
    assert fields["prompt"] == "a fox, red: bright\nsecond line"
    assert fields["negative_prompt"] == "blurry, dark"
    assert fields["model"] == 'sd, v1: "best"'
    assert fields["diffusers_scheduler"] == "Sampler\nwith newline"
    assert (fields["width"], fields["height"], fields["seed"], fields["steps"]) == (32, 48, 42, 2)


def test_ddim_infotext_has_no_prompt_line(ddim_pipe):
    record = ddim_pipe(num_inference_steps=2, seed=7).provenance[0]
    text = format_infotext(record, size=(16, 16))
    # DDIM with the class defaults (steps_offset=0) is not A1111's DDIM: no A1111 sampler name, nothing false.
    assert text.startswith("Steps: 2, Diffusers scheduler: DDIMScheduler, Seed: 7, Size: 16x16, Model hash: ")
    assert "CFG scale" not in text and "\n" not in text
    fields = parse_infotext(text)
    assert (fields["prompt"], fields["negative_prompt"], fields["seed"]) == ("", None, 7)


def test_model_hash_of_a_model_built_in_code():
    from diffusers_repro import ReproStableDiffusionPipeline
    from diffusers_repro.tiny import build_tiny_pipeline

    pipe = ReproStableDiffusionPipeline(**build_tiny_pipeline("sd").components)
    pipe.set_progress_bar_config(disable=True)
    record = pipe("a fox", num_inference_steps=1, seed=0, output_type="latent").provenance[0]
    unet = record.recipe["model"]["components"]["unet"]
    assert unet["digest_of"] == "tensors"
    fields = parse_infotext(format_infotext(record))
    assert fields["model_hash"] == unet["weights_digest"].removeprefix("sha256:")[:10]
    assert "model" not in fields  # built in code: no folder or repository to name


def test_parse_web_ui_infotext():
    text = (
        "masterpiece, a fox\n"
        "in the snow\n"
        "Negative prompt: lowres,\n"
        "bad hands\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, "
        'Lora hashes: "fox: abc123", Version: v1.6.0'
    )
    assert parse_infotext(text) == {
        "prompt": "masterpiece, a fox\nin the snow",
        "negative_prompt": "lowres,\nbad hands",
        "steps": 20,
        "sampler": "Euler a",
        "cfg_scale": 7.0,
        "seed": 1234,
        "width": 512,
        "height": 768,
        "model_hash": "6ce0161689",
        "lora_hashes": "fox: abc123",
        "version": "v1.6.0",
    }


def test_parse_text_without_parameters_line():
    assert parse_infotext("just a prompt, with a comma") == {
        "prompt": "just a prompt, with a comma",
        "negative_prompt": None,
    }
    assert parse_infotext("") == {"prompt": "", "negative_prompt": None}


# -------------------------------------------------------------------------------------------------------- save_outputs


def test_output_save_names_and_contents(sd_pil, tmp_path):
    directory = tmp_path / "nested" / "outputs"
    paths = sd_pil.save(directory)
    assert [path.name for path in paths] == ["00000-seed42.png", "00001-seed43.png"]
    for path, image, record, prompt in zip(paths, sd_pil.images, sd_pil.provenance, PROMPTS, strict=True):
        assert read_provenance(path) == record
        assert read_provenance(path).call_arguments["prompt"] == prompt
        assert np.array_equal(read_pixels(path), np.asarray(image))
    # Saving again into the same folder continues the numbering instead of replacing the first images.
    again = sd_pil.save(directory)
    assert [path.name for path in again] == ["00002-seed42.png", "00003-seed43.png"]
    assert sorted(os.listdir(directory)) == [path.name for path in paths + again]


def test_save_outputs_of_a_batched_array(sd_np, tmp_path):
    paths = save_outputs(sd_np.images, sd_np.provenance, tmp_path)
    assert [read_image_file(path).pixel_digest for path in paths] == [pixel_digest(image) for image in sd_np.images]


def test_save_outputs_count_mismatch(sd_pil, tmp_path):
    with pytest.raises(
        ValueError, match=re.escape("save_outputs got 2 images but 1 provenance records; expected one")
    ):
        save_outputs(sd_pil.images, sd_pil.provenance[:1], tmp_path)
    assert os.listdir(tmp_path) == []


def test_pixel_digest_of_pil_is_image_digest(sd_pil):
    assert (
        pixel_digest(sd_pil.images[0])
        == image_digest(sd_pil.images[0])
        == sd_pil.provenance[0].result["output_digest"]
    )
