"""JPEG and WebP files that carry their recipe: the record in XMP, the A1111 infotext in EXIF ``UserComment``.

A JPEG or WebP written by `diffusers_repro.save_image` holds:

- an XMP packet with IPTC's ``Iptc4xmpExt:DigitalSourceType`` (``trainedAlgorithmicMedia``) and two properties in
  the ``urn:diffusers-repro:xmp:1`` namespace: ``record`` (the provenance record, exactly the JSON a PNG holds in its
  ``diffusers-repro`` chunk) and ``pixels`` (the pixel record: the digest of the 8-bit image before encoding, its
  fingerprint, format and quality);
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
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import PIL.Image

from .imagefile import (
    DIGITAL_SOURCE_TYPE,
    IPTC_EXT_NAMESPACE,
    MAX_XMP_BYTES,
    XMP_NAMESPACE,
    ImageFile,
    ImageProvenanceError,
    read_image,
    sniff_bytes,
)

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
    "xmp_packet",
]

LOSSY_FORMATS = ("jpeg", "webp")
"""The lossy formats `save_image` writes."""

DEFAULT_QUALITY = 95
"""Encoder quality used when none is given (1-100)."""

# A JPEG APP1 segment holds at most 65533 bytes, of which 29 name the XMP namespace.
_MAX_JPEG_XMP = 65504
_PIL_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}


def sniff_format(path: str | os.PathLike) -> str | None:
    """``"jpeg"`` or ``"webp"`` when the file starts like one, else `None` (PNG, other, missing or a folder).

    Reads the file's first bytes only; the readers themselves never call it (they sniff the bytes they read once).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return None
    format = sniff_bytes(head)
    return format if format in LOSSY_FORMATS else None


def xmp_packet(digital_source_type: str = DIGITAL_SOURCE_TYPE, properties: dict[str, str] | None = None) -> bytes:
    """An XMP packet with IPTC's ``Iptc4xmpExt:DigitalSourceType`` and our ``record``/``pixels`` ``properties``.

    IPTC asks generators to write the digital source type in XMP beside C2PA: photo libraries, news systems and social
    platforms read XMP, not C2PA. It is written before signing, so the manifest's hard binding covers it.

    Example:

    ```py
    >>> from diffusers_repro.exif import xmp_packet
    >>> b"trainedAlgorithmicMedia</Iptc4xmpExt:DigitalSourceType>" in xmp_packet()
    True
    ```
    """
    fields = "".join(f"<dr:{name}>{escape(text)}</dr:{name}>" for name, text in (properties or {}).items())
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC_EXT_NAMESPACE}" xmlns:dr="{XMP_NAMESPACE}">'
        f"<Iptc4xmpExt:DigitalSourceType>{escape(digital_source_type)}</Iptc4xmpExt:DigitalSourceType>{fields}"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def _xmp_packet(record_json: str, pixels_json: str, digital_source_type: str = DIGITAL_SOURCE_TYPE) -> bytes:
    return xmp_packet(digital_source_type, {"record": record_json, "pixels": pixels_json})


def encode_lossy(
    pil_image: PIL.Image.Image,
    format: str,
    quality: int,
    record_json: str,
    pixels: dict[str, Any],
    infotext: str,
    digital_source_type: str = DIGITAL_SOURCE_TYPE,
) -> bytes:
    """Encodes ``pil_image`` as JPEG or WebP with the record and IPTC's digital source type in XMP (`xmp_packet`) and
    the infotext in EXIF ``UserComment``.

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
    xmp = _xmp_packet(record_json, json.dumps(pixels, sort_keys=True), digital_source_type)
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


def decode_lossy(path: Path, format: str) -> tuple[dict[str, Any], PIL.Image.Image]:
    """A JPEG or WebP file's info (XMP, EXIF) and pixels, read once through `diffusers_repro.imagefile.read_image`.

    Raises:
        `ImageProvenanceError`: a damaged file, one of another format, or one past the read limits.
    """
    image_file = read_image(path)
    if image_file.format != format:
        raise ImageProvenanceError(f"{path} is a {image_file.format.upper()} file, not a {format.upper()} file", path)
    return dict(image_file.image.info), image_file.image


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
    return dict(read_image(path).metadata)


def read_lossy_image(path: str | os.PathLike) -> ImageFile:
    """Reads a JPEG or WebP written by `save_image`: record, pixels, pixel record and infotext.

    Returns:
        `diffusers_repro.imagefile.ImageFile` with ``format`` ``"jpeg"`` or ``"webp"``; ``stored_pixel_digest``
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
    return read_image(path).require_record()
