"""Image files that carry their recipe: PNG text chunks with the provenance record and an infotext.

A PNG written by `save_image` holds four text chunks besides its pixels:

- ``diffusers-repro`` (iTXt, UTF-8, uncompressed): the full provenance record, exactly ``provenance.to_json()``.
- ``diffusers-repro-pixels`` (iTXt): a small JSON object about the pixels in this file: ``pixel_digest`` (the
  `image_digest` of the 8-bit image written), ``converted_from``, ``conversion`` and ``fingerprint`` (the perceptual
  hash `diffusers-repro find` matches copies with, see `diffusers_repro.fingerprint`). The record's
  ``result.output_digest`` is a digest of what the pipeline returned: for ``output_type="pil"`` it equals the pixel
  digest, but for ``"np"`` and ``"pt"`` outputs it is a digest of float values that an 8-bit PNG cannot hold. The
  pixel digest lets a reader check the file's own pixels (tampering, re-encoding) without touching the caller's
  record, which is written unchanged.
- ``parameters`` (tEXt, or iTXt when the text is not latin-1): an infotext in the format Stable Diffusion web UIs
  and image sites read and show (see `format_infotext`).
- ``XML:com.adobe.xmp`` (iTXt): an XMP packet with IPTC's ``Iptc4xmpExt:DigitalSourceType``
  (``trainedAlgorithmicMedia``), which photo libraries, news systems and social platforms read (see
  `diffusers_repro.exif.xmp_packet`).

Unless ``sign=False``, the file also carries signed Content Credentials (a C2PA manifest, see
`diffusers_repro.credentials`) over all of these. JPEG and WebP files hold the same record, pixel record and infotext
in XMP and EXIF (see `diffusers_repro.exif`).

Writes are atomic: the file is written to a hidden temporary file in the same folder, flushed to disk and renamed
over the target, so a crash leaves either the old file or the complete new one, never a partial image.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.PngImagePlugin

from ..records import Provenance, image_digest, jsonable
from .imagefile import (
    DIGITAL_SOURCE_TYPE,
    INFOTEXT_KEY,
    PIXELS_KEY,
    PROVENANCE_KEY,
    XMP_CHUNK,
    read_regular_file,
)
from .infotext import format_infotext

__all__ = [
    "IMAGE_FORMATS",
    "check_save_options",
    "image_suffix",
    "pixel_digest",
    "save_image",
    "save_outputs",
    "to_pil_image",
    "write_atomically",
]

_FLOAT_CONVERSION = "round(clip(x, 0, 1) * 255) to uint8, as diffusers' numpy_to_pil"
_FILE_NUMBER = re.compile(r"^(\d{5,})-")


# ----------------------------------------------------------------------------------------------------------------
# Pixels


def _is_tensor(value: Any) -> bool:
    # A tensor exists only once torch is imported: reading files never imports it.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def to_pil_image(image: Any) -> PIL.Image.Image:
    """Converts one pipeline output image to an 8-bit PIL image, the way diffusers does for ``output_type="pil"``.

    Args:
        image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`):
            A PIL image (returned as is); a numpy array ``(H, W, C)`` or ``(H, W)`` as ``output_type="np"`` returns
            (float in ``[0, 1]``, or ``uint8``); a tensor ``(C, H, W)`` or ``(H, W)`` as ``output_type="pt"`` returns
            (float in ``[0, 1]``). Float values become ``round(clip(x, 0, 1) * 255)``, so an ``"np"`` output gives
            exactly the pixels the same call with ``output_type="pil"`` returns. One channel gives mode ``"L"``,
            three ``"RGB"``, four ``"RGBA"``.

    Example:

    ```py
    >>> import numpy as np
    >>> from diffusers_repro.files import to_pil_image
    >>> to_pil_image(np.full((4, 6, 3), 0.5, dtype=np.float32)).getpixel((0, 0))
    (128, 128, 128)
    ```
    """
    if isinstance(image, PIL.Image.Image):
        return image
    if _is_tensor(image):
        if image.ndim == 3:
            if image.shape[0] not in (1, 3, 4):
                raise ValueError(
                    f"image is a tensor of shape {tuple(image.shape)}; expected one image (C, H, W) with 1, 3 or 4 "
                    "channels first, as output_type='pt' returns"
                )
            image = image.permute(1, 2, 0)
        elif image.ndim != 2:
            raise ValueError(
                f"image is a tensor of shape {tuple(image.shape)}; expected one image (C, H, W) or (H, W); save a "
                "batch with save_outputs"
            )
        image = image.detach().to("cpu")
        image = image.float().numpy() if image.is_floating_point() else image.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(
            f"image is an array of shape {image.shape}; expected one image (H, W, C) with 1, 3 or 4 channels, or "
            "(H, W); save a batch with save_outputs"
        )
    if np.issubdtype(image.dtype, np.floating):
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise TypeError(f"image array has dtype {image.dtype}; expected floats in [0, 1] or uint8")
    # A uint8 array of shape (H, W), (H, W, 3) or (H, W, 4) gives mode "L", "RGB" or "RGBA".
    return PIL.Image.fromarray(np.ascontiguousarray(image))


def _converted_from(image: Any) -> tuple[str, str | None]:
    if isinstance(image, PIL.Image.Image):
        return "pil", None
    if _is_tensor(image):
        return f"torch {str(image.dtype).removeprefix('torch.')} {tuple(image.shape)}", (
            _FLOAT_CONVERSION if image.is_floating_point() else None
        )
    array = np.asarray(image)
    floating = np.issubdtype(array.dtype, np.floating)
    return f"numpy {array.dtype} {array.shape}", _FLOAT_CONVERSION if floating else None


def pixel_digest(image: Any) -> str:
    """Digest of the 8-bit pixels `save_image` writes for ``image`` (see `to_pil_image`).

    For a PIL image it equals `diffusers_repro.provenance.image_digest`, so for ``output_type="pil"`` it is the
    record's ``output_digest``.

    Example:

    ```py
    >>> import numpy as np
    >>> from diffusers_repro.files import pixel_digest, to_pil_image
    >>> image = np.zeros((2, 2, 3), dtype=np.float32)
    >>> pixel_digest(image) == pixel_digest(to_pil_image(image))
    True
    ```
    """
    return image_digest(to_pil_image(image))


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _record_json(provenance: Provenance) -> str:
    # Exactly provenance.to_json() for every record that holds only JSON values; jsonable() first so that any other
    # value (a pathlib.Path, say) is written as its string instead of failing the save after the image was made.
    return json.dumps(jsonable(provenance.to_dict()), sort_keys=True, allow_nan=False)


def _pixel_record(pil_image: PIL.Image.Image, source: Any, fingerprint: str) -> dict[str, Any]:
    converted_from, conversion = _converted_from(source)
    return {
        "pixel_digest": image_digest(pil_image),
        "mode": pil_image.mode,
        "size": list(pil_image.size),
        "converted_from": converted_from,
        "conversion": conversion,
        "fingerprint": fingerprint,
    }


def _png_info(
    pil_image: PIL.Image.Image, record_json: str, pixels: dict[str, Any], provenance: Provenance, source_type: str
) -> Any:
    from .lossy import xmp_packet

    info = PIL.PngImagePlugin.PngInfo()
    info.add_itxt(PROVENANCE_KEY, record_json)
    info.add_itxt(PIXELS_KEY, json.dumps(pixels, sort_keys=True))
    # tEXt when the text is latin-1, iTXt otherwise: what the web UIs write, and what every PNG reader shows.
    info.add_text(INFOTEXT_KEY, format_infotext(provenance, size=pil_image.size))
    info.add_itxt(XMP_CHUNK, xmp_packet(source_type).decode())
    return info


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Any) -> None:
    """Calls ``write(handle)`` on a temporary file next to ``path``, then renames it over ``path``."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for any new file (mkstemp would force 0o600).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


_SUFFIXES = {"png": (".png",), "jpeg": (".jpg", ".jpeg"), "webp": (".webp",)}
IMAGE_FORMATS = tuple(_SUFFIXES)
"""The formats `save_image` writes."""


def check_save_options(format: Any, quality: Any, sign: Any) -> tuple[str, int | None, Any]:
    """Checks ``format``, ``quality`` and ``sign`` of `save_image` before any work; returns the format (``"jpg"``
    becomes ``"jpeg"``), the quality (the default for lossy formats) and the signing identity (`None` unsigned).

    Raises `ValueError`/`TypeError` naming the parameter, and `CredentialsError` for a signing identity that cannot
    be loaded.
    """
    from .identity import SigningIdentity, default_identity
    from .lossy import DEFAULT_QUALITY

    if not isinstance(format, str) or format.lower().replace("jpg", "jpeg") not in _SUFFIXES:
        raise ValueError(f"format must be one of {', '.join(map(repr, IMAGE_FORMATS))}, got {format!r}")
    format = format.lower().replace("jpg", "jpeg")
    if quality is not None:
        if format == "png":
            raise ValueError(f"quality is for the lossy formats 'jpeg' and 'webp'; PNG is lossless, got {quality!r}")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")
    elif format != "png":
        quality = DEFAULT_QUALITY
    if sign is True:
        identity = default_identity()
    elif sign is False or sign is None:
        identity = None
    elif isinstance(sign, SigningIdentity):
        identity = sign
    else:
        raise TypeError(f"sign must be True, False or a SigningIdentity, got {type(sign).__name__}")
    return format, quality, identity


def image_suffix(format: str) -> str:
    """The file suffix of a format: ``".png"``, ``".jpg"`` or ``".webp"``."""
    return _SUFFIXES[format][0]


def save_image(
    image: Any,
    path: str | os.PathLike,
    provenance: Provenance,
    *,
    format: str | None = None,
    quality: int | None = None,
    sign: Any = True,
    ingredient: Any = None,
) -> Path:
    """Writes one image with its provenance record and signed Content Credentials, atomically.

    A PNG holds the full record (``diffusers-repro`` chunk, exactly ``provenance.to_json()``), the pixel record
    (``diffusers-repro-pixels`` chunk: digest of the 8-bit pixels written and their perceptual fingerprint) and an
    infotext for other tools (``parameters`` chunk, see `format_infotext`). A JPEG or WebP holds the same record and
    pixel record in XMP and the infotext in EXIF ``UserComment`` (see `diffusers_repro.exif`). Unless
    ``sign=False``, the file also carries a C2PA manifest signed with the local identity (made on first use) or the
    one given: a ``c2pa.created`` action (trainedAlgorithmicMedia), the record, and the fingerprint as a soft
    binding (see `diffusers_repro.credentials`). An img2img or inpainting output (its record has ``recipe.call.image``)
    is an edit: its manifest opens the input image as its ``parentOf`` ingredient and says ``c2pa.edited``
    (compositeWithTrainedAlgorithmicMedia, also in XMP). ``provenance`` is not modified.

    Args:
        image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`):
            One output image: PIL, ``(H, W, C)`` float array in ``[0, 1]`` (``output_type="np"``) or ``(C, H, W)``
            float tensor in ``[0, 1]`` (``output_type="pt"``); converted to 8 bits as `to_pil_image` says.
        path (`str` or `os.PathLike`):
            The file to write, ending in ``.png``, ``.jpg``/``.jpeg`` or ``.webp``. Its folder must exist. An
            existing file is replaced.
        provenance (`Provenance`):
            The image's record, for example ``output.provenance[i]``.
        format (`str`, *optional*):
            ``"png"``, ``"jpeg"`` or ``"webp"``; defaults to the path's suffix, which must agree with it.
        quality (`int`, *optional*):
            Encoder quality 1-100 for JPEG and WebP (default 95).
        sign (`bool` or `SigningIdentity`, *optional*, defaults to `True`):
            `True`: sign with this machine's identity; a `diffusers_repro.credentials.SigningIdentity`: sign with it
            (`SigningIdentity.from_files(chain, key)`); `False`: no Content Credentials.
        ingredient (`str`, `os.PathLike`, `bytes` or an image, *optional*):
            For an edit (a record with ``recipe.call.image``), the input image the call got: its file (read once; its
            own Content Credentials travel into the new manifest), that file's bytes, or the image itself (stored as
            a PNG, without credentials). Required to sign an edit (``out.save`` passes the call's input images);
            refused for a record that edited nothing.

    Returns:
        `pathlib.Path`: ``path``.

    Raises:
        `ValueError`: for a path or format that does not fit, an image of the wrong shape, or a record of latents.
        `TypeError`: for an image or record of the wrong type.
        `CredentialsError` (a `ValueError`): for a certificate or key that cannot sign; nothing is written.

    Example:

    ```py
    >>> from diffusers_repro import ReproDDIMPipeline
    >>> from diffusers_repro.files import read_provenance, save_image
    >>> from diffusers_repro.tiny import tiny_pipeline_path
    >>> pipe = ReproDDIMPipeline.from_pretrained(tiny_pipeline_path("ddim"))
    >>> out = pipe(num_inference_steps=2, seed=7)
    >>> path = save_image(out.images[0], "/tmp/ddim-seed7.png", out.provenance[0])
    >>> read_provenance(path) == out.provenance[0]
    True
    ```
    """
    from .fingerprints import fingerprint, iscc_image_code
    from .lossy import encode_lossy
    from .signing import digital_source_type, sign_image_bytes

    if not isinstance(provenance, Provenance):
        raise TypeError(f"provenance must be a diffusers_repro.Provenance, got {type(provenance).__name__}")
    if provenance.result.get("output_type") == "latent":
        raise ValueError(
            "the record says output_type='latent': the output is latents, not an image; call the pipeline with "
            "output_type='pil' (or 'np', 'pt') to save images"
        )
    path = Path(path)
    suffix = path.suffix.lower()
    if format is None:
        format = next((name for name, suffixes in _SUFFIXES.items() if suffix in suffixes), None)
        if format is None:
            raise ValueError(f"path must end in .png, .jpg, .jpeg or .webp, got {str(path)!r}")
    format, quality, identity = check_save_options(format, quality, sign)
    source_type = digital_source_type(provenance)
    parent = _ingredient_file(ingredient, source_type != DIGITAL_SOURCE_TYPE, identity is not None)
    if suffix not in _SUFFIXES[format]:
        raise ValueError(f"path {str(path)!r} does not end in {' or '.join(_SUFFIXES[format])} for format={format!r}")
    pil_image = to_pil_image(image)
    record_json = _record_json(provenance)
    pixels = _pixel_record(pil_image, image, fingerprint(pil_image))
    infotext = format_infotext(provenance, size=pil_image.size)
    buffer = io.BytesIO()
    if format == "png":
        info = _png_info(pil_image, record_json, pixels, provenance, source_type)
        pil_image.save(buffer, format="PNG", pnginfo=info)
        data = buffer.getvalue()
    else:
        # The pixels in a lossy file are not these: the digest is of the image before encoding.
        pixels["source_pixel_digest"] = pixels.pop("pixel_digest")
        pixels.update(format=format, quality=quality)
        data = encode_lossy(pil_image, format, quality, record_json, pixels, infotext, source_type)
    if identity is not None:
        iscc_code = iscc_image_code(pil_image)
        data = sign_image_bytes(data, format, identity, record_json, iscc_code, path.name, *(parent or ()))
    write_atomically(path, lambda handle: handle.write(data))
    return path


def _ingredient_file(ingredient: Any, edited: bool, signed: bool) -> tuple[bytes, str] | None:
    """The encoded file and title of an edit's input image (see `save_image`); `None` when nothing is signed."""
    if ingredient is not None and not edited:
        raise ValueError(
            "ingredient is given but the record edited no input image (no recipe.call.image); an ingredient is the "
            "input image of an img2img or inpainting call"
        )
    if not signed:
        return None
    if ingredient is None and edited:
        raise ValueError(
            "the record says the call edited an input image (recipe.call.image: img2img or inpainting); pass "
            "ingredient=<that image or its file> so the signed file records it as its parentOf ingredient, or "
            "sign=False"
        )
    if ingredient is None:
        return None
    if isinstance(ingredient, (str, os.PathLike)):
        return read_regular_file(ingredient), Path(ingredient).name
    if isinstance(ingredient, (bytes, bytearray)):
        return bytes(ingredient), "input image"
    if isinstance(ingredient, list) and len(ingredient) == 1:  # a record's row of a list of input images
        ingredient = ingredient[0]
    if (isinstance(ingredient, np.ndarray) or _is_tensor(ingredient)) and ingredient.ndim == 4:
        ingredient = ingredient[0]
    buffer = io.BytesIO()
    to_pil_image(ingredient).save(buffer, format="PNG")
    return buffer.getvalue(), "input image"


def _next_file_number(directory: Path) -> int:
    numbers = [int(match.group(1)) for name in os.listdir(directory) if (match := _FILE_NUMBER.match(name))]
    return max(numbers) + 1 if numbers else 0


def _split_images(images: Any) -> list[Any]:
    if isinstance(images, np.ndarray) or _is_tensor(images):
        if images.ndim != 4:
            raise ValueError(
                f"images is an array of shape {tuple(images.shape)}; expected a batch (N, H, W, C) or (N, C, H, W)"
            )
        return [images[index] for index in range(images.shape[0])]
    if isinstance(images, PIL.Image.Image) or not isinstance(images, Sequence):
        raise TypeError(f"images must be a list of images or a batched array, got {type(images).__name__}")
    return list(images)


def save_outputs(
    images: Any,
    provenance: Sequence[Provenance],
    directory: str | os.PathLike,
    *,
    format: str = "png",
    quality: int | None = None,
    sign: Any = True,
    ingredients: Sequence[Any] | None = None,
) -> list[Path]:
    """Writes every image of a pipeline output with its own record into ``directory``; returns the paths in order.

    File names are ``NNNNN-seedS.png`` (``00003-seed42.png``). Numbering continues after the highest ``NNNNN-``
    prefix already in the folder, so in a new folder ``NNNNN`` is the image's index in the batch and saving twice into
    one folder never replaces earlier images (as the Stable Diffusion web UIs number their outputs). Two processes
    saving into the same folder at the same time should use different folders. Each file is written atomically
    (see `save_image`).

    Args:
        images (`list` or batched `np.ndarray` / `torch.Tensor`):
            The output's ``images``.
        provenance (`list[Provenance]`):
            The output's ``provenance``: one record per image, in image order.
        directory (`str` or `os.PathLike`):
            The folder; created (with its parents) when missing.
        format (`str`, *optional*, defaults to ``"png"``), quality (`int`, *optional*), sign (*optional*):
            As for `save_image`; JPEG files end in ``.jpg``, WebP files in ``.webp``.
        ingredients (`list`, *optional*):
            For an img2img or inpainting output, the input image of each image (see `save_image`'s ``ingredient``).

    Example:

    ```py
    >>> out = pipe(["a fox", "a bear"], seed=42, num_inference_steps=2)  # doctest: +SKIP
    >>> [path.name for path in out.save("outputs")]  # doctest: +SKIP
    ['00000-seed42.png', '00001-seed43.png']
    ```
    """
    format, quality, identity = check_save_options(format, quality, sign)
    images = _split_images(images)
    records = list(provenance)
    if len(images) != len(records):
        raise ValueError(
            f"save_outputs got {len(images)} images but {len(records)} provenance records; expected one record per "
            "image"
        )
    ingredients = [None] * len(images) if ingredients is None else list(ingredients)
    if len(ingredients) != len(images):
        raise ValueError(f"ingredients has {len(ingredients)} values but there are {len(images)} images")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    first = _next_file_number(directory)
    paths = []
    for offset, (image, record, ingredient) in enumerate(zip(images, records, ingredients, strict=True)):
        seed = f"-seed{record.seed}" if record.seed is not None else ""
        name = f"{first + offset:05d}{seed}{image_suffix(format)}"
        options = {"format": format, "quality": quality, "sign": identity or False, "ingredient": ingredient}
        paths.append(save_image(image, directory / name, record, **options))
    return paths
