"""JPEG and WebP files that carry their recipe: the record in XMP, the A1111 infotext in EXIF ``UserComment``.

A JPEG or WebP written by `diffusers_repro.save_image` holds:

- an XMP packet with two properties in the ``urn:diffusers-repro:xmp:1`` namespace: ``record`` (the provenance
  record, exactly the JSON a PNG holds in its ``diffusers-repro`` chunk) and ``pixels`` (the pixel record: the
  digest of the 8-bit image before encoding, its fingerprint, format and quality);
- EXIF ``UserComment`` with the infotext, written as the Stable Diffusion web UI (A1111) writes it
  (``piexif.helper.UserComment.dump(text, encoding="unicode")``), so the tools people use show prompt and seed;
- the signed C2PA manifest, when signed (see `diffusers_repro.credentials`).

The files are lossy: their pixels are not the pipeline's output. "Bitwise" for them means the regenerated output
equals the recorded output digest and the Content Credentials vouch that the file is the one written.
"""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import PIL.Image

from .provenance import Provenance, ProvenanceError, image_digest

__all__ = [
    "DEFAULT_QUALITY",
    "LOSSY_FORMATS",
    "MAX_XMP_BYTES",
    "XMP_NAMESPACE",
    "decode_lossy",
    "encode_lossy",
    "read_lossy_image",
    "read_xmp_properties",
    "reencoded_pixels",
    "sniff_format",
]

LOSSY_FORMATS = ("jpeg", "webp")
"""The lossy formats `save_image` writes."""

DEFAULT_QUALITY = 95
"""Encoder quality used when none is given (1-100)."""

XMP_NAMESPACE = "urn:diffusers-repro:xmp:1"
"""XML namespace of the ``record`` and ``pixels`` XMP properties."""

MAX_XMP_BYTES = 4 << 20
"""Longest XMP packet read: room for the longest record the schema reads (1 MiB of JSON) with XML escaping."""

# A JPEG APP1 segment holds at most 65533 bytes, of which 29 name the XMP namespace.
_MAX_JPEG_XMP = 65504
_PIL_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}
_MAX_PIXEL_RECORD_CHARS = 4096


