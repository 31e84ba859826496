"""Stray randomness: draws from torch's global RNG during a call, made deterministic and detected.

Seeded calls hand every image its own CPU generator, and diffusers' own code draws from those. A scheduler or a custom
component that ignores ``generator`` (``torch.randn(shape)``, ``torch.randint(...)``, ``F.dropout`` in train mode)
would draw from torch's global RNG instead, whose state depends on everything the process did before the call and
which every thread shares. `seeded_stray_randomness` runs the call under a torch function mode - per thread, unlike
the global RNG - that hands every such draw a generator of the call's own, seeded from the call's seeds: the draws
become a function of the seeds, they never reach another thread, and torch's global RNG is not touched at all. The
mode notes which devices it served: the substitute stream is shared by the whole batch, so an image that used it
depends on its batch (every seed, in order).

`forked_global_rng` is the process-wide way to the same bits for code that runs alone: it seeds torch's global RNG
itself for the block and restores it afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import operator
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .entry_points import ENTRY_POINTS, planned_entry_points

__all__ = [
    "GlobalRandomness",
    "draws_nothing_stray",
    "forked_global_rng",
    "global_rng_seed",
    "seeded_stray_randomness",
]

_SEED_DOMAIN = b"diffusers-repro/global-rng/v1|"


def global_rng_seed(seeds: Sequence[int | None]) -> int:
    """The seed of the generator that stands in for torch's global RNG in a call making images with ``seeds``.

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
    """What `seeded_stray_randomness` (or `forked_global_rng`) did: the seed, the devices, which were drawn from.

    Args:
        seed (`int`):
            The seed the substitute (or forked global) RNGs started from.
        devices (`list[str]`):
            The devices seeded: ``"cpu"`` and every CUDA device in use (``"cuda:0"``, ...).
        used_on (`list[str]`):
            The devices that served draws made without a generator inside the block; filled in when the block exits.
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


# Functions and methods that draw from torch's global RNG unless given ``generator=`` (all take it as a keyword).
_TAKE_GENERATOR = frozenset(
    {
        torch.randn,
        torch.rand,
        torch.randint,
        torch.randperm,
        torch.randn_like,
        torch.rand_like,
        torch.randint_like,
        torch.normal,
        torch.bernoulli,
        torch.multinomial,
        torch.poisson,
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
        torch.Tensor.bernoulli,
        torch.Tensor.bernoulli_,
        torch.Tensor.multinomial,
        torch.Tensor.random_,
        torch.Tensor.exponential_,
        torch.Tensor.cauchy_,
        torch.Tensor.log_normal_,
        torch.Tensor.geometric_,
    }
)
# Dropout takes no generator: in train mode (``training=True``, ``p > 0``) it is computed here as torch's CPU kernel
# computes it (a Bernoulli mask scaled by ``1 / (1 - p)``), with the mask drawn from the call's generator. The value
# is the input rank of a batched call for the feature (channel-wise) variants, None for element-wise dropout.
_DROPOUTS: dict[Any, int | None] = {
    torch.nn.functional.dropout: None,
    torch.nn.functional.dropout1d: 3,
    torch.nn.functional.dropout2d: 4,
    torch.nn.functional.dropout3d: 5,
}


def _draw_device(args: tuple, kwargs: dict) -> torch.device:
    device = kwargs.get("device")
    if device is not None:
        return torch.device(device)
    for value in args:
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.get_default_device()


class _SeededStrayRandomness(TorchFunctionMode):
    """Gives every draw made without a generator in this thread a generator seeded from the call's seeds."""

    def __init__(self, report: GlobalRandomness):
        super().__init__()
        self.report = report
        self.generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        name = str(device)
        generator = self.generators.get(name)
        if generator is None:
            generator = self.generators[name] = torch.Generator(device).manual_seed(self.report.seed)
        if name not in self.report.used_on:
            self.report.used_on.append(name)
        return generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # Called for every torch operation in the block: the common path must stay short.
        if func in _TAKE_GENERATOR:
            kwargs = dict(kwargs or {})
            if kwargs.get("generator") is None:
                kwargs["generator"] = self.generator(_draw_device(args, kwargs))
            return func(*args, **kwargs)
        if func in _DROPOUTS:
            return self.dropout(func, args, kwargs or {})
        return func(*args, **(kwargs or {}))

    def dropout(self, func, args: tuple, kwargs: dict) -> torch.Tensor:
        bound = inspect.signature(func).bind(*args, **kwargs)
        bound.apply_defaults()
        tensor, p, training, inplace = (bound.arguments[name] for name in ("input", "p", "training", "inplace"))
        if not training or p == 0 or p == 1:
            return func(*args, **kwargs)  # no draw: torch's own code gives the exact result
        feature_rank = _DROPOUTS[func]
        if feature_rank is None:
            shape = tensor.shape
        elif tensor.ndim == feature_rank - 1:  # unbatched input: one mask value per channel
            shape = (tensor.shape[0],) + (1,) * (tensor.ndim - 1)
        else:
            shape = tuple(tensor.shape[:2]) + (1,) * (tensor.ndim - 2)
        noise = tensor.new_empty(shape).bernoulli_(1 - p, generator=self.generator(tensor.device))
        noise.div_(1 - p)
        return tensor.mul_(noise) if inplace else tensor * noise


