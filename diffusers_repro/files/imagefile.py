"""The one reading edge: an image file's bytes are read once, bounded, and parsed once into an `ImageFile`.

Every command and API that reads an image (``verify``, ``reproduce``, ``inspect``, ``diff``, ``find``, the sibling
search of a whole-batch replay) goes through `read_image`:

1. `read_regular_file` opens the path once, refuses what is not a regular file (a folder, a named pipe, a device
   such as ``/dev/zero`` behind a link) and a file larger than the byte cap (`MAX_FILE_BYTES`, checked on the open
   file before anything is read), and reads the bytes;
2. `parse_image_bytes` parses those bytes, from memory, into one `ImageFile`: the format, the decoded pixels (the
   header's size is checked against `MAX_FILE_PIXELS` before any pixel is decoded), the raw metadata (PNG text
   chunks, or the XMP properties of a JPEG/WebP), the infotext, the raw XMP packet, the provenance record checked
   by the schema (or the reason it is refused), the pixel record and the digest of the pixels as they are now.

Later steps work from that object only: the Content Credentials are validated over ``ImageFile.data`` (the same
bytes, see `diffusers_repro.credentials.file_credentials`), so a file swapped on disk between two steps cannot give
one step its pixels and another its signature. Reading never touches the network.

This module imports neither torch nor diffusers: ``inspect`` of a file starts in a few tenths of a second.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import stat
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import PIL.Image

from ..records import Provenance, ProvenanceError, image_digest

__all__ = [
    "INFOTEXT_KEY",
    "MAX_FILE_BYTES",
    "MAX_FILE_PIXELS",
    "MAX_XMP_BYTES",
    "PIXELS_KEY",
    "PROVENANCE_KEY",
    "DIGITAL_SOURCE_TYPE",
    "EDITED_DIGITAL_SOURCE_TYPE",
    "IPTC_EXT_NAMESPACE",
    "XMP_CHUNK",
    "XMP_NAMESPACE",
    "ImageFile",
    "ImageProvenanceError",
    "parse_image_bytes",
    "read_image",
    "read_image_file",
    "read_pixels",
    "read_provenance",
    "read_text_chunks",
    "read_regular_file",
    "sniff_bytes",
]

PROVENANCE_KEY = "diffusers-repro"
"""PNG text chunk key of the full provenance record (JSON)."""

PIXELS_KEY = "diffusers-repro-pixels"
"""PNG text chunk key of the pixel record (JSON with ``pixel_digest``)."""

INFOTEXT_KEY = "parameters"
"""PNG text chunk key that Stable Diffusion web UIs read their generation parameters from."""

XMP_NAMESPACE = "urn:diffusers-repro:xmp:1"
"""XML namespace of the ``record`` and ``pixels`` XMP properties of a JPEG or WebP."""

XMP_CHUNK = "XML:com.adobe.xmp"
"""PNG iTXt chunk key of an XMP packet (the key Adobe's XMP specification gives PNG)."""

IPTC_EXT_NAMESPACE = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
"""XML namespace of IPTC's ``Iptc4xmpExt:DigitalSourceType`` XMP property (the ``Iptc4xmpExt`` prefix)."""

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
"""IPTC digital source type of an image made by a trained generative model."""

EDITED_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
"""IPTC digital source type of an existing image edited by a trained generative model (img2img, inpainting): IPTC's
term for "trained algorithmic media composited with some other media, such as inpainting or outpainting"."""

MAX_FILE_BYTES = 256 << 20
"""Largest image file read (256 MiB: an 8192 x 8192 RGBA PNG of noise is about this size); a larger one is refused
before any byte is read. Lifted with ``ReplayLimits(max_file_bytes=...)``, ``max_bytes=`` or ``--max-file-bytes``."""

MAX_FILE_PIXELS = 8192 * 8192
"""Most pixels a read image may have (a 8192 x 8192 image decodes to 192 MiB as RGB); larger files are refused
before their pixels are decoded."""

MAX_XMP_BYTES = 4 << 20
"""Longest XMP packet read: room for the longest record the schema reads (1 MiB of JSON) with XML escaping."""

_MAX_PIXEL_RECORD_CHARS = 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_RDF_RESOURCE = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"
_MAX_SOURCE_TYPE_CHARS = 256
_STRIPPED = (
    "it was not saved by diffusers-repro, or its metadata was stripped (image editors and upload sites often do)"
)


class ImageProvenanceError(ProvenanceError):
    """An image file does not carry a readable provenance record: not a PNG, no record chunk, broken JSON, ...

    A `ValueError` subclass (through `ProvenanceError`). The message names the file and the problem; ``path`` holds
    the file.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = Path(path) if path is not None else None


# --------------------------------------------------------------------------------------------------------------------
# Bytes


def _check_cap(max_bytes: Any) -> int:
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int (bytes), got {max_bytes!r}")
    return max_bytes


def read_regular_file(
    path: str | os.PathLike, max_bytes: int | None = None, what: str = "PNG, JPEG or WebP file"
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, from one open.

    The size is checked on the open file before anything is read, and the read stops past the cap (a file that grows
    while it is read is refused too). A folder, a named pipe, a device or a socket is refused without reading: a
    named pipe would wait forever and ``/dev/zero`` never ends.

    Args:
        path (`str` or `os.PathLike`): The file (a link is followed to what it names).
        max_bytes (`int`, *optional*, defaults to `MAX_FILE_BYTES`): The cap.
        what (`str`, *optional*): What the file is, for messages.

    Raises:
        `FileNotFoundError`: no such file.
        `ImageProvenanceError` (a `ValueError`): not a regular file, or larger than the cap.

    Example:

    ```py
    >>> from diffusers_repro.imagefile import read_regular_file
    >>> len(read_regular_file("outputs/00000-seed42.png")) > 0  # doctest: +SKIP
    True
    ```
    """
    cap = _check_cap(max_bytes)
    # O_NONBLOCK: opening a named pipe must not wait for a writer (it is refused just below); no effect on files.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise ImageProvenanceError(f"{path} is a folder, expected a {what}", path) from None
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise ImageProvenanceError(f"{path} is a folder, expected a {what}", path)
        if not stat.S_ISREG(status.st_mode):
            raise ImageProvenanceError(
                f"{path} is not a regular file (a named pipe, a device or a socket); diffusers-repro reads regular "
                "files only",
                path,
            )
        if status.st_size > cap:
            raise ImageProvenanceError(_too_large(path, status.st_size, cap, what), path)
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, cap + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise ImageProvenanceError(_too_large(path, total, cap, what), path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(path: Any, size: int, cap: int, what: str) -> str:
    return (
        f"{path} is {size} bytes, more than the {cap} bytes diffusers-repro reads of an image; lift the cap with "
        "--max-file-bytes (ReplayLimits(max_file_bytes=...) in Python) for a file you expect to be this large"
        if what.endswith("WebP file")
        else f"{path} is {size} bytes, more than the {cap} bytes diffusers-repro reads of a {what}"
    )


def sniff_bytes(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"`` or ``"webp"`` from a file's first bytes, else `None`."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


# --------------------------------------------------------------------------------------------------------------------
# The parsed file


@dataclasses.dataclass(eq=False)
class ImageFile:
    """An image file read once: its bytes, pixels and metadata, parsed once.

    Args:
        path (`pathlib.Path` or `None`): The file (`None` for bytes that came from elsewhere).
        data (`bytes`): The file's bytes, exactly as read: the Content Credentials are validated over these.
        format (`str`): ``"png"``, ``"jpeg"`` or ``"webp"``.
        image (`PIL.Image.Image`): The decoded pixels.
        metadata (`dict[str, str]`): The raw metadata: a PNG's text chunks, or a JPEG/WebP's ``record`` and ``pixels``
            XMP properties; unparsed, for showing a file whose record is refused.
        infotext (`str` or `None`): The A1111 infotext (``parameters`` chunk, or EXIF ``UserComment``).
        xmp (`str` or `None`): The raw XMP packet.
        provenance (`Provenance` or `None`): The record, checked by the schema; `None` when there is none or it is
            refused (``record_error`` says why).
        record_error (`ImageProvenanceError` or `None`): Why the file has no usable record.
        pixel_record (`dict` or `None`): The pixel record written with the file (digest, fingerprint, quality, ...).
        pixel_digest (`str`): The digest of the pixels as they are in the file now.
        pixel_record_error (`ImageProvenanceError` or `None`): Why the pixel record written with the file is refused.
        digital_source_type (`str` or `None`): The IPTC ``Iptc4xmpExt:DigitalSourceType`` of the file's XMP (what
            photo libraries and news systems read to tell AI-made images), as written: a claim, not a check.
    """

    path: Path | None
    data: bytes = dataclasses.field(repr=False)
    format: str
    image: PIL.Image.Image = dataclasses.field(repr=False)
    metadata: dict[str, str] = dataclasses.field(repr=False)
    infotext: str | None = dataclasses.field(repr=False)
    xmp: str | None = dataclasses.field(repr=False)
    provenance: Provenance | None = dataclasses.field(repr=False)
    record_error: ImageProvenanceError | None = dataclasses.field(repr=False)
    pixel_record: dict[str, Any] | None = dataclasses.field(repr=False)
    pixel_digest: str = dataclasses.field(repr=False)
    pixel_record_error: ImageProvenanceError | None = dataclasses.field(default=None, repr=False)
    digital_source_type: str | None = dataclasses.field(default=None, repr=False)
    # Content Credentials validated over `data`, per trust list (see credentials.file_credentials).
    credentials_cache: dict[Any, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def pixels(self) -> Any:
        """The pixels as a ``uint8`` array ``(H, W, C)`` (``(H, W)`` for grayscale)."""
        import numpy as np

        return np.asarray(self.image)

    @property
    def stored_pixel_digest(self) -> str | None:
        """The pixel digest written with a PNG (`None` for a lossy file, whose pixels are not the ones digested)."""
        if self.format != "png" or self.pixel_record is None:
            return None
        return self.pixel_record.get("pixel_digest")

    @property
    def source_pixel_digest(self) -> str | None:
        """For a lossy file, the digest of the 8-bit image before encoding."""
        value = (self.pixel_record or {}).get("source_pixel_digest") if self.format != "png" else None
        return value if isinstance(value, str) else None

    @property
    def quality(self) -> int | None:
        """For a lossy file, the encoder quality its pixel record names."""
        value = (self.pixel_record or {}).get("quality") if self.format != "png" else None
        return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100 else None

    @property
    def pixels_intact(self) -> bool | None:
        """Whether the pixels still match the digest written with them (`None` when none was written)."""
        stored = self.stored_pixel_digest
        return None if stored is None else self.pixel_digest == stored

    @property
    def fingerprint(self) -> str | None:
        """The perceptual fingerprint the pixel record states (written by the file's maker: a claim, not a check)."""
        value = (self.pixel_record or {}).get("fingerprint")
        return value if isinstance(value, str) else None

    def require_record(self) -> ImageFile:
        """This file, once it is known to carry a record that passed the schema and a readable pixel record; else
        the error that says why not."""
        if self.record_error is not None:
            raise self.record_error
        if self.pixel_record_error is not None:
            raise self.pixel_record_error
        return self


"""The name `read_image_file` returned before the reading edge: an `ImageFile` that carries a record."""


def read_image(path: str | os.PathLike, max_bytes: int | None = None) -> ImageFile:
    """Reads an image file once (a regular file of at most ``max_bytes``) and parses it into an `ImageFile`.

    A file without a usable record is still read (``provenance`` is `None` and ``record_error`` says why); use
    `ImageFile.require_record` to refuse it.

    Raises:
        `FileNotFoundError`: no such file.
        `ImageProvenanceError` (a `ValueError`): not a regular file, too large, not a PNG/JPEG/WebP, damaged, or
            more pixels than `MAX_FILE_PIXELS`.

    Example:

    ```py
    >>> from diffusers_repro.imagefile import read_image
    >>> read_image("outputs/00000-seed42.png").provenance.seed  # doctest: +SKIP
    42
    ```
    """
    path = Path(path)
    return parse_image_bytes(read_regular_file(path, max_bytes), path)


def parse_image_bytes(data: bytes, path: str | os.PathLike | None = None) -> ImageFile:
    """Parses an image file's bytes (PNG, JPEG or WebP) into an `ImageFile`, from memory."""
    where = Path(path) if path is not None else Path("<bytes>")
    format = sniff_bytes(data)
    if format is None:
        what = "it is empty" if not data else f"it starts with {data[:4]!r}"
        raise ImageProvenanceError(
            f"{where} is not a PNG, JPEG or WebP file ({what}); diffusers-repro reads PNG, JPEG and WebP files", path
        )
    image = _decode(data, format, where)
    if format == "png":
        metadata = _text_chunks(image)
        infotext, xmp = metadata.get(INFOTEXT_KEY), metadata.get(XMP_CHUNK)
        record_text, pixels_text = metadata.get(PROVENANCE_KEY), metadata.get(PIXELS_KEY)
        # A PNG's record is in its own chunks: XMP another tool wrote badly costs its source type, not the file.
        xmp_root = _xmp_root(xmp, where, strict=False)
    else:
        xmp = _xmp_text(image.info.get("xmp"), where)
        xmp_root = _xmp_root(xmp, where, strict=True)
        metadata = _xmp_properties(xmp_root)
        infotext = _exif_infotext(image.info.get("exif"))
        record_text, pixels_text = metadata.get("record"), metadata.get("pixels")
    provenance, record_error = _parse_record(record_text, where, format, infotext is not None)
    pixel_record, pixel_error = _parse_pixel_record(pixels_text, where, format)
    try:
        digest = image_digest(image)
    except Exception as error:  # noqa: BLE001 - an odd mode or palette numpy cannot take
        raise ImageProvenanceError(f"{where} is a damaged {format.upper()} file: {_one_line(error)}", path) from None
    return ImageFile(
        path=Path(path) if path is not None else None,
        data=data,
        format=format,
        image=image,
        metadata=metadata,
        infotext=infotext,
        xmp=xmp,
        provenance=provenance,
        record_error=record_error,
        pixel_record=pixel_record,
        pixel_digest=digest,
        pixel_record_error=pixel_error,
        digital_source_type=_digital_source_type(xmp_root),
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())[:200]
    return text or type(error).__name__


def _decode(data: bytes, format: str, where: Path) -> PIL.Image.Image:
    damaged = f"{where} is a damaged {format.upper()} file"
    try:
        image = PIL.Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[format]])
    except Exception as error:  # noqa: BLE001 - any file is hostile: PIL's every failure (bombs too) is a damaged file
        raise ImageProvenanceError(f"{damaged}: {_one_line(error)}", where) from None
    width, height = image.size
    if width * height > MAX_FILE_PIXELS:
        raise ImageProvenanceError(
            f"{where} is {width}x{height} pixels, more than the {MAX_FILE_PIXELS} pixels diffusers-repro reads", where
        )
    try:
        # A PNG's text chunks may follow the pixel data: the whole image is loaded before they are looked at.
        image.load()
    except Exception as error:  # noqa: BLE001 - zlib, struct, truncated data, decoder and memory errors alike
        raise ImageProvenanceError(f"{damaged}: {_one_line(error)}", where) from None
    return image


def _text_chunks(image: PIL.Image.Image) -> dict[str, str]:
    # PIL caps each text chunk (ImageFile.SAFEBLOCK after decompression) and their sum (MAX_TEXT_MEMORY); keys and
    # values are str, but a key may repeat or be latin-1 junk: only str -> str pairs are kept.
    try:
        chunks = dict(getattr(image, "text", None) or {})
    except Exception:  # noqa: BLE001 - a chunk PIL cannot decode is a damaged file
        return {}
    return {key: value for key, value in chunks.items() if isinstance(key, str) and isinstance(value, str)}


def _xmp_text(xmp: Any, where: Path) -> str | None:
    if isinstance(xmp, bytes):
        if len(xmp) > MAX_XMP_BYTES:
            raise ImageProvenanceError(f"{where}: its XMP packet is longer than {MAX_XMP_BYTES} bytes", where)
        xmp = xmp.decode("utf-8", errors="replace")
    if not isinstance(xmp, str) or not xmp:
        return None
    if len(xmp) > MAX_XMP_BYTES:
        raise ImageProvenanceError(f"{where}: its XMP packet is longer than {MAX_XMP_BYTES} bytes", where)
    return xmp


def _xmp_root(xmp: str | None, where: Path, strict: bool) -> ElementTree.Element | None:
    if xmp is None:
        return None
    try:
        # ElementTree expands no external entity and fetches nothing; the packet is capped above.
        return ElementTree.fromstring(xmp)
    except ElementTree.ParseError as error:
        if not strict:
            return None
        raise ImageProvenanceError(f"{where}: its XMP packet is not well-formed XML: {error}", where) from None


def _xmp_properties(root: ElementTree.Element | None) -> dict[str, str]:
    if root is None:
        return {}
    properties = {}
    for name in ("record", "pixels"):
        element = root.find(f".//{{{XMP_NAMESPACE}}}{name}")
        if element is not None and element.text is not None:
            properties[name] = element.text
    return properties


def _digital_source_type(root: ElementTree.Element | None) -> str | None:
    """``Iptc4xmpExt:DigitalSourceType`` as element text or as an ``rdf:resource`` (both are XMP for a URI)."""
    element = root.find(f".//{{{IPTC_EXT_NAMESPACE}}}DigitalSourceType") if root is not None else None
    if element is None:
        return None
    value = (element.text or "").strip() or element.get(_RDF_RESOURCE, "").strip()
    return value if 0 < len(value) <= _MAX_SOURCE_TYPE_CHARS else None


def _exif_infotext(exif: Any) -> str | None:
    import piexif
    import piexif.helper

    if not isinstance(exif, bytes) or not exif:
        return None
    try:
        comment = piexif.load(exif).get("Exif", {}).get(piexif.ExifIFD.UserComment)
        return piexif.helper.UserComment.load(comment) if isinstance(comment, bytes) else None
    except Exception:  # noqa: BLE001 - piexif parses by hand: struct, index and decode errors alike
        return None


def _parse_record(
    text: str | None, where: Path, format: str, has_infotext: bool
) -> tuple[Provenance | None, ImageProvenanceError | None]:
    if text is None:
        hint = (
            f"; it has a {INFOTEXT_KEY!r} infotext from another tool, which is not enough to reproduce it"
            if has_infotext
            else ""
        )
        container = f"{PROVENANCE_KEY!r} text chunk" if format == "png" else f"{PROVENANCE_KEY!r} record in its XMP"
        return None, ImageProvenanceError(f"{where} has no {container}: {_STRIPPED}{hint}", where)
    try:
        return Provenance.from_json(text, source=str(where)), None
    except ProvenanceError as error:
        return None, ImageProvenanceError(str(error), where)


def _parse_pixel_record(
    text: str | None, where: Path, format: str
) -> tuple[dict[str, Any] | None, ImageProvenanceError | None]:
    if text is None:
        return None, None
    try:
        if len(text) > _MAX_PIXEL_RECORD_CHARS:
            raise ValueError("too long")
        record = json.loads(text)
    except (ValueError, RecursionError):
        record = None
    if format != "png":
        if record is None:
            return None, ImageProvenanceError(f"{where}: the XMP pixel record is not a JSON object", where)
        return (record if isinstance(record, dict) else None), None
    digest = record.get("pixel_digest") if isinstance(record, dict) else None
    if digest is None:
        return None, ImageProvenanceError(
            f"{where}: the {PIXELS_KEY!r} text chunk is not a JSON object with a pixel_digest", where
        )
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return None, ImageProvenanceError(
            f"{where}: pixel_digest in the {PIXELS_KEY!r} chunk must be a string 'sha256:' followed by 64 hex digits",
            where,
        )
    return record, None


# ----------------------------------------------------------------------------------------------------------------
# The public readers: each a view of one ImageFile, read once.


def read_provenance(path: str | os.PathLike, *, max_bytes: int | None = None) -> Provenance:
    """Reads the provenance record from a PNG, JPEG or WebP written by `save_image`.

    Args:
        path (`str` or `os.PathLike`): The file.
        max_bytes (`int`, *optional*, defaults to `MAX_FILE_BYTES`): Largest file read.

    Raises:
        `FileNotFoundError`: when the file does not exist.
        `ImageProvenanceError` (a `ValueError`): when the file is not a PNG, JPEG or WebP, is damaged or too large,
            has no record, or the record holds broken JSON or a record of an unknown schema version. The message
            names the file and the problem.

    Example:

    ```py
    >>> from diffusers_repro.files import read_provenance
    >>> read_provenance("outputs/00000-seed42.png").seed  # doctest: +SKIP
    42
    ```
    """
    image_file = read_image(path, max_bytes)
    if image_file.record_error is not None:
        raise image_file.record_error
    return image_file.provenance


def read_text_chunks(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict[str, str]:
    """The text chunks of a PNG as they are, unparsed: what a file that fails the schema carries.

    Raises the same errors as `read_provenance` for a file that is not a readable image.

    Example:

    ```py
    >>> from diffusers_repro.files import read_text_chunks
    >>> sorted(read_text_chunks("outputs/00000-seed42.png"))  # doctest: +SKIP
    ['diffusers-repro', 'diffusers-repro-pixels', 'parameters']
    ```
    """
    return dict(read_image(path, max_bytes).metadata)


def read_image_file(path: str | os.PathLike, *, max_bytes: int | None = None) -> ImageFile:
    """Reads an image written by `save_image` once: record, pixels, pixel record, infotext and the bytes the
    Content Credentials are checked over (see `ImageFile`).

    Raises the same errors as `read_provenance`.

    Example:

    ```py
    >>> from diffusers_repro.files import read_image_file
    >>> read_image_file("outputs/00000-seed42.png").pixels_intact  # doctest: +SKIP
    True
    ```
    """
    return read_image(path, max_bytes).require_record()


def read_pixels(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """The pixels of a PNG, JPEG or WebP as a ``uint8`` array ``(H, W, C)`` (``(H, W)`` for grayscale), provenance
    or not.

    Example:

    ```py
    >>> from diffusers_repro.files import read_pixels
    >>> read_pixels("outputs/00000-seed42.png").shape  # doctest: +SKIP
    (64, 64, 3)
    ```
    """
    import numpy as np

    return np.asarray(read_image(path, max_bytes).image).copy()