def sniff_format(path: str | os.PathLike) -> str | None:
    """``"jpeg"`` or ``"webp"`` when the file starts like one, else `None` (PNG, other, missing or a folder)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return None
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def _xmp_packet(record_json: str, pixels_json: str) -> bytes:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:dr="{XMP_NAMESPACE}">'
        f"<dr:record>{escape(record_json)}</dr:record><dr:pixels>{escape(pixels_json)}</dr:pixels>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def encode_lossy(
    pil_image: PIL.Image.Image, format: str, quality: int, record_json: str, pixels: dict[str, Any], infotext: str
) -> bytes:
    """Encodes ``pil_image`` as JPEG or WebP with the record in XMP and the infotext in EXIF ``UserComment``.

    Raises:
        `ValueError`: for an image JPEG cannot hold (with an alpha channel), or a record too long for JPEG's XMP
            segment (64 KB).

    Example:

    ```py
    >>> from diffusers_repro.exif import encode_lossy
    >>> data = encode_lossy(image, "jpeg", 95, record.to_json(), {}, "a fox")  # doctest: +SKIP
    ```
    """
    import piexif
    import piexif.helper

    if format == "jpeg" and pil_image.mode not in ("RGB", "L"):
        raise ValueError(
            f"a JPEG cannot hold an image of mode {pil_image.mode!r} (alpha channel); save it with format='png' or "
            "format='webp'"
        )
    xmp = _xmp_packet(record_json, json.dumps(pixels, sort_keys=True))
    if format == "jpeg" and len(xmp) > _MAX_JPEG_XMP:
        raise ValueError(
            f"the provenance record is {len(record_json)} bytes, too long for a JPEG's XMP segment (64 KB); save it "
            "with format='png' or format='webp'"
        )
    comment = piexif.helper.UserComment.dump(infotext, encoding="unicode")
    exif = piexif.dump({"0th": {}, "Exif": {piexif.ExifIFD.UserComment: comment}, "GPS": {}, "1st": {}})
    buffer = io.BytesIO()
    pil_image.save(buffer, format=_PIL_FORMATS[format], quality=quality, exif=exif, xmp=xmp)
    return buffer.getvalue()


def _xmp_properties(path: Path, xmp: Any) -> dict[str, str]:
    from .files import ImageProvenanceError

    if isinstance(xmp, bytes):
        if len(xmp) > MAX_XMP_BYTES:
            raise ImageProvenanceError(f"{path}: its XMP packet is longer than {MAX_XMP_BYTES} bytes", path)
        xmp = xmp.decode("utf-8", errors="replace")
    if not isinstance(xmp, str) or not xmp:
        return {}
    if len(xmp) > MAX_XMP_BYTES:
        raise ImageProvenanceError(f"{path}: its XMP packet is longer than {MAX_XMP_BYTES} bytes", path)
    try:
        root = ElementTree.fromstring(xmp)
    except ElementTree.ParseError as error:
        raise ImageProvenanceError(f"{path}: its XMP packet is not well-formed XML: {error}", path) from None
    properties = {}
    for name in ("record", "pixels"):
        element = root.find(f".//{{{XMP_NAMESPACE}}}{name}")
        if element is not None and element.text is not None:
            properties[name] = element.text
    return properties


def _infotext(exif: Any) -> str | None:
    import piexif
    import piexif.helper

    if not isinstance(exif, bytes) or not exif:
        return None
    try:
        comment = piexif.load(exif).get("Exif", {}).get(piexif.ExifIFD.UserComment)
        return piexif.helper.UserComment.load(comment) if isinstance(comment, bytes) else None
    except Exception:  # noqa: BLE001 - piexif parses by hand: struct, index and decode errors alike
        return None


def decode_lossy(path: Path, format: str) -> tuple[dict[str, Any], PIL.Image.Image]:
    """A JPEG or WebP file's info (XMP, EXIF) and pixels; its size is checked before any pixel is decoded.

    Raises:
        `ImageProvenanceError`: a damaged file, or one past `diffusers_repro.files.MAX_FILE_PIXELS`.
    """
    from .files import MAX_FILE_PIXELS, ImageProvenanceError

    try:
        image = PIL.Image.open(path, formats=[_PIL_FORMATS[format]])
    except Exception as error:  # noqa: BLE001 - any file is hostile: PIL's every failure (bombs too) is a damaged file
        raise ImageProvenanceError(f"{path} is a damaged {format.upper()} file: {_one_line(error)}", path) from None
    with image:
        width, height = image.size
        if width * height > MAX_FILE_PIXELS:
            raise ImageProvenanceError(
                f"{path} is {width}x{height} pixels, more than the {MAX_FILE_PIXELS} pixels diffusers-repro reads",
                path,
            )
        try:
            image.load()
            return dict(image.info), image.copy()
        except Exception as error:  # noqa: BLE001 - truncated data, decoder and memory errors alike
            raise ImageProvenanceError(
                f"{path} is a damaged {format.upper()} file: {_one_line(error)}", path
            ) from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())[:200]
    return text or type(error).__name__


def reencoded_pixels(image: PIL.Image.Image, format: str, quality: int) -> Any:
    """The pixels a reader gets back from ``image`` encoded as ``format`` at ``quality``, as `save_image` encodes it.

    Pillow's encoders are deterministic for one Pillow build, so a lossy file whose pixels equal these holds exactly
    the picture its record makes, whoever signed it.

    Example:

    ```py
    >>> import PIL.Image
    >>> from diffusers_repro.exif import reencoded_pixels
    >>> reencoded_pixels(PIL.Image.new("RGB", (8, 8)), "jpeg", 95).shape
    (8, 8, 3)
    ```
    """
    import numpy as np

    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_FORMATS[format], quality=quality)
    buffer.seek(0)
    with PIL.Image.open(buffer, formats=[_PIL_FORMATS[format]]) as decoded:
        return np.asarray(decoded).copy()


def read_xmp_properties(path: str | os.PathLike) -> dict[str, str]:
    """The ``record`` and ``pixels`` XMP properties of a JPEG or WebP as they are, unparsed: what a file that fails
    the schema carries.

    Raises the same errors as `read_lossy_image` for a file that cannot be decoded or an XMP packet that is not XML.

    Example:

    ```py
    >>> from diffusers_repro.exif import read_xmp_properties
    >>> sorted(read_xmp_properties("outputs/00000-seed42.jpg"))  # doctest: +SKIP
    ['pixels', 'record']
    ```
    """
    path = Path(path)
    info, _ = decode_lossy(path, sniff_format(path) or "jpeg")
    return _xmp_properties(path, info.get("xmp"))


def read_lossy_image(path: str | os.PathLike) -> Any:
    """Reads a JPEG or WebP written by `save_image`: record, pixels, pixel record and infotext.

    Returns:
        `diffusers_repro.files.ProvenanceImage` with ``format`` ``"jpeg"`` or ``"webp"``; ``stored_pixel_digest``
        is `None` (a lossy file's pixels are not the ones digested), ``source_pixel_digest`` is the digest of the
        8-bit image before encoding.

    Raises:
        `ImageProvenanceError` (a `ValueError`): a damaged file, no record, a record that does not parse. The
            message names the file.

    Example:

    ```py
    >>> from diffusers_repro.exif import read_lossy_image
    >>> read_lossy_image("outputs/00000-seed42.jpg").provenance.seed  # doctest: +SKIP
    42
    ```
    """
    from .files import INFOTEXT_KEY, PROVENANCE_KEY, ImageProvenanceError, ProvenanceImage

    path = Path(path)
    format = sniff_format(path)
    info, pixels = decode_lossy(path, format)
    properties = _xmp_properties(path, info.get("xmp"))
    infotext = _infotext(info.get("exif"))
    if "record" not in properties:
        hint = f"; it has a {INFOTEXT_KEY!r} infotext, which is not enough to reproduce it" if infotext else ""
        raise ImageProvenanceError(
            f"{path} has no {PROVENANCE_KEY!r} record in its XMP: it was not saved by diffusers-repro, or its "
            f"metadata was stripped (image editors and upload sites often do){hint}",
            path,
        )
    try:
        provenance = Provenance.from_json(properties["record"], source=str(path))
    except ProvenanceError as error:
        raise ImageProvenanceError(str(error), path) from None
    source_digest = quality = None
    if "pixels" in properties:
        try:
            if len(properties["pixels"]) > _MAX_PIXEL_RECORD_CHARS:
                raise ValueError("too long")
            pixel_record = json.loads(properties["pixels"])
        except (ValueError, RecursionError):
            raise ImageProvenanceError(f"{path}: the XMP pixel record is not a JSON object", path) from None
        if isinstance(pixel_record, dict):
            source_digest = pixel_record.get("source_pixel_digest")
            quality = pixel_record.get("quality")
    try:
        digest = image_digest(pixels)
    except Exception as error:  # noqa: BLE001 - an odd mode numpy cannot take
        raise ImageProvenanceError(f"{path} is a damaged {format.upper()} file: {_one_line(error)}", path) from None
    return ProvenanceImage(
        path=path,
        provenance=provenance,
        image=pixels,
        pixel_digest=digest,
        stored_pixel_digest=None,
        infotext=infotext,
        format=format or "jpeg",
        source_pixel_digest=source_digest if isinstance(source_digest, str) else None,
        quality=quality
        if isinstance(quality, int) and not isinstance(quality, bool) and 1 <= quality <= 100
        else None,
    )
