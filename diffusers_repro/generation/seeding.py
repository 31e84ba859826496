"""Seeds: validation, one seed per image, one CPU generator per image.

The contract: ``seed=s`` gives image ``i`` the seed ``s + i``; ``seed=[...]`` gives exactly those seeds, one per
image. Every image gets its own ``torch.Generator("cpu")``, so diffusers' ``randn_tensor`` draws its noise on the CPU
and the same seed gives the same starting noise on any device.
"""

from __future__ import annotations

import numbers
import secrets
from collections.abc import Sequence

import numpy as np
import torch

MAX_SEED = 2**64 - 1
"""The largest seed ``torch.Generator.manual_seed`` accepts as an unsigned 64-bit value."""

_RANDOM_SEED_BITS = 32
"""Drawn seeds stay below 2**32 so that a user can read and type them back."""

__all__ = ["MAX_SEED", "draw_random_seed", "make_generators", "per_image_seeds", "validate_seed"]


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_one_seed(value: object, what: str) -> int:
    # bool is an int subclass, and numpy's bool is not: both are rejected explicitly, since seed=True is a mistake.
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be an int between 0 and {MAX_SEED}, got the bool {bool(value)}")
    if not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{what} must be an int between 0 and {MAX_SEED}, got {_short(value)} of type {type(value).__name__}"
        )
    value = int(value)
    if value < 0:
        raise ValueError(f"{what} must be between 0 and {MAX_SEED}, got the negative value {value}")
    if value > MAX_SEED:
        raise ValueError(f"{what} must be between 0 and {MAX_SEED} (2**64 - 1), got {value}")
    return value


def validate_seed(seed: object) -> int | list[int] | None:
    """Checks the type and range of a ``seed`` argument without knowing the batch size.

    Args:
        seed (`int`, `list[int]` or `None`):
            The value passed as ``seed=``. numpy integers are accepted.

    Returns:
        `int`, `list[int]` or `None`: the seed with numpy integers turned into Python ints.

    Raises:
        `TypeError`: for a bool, float, str, nested list or non-integer element.
        `ValueError`: for a negative value, a value above ``2**64 - 1`` or an empty list.

    Example:

    ```py
    >>> from diffusers_repro.seeding import validate_seed
    >>> validate_seed([1, 2])
    [1, 2]
    ```
    """
    if seed is None:
        return None
    if isinstance(seed, (str, bytes)):
        raise TypeError(f"seed must be an int or a list of ints, got the string {_short(seed)}")
    if isinstance(seed, torch.Tensor):
        raise TypeError(f"seed must be an int or a list of ints, got a tensor {_short(seed)}; pass seed.tolist()")
    if isinstance(seed, np.ndarray) and seed.ndim == 0:
        return _check_one_seed(seed.item(), "seed")
    if isinstance(seed, (Sequence, np.ndarray)):
        values = list(seed)
        if not values:
            raise ValueError("seed must be an int or a non-empty list of ints, got an empty list")
        checked = []
        for index, value in enumerate(values):
            if isinstance(value, (list, tuple, np.ndarray)):
                raise TypeError(f"seed must be a flat list of ints, but seed[{index}] is a nested {_short(value)}")
            checked.append(_check_one_seed(value, f"seed[{index}]"))
        return checked
    return _check_one_seed(seed, "seed")


def per_image_seeds(seed: object, num_images: int, batch_description: str | None = None) -> list[int]:
    """Turns a ``seed`` argument into one seed per image.

    Args:
        seed (`int`, `list[int]` or `None`):
            ``s`` gives image ``i`` the seed ``s + i``; a list gives exactly its seeds and must have one per image;
            ``None`` draws a fresh random base seed (without touching torch's global RNG).
        num_images (`int`):
            The effective batch: the number of images the call returns.
        batch_description (`str`, *optional*):
            How the call arrives at ``num_images`` (for example ``"2 prompts x num_images_per_prompt=2"``), quoted
            in error messages.

    Returns:
        `list[int]`: ``num_images`` seeds.

    Example:

    ```py
    >>> from diffusers_repro.seeding import per_image_seeds
    >>> per_image_seeds(42, 4)
    [42, 43, 44, 45]
    ```
    """
    how = f" ({batch_description})" if batch_description else ""
    checked = validate_seed(seed)
    if checked is None:
        checked = draw_random_seed()
    if isinstance(checked, list):
        if len(checked) != num_images:
            plural = "value" if len(checked) == 1 else "values"
            raise ValueError(
                f"seed has {len(checked)} {plural} but the call makes {num_images} "
                f"image{'s' if num_images != 1 else ''}{how}; pass one seed per image or a single int"
            )
        return checked
    last = checked + num_images - 1
    if last > MAX_SEED:
        raise ValueError(
            f"seed={checked} gives the {num_images} images{how} the seeds {checked}..{last}, "
            f"past the largest seed {MAX_SEED} (2**64 - 1); pass a smaller seed"
        )
    return [checked + index for index in range(num_images)]


def draw_random_seed() -> int:
    """Draws a fresh seed from the operating system's entropy, leaving torch's global RNG untouched.

    Example:

    ```py
    >>> from diffusers_repro.seeding import draw_random_seed
    >>> 0 <= draw_random_seed() < 2**32
    True
    ```
    """
    return secrets.randbits(_RANDOM_SEED_BITS)


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """Returns one CPU ``torch.Generator`` per seed, seeded with it.

    Example:

    ```py
    >>> from diffusers_repro.seeding import make_generators
    >>> [g.initial_seed() for g in make_generators([3, 4])]
    [3, 4]
    ```
    """
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
