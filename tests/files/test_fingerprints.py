"""Perceptual fingerprints, and `diffusers-repro find` for copies that lost their metadata."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import PIL.Image
import pytest

from diffusers_repro.cli import main
from diffusers_repro.files.fingerprints import (
    MATCH_THRESHOLD,
    fingerprint,
    iscc_image_code,
    iscc_similarity,
    parse_fingerprint,
    similarity,
)


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_sd_path):
    """2 prompts x 2 seeds of the tiny SD model (64x64), signed PNGs with a manifest."""
    out = tmp_path_factory.mktemp("find") / "grid"
    code = main(
        ["generate", "--model", str(tiny_sd_path), "--prompt", "a fox", "--prompt", "a bear", "--seeds", "0,1"]
        + ["--steps", "2", "--threads", "1", "--no-progress", "--out", str(out)]
    )
    assert code == 0
    return out


def stripped_copy(path, folder, *, size=(48, 48), quality=70):
    """A resized JPEG re-encode with every byte of metadata gone, as an upload site makes it."""
    buffer = io.BytesIO()
    PIL.Image.open(path).convert("RGB").resize(size).save(buffer, format="JPEG", quality=quality)
    copy = folder / "copy.jpg"
    copy.write_bytes(buffer.getvalue())
    assert b"diffusers-repro" not in copy.read_bytes() and b"c2pa" not in copy.read_bytes()
    return copy


def test_fingerprint_format_and_similarity_values():
    zeros = "phash-16:" + "0" * 64
    assert similarity(zeros, zeros) == 1.0
    assert similarity(zeros, "phash-16:" + "f" * 64) == 0.0
    assert similarity(zeros, "phash-16:" + "f" + "0" * 63) == 1 - 4 / 256
    assert parse_fingerprint(zeros).shape == (256,)
    flat = fingerprint(PIL.Image.new("RGB", (64, 64), (10, 20, 30)))
    assert flat.startswith("phash-16:") and len(flat) == len("phash-16:") + 64


@pytest.mark.parametrize("bad", ["", "phash:00", "phash-16:" + "g" * 64, "phash-16:" + "0" * 63, 7])
def test_parse_fingerprint_refuses_anything_else(bad):
    with pytest.raises(ValueError, match="^fingerprint "):
        parse_fingerprint(bad)


def test_copies_score_high_and_unrelated_images_near_one_half(grid, tmp_path):
    original = grid / "job000000-seed0.png"
    reference = fingerprint(original)
    assert similarity(reference, fingerprint(stripped_copy(original, tmp_path))) >= 0.9
    assert similarity(reference, fingerprint(PIL.Image.open(original).resize((256, 256)))) >= 0.95
    rng = np.random.default_rng(0)
    for _ in range(20):
        noise = PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        assert similarity(reference, fingerprint(noise)) < MATCH_THRESHOLD - 0.1
    # Another seed is another picture; the same seed with another prompt is close on the tiny model (same noise).
    other_seed = fingerprint(grid / "job000001-seed1.png")
    assert similarity(reference, other_seed) < MATCH_THRESHOLD - 0.1


def test_manifest_lines_and_pixel_records_store_the_fingerprint(grid):
    lines = [json.loads(line) for line in (grid / "manifest.jsonl").read_text().splitlines()]
    for line in lines:
        assert line["fingerprint"] == fingerprint(grid / line["file"])


def test_find_names_the_source_of_a_stripped_resized_jpeg(grid, tmp_path, capsys):
    copy = stripped_copy(grid / "job000002-seed0.png", tmp_path)
    code = main(["find", str(copy), str(grid.parent)])
    out = capsys.readouterr().out
    assert code == 0
    # Best match first; the same seed with the other prompt looks alike on the tiny model and is listed after it.
    names = [line.split("  similarity ")[0] for line in out.splitlines()]
    assert names[0] == str(grid / "job000002-seed0.png")
    assert set(names) <= {str(grid / "job000002-seed0.png"), str(grid / "job000000-seed0.png")}
    code = main(["find", "--json", str(copy), str(grid)])
    matches = json.loads(capsys.readouterr().out)
    assert matches[0]["file"] == str(grid / "job000002-seed0.png") and matches[0]["similarity"] >= 0.9
    assert matches == sorted(matches, key=lambda match: -match["similarity"])


def test_find_without_a_manifest_reads_the_files(grid, tmp_path, capsys):
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "picture.png").write_bytes((grid / "job000001-seed1.png").read_bytes())
    copy = stripped_copy(grid / "job000001-seed1.png", tmp_path)
    assert main(["find", str(copy), str(folder)]) == 0
    assert capsys.readouterr().out.startswith(f"{folder / 'picture.png'}  similarity ")


def test_find_of_a_generated_file_names_itself_first(grid, capsys):
    assert main(["find", str(grid / "job000001-seed1.png"), str(grid)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{grid / 'job000001-seed1.png'}  similarity 1.000"


def test_find_of_an_unrelated_image_exits_1(grid, tmp_path, capsys):
    for seed in range(5):
        noise = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        PIL.Image.fromarray(noise).save(tmp_path / f"noise{seed}.png")
        assert main(["find", str(tmp_path / f"noise{seed}.png"), str(grid)]) == 1
        assert capsys.readouterr().out == f"no image in {grid} matches {tmp_path}/noise{seed}.png (threshold 0.8)\n"


def test_find_user_errors(grid, tmp_path, capsys):
    assert main(["find", str(tmp_path / "missing.jpg"), str(grid)]) == 2
    assert capsys.readouterr().err == f"diffusers-repro: error: '{tmp_path}/missing.jpg': no such file\n"
    (tmp_path / "text.jpg").write_text("hello")
    assert main(["find", str(tmp_path / "text.jpg"), str(grid)]) == 2
    assert f"'{tmp_path}/text.jpg' is not an image that can be read" in capsys.readouterr().err
    assert main(["find", str(grid / "job000000-seed0.png"), str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"diffusers-repro: error: '{tmp_path}/nowhere': no such folder\n"


def test_a_query_image_past_the_read_limit_is_one_usage_error(tmp_path, capsys):
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", 12000, 12000)
    path = tmp_path / "large.jpg"
    path.write_bytes(bytes(data))
    assert main(["find", str(path), str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"diffusers-repro: error: '{path}' is not an image that can be read: it is 12000x12000 pixels, more than "
        "67108864\n"
    )


def test_the_iscc_image_code_is_iscc_cores_on_the_normalized_pixels():
    import iscc_core

    image = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8))
    pixels = list(image.convert("L").resize((32, 32), PIL.Image.Resampling.BICUBIC).getdata())
    code = iscc_image_code(image)
    assert code == iscc_core.gen_image_code_v0(pixels, bits=256)["iscc"] and code.startswith("ISCC:EED")
    # Transparency is laid over white, as ISCC normalizes it.
    clear = PIL.Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert iscc_image_code(clear) == iscc_image_code(PIL.Image.new("RGB", (32, 32), "white"))
    assert iscc_similarity(code, code) == 1.0
    assert iscc_similarity(code, iscc_image_code(image.resize((128, 96)))) >= 0.9
    with pytest.raises(ValueError, match="different lengths"):
        iscc_similarity(code, iscc_image_code(image, bits=64))
