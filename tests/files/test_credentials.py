"""Content Credentials: every file we write is signed, c2pa reads it back, and any change after signing shows."""

from __future__ import annotations

import json
import struct
import zlib

import c2pa
import numpy as np
import PIL.Image
import pytest

from diffusers_repro.cli import main
from diffusers_repro.files.credentials import file_credentials, read_credentials
from diffusers_repro.files.identity import SigningIdentity, init_identity
from diffusers_repro.files.imagefile import (
    DIGITAL_SOURCE_TYPE,
    EDITED_DIGITAL_SOURCE_TYPE,
    PIXELS_KEY,
    PROVENANCE_KEY,
    read_image_file,
)
from diffusers_repro.files.save import save_image
from diffusers_repro.files.signing import ASSERTION_LABEL, CredentialsError, sign_image_bytes
from diffusers_repro.verify.replay import reproduce

SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@pytest.fixture(scope="module")
def output(ddim):
    return ddim(num_inference_steps=2, seed=7)


def save(output, tmp_path, format="png", **kwargs):
    return save_image(output.images[0], tmp_path / f"image{SUFFIXES[format]}", output.provenance[0], **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# PNG chunks, rewritten with valid CRCs


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def png_bytes(chunks) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return out


def itxt(key: str, text: str) -> bytes:
    return key.encode() + b"\x00\x00\x00\x00\x00" + text.encode()


def edit_png(path, *, record=None, pixels=None):
    """Rewrites the record and pixel-record chunks and/or the pixel data, every CRC valid, the manifest kept."""
    chunks = []
    for kind, body in png_chunks(path.read_bytes()):
        if kind == b"iTXt" and body.startswith(PROVENANCE_KEY.encode() + b"\x00") and record is not None:
            body = itxt(PROVENANCE_KEY, record)
        elif kind == b"iTXt" and body.startswith(PIXELS_KEY.encode() + b"\x00") and pixels is not None:
            stored = json.loads(body.split(b"\x00", 5)[-1])
            stored["pixel_digest"] = read_image_file_digest(pixels)
            body = itxt(PIXELS_KEY, json.dumps(stored, sort_keys=True))
        elif kind == b"IDAT" and pixels is not None:
            rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
            body = zlib.compress(rows)
        chunks.append((kind, body))
    path.write_bytes(png_bytes(chunks))


def read_image_file_digest(pixels: np.ndarray) -> str:
    from diffusers_repro.records.provenance import image_digest

    return image_digest(PIL.Image.fromarray(pixels))


# --------------------------------------------------------------------------------------------------------------------
# Signing


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_every_format_reads_back_with_c2pa_reader(output, tmp_path, format):
    path = save(output, tmp_path, format)
    with c2pa.Reader(MIME[format], open(path, "rb")) as reader:
        state = reader.get_validation_state()
        manifest = reader.get_active_manifest()
    # The session's own CA is not in c2pa's default trust list: Valid (signer untrusted), never Invalid.
    assert state == "Valid"
    assertions = {assertion["label"]: assertion["data"] for assertion in manifest["assertions"]}
    (action,) = assertions["c2pa.actions.v2"]["actions"]
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert action["softwareAgent"]["name"] == "diffusers-repro"
    assert action["softwareAgent"]["version"].startswith("0.1.0 (diffusers ")
    assert DIGITAL_SOURCE_TYPE == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert json.loads(assertions[ASSERTION_LABEL]["record"]) == json.loads(output.provenance[0].to_json())
    assert assertions["c2pa.soft-binding"]["alg"] == "io.iscc.v0"
    # The plain-text record stays for the tools that read it, inside the signed bytes.
    assert read_image_file(path).provenance == output.provenance[0]


def active_claim(path, format):
    """The active manifest's claim as c2pa-python's detailed report shows it (assertion lists by URL)."""
    with c2pa.Reader(MIME[format], open(path, "rb")) as reader:
        report = json.loads(reader.detailed_json())
    return report["manifests"][report["active_manifest"]]["claim"]


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_every_assertion_is_a_created_assertion_attributed_to_the_signer(output, tmp_path, format):
    claim = active_claim(save(output, tmp_path, format), format)
    created = sorted(entry["url"].removeprefix("self#jumbf=c2pa.assertions/") for entry in claim["created_assertions"])
    assert created == sorted(["c2pa.actions.v2", ASSERTION_LABEL, "c2pa.soft-binding", "c2pa.hash.data"])
    assert claim.get("gathered_assertions", []) == []


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_the_signature_carries_the_chain_below_the_root(output, tmp_path, format):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    identity, _ = init_identity()
    signer, root = x509.load_pem_x509_certificates(identity.chain_pem)
    data = save(output, tmp_path, format).read_bytes()
    # The signer's certificate is in the file; the root is not (it is the anchor readers hold), and still vouches.
    assert signer.public_bytes(Encoding.DER) in data
    assert root.public_bytes(Encoding.DER) not in data
    assert read_credentials(tmp_path / f"image{SUFFIXES[format]}").state == "trusted"


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_our_reader_says_trusted_for_this_machines_identity(output, tmp_path, format):
    path = save(output, tmp_path, format)
    credentials = read_credentials(path)
    identity, _ = init_identity()
    assert (credentials.state, credentials.signer, credentials.failures) == ("trusted", identity.signer, [])
    assert credentials.generator.startswith("diffusers-repro 0.1.0 (diffusers ")
    assert credentials.to_dict()["state"] == "trusted"


def test_without_the_ca_on_the_trust_list_a_signature_is_valid_and_trust_adds_it(output, tmp_path, monkeypatch):
    path = save(output, tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_bytes((init_identity()[0].chain_path.parent / "ca.pem").read_bytes())
    monkeypatch.setenv("DIFFUSERS_REPRO_HOME", str(tmp_path / "elsewhere"))
    credentials = read_credentials(path)
    assert (credentials.state, credentials.failures) == ("valid", [])
    assert credentials.summary.startswith("valid: the signer's certificate calls itself 'diffusers-repro local ")
    assert "no root on the trust list vouches for it" in credentials.summary and credentials.anchor is None
    trusted = read_credentials(path, trust=[ca])
    assert trusted.state == "trusted" and trusted.anchor.path == ca
    assert f"(sha256 {trusted.anchor.fingerprint[7:23]}, ca.pem)" in trusted.summary
    # Files under $DIFFUSERS_REPRO_HOME/trust/ are trust anchors too.
    (tmp_path / "elsewhere" / "trust").mkdir(parents=True)
    (tmp_path / "elsewhere" / "trust" / "lab.pem").write_bytes(ca.read_bytes())
    assert read_credentials(path).state == "trusted"


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_sign_false_writes_unsigned_files(output, tmp_path, format):
    path = save(output, tmp_path, format, sign=False)
    assert c2pa.Reader.try_create(MIME[format], open(path, "rb")) is None
    credentials = read_credentials(path)
    assert (credentials.state, credentials.summary) == ("unsigned", "unsigned (no Content Credentials)")


# --------------------------------------------------------------------------------------------------------------------
# Tampering


def test_a_changed_pixel_in_a_png_is_tampered(output, tmp_path):
    path = save(output, tmp_path)
    pixels = np.asarray(PIL.Image.open(path)).copy()
    pixels[0, 0, 0] ^= 1
    # The pixel record is rewritten to agree with the new pixels: only the signature can tell.
    edit_png(path, pixels=pixels)
    assert read_image_file(path).pixels_intact is True
    credentials = read_credentials(path)
    assert credentials.state == "tampered"
    assert "assertion.dataHash.mismatch" in credentials.failures


def test_an_edited_record_with_valid_crcs_is_tampered_and_verify_fails(output, ddim, tmp_path, capsys):
    path = save(output, tmp_path)
    record = json.loads(output.provenance[0].to_json())
    record["seed"] = 8
    record["recipe"]["batch"]["seeds"] = [8]
    edit_png(path, record=json.dumps(record, sort_keys=True))
    assert read_image_file(path).provenance.seed == 8
    credentials = read_credentials(path)
    assert credentials.state == "tampered" and "assertion.dataHash.mismatch" in credentials.failures

    result = reproduce(path, pipe=ddim)
    assert (result.verdict, result.bitwise_equal, result.file_edited) == ("tampered", False, True)
    assert result.credentials.state == "tampered"
    assert result.to_dict()["credentials"]["failures"] == credentials.failures
    assert result.summary == (
        f"tampered: changed after it was signed (assertion.dataHash.mismatch); signed by {credentials.signer!r}"
    )

    code = main(["verify", str(path), "--tolerance", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 TAMPERED" in out and ": tampered: changed after it was signed (assertion.dataHash.mismatch)" in out
    code = main(["inspect", str(path)])
    assert code == 1
    assert "credentials:     tampered: changed after it was signed (assertion.dataHash." in capsys.readouterr().out


@pytest.mark.parametrize("format", ["jpeg", "webp"])
def test_a_changed_byte_of_jpeg_or_webp_image_data_is_tampered(output, tmp_path, format):
    path = save(output, tmp_path, format)
    data = bytearray(path.read_bytes())
    # A byte of the compressed image data: JPEG's scan ends the file; WebP's VP8 chunk comes before the manifest.
    data[-20 if format == "jpeg" else data.index(b"VP8") + 30] ^= 0x01
    path.write_bytes(bytes(data))
    credentials = read_credentials(path)
    assert credentials.state == "tampered"
    assert "assertion.dataHash.mismatch" in credentials.failures


def test_a_file_re_signed_with_another_key_is_valid_but_not_trusted(output, tmp_path):
    unsigned = save(output, tmp_path, sign=False)
    record = json.loads(output.provenance[0].to_json())
    record["call_arguments_note"] = "edited"
    record_json = json.dumps(record, sort_keys=True)
    edit_png(unsigned, record=record_json)
    other, _ = init_identity(tmp_path / "other-home")
    resigned = tmp_path / "resigned.png"
    resigned.write_bytes(sign_image_bytes(unsigned.read_bytes(), "png", other, record_json))
    credentials = read_credentials(resigned)
    assert (credentials.state, credentials.signer) == ("valid", other.signer)
    assert credentials.signer != init_identity()[0].signer
    assert read_credentials(resigned, trust=[tmp_path / "other-home" / "identity" / "ca.pem"]).state == "trusted"


def test_a_manifest_vouching_for_another_record_is_tampered(output, tmp_path):
    unsigned = save(output, tmp_path, sign=False)
    other = json.loads(output.provenance[0].to_json())
    other["seed"] = 99
    signed = tmp_path / "signed.png"
    signed.write_bytes(sign_image_bytes(unsigned.read_bytes(), "png", init_identity()[0], json.dumps(other)))
    assert read_credentials(signed).state == "trusted"
    credentials = file_credentials(read_image_file(signed))
    assert (credentials.state, credentials.failures) == ("tampered", ["diffusers-repro.record.mismatch"])


def test_a_manifest_that_does_not_parse_is_an_error_naming_the_file(output, tmp_path):
    path = save(output, tmp_path)
    chunks = [
        (kind, body[:40] + b"\x00" * 64 + body[104:] if kind == b"caBX" else body)
        for kind, body in png_chunks(path.read_bytes())
    ]
    path.write_bytes(png_bytes(chunks))
    with pytest.raises(CredentialsError, match=rf"^{path}: its Content Credentials cannot be read: "):
        read_credentials(path)


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_a_record_assertion_longer_than_its_box_is_an_error_naming_the_file(output, tmp_path, format):
    # The record's CBOR text claims 8 KiB more than its box holds: c2pa-python's Reader raises KeyError, not C2paError.
    path = save(output, tmp_path, format)
    data = bytearray(path.read_bytes())
    at = data.index(b"frecordy") + len(b"frecordy")
    data[at] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(CredentialsError, match=rf"^{path}: its Content Credentials cannot be read: "):
        read_credentials(path)


def test_a_file_c2pa_cannot_read_is_an_error_naming_it(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(CredentialsError, match=rf"^{path}: its Content Credentials cannot be read: "):
        read_credentials(path)
    with pytest.raises(CredentialsError, match=rf"^image '{tmp_path}/missing.png': no such file$"):
        read_credentials(tmp_path / "missing.png")


def test_a_certificate_c2pa_refuses_fails_before_anything_is_written(output, tmp_path):
    from tests.files.test_identity import _chain_and_key

    chain, key = _chain_and_key(tmp_path, signer_is_ca=True)
    with pytest.raises(CredentialsError, match=rf"^cannot sign with {chain}: "):
        SigningIdentity.from_files(chain, key)
    # Built directly, past the check from_files makes: the write itself refuses too, and leaves nothing behind.
    identity = SigningIdentity(chain.read_bytes(), key.read_bytes(), "es256", "x", "x", chain_path=chain)
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(CredentialsError, match=rf"^cannot sign with {chain}: "):
        save_image(output.images[0], folder / "image.png", output.provenance[0], sign=identity)
    assert list(folder.iterdir()) == []


def test_signing_with_a_user_chain(output, tmp_path):
    identity, _ = init_identity(tmp_path / "company")
    user = SigningIdentity.from_files(identity.chain_path, identity.key_path)
    path = save(output, tmp_path, sign=user)
    assert read_credentials(path).signer == identity.signer


# --------------------------------------------------------------------------------------------------------------------
# reproduce


def test_reproduce_of_a_signed_png_is_bitwise_with_trusted_credentials(output, ddim, tmp_path):
    result = reproduce(save(output, tmp_path), pipe=ddim)
    assert (result.verdict, result.credentials.state, result.file_format) == ("bitwise", "trusted", "png")
    assert result.to_dict()["credentials"]["state"] == "trusted"


@pytest.mark.parametrize("format", ["jpeg", "webp"])
def test_reproduce_of_a_signed_lossy_file_is_bitwise_and_says_what_that_means(output, ddim, tmp_path, format):
    result = reproduce(save(output, tmp_path, format, quality=80), pipe=ddim)
    assert (result.verdict, result.bitwise_equal, result.pixels_equal) == ("bitwise", True, False)
    # The pixels of a file signed by a trusted signer are compared all the same, and the verdict says which held.
    assert result.reencoding_equal is True
    assert result.summary == (
        f"bitwise (lossy {format}: the regenerated output equals the recorded output digest, the Content "
        "Credentials of a trusted signer vouch that the file is the one written, and encoding it again gives the "
        "file's pixels exactly)"
    )


def test_an_unsigned_lossy_file_is_never_bitwise(output, ddim, tmp_path):
    result = reproduce(save(output, tmp_path, "jpeg", sign=False), pipe=ddim)
    assert result.credentials.state == "unsigned"
    assert result.verdict in ("close", "different") and not result.bitwise_equal


@pytest.mark.parametrize("format", ["jpeg", "webp"])
def test_a_lossy_file_with_other_pixels_re_signed_by_another_key_is_not_bitwise(output, ddim, tmp_path, format):
    # Anyone can sign: keep the record and pixel record, put another picture in, and sign with a key of one's own.
    from diffusers_repro.files.infotext import format_infotext
    from diffusers_repro.files.lossy import encode_lossy, read_xmp_properties

    genuine = save(output, tmp_path, format)
    properties = read_xmp_properties(genuine)
    other_picture = PIL.Image.new("RGB", output.images[0].size, (200, 30, 30))
    data = encode_lossy(
        other_picture,
        format,
        95,
        properties["record"],
        json.loads(properties["pixels"]),
        format_infotext(output.provenance[0]),
    )
    forger, _ = init_identity(tmp_path / "forger-home")
    forged = tmp_path / f"forged{SUFFIXES[format]}"
    forged.write_bytes(sign_image_bytes(data, format, forger, properties["record"]))
    result = reproduce(forged, pipe=ddim)
    assert result.credentials.state == "valid" and result.output_digest_equal
    assert (result.verdict, result.bitwise_equal) == ("different", False)
    # The genuine file, signed by a key this machine does not trust, is still bitwise: its pixels are what encoding
    # the regenerated image gives.
    untrusted_home = tmp_path / "untrusted-home"
    other, _ = init_identity(untrusted_home)
    resigned = tmp_path / f"resigned{SUFFIXES[format]}"
    unsigned = save_image(output.images[0], tmp_path / f"u{SUFFIXES[format]}", output.provenance[0], sign=False)
    resigned.write_bytes(sign_image_bytes(unsigned.read_bytes(), format, other, properties["record"]))
    result = reproduce(resigned, pipe=ddim)
    assert (result.credentials.state, result.verdict) == ("valid", "bitwise")
    assert result.summary == (
        f"bitwise (lossy {format}: the regenerated output equals the recorded output digest and encoding it again "
        "gives the file's pixels exactly; its signer is not on the trust list)"
    )


def test_a_stripped_manifest_and_an_edited_record_read_unsigned_never_trusted(output, ddim, tmp_path, capsys):
    path = save(output, tmp_path)
    path.write_bytes(png_bytes([(kind, body) for kind, body in png_chunks(path.read_bytes()) if kind != b"caBX"]))
    record = json.loads(output.provenance[0].to_json())
    record["recipe"]["call"]["num_inference_steps"] = 3
    edit_png(path, record=json.dumps(record))
    result = reproduce(path, pipe=ddim)
    assert (result.credentials.state, result.verdict) == ("unsigned", "different")
    code = main(["verify", str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert (
        code == 1
        and lines[0].startswith(f"{path}: different")
        and lines[1] == ("    credentials: unsigned (no Content Credentials)")
    )


def test_a_manifest_copied_into_another_image_is_tampered(ddim, tmp_path):
    out = ddim(num_inference_steps=2, seed=[7, 8], batch_size=2)
    signed = save_image(out.images[0], tmp_path / "signed.png", out.provenance[0])
    other = save_image(out.images[1], tmp_path / "other.png", out.provenance[1], sign=False)
    manifest = next(chunk for chunk in png_chunks(signed.read_bytes()) if chunk[0] == b"caBX")
    chunks = png_chunks(other.read_bytes())
    other.write_bytes(png_bytes([chunks[0], manifest, *chunks[1:]]))
    credentials = read_credentials(other)
    assert (credentials.state, credentials.failures) == ("tampered", ["assertion.dataHash.mismatch"])
    result = reproduce(other, pipe=ddim)
    assert result.verdict == "tampered" and not result.bitwise_equal


def test_inspect_shows_a_manifests_software_agent_escaped(output, tmp_path, capsys, monkeypatch):
    # The software agent is the signer's text: anyone's, and it must not reach the terminal as control characters.
    import diffusers_repro.files.signing as signing

    with monkeypatch.context() as patch:
        patch.setattr(signing, "_software_agent", lambda: {"name": "\x1b[2Jevil", "version": "1\n2"})
        path = save(output, tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "made by:         \\x1b[2Jevil 1\\n2 (c2pa.created, trainedAlgorithmicMedia)" in out.splitlines()


# --------------------------------------------------------------------------------------------------------------------
# IPTC DigitalSourceType in XMP, beside C2PA


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_every_format_carries_iptc_digital_source_type_in_xmp_that_pillow_reads(output, tmp_path, format):
    path = save(output, tmp_path, format)
    # Pillow's own XMP reader (through defusedxml), not ours: what exiftool-style readers see.
    with PIL.Image.open(path) as image:
        description = image.getxmp()["xmpmeta"]["RDF"]["Description"]
    assert description["DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    if format == "png":
        assert b"iTXtXML:com.adobe.xmp\x00" in path.read_bytes()
    # Written before signing: c2pa reads the file valid, and our reader reports the property.
    with c2pa.Reader(MIME[format], open(path, "rb")) as reader:
        assert reader.get_validation_state() == "Valid"
    assert read_image_file(path).digital_source_type == DIGITAL_SOURCE_TYPE
    assert file_credentials(read_image_file(path)).xmp_source_type == DIGITAL_SOURCE_TYPE


def test_the_xmp_of_a_png_is_covered_by_the_hard_binding(output, tmp_path):
    path = save(output, tmp_path)
    chunks = []
    for kind, body in png_chunks(path.read_bytes()):
        if kind == b"iTXt" and body.startswith(b"XML:com.adobe.xmp\x00"):
            body = body.replace(b"trainedAlgorithmicMedia", b"digitalCapture")
        chunks.append((kind, body))
    path.write_bytes(png_bytes(chunks))
    assert read_image_file(path).digital_source_type.endswith("/digitalCapture")
    credentials = read_credentials(path)
    assert credentials.state == "tampered" and "assertion.dataHash.mismatch" in credentials.failures


def test_inspect_and_verify_report_the_xmp_digital_source_type(output, ddim, tmp_path, capsys):
    path = save(output, tmp_path)
    assert main(["inspect", str(path)]) == 0
    line = "IPTC DigitalSourceType trainedAlgorithmicMedia (XMP)"
    assert f"ai disclosure:   {line}" in capsys.readouterr().out.splitlines()
    assert main(["verify", str(path)]) == 0
    assert f"    ai disclosure: {line}" in capsys.readouterr().out.splitlines()
    assert reproduce(path, pipe=ddim).to_dict()["credentials"]["xmp_source_type"] == DIGITAL_SOURCE_TYPE


def test_a_png_without_xmp_or_with_broken_xmp_has_no_source_type_and_still_reads(output, tmp_path):
    path = save(output, tmp_path, sign=False)
    chunks = [(kind, body) for kind, body in png_chunks(path.read_bytes())]
    broken = [
        (k, b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x" if b.startswith(b"XML:com.adobe.xmp\x00") else b)
        for k, b in chunks
    ]
    path.write_bytes(png_bytes(broken))
    assert (read_image_file(path).digital_source_type, read_image_file(path).provenance) == (
        None,
        output.provenance[0],
    )


# --------------------------------------------------------------------------------------------------------------------
# Edits: img2img and inpainting outputs open their input image as a parentOf ingredient


@pytest.fixture(scope="module")
def img2img_output():
    from tiny_components import build_tiny_img2img

    from diffusers_repro import reproducible

    plain = build_tiny_img2img()
    pipe = reproducible(type(plain))(**plain.components)
    pipe.set_progress_bar_config(disable=True)
    source = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return source, pipe("a fox", image=source, seed=3, strength=0.6, num_inference_steps=2)


def actions_of(path, format="png"):
    with c2pa.Reader(MIME[format], open(path, "rb")) as reader:
        state, manifest = reader.get_validation_state(), reader.get_active_manifest()
    assertions = {assertion["label"]: assertion["data"] for assertion in manifest["assertions"]}
    return state, manifest, assertions["c2pa.actions.v2"]["actions"]


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_an_img2img_output_is_an_edit_of_its_input_image(img2img_output, tmp_path, format):
    source, out = img2img_output
    (path,) = out.save(tmp_path, format=format)
    state, manifest, (opened, edited) = actions_of(path, format)
    assert state == "Valid"
    (parent,) = manifest["ingredients"]
    assert (parent["relationship"], parent["title"], parent["format"]) == ("parentOf", "input image", "image/png")
    assert opened["action"] == "c2pa.opened"
    assert [item["url"] for item in opened["parameters"]["ingredients"]] == [
        "self#jumbf=c2pa.assertions/c2pa.ingredient.v3"
    ]
    assert (edited["action"], edited["digitalSourceType"]) == ("c2pa.edited", EDITED_DIGITAL_SOURCE_TYPE)
    assert EDITED_DIGITAL_SOURCE_TYPE.endswith("/digitalsourcetype/compositeWithTrainedAlgorithmicMedia")
    # The ingredient assertion is the signer's too, and XMP says the same source type.
    claim = active_claim(path, format)
    assert "self#jumbf=c2pa.assertions/c2pa.ingredient.v3" in [entry["url"] for entry in claim["created_assertions"]]
    assert claim.get("gathered_assertions", []) == []
    with PIL.Image.open(path) as image:
        assert image.getxmp()["xmpmeta"]["RDF"]["Description"]["DigitalSourceType"] == EDITED_DIGITAL_SOURCE_TYPE
    credentials = read_credentials(path)
    assert (credentials.state, credentials.parent) == ("trusted", "'input image' (no credentials)")
    assert credentials.action == "c2pa.edited, compositeWithTrainedAlgorithmicMedia"


def test_an_edit_of_a_signed_file_carries_the_parents_manifest(output, img2img_output, tmp_path, capsys):
    source, out = img2img_output
    parent_path = save_image(source, tmp_path / "source.png", output.provenance[0])
    path = save_image(out.images[0], tmp_path / "edit.png", out.provenance[0], ingredient=parent_path)
    state, manifest, _ = actions_of(path)
    (parent,) = manifest["ingredients"]
    assert state == "Valid" and parent["title"] == "source.png" and parent["active_manifest"]
    with c2pa.Reader("image/png", open(path, "rb")) as reader:
        report = json.loads(reader.json())
    assert len(report["manifests"]) == 2  # the parent's own manifest travels in the store
    assert main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "edited from:     'source.png' (with its own Content Credentials)" in lines
    assert any(line.endswith("(c2pa.edited, compositeWithTrainedAlgorithmicMedia)") for line in lines)
    assert "ai disclosure:   IPTC DigitalSourceType compositeWithTrainedAlgorithmicMedia (XMP)" in lines


def test_text_to_image_stays_created_and_an_edit_needs_its_ingredient(output, img2img_output, tmp_path):
    state, manifest, (created,) = actions_of(save(output, tmp_path))
    assert (created["action"], created["digitalSourceType"], manifest.get("ingredients", [])) == (
        "c2pa.created",
        DIGITAL_SOURCE_TYPE,
        [],
    )
    source, out = img2img_output
    with pytest.raises(ValueError, match=r"^the record says the call edited an input image \(recipe.call.image"):
        save_image(out.images[0], tmp_path / "edit.png", out.provenance[0])
    with pytest.raises(ValueError, match=r"^ingredient is given but the record edited no input image"):
        save(output, tmp_path, ingredient=source)
    # Unsigned, an edit needs nothing more: its XMP still says what it is.
    path = save_image(out.images[0], tmp_path / "unsigned.png", out.provenance[0], sign=False)
    assert read_image_file(path).digital_source_type == EDITED_DIGITAL_SOURCE_TYPE
    assert not list(tmp_path.glob("edit.png"))


# --------------------------------------------------------------------------------------------------------------------
# Soft binding: the ISCC Content-Code Image (io.iscc.v0, ISO 24138)


def soft_binding_cbor(data: bytes) -> bytes:
    """The raw CBOR of the soft binding assertion, from its label's ``cbor`` box to the end of the map."""
    start = data.index(b"cbor", data.index(b"c2pa.soft-binding")) + 4
    return data[start : data.index(b"jumb", start)]


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_the_soft_binding_is_the_images_iscc_code(output, tmp_path, format):
    import base64

    import iscc_core

    from diffusers_repro.files.fingerprints import iscc_image_code

    path = save(output, tmp_path, format)
    with c2pa.Reader(MIME[format], open(path, "rb")) as reader:
        assert reader.get_validation_state() == "Valid"
        manifest = reader.get_active_manifest()
    (binding,) = [item["data"] for item in manifest["assertions"] if item["label"] == "c2pa.soft-binding"]
    expected = iscc_image_code(output.images[0])
    # pad is present and empty (an empty array, which c2pa's JSON shows as one).
    assert (binding["alg"], binding["blocks"][0]["scope"], binding["pad"]) == ("io.iscc.v0", {}, [])
    # The value is the ISCC's bytes (header and 256-bit body), which c2pa's JSON shows in base64.
    value = base64.b64decode(binding["blocks"][0]["value"])
    assert value == iscc_core.decode_base32(expected.removeprefix("ISCC:")) and len(value) == 34
    assert read_credentials(path).fingerprint == expected and expected.startswith("ISCC:EED")
    # c2pa-python writes them as CBOR arrays of bytes (c2pa-rs issue 2689: its JSON cannot make a byte string).
    raw = soft_binding_cbor(path.read_bytes())
    assert b"evalue\x98\x22" + bytes([0x18, value[0]]) in raw and b"cpad\x80" in raw


def test_a_soft_binding_needs_an_iscc_code(output):
    with pytest.raises(ValueError, match=r"^iscc_code must be an ISCC code string 'ISCC:...', got 'phash-16:00'$"):
        sign_image_bytes(b"", "png", init_identity()[0], "{}", "phash-16:00")


# --------------------------------------------------------------------------------------------------------------------
# RFC 3161 time-stamps, from a time-stamp authority the test starts on 127.0.0.1


@pytest.fixture(scope="module")
def local_tsa(tmp_path_factory):
    """A CA, a TSA it issued (serving on 127.0.0.1) and a function making signer files the CA issues."""
    import datetime

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from tsa_server import certificate, serve_tsa

    folder = tmp_path_factory.mktemp("tsa")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("test CA", ca_key, ca=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server, url, requests = serve_tsa(ca, ca_key)

    def signer_files(name, seconds):
        key = ec.generate_private_key(ec.SECP256R1())
        lifetime = datetime.timedelta(seconds=seconds)
        cert = certificate(name, key, (ca, ca_key), usage=ExtendedKeyUsageOID.EMAIL_PROTECTION, lifetime=lifetime)
        chain, key_file = folder / f"{name}.pem", folder / f"{name}-key.pem"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        encoding, private = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
        key_file.write_bytes(key.private_bytes(encoding, private, serialization.NoEncryption()))
        return chain, key_file

    yield {"url": url, "requests": requests, "ca": folder / "ca.pem", "signer_files": signer_files}
    server.shutdown()


def test_a_time_stamped_file_stays_valid_after_its_certificate_expires(output, ddim, local_tsa, tmp_path, capsys):
    import time

    from cryptography import x509

    chain, key = local_tsa["signer_files"]("short-lived", seconds=8)
    stamped = SigningIdentity.from_files(chain, key, tsa_url=local_tsa["url"])
    before = len(local_tsa["requests"])
    with_stamp = save(output, tmp_path, sign=stamped)
    without = save_image(output.images[0], tmp_path / "plain.png", output.provenance[0], sign=stamped.with_tsa(None))
    # The trial signature of from_files and the file each asked the local TSA once; the plain file did not.
    assert len(local_tsa["requests"]) == before + 1 and before >= 1
    trust = [local_tsa["ca"]]
    credentials = read_credentials(with_stamp, trust)
    today = time.strftime("%Y-%m-%dT", time.gmtime())
    assert credentials.state == "trusted" and credentials.timestamp.startswith(today)
    assert read_credentials(without, trust).timestamp is None
    # c2pa reads a certificate as expired about a second after its notAfter (whole seconds): wait two.
    expiry = x509.load_pem_x509_certificate(chain.read_bytes()).not_valid_after_utc.timestamp()
    time.sleep(max(0.0, expiry + 2 - time.time()))
    # The certificate has expired: the time-stamp proves the signature was made while it was valid.
    assert read_credentials(with_stamp, trust).state == "trusted"
    expired = read_credentials(without, trust)
    assert not expired.intact and "signingCredential.expired" in " ".join(expired.failures)
    assert main(["inspect", str(with_stamp), "--trust", str(trust[0])]) == 0
    assert f"time-stamp:      {credentials.timestamp} (RFC 3161)" in capsys.readouterr().out.splitlines()
    assert main(["verify", str(with_stamp), "--trust", str(trust[0])]) == 0
    assert f"    time-stamp: {credentials.timestamp} (RFC 3161)" in capsys.readouterr().out.splitlines()


def test_a_time_stamp_authority_that_fails_is_an_error_before_any_file_is_written(output, local_tsa, tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/tsa"
    chain, key = local_tsa["signer_files"]("signer", seconds=3600)
    with pytest.raises(CredentialsError, match=rf"^cannot sign with {chain} and the time-stamp authority {dead}: "):
        SigningIdentity.from_files(chain, key, tsa_url=dead)
    identity = SigningIdentity.from_files(chain, key).with_tsa(dead)
    with pytest.raises(CredentialsError, match=rf"and the time-stamp authority {dead}: "):
        save(output, tmp_path, sign=identity)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CredentialsError, match=r"^tsa_url must be the http:// or https:// URL of an RFC 3161 time-s"):
        identity.with_tsa("ftp://tsa.example")


def test_the_home_settings_name_this_machines_time_stamp_authority(output, local_tsa, tmp_path, monkeypatch):
    from diffusers_repro.files.identity import HOME_ENV, default_identity

    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert default_identity().tsa_url is None
    (tmp_path / "home" / "settings.json").write_text(json.dumps({"tsa_url": local_tsa["url"]}))
    assert default_identity().tsa_url == local_tsa["url"]
    assert read_credentials(save(output, tmp_path)).timestamp is not None
    (tmp_path / "home" / "settings.json").write_text(json.dumps({"tsa_url": 7}))
    with pytest.raises(CredentialsError, match=r"settings.json: tsa_url must be the http:// or https:// URL"):
        default_identity()
