"""JPEG and WebP files: the record in XMP, the A1111 infotext in EXIF UserComment, clear errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import piexif
import piexif.helper
import PIL.Image
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusers_repro.exif import _infotext, _xmp_properties, encode_lossy, read_lossy_image, sniff_format
from diffusers_repro.files import (
    ImageProvenanceError,
    format_infotext,
    read_image_file,
    read_provenance,
    save_image,
    save_outputs,
)
from diffusers_repro.provenance import image_digest


@pytest.fixture(scope="module")
def output(ddim):
    return ddim(num_inference_steps=2, seed=3, batch_size=2)


@pytest.mark.parametrize(("format", "suffix"), [("jpeg", ".jpg"), ("webp", ".webp")])
def test_infotext_is_in_exif_user_comment_as_a1111_writes_it(output, tmp_path, format, suffix):
    path = save_image(output.images[0], tmp_path / f"a{suffix}", output.provenance[0], sign=False)
    exif = piexif.load(str(path))
    comment = exif["Exif"][piexif.ExifIFD.UserComment]
    assert comment.startswith(b"UNICODE\x00")
    assert piexif.helper.UserComment.load(comment) == format_infotext(output.provenance[0], size=(16, 16))
    image_file = read_image_file(path)
    assert (image_file.format, sniff_format(path)) == (format, format)
    assert image_file.provenance == output.provenance[0] == read_provenance(path)
    assert image_file.infotext == format_infotext(output.provenance[0], size=(16, 16))
    assert (
        image_file.source_pixel_digest
        == image_digest(output.images[0])
        == output.provenance[0].result["output_digest"]
    )
    assert image_file.stored_pixel_digest is None and image_file.pixels_intact is None


def test_quality_reaches_the_encoder(output, tmp_path):
    small = save_image(output.images[0], tmp_path / "low.jpg", output.provenance[0], quality=5, sign=False)
    large = save_image(output.images[0], tmp_path / "high.jpg", output.provenance[0], quality=100, sign=False)
    assert PIL.Image.open(small).getdata() != PIL.Image.open(large).getdata()


def test_save_outputs_and_out_save_name_lossy_files_by_format(output, tmp_path):
    paths = output.save(tmp_path, format="webp", quality=90, sign=False)
    assert [path.name for path in paths] == ["00000-seed3.webp", "00001-seed4.webp"]
    paths = save_outputs(output.images, output.provenance, tmp_path, format="jpeg", sign=False)
    assert [path.name for path in paths] == ["00002-seed3.jpg", "00003-seed4.jpg"]


@pytest.mark.parametrize(
    ("kwargs", "name", "message"),
    [
        ({"format": "gif"}, "a.gif", "format must be one of 'png', 'jpeg', 'webp', got 'gif'"),
        ({}, "a.gif", "path must end in .png, .jpg, .jpeg or .webp, got '{tmp}/a.gif'"),
        ({"format": "jpeg"}, "a.png", "path '{tmp}/a.png' does not end in .jpg or .jpeg for format='jpeg'"),
        ({"quality": 0}, "a.jpg", "quality must be an integer from 1 to 100, got 0"),
        ({"quality": 90}, "a.png", "quality is for the lossy formats 'jpeg' and 'webp'; PNG is lossless, got 90"),
    ],
)
def test_bad_format_options_are_refused_before_anything_is_written(output, tmp_path, kwargs, name, message):
    with pytest.raises(ValueError) as error:
        save_image(output.images[0], tmp_path / name, output.provenance[0], sign=False, **kwargs)
    assert str(error.value) == message.format(tmp=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_sign_of_the_wrong_type_is_a_type_error(output, tmp_path):
    with pytest.raises(TypeError, match="^sign must be True, False or a SigningIdentity, got str$"):
        save_image(output.images[0], tmp_path / "a.png", output.provenance[0], sign="yes")


def test_jpeg_refuses_an_alpha_channel(output, tmp_path):
    rgba = output.images[0].convert("RGBA")
    with pytest.raises(ValueError, match="^a JPEG cannot hold an image of mode 'RGBA'"):
        save_image(rgba, tmp_path / "a.jpg", output.provenance[0], sign=False)


def test_a_stripped_jpeg_names_the_file_and_the_problem(output, tmp_path):
    path = save_image(output.images[0], tmp_path / "a.jpg", output.provenance[0], sign=False)
    PIL.Image.open(path).save(tmp_path / "stripped.jpg")
    with pytest.raises(ImageProvenanceError, match=rf"^{tmp_path}/stripped.jpg has no 'diffusers-repro' record"):
        read_lossy_image(tmp_path / "stripped.jpg")


def test_a_truncated_webp_is_a_damaged_file(output, tmp_path):
    path = save_image(output.images[0], tmp_path / "a.webp", output.provenance[0], sign=False)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ImageProvenanceError, match=rf"^{path} is a damaged WEBP file: "):
        read_image_file(path)


@settings(max_examples=40, deadline=None)
@given(record=st.text(), infotext=st.text())
def test_any_record_text_and_infotext_survive_the_round_trip(record, infotext):
    # The record is JSON (ASCII, escaped by json.dumps) in XMP; the infotext is any Unicode in EXIF UserComment.
    record_json = json.dumps({"prompt": record})
    data = encode_lossy(PIL.Image.new("RGB", (8, 8)), "webp", 90, record_json, {"k": record}, infotext)
    with PIL.Image.open(io.BytesIO(data)) as image:
        properties = _xmp_properties(Path("x.webp"), image.info["xmp"])
        assert properties["record"] == record_json
        assert json.loads(properties["pixels"]) == {"k": record}
        assert _infotext(image.info["exif"]) == infotext
