"""Difference heatmaps: where two images differ and by how much, as a picture.

The difference of a pixel is its largest channel difference in 8-bit steps (0-255). The heatmap colours it on an
inferno-like ramp, amplified so that the largest difference of the pair takes the brightest colour: a pair that
differs by one step somewhere shows that pixel as brightly as a pair that differs by 200. Pixels that are equal stay
black, and one 8-bit step is drawn a quarter of the way up the ramp (purple), never near-black, so that a single
changed pixel stands out (with a scale of one step, it is the brightest colour). The map is the images' size, pixel
for pixel; `Heatmap.with_legend` adds a scale below it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import PIL.PngImagePlugin

from ..files import to_pil_image, write_atomically

__all__ = ["HEATMAP_KEY", "Heatmap", "difference_heatmap", "difference_map", "heatmap_colors", "write_heatmap"]

HEATMAP_KEY = "diffusers-repro-heatmap"
"""The PNG text chunk of a heatmap file written by `write_heatmap`: JSON with its scale and counts."""

# An inferno-like ramp: (position, RGB). Dark to bright, readable on a dark page and in grayscale print.
_RAMP = np.array(
    [
        (0.0, 0, 0, 4),
        (0.125, 31, 12, 72),
        (0.25, 85, 15, 109),
        (0.375, 136, 34, 106),
        (0.5, 186, 54, 85),
        (0.625, 227, 89, 51),
        (0.75, 249, 140, 10),
        (0.875, 249, 201, 50),
        (1.0, 252, 255, 164),
    ]
)
# Where on the ramp the smallest difference starts: far enough from black to see one changed pixel.
_FLOOR = 0.25
_LEGEND_MIN_WIDTH = 64
_LEGEND_BACKGROUND = (24, 24, 27)
_LEGEND_TEXT = (228, 228, 231)


@dataclasses.dataclass(frozen=True)
class Heatmap:
    """The difference picture of two images of one size.

    Args:
        image (`PIL.Image.Image`): RGB, the images' size: black where the pixels are equal, else the colour of the
            difference (see `heatmap_colors`).
        max_diff (`int`): The largest per-pixel difference, in 8-bit steps (0-255).
        scale (`int`): The difference drawn in the brightest colour, in 8-bit steps; ``max_diff`` unless given
            (at least 1).
        changed_pixels (`int`): Pixels with any difference.
        total_pixels (`int`): Pixels in the image.
    """

    image: PIL.Image.Image
    max_diff: int
    scale: int
    changed_pixels: int
    total_pixels: int

    @property
    def amplification(self) -> float:
        """How much the colours amplify the differences: ``255 / scale``."""
        return 255 / self.scale

    def to_dict(self) -> dict[str, Any]:
        """The figures of the heatmap, JSON-serializable (written into the PNG by `write_heatmap`)."""
        return {
            "width": self.image.width,
            "height": self.image.height,
            "max_diff": self.max_diff,
            "scale": self.scale,
            "changed_pixels": self.changed_pixels,
            "total_pixels": self.total_pixels,
        }

    def with_legend(self) -> PIL.Image.Image:
        """The heatmap with a scale below it: the colour ramp from ``0`` to ``scale/255`` and the amplification.

        The map keeps its size and sits at the top left; the picture is ``max(width, 64)`` wide.
        """
        return _with_legend(self)


def _as_array(image: Any, name: str) -> np.ndarray:
    try:
        pil = to_pil_image(image)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an image (PIL image, numpy array or tensor): {error}") from None
    if pil.mode not in ("L", "RGB", "RGBA"):
        pil = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
    return np.asarray(pil)


def difference_map(a: Any, b: Any) -> np.ndarray:
    """The per-pixel difference of two images of one size: the largest channel difference, in 8-bit steps.

    Images of different modes are compared in RGB (RGBA when either has alpha); grayscale against colour compares
    the gray value with each channel.

    Args:
        a, b (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`): The images, as `files.to_pil_image` takes them.

    Returns:
        `np.ndarray`: ``uint8`` of shape ``(height, width)``.

    Raises:
        `ValueError`: when the images differ in size.

    Example:

    ```py
    >>> import numpy as np
    >>> from diffusers_repro.heatmap import difference_map
    >>> a = np.zeros((2, 3, 3), dtype=np.uint8)
    >>> b = a.copy(); b[1, 2] = (0, 7, 3)
    >>> difference_map(a, b).tolist()
    [[0, 0, 0], [0, 0, 7]]
    ```
    """
    left, right = _as_array(a, "a"), _as_array(b, "b")
    if left.shape[:2] != right.shape[:2]:
        raise ValueError(
            f"the images differ in size: a is {left.shape[1]}x{left.shape[0]}, b is {right.shape[1]}x{right.shape[0]}"
            "; a difference heatmap needs two images of one size"
        )
    left, right = (array if array.ndim == 3 else array[:, :, None] for array in (left, right))
    channels = max(left.shape[2], right.shape[2])
    left, right = (_channels(array, channels) for array in (left, right))
    difference = np.abs(left.astype(np.int16) - right.astype(np.int16)).max(axis=2)
    return difference.astype(np.uint8)


def _channels(array: np.ndarray, channels: int) -> np.ndarray:
    if array.shape[2] == channels:
        return array
    if array.shape[2] == 1:
        color = np.repeat(array, 3, axis=2)
    else:
        color = array[:, :, :3]
    if channels == 4:
        alpha = array[:, :, 3:] if array.shape[2] == 4 else np.full(array.shape[:2] + (1,), 255, np.uint8)
        color = np.concatenate([color, alpha], axis=2)
    return color


def heatmap_colors(difference: np.ndarray, scale: int) -> np.ndarray:
    """Colours a difference map: 0 is black, ``1 .. scale`` (in 8-bit steps) rise along the ramp from purple to
    pale yellow, and anything above ``scale`` is the brightest colour.

    Args:
        difference (`np.ndarray`): Differences in 8-bit steps, any shape.
        scale (`int`): The difference drawn in the brightest colour (1-255).

    Returns:
        `np.ndarray`: ``uint8`` RGB, the input's shape plus a last axis of 3.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= 255:
        raise ValueError(f"scale must be an integer from 1 to 255 (8-bit steps), got {scale!r}")
    difference = np.asarray(difference)
    if scale == 1:
        position = np.ones(difference.shape)
    else:
        position = _FLOOR + (1 - _FLOOR) * np.clip((difference.astype(np.float64) - 1) / (int(scale) - 1), 0, 1)
    colors = np.stack([np.interp(position, _RAMP[:, 0], _RAMP[:, channel]) for channel in (1, 2, 3)], axis=-1)
    colors = np.rint(colors).astype(np.uint8)
    colors[difference == 0] = 0
    return colors


def difference_heatmap(a: Any, b: Any, *, scale: int | None = None) -> Heatmap:
    """The heatmap of the differences between two images of one size.

    Args:
        a, b (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`): The images (a file's and a regenerated one).
        scale (`int`, *optional*): The difference (in 8-bit steps, 1-255) to draw in the brightest colour; defaults
            to the largest difference of the pair, which amplifies small differences the most.

    Returns:
        `Heatmap`: the picture (the images' size) and its figures.

    Raises:
        `ValueError`: when the images differ in size or ``scale`` is not an integer from 1 to 255.

    Example:

    ```py
    >>> import numpy as np
    >>> from diffusers_repro.heatmap import difference_heatmap
    >>> a = np.zeros((64, 64, 3), dtype=np.uint8)
    >>> b = a.copy(); b[10:20, 30:40] = 3
    >>> heatmap = difference_heatmap(a, b)
    >>> heatmap.image.size, heatmap.max_diff, heatmap.changed_pixels
    ((64, 64), 3, 100)
    ```
    """
    difference = difference_map(a, b)
    max_diff = int(difference.max(initial=0))
    if scale is None:
        scale = max(max_diff, 1)
    colors = heatmap_colors(difference, scale)
    return Heatmap(
        image=PIL.Image.fromarray(colors, mode="RGB"),
        max_diff=max_diff,
        scale=int(scale),
        changed_pixels=int(np.count_nonzero(difference)),
        total_pixels=int(difference.size),
    )


def _font(size: int) -> PIL.ImageFont.ImageFont:
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return PIL.ImageFont.load_default()


def _with_legend(heatmap: Heatmap) -> PIL.Image.Image:
    width = max(heatmap.image.width, _LEGEND_MIN_WIDTH)
    font = _font(10 if width < 160 else 12)
    bar_height, pad = 8, 3
    text_height = font.getbbox("0/255Ay")[3]
    lines = 1 if width < 200 else 2
    legend_height = pad + bar_height + pad + lines * (text_height + pad) + pad
    canvas = PIL.Image.new("RGB", (width, heatmap.image.height + legend_height), _LEGEND_BACKGROUND)
    canvas.paste(heatmap.image, (0, 0))
    top = heatmap.image.height + pad
    # The bar: one black cell for "no difference", then the ramp from 1 step to the scale.
    zero_width = max(4, width // 16)
    steps = np.linspace(1, heatmap.scale, width - zero_width)
    ramp = heatmap_colors(np.rint(steps).astype(np.int64), heatmap.scale)
    bar = np.concatenate([np.zeros((zero_width, 3), np.uint8), ramp])[None].repeat(bar_height, axis=0)
    canvas.paste(PIL.Image.fromarray(bar, mode="RGB"), (0, top))
    draw = PIL.ImageDraw.Draw(canvas)
    draw.rectangle((0, top, zero_width - 1, top + bar_height - 1), outline=_LEGEND_TEXT)
    text_top = top + bar_height + pad
    right = f"{heatmap.scale}/255"
    draw.text((1, text_top), "0", fill=_LEGEND_TEXT, font=font)
    draw.text((width - 1 - draw.textlength(right, font=font), text_top), right, fill=_LEGEND_TEXT, font=font)
    if lines == 2:
        changed = 100 * heatmap.changed_pixels / max(heatmap.total_pixels, 1)
        note = (
            f"x{heatmap.amplification:.3g} amplified; max {heatmap.max_diff}/255, {changed:.3g}% of pixels differ"
            if heatmap.max_diff
            else "identical pixels"
        )
        draw.text((1, text_top + text_height + pad), note, fill=_LEGEND_TEXT, font=font)
    return canvas


def write_heatmap(a: Any, b: Any, path: str | os.PathLike, *, scale: int | None = None) -> Heatmap:
    """Writes the heatmap of two images, with its legend, as a PNG (atomically).

    The file also carries the heatmap's figures as JSON in the ``diffusers-repro-heatmap`` text chunk.

    Args:
        a, b (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`): The images.
        path (`str` or `os.PathLike`): The PNG to write.
        scale (`int`, *optional*): See `difference_heatmap`.

    Returns:
        `Heatmap`: what was drawn.

    Example:

    ```py
    >>> from diffusers_repro.files import read_pixels
    >>> from diffusers_repro.heatmap import write_heatmap
    >>> write_heatmap(read_pixels("a.png"), read_pixels("b.png"), "heatmap.png").max_diff  # doctest: +SKIP
    3
    ```
    """
    heatmap = difference_heatmap(a, b, scale=scale)
    picture = heatmap.with_legend()
    info = PIL.PngImagePlugin.PngInfo()
    info.add_text(HEATMAP_KEY, json.dumps(heatmap.to_dict(), sort_keys=True))
    write_atomically(Path(path), lambda handle: picture.save(handle, format="PNG", pnginfo=info))
    return heatmap
