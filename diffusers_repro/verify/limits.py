"""Bounded replay: what a record may ask a machine to do, checked before any model loads.

A record from anyone could ask for an 8192x8192 image, a million steps or a batch of thousands. `ReplayLimits` holds
limits that every real SD, SDXL and Flux record passes; `check_limits` refuses the rest in well under a second with a
one-line reason naming the field, and says which argument (or command-line flag) lifts the limit.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..files import MAX_FILE_BYTES
from ..records import Provenance

__all__ = [
    "DEFAULT_LIMITS",
    "LimitExceededError",
    "ReplayLimits",
    "check_limits",
    "replay_images",
    "usable_threads",
]


class LimitExceededError(ValueError):
    """A record asks for more work than the replay limits allow (see `ReplayLimits`)."""


@dataclasses.dataclass(frozen=True)
class ReplayLimits:
    """Limits on the work a replayed record may ask for.

    Args:
        max_pixels (`int`, *optional*, defaults to 4096 x 4096):
            Largest ``height x width`` of one image (SDXL makes 1024 x 1024, Flux up to 2048 x 2048).
        max_steps (`int`, *optional*, defaults to 1000):
            Most denoising steps (``num_inference_steps``, or the length of ``timesteps``/``sigmas``).
        max_batch_images (`int`, *optional*, defaults to 64):
            Most images one replay makes: counted from what the call would really make (the prompt lists and
            ``num_images_per_prompt`` of a whole-batch replay, a record's own list of prompts), never taken from the
            record's word for its batch size.
        max_file_bytes (`int`, *optional*, defaults to 256 MiB):
            Largest image file read (`diffusers_repro.imagefile.MAX_FILE_BYTES`), checked before any byte is read.

    Example:

    ```py
    >>> from diffusers_repro.limits import ReplayLimits
    >>> ReplayLimits(max_pixels=8192 * 8192).max_steps
    1000
    ```
    """

    max_pixels: int = 4096 * 4096
    max_steps: int = 1000
    max_batch_images: int = 64
    max_file_bytes: int = MAX_FILE_BYTES

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field.name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = ReplayLimits()

# How a user lifts each limit: the reproduce() argument and the CLI flag.
_HOW_TO_LIFT = {
    "max_pixels": "limits=ReplayLimits(max_pixels=...) or --max-pixels",
    "max_steps": "limits=ReplayLimits(max_steps=...) or --max-steps",
    "max_batch_images": "limits=ReplayLimits(max_batch_images=...) or --max-batch-images, or whole_batch=False",
    "max_file_bytes": "limits=ReplayLimits(max_file_bytes=...) or --max-file-bytes",
}
_PROMPT_ARGUMENTS = ("prompt", "prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3")


def _refuse(field: str, asked: str, limit_name: str, limit: int) -> None:
    raise LimitExceededError(
        f"the record asks for {field} = {asked}, above the replay limit {limit_name}={limit}; pass "
        f"{_HOW_TO_LIFT[limit_name]} to allow it"
    )


def replay_images(record: Provenance, prompt_lists: dict[str, list[Any]] | None = None) -> int:
    """How many images replaying ``record`` makes in one call, counted from the call itself.

    Alone (``prompt_lists`` is `None`): one per prompt of the record's own call (a record may hold a list of
    prompts, whatever its ``recipe.batch.size`` says). A whole-batch replay (``prompt_lists``, the batch's prompt
    lists): prompts x ``num_images_per_prompt``, or ``batch_size``, and never fewer than the batch's seeds.
    """
    call: dict[str, Any] = record.call_arguments
    lists = prompt_lists if prompt_lists is not None else {name: call.get(name) for name in _PROMPT_ARGUMENTS}
    prompts = max((len(value) for value in lists.values() if isinstance(value, list)), default=1)
    if prompt_lists is None:
        return max(prompts, 1)
    per_prompt = call.get("num_images_per_prompt")
    images = max(prompts, 1) * (per_prompt if isinstance(per_prompt, int) else 1)
    batch_size = call.get("batch_size")
    if isinstance(batch_size, int):
        images = max(images, batch_size)
    seeds = record.batch.get("seeds")
    return max(images, len(seeds) if isinstance(seeds, list) else 0)


def check_limits(
    record: Provenance,
    limits: ReplayLimits | None = None,
    batch_images: int | None = None,
    *,
    prompt_lists: dict[str, list[Any]] | None = None,
) -> None:
    """Refuses a record that asks for more than ``limits`` allow, naming the field; returns `None` otherwise.

    Args:
        record (`Provenance`): A record that passed the schema (so its fields have their types).
        limits (`ReplayLimits`, *optional*, defaults to `DEFAULT_LIMITS`): The limits.
        batch_images (`int`, *optional*): Images the replay makes together, when the caller counted them; by
            default counted from the call (see `replay_images`). The larger of the two counts is checked.
        prompt_lists (`dict`, *optional*): The batch's prompt lists, for a whole-batch replay.

    Raises:
        `LimitExceededError`: naming the field, the value asked for, the limit and how to lift it.

    Example:

    ```py
    >>> from diffusers_repro.limits import check_limits
    >>> check_limits(record)  # doctest: +SKIP
    ```
    """
    limits = DEFAULT_LIMITS if limits is None else limits
    if not isinstance(limits, ReplayLimits):
        raise TypeError(f"limits must be a diffusers_repro.ReplayLimits, got {type(limits).__name__}")
    call: dict[str, Any] = record.call_arguments
    height, width = call.get("height"), call.get("width")
    if isinstance(height, int) and isinstance(width, int) and height * width > limits.max_pixels:
        _refuse(
            "recipe.call.height x width",
            f"{height}x{width} ({height * width} pixels)",
            "max_pixels",
            limits.max_pixels,
        )
    steps = call.get("num_inference_steps")
    if isinstance(steps, int) and steps > limits.max_steps:
        _refuse("recipe.call.num_inference_steps", str(steps), "max_steps", limits.max_steps)
    for name in ("timesteps", "sigmas"):
        values = call.get(name)
        if isinstance(values, list) and len(values) > limits.max_steps:
            _refuse(f"recipe.call.{name}", f"{len(values)} values", "max_steps", limits.max_steps)
    counted = replay_images(record, prompt_lists)
    images = max(counted, batch_images or 0)
    if images > limits.max_batch_images:
        by_batch = prompt_lists is not None or (batch_images or 0) > counted
        field = "recipe.batch.size" if by_batch else "recipe.call.prompt"
        _refuse(field, f"{images} images in one call", "max_batch_images", limits.max_batch_images)


def usable_threads(recorded: int | None, fallback: int) -> int:
    """The thread count to replay with: the recorded one, never more than this machine's cores."""
    cores = os.cpu_count() or 1
    return min(recorded or fallback, cores)
