"""JPEG and WebP files: the record in XMP, the A1111 infotext in EXIF UserComment, clear errors."""

from __future__ import annotations

import io
import json
import re
import struct

import piexif
import piexif.helper
import PIL.Image
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusers_repro.files.imagefile import (
    MAX_FILE_PIXELS,
    MAX_XMP_BYTES,
    ImageProvenanceError,
    parse_image_bytes,
    read_image_file,
    read_provenance,
)
from diffusers_repro.files.infotext import format_infotext
from diffusers_repro.files.lossy import _xmp_packet, encode_lossy, read_lossy_image, sniff_format
from diffusers_repro.files.save import save_image, save_outputs
from diffusers_repro.records.provenance import image_digest


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
    image_file = parse_image_bytes(data, "x.webp")
    assert image_file.metadata["record"] == record_json
    assert json.loads(image_file.metadata["pixels"]) == {"k": record}
    assert image_file.infotext == infotext


# ----------------------------------------------------------------------------------------------------------------
# Hostile files: every failure is an ImageProvenanceError naming the file


def _lossy_bytes(format: str, xmp: bytes, exif: bytes | None = None, size=(8, 8), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    options = {"xmp": xmp} if exif is None else {"xmp": xmp, "exif": exif}
    PIL.Image.new(mode, size).save(buffer, format=format.upper(), **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def record_json(output):
    return output.provenance[0].to_json()


@pytest.mark.parametrize("format", ["jpeg", "webp"])
@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00" * 30,
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x69\x87\x04\x00\x01\x00\x00\x00\xff\xff\x00\x00",
    ],
)
def test_malformed_exif_is_read_as_no_infotext(record_json, tmp_path, format, exif):
    path = tmp_path / f"a.{format}"
    path.write_bytes(_lossy_bytes(format, _xmp_packet(record_json, "{}"), exif=exif))
    image_file = read_image_file(path)
    assert image_file.infotext is None and image_file.provenance.to_json() == record_json


@pytest.mark.parametrize("format", ["jpeg", "webp"])
def test_a_deeply_nested_pixel_record_is_an_image_provenance_error(record_json, tmp_path, format):
    path = tmp_path / f"a.{format}"
    path.write_bytes(_lossy_bytes(format, _xmp_packet(record_json, "[" * 20000 + "]" * 20000)))
    with pytest.raises(ImageProvenanceError, match=rf"^{path}: the XMP pixel record is not a JSON object$"):
        read_image_file(path)


def _with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    data = bytearray(data)
    at = data.find(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        # Past twice PIL's own bomb limit: PIL refuses it while reading the header.
        (65000, 65000, "is a damaged JPEG file: Image size (4225000000 pixels) exceeds limit of 178956970 pixels"),
        # Under PIL's limit but past ours: refused before the pixels are decoded.
        (12000, 12000, "is 12000x12000 pixels, more than the {max} pixels diffusers-repro reads$"),
    ],
)
def test_a_jpeg_larger_than_the_read_limit_is_refused_before_decoding(record_json, tmp_path, width, height, reason):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(_with_jpeg_size(_lossy_bytes("jpeg", _xmp_packet(record_json, "{}")), width, height))
    message = f"^{path} " + re.escape(reason.format(max=MAX_FILE_PIXELS)).replace(r"\$", "$")
    with pytest.raises(ImageProvenanceError, match=message):
        read_image_file(path)
    with pytest.raises(ImageProvenanceError, match=message):
        read_provenance(path)


def test_an_xmp_packet_past_the_cap_is_refused(tmp_path):
    path = tmp_path / "a.webp"
    path.write_bytes(_lossy_bytes("webp", b"<a>" + b"x" * (MAX_XMP_BYTES + 1) + b"</a>"))
    with pytest.raises(ImageProvenanceError, match=rf"^{path}: its XMP packet is longer than {MAX_XMP_BYTES} bytes$"):
        read_image_file(path)


@pytest.mark.parametrize(("name", "data"), [("empty.jpg", b""), ("empty.webp", b"")])
def test_an_empty_file_names_every_format_read(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(
        ImageProvenanceError, match=r"\(it is empty\); diffusers-repro reads PNG, JPEG and WebP files$"
    ):
        read_image_file(path)