# Libraries whose model classes draw nothing without a generator in eval mode (they draw only in __init__, when
# initializing weights, and in dropout, which eval mode turns off).
_CLEAN_LIBRARIES = frozenset({"diffusers", "transformers", "torch", "peft"})


def draws_nothing_stray(module: torch.nn.Module) -> bool:
    """Whether evaluating ``module`` draws no random number without a generator, as far as its classes tell.

    True when every submodule is in eval mode and is a class of diffusers, transformers, torch or peft, and every
    attention processor is a diffusers class. A custom module, a module in train mode (dropout) or a custom attention
    processor anywhere inside makes it False.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro.randomness import draws_nothing_stray
    >>> draws_nothing_stray(torch.nn.Linear(2, 2).eval()), draws_nothing_stray(torch.nn.Dropout(0.1).train())
    (True, False)
    ```
    """
    return all(_is_clean_here(submodule) for submodule in module.modules())


def _is_clean_here(module: torch.nn.Module) -> bool:
    if module.training or type(module).__module__.split(".")[0] not in _CLEAN_LIBRARIES:
        return False
    processor = _processor(module)
    return processor is None or type(processor).__module__.split(".")[0] == "diffusers"


def _processor(module: torch.nn.Module) -> Any:
    # An attention processor: a plain attribute, or a submodule when it has weights (IP-adapter processors). Read for
    # every module only when a component is walked; each call reads it of the modules that had one.
    return getattr(module, "processor", None)


def _adapter_names(module: torch.nn.Module) -> tuple[str, ...]:
    return tuple(module.__dict__.get("peft_config") or ())


_TRAINING = operator.attrgetter("training")  # read in C: a call checks every submodule's flag


@dataclasses.dataclass
class _Cleanliness:
    """`draws_nothing_stray` of one component, and what it would take to change it.

    The component itself is not referenced (the cache is keyed weakly by it): only its submodules are.
    """

    clean: bool
    submodules: list[torch.nn.Module]
    any_training: bool
    processor_owners: list[torch.nn.Module]
    processor_types: list[type]
    adapters: tuple[str, ...]

    @classmethod
    def of(cls, module: torch.nn.Module) -> _Cleanliness:
        modules = list(module.modules())
        owners = [m for m in modules if _processor(m) is not None]
        return cls(
            clean=all(_is_clean_here(m) for m in modules),
            submodules=modules[1:],
            any_training=any(m.training for m in modules),
            processor_owners=[m for m in owners if m is not module],
            processor_types=[type(_processor(m)) for m in owners],
            adapters=_adapter_names(module),
        )

    def still_describes(self, module: torch.nn.Module) -> bool:
        """Whether ``module`` kept its train/eval modes, its attention processors' classes and its LoRA adapters."""
        if _adapter_names(module) != self.adapters:
            return False
        if (module.training or any(map(_TRAINING, self.submodules))) != self.any_training:
            return False
        owners = [module, *self.processor_owners] if _processor(module) is not None else self.processor_owners
        return len(owners) == len(self.processor_types) and all(
            type(_processor(m)) is kind for m, kind in zip(owners, self.processor_types, strict=True)
        )


