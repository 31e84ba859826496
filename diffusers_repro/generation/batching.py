"""Batch-invariant mode: evaluate every model one image at a time.

In a normal batch, image ``i`` is not bitwise equal to the same prompt and seed generated alone: kernels pick
different blockings for different batch sizes (measured ~1e-5 on a tiny UNet on CPU). Evaluating each model once per
image makes every image's arithmetic the same as in a call that makes that image alone.

The denoiser is special: with classifier-free guidance its input holds ``2 * N`` rows, the unconditional rows of all
images and then the conditional ones. A call that makes one image alone evaluates the pair (unconditional,
conditional) as one batch of two, so here the pair of image ``i`` - rows ``i`` and ``N + i`` - is evaluated together.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .entry_points import planned_entry_points

__all__ = ["one_image_at_a_time"]

_SPLIT_METHODS = frozenset({"forward", "encode", "decode"})


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return value.shape[0]
    return None


def _take(value: Any, batch: int, rows: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 or value.shape[0] != batch:
            return value
        taken = value.index_select(0, rows.to(value.device))
        if value.ndim == 4 and not value.is_contiguous() and value.is_contiguous(memory_format=torch.channels_last):
            # index_select returns NCHW; a channels_last input (the VAE encoder's latents) must stay channels_last,
            # or the next convolution picks other kernels and the bits change (~1e-6).
            taken = taken.contiguous(memory_format=torch.channels_last)
        return taken
    if isinstance(value, dict):
        return type(value)((key, _take(item, batch, rows)) for key, item in value.items())
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_take(item, batch, rows) for item in value)
    return value


def _combine(parts: list[Any]) -> Any:
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=0) if first.ndim > 0 else first
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        # diffusers' BaseOutput and transformers' ModelOutput: rebuild the same class from combined fields.
        fields = {field.name: _combine([getattr(p, field.name) for p in parts]) for field in dataclasses.fields(first)}
        return type(first)(**fields)
    if isinstance(first, tuple):
        return tuple(_combine(list(items)) for items in zip(*parts, strict=True))
    if isinstance(first, list):
        return [_combine(list(items)) for items in zip(*parts, strict=True)]
    if hasattr(first, "parameters") and isinstance(first.parameters, torch.Tensor):
        # A diagonal Gaussian (the VAE's latent distribution) is defined by its stacked mean and log-variance.
        return type(first)(torch.cat([p.parameters for p in parts], dim=0))
    return first


def _groups(batch: int, num_images: int, is_denoiser: bool) -> list[list[int]]:
    if is_denoiser and batch == 2 * num_images:
        return [[index, num_images + index] for index in range(num_images)]
    return [[index] for index in range(batch)]


def _split(method: Callable, num_images: int, is_denoiser: bool) -> Callable:
    def one_at_a_time(*args, **kwargs):
        batch = _batch_size(args, kwargs)
        if batch is None or batch <= 1:
            return method(*args, **kwargs)
        groups = _groups(batch, num_images, is_denoiser)
        if len(groups) == 1:
            return method(*args, **kwargs)
        parts = []
        for group in groups:
            rows = torch.tensor(group)
            parts.append(method(*_take(args, batch, rows), **_take(kwargs, batch, rows)))
        merged = _combine(parts)
        if is_denoiser and len(groups[0]) == 2:
            # Pairs came out as (uncond_i, cond_i) blocks; the pipeline expects all unconditional rows first.
            order = torch.tensor([g * 2 for g in range(num_images)] + [g * 2 + 1 for g in range(num_images)])
            merged = _take(merged, batch, order) if not dataclasses.is_dataclass(merged) else _reorder(merged, order)
        return merged

    return one_at_a_time


def _reorder(output: Any, order: torch.Tensor) -> Any:
    batch = len(order)
    fields = {f.name: _take(getattr(output, f.name), batch, order) for f in dataclasses.fields(output)}
    return type(output)(**fields)


@contextlib.contextmanager
def one_image_at_a_time(pipe: Any, num_images: int) -> Iterator[None]:
    """Makes every ``torch.nn.Module`` component of ``pipe`` evaluate one image (or one guidance pair) at a time.

    Batched tensors in positional and keyword arguments of ``forward``, ``encode`` and ``decode`` (nested in dicts
    and lists too) are sliced along their first dimension and the outputs concatenated back.

    Only the calling thread (and asyncio task) sees the change. Components are shared between pipelines (``from_pipe``)
    that other threads may be calling, so the block does not swap their methods for splitting ones: it plans the
    split in `diffusers_repro.entry_points`, whose stand-ins look up, in a context variable, whether the call running
    in their thread asked for splitting, and otherwise call the method itself; the last block to leave puts every
    method back as it found it.

    Args:
        pipe (`DiffusionPipeline`):
            The pipeline whose components to split.
        num_images (`int`):
            The number of images the call makes: a denoiser input of ``2 * num_images`` rows is split into
            classifier-free guidance pairs.

    Example:

    ```py
    >>> from diffusers_repro.batching import one_image_at_a_time
    >>> from diffusers_repro.tiny import build_tiny_pipeline
    >>> pipe = build_tiny_pipeline("ddim")
    >>> with one_image_at_a_time(pipe, num_images=2):
    ...     images = pipe(batch_size=2, num_inference_steps=2, output_type="np").images
    ```
    """
    denoiser = next(
        (getattr(pipe, name) for name in ("unet", "transformer", "prior", "decoder") if hasattr(pipe, name)), None
    )
    plans = [
        (component, {"split": _splitter(num_images, component is denoiser), "split_methods": _SPLIT_METHODS})
        for component in pipe.components.values()
        if isinstance(component, torch.nn.Module)
    ]
    with planned_entry_points(plans, _SPLIT_METHODS):
        yield


def _splitter(num_images: int, is_denoiser: bool) -> Callable[[Callable], Callable]:
    def split(method: Callable) -> Callable:
        return _split(method, num_images, is_denoiser)

    return split
