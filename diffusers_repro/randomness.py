"""Stray randomness: draws from torch's global RNG during a call, made deterministic and detected.

Seeded calls hand every image its own CPU generator, and diffusers' own code draws from those. A scheduler or a custom
component that ignores ``generator`` (``torch.randn(shape)``, ``torch.randint(...)``) draws from torch's global RNG
instead, whose state depends on everything the process did before the call. Running the call inside a forked global
RNG seeded from the call's seeds makes such draws a function of the seeds, and torch's global RNG is put back exactly
as it was afterwards. Comparing the forked RNG's state before and after the call tells whether anything drew from it:
the global stream is shared by the whole batch, so an image that used it depends on its batch (every seed, in order).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence

import torch

__all__ = ["GlobalRandomness", "forked_global_rng", "global_rng_seed"]

_SEED_DOMAIN = b"diffusers-repro/global-rng/v1|"


def global_rng_seed(seeds: Sequence[int | None]) -> int:
    """The seed of torch's global RNG during a call that makes images with ``seeds``, in image order.

    A hash of all the seeds, so that a call that draws from the global RNG gives the same bits for the same seeds and
    different bits for different seeds; it lies in ``[0, 2**64)``, the range ``torch.Generator.manual_seed`` accepts.

    Args:
        seeds (`list[int]`):
            The per-image seeds of the call, in image order.

    Example:

    ```py
    >>> from diffusers_repro.randomness import global_rng_seed
    >>> global_rng_seed([1, 2]) == global_rng_seed([1, 2]) != global_rng_seed([2, 1])
    True
    ```
    """
    text = json.dumps([None if seed is None else int(seed) for seed in seeds], separators=(",", ":"))
    digest = hashlib.sha256(_SEED_DOMAIN + text.encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclasses.dataclass
class GlobalRandomness:
    """What `forked_global_rng` did: the seed it used, the RNGs it forked, and which of them were drawn from.

    Args:
        seed (`int`):
            The seed the forked global RNGs started from.
        devices (`list[str]`):
            The RNGs forked and seeded: ``"cpu"`` and every CUDA device in use (``"cuda:0"``, ...).
        used_on (`list[str]`):
            The RNGs among ``devices`` whose state changed inside the block; filled in when the block exits.
    """

    seed: int
    devices: list[str]
    used_on: list[str] = dataclasses.field(default_factory=list)

    @property
    def used(self) -> bool:
        """Whether anything drew from torch's global RNG inside the block."""
        return bool(self.used_on)


def _cuda_indices(devices: Iterable[torch.device | str | None]) -> list[int]:
    indices = set()
    for device in devices:
        if device is None:
            continue
        device = torch.device(device)
        if device.type == "cuda" and torch.cuda.is_available():
            indices.add(device.index if device.index is not None else torch.cuda.current_device())
    return sorted(indices)


def _state(name: str) -> torch.Tensor:
    if name == "cpu":
        return torch.random.get_rng_state()
    return torch.cuda.get_rng_state(int(name.split(":")[1]))


@contextlib.contextmanager
def forked_global_rng(seed: int, devices: Iterable[torch.device | str | None] = ()) -> Iterator[GlobalRandomness]:
    """Runs the block with torch's global RNG forked and seeded with ``seed``, and restores it exactly afterwards.

    The CPU RNG is always forked; so is the RNG of every CUDA device in ``devices`` (other CUDA devices are neither
    seeded nor touched). The yielded `GlobalRandomness` says on exit which of them were drawn from inside the block.

    Args:
        seed (`int`):
            The seed of the forked RNGs, in ``[0, 2**64)``; see `global_rng_seed`.
        devices (iterable of `torch.device` or `str`, *optional*):
            The devices the block computes on; CUDA devices among them get their RNG forked and seeded too.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro.randomness import forked_global_rng
    >>> state = torch.random.get_rng_state()
    >>> with forked_global_rng(7) as randomness:
    ...     stray = torch.randn(2)
    >>> randomness.used, torch.equal(state, torch.random.get_rng_state())
    (True, True)
    ```
    """
    cuda = _cuda_indices(devices)
    report = GlobalRandomness(seed=seed, devices=["cpu"] + [f"cuda:{index}" for index in cuda])
    with torch.random.fork_rng(devices=cuda):
        # torch.manual_seed would also seed every CUDA device, including ones fork_rng does not restore: seed exactly
        # the generators that are forked.
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        start = {name: _state(name) for name in report.devices}
        try:
            yield report
        finally:
            report.used_on = [name for name, state in start.items() if not torch.equal(state, _state(name))]