# `draws_nothing_stray` per component object, keyed weakly; see `draws_nothing_stray_cached`.
_CLEANLINESS: weakref.WeakKeyDictionary[torch.nn.Module, _Cleanliness] = weakref.WeakKeyDictionary()


def draws_nothing_stray_cached(module: torch.nn.Module) -> bool:
    """`draws_nothing_stray`, walked once per component object and walked again when the component changed.

    A call asks it of every component; walking a model's modules costs about 0.7 ms a call on the small SD config,
    while the per-call check reads only the train/eval flags, the attention processors' classes and the names of the
    LoRA adapters. A submodule replaced by hand deep inside a component is not seen by that check: the Repro
    pipeline's LoRA methods and ``register_modules`` forget the component (`forget_cleanliness`), so that
    ``pipe.register_modules(unet=pipe.unet)`` after such surgery has it walked again.
    """
    entry = _CLEANLINESS.get(module)
    if entry is None or not entry.still_describes(module):
        entry = _CLEANLINESS[module] = _Cleanliness.of(module)
    return entry.clean


def forget_cleanliness(module: Any) -> None:
    """Drops what `draws_nothing_stray_cached` knows of ``module``: its next call walks it again."""
    if isinstance(module, torch.nn.Module):
        _CLEANLINESS.pop(module, None)


@contextlib.contextmanager
def seeded_stray_randomness(
    seed: int,
    devices: Iterable[torch.device | str | None] = (),
    clean_modules: Iterable[torch.nn.Module] = (),
) -> Iterator[GlobalRandomness]:
    """Gives every random draw made without a generator in this thread, inside the block, a generator of its own.

    Inside the block, ``torch.randn(...)``, ``tensor.normal_()``, ``torch.randint(...)``, ``torch.bernoulli``,
    ``torch.multinomial``, the ``*_like`` draws, ``F.dropout`` / ``dropout1d/2d/3d`` in train mode and the other
    functions that take ``generator=`` draw from a generator seeded with ``seed`` (one per device) instead of torch's
    global RNG, so they give the bits they would give from the global RNG seeded with ``seed``. It is a torch
    function mode: it acts in the calling thread only, other threads draw from the global RNG as usual, and the global
    RNG's state is never read or changed. The yielded `GlobalRandomness` says on exit which devices served draws.

    Not covered: ``F.alpha_dropout``, ``F.feature_alpha_dropout`` and ``F.rrelu`` in train mode (they draw inside
    torch's kernels and take no generator), and randomness from Python's ``random`` or NumPy.

    Args:
        seed (`int`):
            The seed of the substitute generators, in ``[0, 2**64)``; see `global_rng_seed`.
        devices (iterable of `torch.device` or `str`, *optional*):
            The devices the block computes on: ``GlobalRandomness.devices`` lists the CPU and the CUDA devices
            among them. A draw on any device gets a generator.
        clean_modules (iterable of `torch.nn.Module`, *optional*):
            Modules known to draw nothing without a generator (see `draws_nothing_stray`): while one of their entry
            points (`diffusers_repro.entry_points.ENTRY_POINTS`: ``forward``, ``encode``, ``decode``, ...) runs in
            this thread, the mode is off the stack, so their operations cost nothing extra.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro.randomness import seeded_stray_randomness
    >>> state = torch.random.get_rng_state()
    >>> with seeded_stray_randomness(7) as randomness:
    ...     stray = torch.randn(2)
    >>> torch.equal(stray, torch.randn(2, generator=torch.Generator().manual_seed(7)))
    True
    >>> randomness.used_on, torch.equal(state, torch.random.get_rng_state())
    (['cpu'], True)
    ```
    """
    report = GlobalRandomness(seed=seed, devices=["cpu"] + [f"cuda:{index}" for index in _cuda_indices(devices)])
    mode = _SeededStrayRandomness(report)
    with mode, planned_entry_points(((module, {"aside": mode}) for module in clean_modules), ENTRY_POINTS):
        yield report
