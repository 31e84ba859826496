"""Perceptual fingerprints: find the generated file a copy came from after resizing, re-encoding or stripping.

A fingerprint is imagehash's DCT perceptual hash (pHash) with 16x16 = 256 bits, written ``phash-16:<64 hex
digits>``. It is stored when a file is written (in the pixel record and the run manifest line), so that a copy whose
metadata was stripped can be matched against a folder of generated images. The signed manifest's
``c2pa.soft-binding`` holds the image's ISCC Content-Code Image instead (`iscc_image_code`, ``io.iscc.v0``, ISO
24138), the algorithm C2PA registers; ``benchmarks/bench_fingerprints.py`` measured both on stripped, resized and
re-encoded copies and unrelated images, and `find` keeps the pHash, whose margin was the larger (0.359 vs 0.352).
``similarity`` is ``1 - hamming distance / 256``: copies resized or re-encoded as JPEG score above 0.9;
unrelated images score about 0.5 (each bit agrees by chance), and `MATCH_THRESHOLD` (0.8) is more than ten
standard deviations above that.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import PIL.Image

__all__ = [
    "FINGERPRINT_PREFIX",
    "ISCC_BITS",
    "MATCH_THRESHOLD",
    "fingerprint",
    "iscc_image_code",
    "iscc_similarity",
    "parse_fingerprint",
    "similarity",
]

FINGERPRINT_PREFIX = "phash-16:"
"""Prefix of a fingerprint string: the algorithm and its hash size."""

HASH_SIZE = 16
BITS = HASH_SIZE * HASH_SIZE

_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

MATCH_THRESHOLD = 0.8
"""Smallest `similarity` at which two images count as the same picture (unrelated images: 0.5 +- 0.03)."""


def fingerprint(image: PIL.Image.Image | str | os.PathLike, max_bytes: int | None = None) -> str:
    """The perceptual fingerprint of an image (or of the image in a file, read once within ``max_bytes``).

    Example:

    ```py
    >>> import numpy as np, PIL.Image
    >>> from diffusers_repro.fingerprint import fingerprint
    >>> fingerprint(PIL.Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)))[:13]
    'phash-16:0000'
    ```
    """
    import imagehash

    if isinstance(image, (str, os.PathLike)):
        from .imagefile import MAX_FILE_PIXELS, ImageProvenanceError, read_regular_file

        try:
            # One read of a regular file within the byte cap (a named pipe or /dev/zero is refused, not read).
            data = read_regular_file(image, max_bytes)
        except ImageProvenanceError as error:
            raise ValueError(str(error)) from None
        try:
            # Common raster formats only, no PIL plugin that runs a program (EPS): a file named .png may hold anything.
            with PIL.Image.open(io.BytesIO(data), formats=_FORMATS) as opened:
                if opened.width * opened.height > MAX_FILE_PIXELS:
                    raise ValueError(f"it is {opened.width}x{opened.height} pixels, more than {MAX_FILE_PIXELS}")
                rgb = opened.convert("RGB")
        except OSError:
            raise
        except Exception as error:  # noqa: BLE001 - a file from anyone: bombs and decoder errors alike
            raise ValueError(f"{os.fspath(image)} cannot be read as an image: {error}") from None
        return fingerprint(rgb)
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"image must be a PIL image or a path, got {type(image).__name__}")
    return FINGERPRINT_PREFIX + str(imagehash.phash(image.convert("RGB"), hash_size=HASH_SIZE))


def parse_fingerprint(text: Any) -> np.ndarray:
    """The 256 bits of a fingerprint string, as a boolean array; `ValueError` for anything else."""
    if not isinstance(text, str) or not text.startswith(FINGERPRINT_PREFIX):
        raise ValueError(f"fingerprint must be a string starting with {FINGERPRINT_PREFIX!r}, got {text!r:.80}")
    digits = text[len(FINGERPRINT_PREFIX) :]
    if len(digits) != BITS // 4 or any(char not in "0123456789abcdef" for char in digits):
        raise ValueError(f"fingerprint {text!r:.80} must end in {BITS // 4} lowercase hex digits")
    return np.unpackbits(np.frombuffer(bytes.fromhex(digits), dtype=np.uint8)).astype(bool)


def similarity(a: str, b: str) -> float:
    """``1 - hamming distance / 256`` of two fingerprints: 1.0 for the same picture, about 0.5 for unrelated ones.

    Example:

    ```py
    >>> from diffusers_repro.fingerprint import similarity
    >>> similarity("phash-16:" + "0" * 64, "phash-16:" + "f" + "0" * 63)
    0.984375
    ```
    """
    return 1.0 - float(np.count_nonzero(parse_fingerprint(a) != parse_fingerprint(b))) / BITS


# --------------------------------------------------------------------------------------------------------------------
# ISCC (ISO 24138): the soft binding C2PA registers for images


ISCC_BITS = 256
"""Bits of the ISCC Content-Code Image we write (iscc-core allows 64 to 256; 256 matches the pHash's resolution)."""


def _iscc_pixels(image: PIL.Image.Image) -> list[int]:
    """ISCC's image normalization: transparency over white, grayscale, 32x32 bicubic, row by row."""
    if image.mode in ("RGBA", "LA", "PA", "P"):
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, "white"), rgba)
    gray = image.convert("L").resize((32, 32), PIL.Image.Resampling.BICUBIC)
    return list(gray.getdata())


def iscc_image_code(image: PIL.Image.Image, bits: int = ISCC_BITS) -> str:
    """The ISCC Content-Code Image (ISO 24138, computed by iscc-core) of an image: ``ISCC:EED...``.

    It is what the ``c2pa.soft-binding`` assertion of a signed file holds (algorithm ``io.iscc.v0``, on the C2PA soft
    binding algorithm list): anyone can recompute it from the pixels with any ISCC implementation.

    Example:

    ```py
    >>> import PIL.Image
    >>> from diffusers_repro.fingerprint import iscc_image_code
    >>> iscc_image_code(PIL.Image.new("RGB", (64, 64)))[:8]
    'ISCC:EED'
    ```
    """
    import iscc_core

    return iscc_core.gen_image_code_v0(_iscc_pixels(image), bits=bits)["iscc"]


def iscc_similarity(a: str, b: str) -> float:
    """``1 - hamming distance / bits`` of two ISCC Content-Codes Image of the same length."""
    import iscc_core

    first, second = (iscc_core.iscc_decode(code)[4] for code in (a, b))
    if len(first) != len(second):
        raise ValueError(f"ISCC codes {a!r} and {b!r} have different lengths")
    bits = np.unpackbits(np.frombuffer(first, dtype=np.uint8)) != np.unpackbits(np.frombuffer(second, dtype=np.uint8))
    return 1.0 - float(np.count_nonzero(bits)) / (8 * len(first))
