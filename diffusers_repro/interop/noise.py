"""The noise other tools make, as inputs of a diffusers call: starting ``latents`` and the generators of later draws.

A diffusers call takes ``latents=`` (the starting noise, which the pipeline multiplies by the scheduler's
``init_noise_sigma``) and ``generator=`` (what ancestral and SDE schedulers draw their later noise from in ``step``).
Each function here rebuilds what one tool drew, read from that tool's own source:

- AUTOMATIC1111 1.6 - 1.10 (`a1111_noise`, ``modules/rng.py`` ``ImageRNG``): one generator per image, image ``i`` of a
  batch seeded ``seed + i`` (the same seed for every image when a variation seed is used, and ``subseed + i``); the
  variation seed slerps two draws; "Seed resize from" draws at the old size and pastes the draw centred on a draw at
  the new size; the later noise continues each image's generator, or restarts it at ``seed + ENSD``. ``RNG: CPU`` is a
  CPU generator, ``RNG: GPU`` torch's CUDA generator (`PhiloxGenerator` emulation), ``RNG: NV`` A1111's own numpy
  Philox (``modules/rng_philox.py``), which is neither.
- ComfyUI (`comfyui_noise`, ``comfy/sample.py`` ``prepare_noise``): the whole batch from one CPU generator seeded once;
  ancestral samplers draw batch-shaped noise from one generator on the sampling device, seeded ``seed`` (``seed + 1``
  on the CPU).
- InvokeAI (`invokeai_noise`, ``invokeai/app/invocations/noise.py``): one generator per image, on the CPU (``use_cpu``)
  or torch's CUDA generator (``rand_device: cuda``); the schedulers' later noise from one generator on the denoising
  device seeded ``seed ^ 0xFFFFFFFF``; the start ``scheduler.add_noise(zeros, noise, first timestep)`` as the latents
  a diffusers pipeline takes (`invokeai_start`).

Every function returns a `ToolNoise`; what cannot be made equal is said in its ``blockers``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from ..generation import (
    GEOMETRY_FREE_LIMIT,
    MAX_SEED,
    CudaGeometry,
    CudaRandnMode,
    EmulatedCudaGenerator,
    PhiloxGenerator,
    offset_increment,
    philox4x32_10,
)

__all__ = [
    "MAX_LATENT_SIDE",
    "MAX_LATENT_CHANNELS",
    "MAX_NOISE_BATCH",
    "A1111NvGenerator",
    "A1111NvRandnMode",
    "ToolNoise",
    "a1111_noise",
    "a1111_nv_randn",
    "comfyui_noise",
    "invokeai_noise",
    "invokeai_start",
]

MAX_NOISE_BATCH = 64
"""Most images one call's noise is made for (the replay limit on a batch)."""
MAX_LATENT_SIDE = 512
"""Largest latent height or width: 4096 pixels at SD's downscale of 8 (the replay limit on an image's size)."""
MAX_LATENT_CHANNELS = 16
"""Most latent channels (SD and SDXL have 4, SD3 and Flux 16)."""

INVOKEAI_SEED_MAX = 2**32 - 1
"""InvokeAI's ``SEED_MAX`` (``np.iinfo(np.uint32).max``): its seeds are taken modulo ``SEED_MAX + 1``."""

_NOISE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_A1111_RNGS = ("cpu", "gpu", "nv")
_COMFYUI_DEVICES = ("cpu", "cuda")

# A1111's rng_philox float32 constants: 2**-32 and 2pi * 2**-32 as A1111 spells them (its Box-Muller then runs in
# float64, because numpy promotes uint32 x float32 arrays to float64).
_NV_TWO_POW32_INV = np.float32(2.3283064e-10)
_NV_TWO_POW32_INV_2PI = np.float32(2.3283064e-10 * 6.2831855)


@dataclasses.dataclass(frozen=True)
class ToolNoise:
    """The noise a tool made, as a diffusers call takes it.

    Args:
        latents (`torch.Tensor`):
            The starting noise of the whole batch, ``(B, C, H, W)`` on the CPU, before the scheduler's
            ``init_noise_sigma`` scaling: pass it as ``latents=``.
        generator (`torch.Generator`, `list[torch.Generator]` or `None`):
            What to pass as ``generator=`` so that an ancestral scheduler's later draws are the tool's: one per image
            (a list), one for the whole batch (ComfyUI's batch-shaped draws), or `None` when no generator can be.
        blockers (`tuple[str]`):
            Plain sentences naming what stands between this noise and the tool's exact noise.
        notes (`tuple[str]`):
            How the noise relates to the tool's in ways that do not change the bits (devices, scaling).
        rng (`str`):
            ``"cpu"`` (CPU generators), ``"cuda"`` (torch's CUDA generator, emulated) or ``"a1111-nv"``.
        geometry (`CudaGeometry` or `None`):
            The GPU geometry the ``"cuda"`` draws are laid out for.

    Example:

    ```py
    >>> from diffusers_repro.interop.noise import a1111_noise
    >>> noise = a1111_noise((1, 4, 8, 8), 42, rng="cpu")
    >>> noise.latents.shape, noise.rng
    (torch.Size([1, 4, 8, 8]), 'cpu')
    >>> # with noise.context():
    >>> #     pipe(prompt, latents=noise.latents, generator=noise.generator)
    ```
    """

    latents: torch.Tensor
    generator: torch.Generator | list[torch.Generator] | None
    blockers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    rng: str = "cpu"
    geometry: CudaGeometry | None = None

    def context(self) -> contextlib.AbstractContextManager:
        """The torch function mode the generators need to draw the tool's values (enter it around the call)."""
        if self.rng == "cuda":
            return CudaRandnMode(self.geometry)
        if self.rng == "a1111-nv":
            return A1111NvRandnMode()
        return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------------------
# Checking what comes from files


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        kind = type(value).__name__
        raise TypeError(f"{name} must be an int between {low} and {high}, got {value!r} of type {kind}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {int(value)}")
    return int(value)


def _check_shape(shape: Any) -> tuple[int, int, int, int]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"shape must be (batch, channels, latent height, latent width), got {shape!r}")
    batch = _check_int(shape[0], "shape[0] (batch)", 1, MAX_NOISE_BATCH)
    channels = _check_int(shape[1], "shape[1] (channels)", 1, MAX_LATENT_CHANNELS)
    height = _check_int(shape[2], "shape[2] (latent height)", 1, MAX_LATENT_SIDE)
    width = _check_int(shape[3], "shape[3] (latent width)", 1, MAX_LATENT_SIDE)
    return batch, channels, height, width


def _check_seed_list(seeds: Any, name: str, count: int, high: int = MAX_SEED) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TypeError(f"{name} must be an int or a list of {count} ints, got {seeds!r}")
    if len(seeds) != count:
        raise ValueError(f"{name} has {len(seeds)} values but the batch (shape[0]) has {count} images")
    return [_check_int(seed, f"{name}[{index}]", 0, high) for index, seed in enumerate(seeds)]


def _check_dtype(dtype: Any) -> torch.dtype:
    if dtype not in _NOISE_DTYPES:
        raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")
    return dtype


def _check_geometry(geometry: Any) -> CudaGeometry | None:
    if geometry is None or isinstance(geometry, CudaGeometry):
        return geometry
    if isinstance(geometry, str):
        return CudaGeometry.parse(geometry)
    raise TypeError(f"geometry must be a CudaGeometry, a string like '108x2048' or 'A100', or None; got {geometry!r}")


def _cuda_philox(seed: int, numel: int, geometry: CudaGeometry | None, what: str) -> PhiloxGenerator:
    if geometry is None and numel > GEOMETRY_FREE_LIMIT:
        raise ValueError(
            f"{what} draws {numel} values per image with torch's CUDA generator, whose layout above "
            f"{GEOMETRY_FREE_LIMIT} values depends on the GPU: pass geometry= (e.g. '108x2048' or 'A100', the "
            f"multiprocessors x max threads per multiprocessor of the GPU that made the image)"
        )
    return PhiloxGenerator.with_geometry(seed, geometry)


# ----------------------------------------------------------------------------------------------------------------
# A1111's "NV" generator


def a1111_nv_randn(seed: int, counter: int, shape: Sequence[int]) -> torch.Tensor:
    """What A1111's ``rng_philox.Generator(seed)`` returns for its ``counter``-th ``randn(shape)`` (``RNG: NV``).

    Element ``i`` is Philox4x32-10 at counter ``(counter, 0, i, 0)`` keyed by the seed, turned into one normal by
    Box-Muller in float64 (A1111's numpy promotes its float32 constants) and rounded to float32. Below the GPU
    geometry threshold this is torch's CUDA layout, close but not bitwise (measured within 3.6e-6 of the emulated
    CUDA values, about 73% of values differing in some bit: the GPU evaluates Box-Muller in float32); above it A1111
    keeps one element per thread and one counter step per draw where the GPU clamps its grid and strides, so the
    values there are other numbers altogether.

    Example:

    ```py
    >>> from diffusers_repro.interop.noise import a1111_nv_randn
    >>> a1111_nv_randn(0, 0, (4,))
    tensor([-0.9247, -0.4253, -2.6438,  0.1452])
    ```
    """
    numel = math.prod(shape)
    if numel >= 2**32:
        raise ValueError(f"A1111's NV generator numbers elements with 32 bits; a draw of {numel} values is too large")
    x, y = philox4x32_10(counter, np.arange(numel, dtype=np.uint32), seed, outputs=2)
    u = x.astype(np.float64) * np.float64(_NV_TWO_POW32_INV) + np.float64(_NV_TWO_POW32_INV / np.float32(2))
    v = y.astype(np.float64) * np.float64(_NV_TWO_POW32_INV_2PI) + np.float64(_NV_TWO_POW32_INV_2PI / np.float32(2))
    values = (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)
    return torch.from_numpy(values).reshape(tuple(shape))


class A1111NvGenerator(torch.Generator):
    """A CPU ``torch.Generator`` that stands for A1111's ``rng_philox.Generator`` in diffusers' calls.

    Inside `A1111NvRandnMode`, ``torch.randn(shape, generator=g)`` returns `a1111_nv_randn` at the generator's counter
    and advances the counter by one, as A1111's generator does per draw. Its own CPU state is never drawn from.

    Args:
        seed (`int`): The seed.
        counter (`int`, *optional*, defaults to 0): The number of draws already made.
    """

    nv_seed: int
    counter: int

    def __new__(cls, seed: int, counter: int = 0):
        generator = super().__new__(cls, "cpu")
        generator.nv_seed = _check_int(seed, "seed", 0, MAX_SEED)
        generator.counter = _check_int(counter, "counter", 0, 2**32 - 1)
        return generator

    def __init__(self, seed: int, counter: int = 0):
        self.manual_seed(self.nv_seed)

    def initial_seed(self) -> int:
        return self.nv_seed

    def __repr__(self) -> str:
        return f"A1111NvGenerator(seed={self.nv_seed}, counter={self.counter})"


class A1111NvRandnMode(TorchFunctionMode):
    """Answers ``torch.randn(..., generator=g)`` with A1111's NV values when ``g`` is an `A1111NvGenerator`.

    A torch function mode: per thread, active only inside its ``with`` block. Other random functions given such a
    generator raise rather than draw numbers A1111 would not have drawn.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        generator = kwargs.get("generator")
        if not isinstance(generator, A1111NvGenerator):
            return func(*args, **kwargs)
        if func is not torch.randn or kwargs.get("out") is not None:
            name = getattr(func, "__name__", repr(func))
            raise NotImplementedError(f"A1111's NV generator emulates torch.randn only, but {name} was called with it")
        shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
        values = a1111_nv_randn(generator.nv_seed, generator.counter, tuple(int(size) for size in shape))
        generator.counter += 1
        dtype = kwargs.get("dtype") or torch.get_default_dtype()
        values = values.to(dtype)
        device = kwargs.get("device")
        return values if device is None else values.to(device)


# ----------------------------------------------------------------------------------------------------------------
# AUTOMATIC1111


def _a1111_slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    # A1111 slerps each image's (C, H, W) noise with norms along dim 1 (the latent height), as its code does.
    low_norm = low / torch.linalg.vector_norm(low, dim=1, keepdim=True)
    high_norm = high / torch.linalg.vector_norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * strength + high * (1 - strength)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / sin_omega).unsqueeze(1) * low + (
        torch.sin(strength * omega) / sin_omega
    ).unsqueeze(1) * high


def _paste_centred(small: torch.Tensor, large: torch.Tensor) -> torch.Tensor:
    """A1111's "Seed resize from": the old-size draw centred on the new-size draw (cropped where it is larger)."""
    dx = (large.shape[2] - small.shape[2]) // 2
    dy = (large.shape[1] - small.shape[1]) // 2
    width = small.shape[2] if dx >= 0 else small.shape[2] + 2 * dx
    height = small.shape[1] if dy >= 0 else small.shape[1] + 2 * dy
    to_x, to_y = max(dx, 0), max(dy, 0)
    from_x, from_y = max(-dx, 0), max(-dy, 0)
    out = large.clone()
    out[:, to_y : to_y + height, to_x : to_x + width] = small[:, from_y : from_y + height, from_x : from_x + width]
    return out


class _A1111Draws:
    """A1111's three RNG sources: fresh draws of a seed, and each image's generator for the later noise."""

    def __init__(self, rng: str, geometry: CudaGeometry | None):
        self.rng, self.geometry = rng, geometry

    def first(self, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The first draw of a fresh generator of ``seed`` (A1111's ``randn(seed, shape)``)."""
        if self.rng == "cpu":
            return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
        if self.rng == "gpu":
            return _cuda_philox(seed, math.prod(shape), self.geometry, "RNG: GPU").randn(shape)
        return a1111_nv_randn(seed, 0, shape)

    def later(self, seed: int, draws_made: int, shape: tuple[int, ...]) -> torch.Generator:
        """A generator of ``seed`` that has made ``draws_made`` draws of ``shape`` (0 or 1), for diffusers' calls."""
        if self.rng == "cpu":
            generator = torch.Generator("cpu").manual_seed(seed)
            for _ in range(draws_made):
                torch.randn(shape, generator=generator)
            return generator
        if self.rng == "gpu":
            philox = _cuda_philox(seed, math.prod(shape), self.geometry, "RNG: GPU")
            philox.set_offset(draws_made * offset_increment(math.prod(shape), self.geometry))
            return EmulatedCudaGenerator(philox)
        return A1111NvGenerator(seed, counter=draws_made)


def _a1111_seeds(seeds: Any, subseeds: Any, subseed_strength: float, batch: int) -> tuple[list[int], list[int]]:
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, (bool, np.bool_)):
        base = _check_int(seeds, "seeds", 0, MAX_SEED - batch + 1)
        # A1111 gives every image of a variation-seed batch the same seed and varies only the subseed.
        seed_list = [base + (index if subseed_strength == 0 else 0) for index in range(batch)]
    else:
        seed_list = _check_seed_list(seeds, "seeds", batch)
    if subseeds is None:
        subseed_list = [0] * batch
    elif isinstance(subseeds, numbers.Integral) and not isinstance(subseeds, (bool, np.bool_)):
        base = _check_int(subseeds, "subseeds", 0, MAX_SEED - batch + 1)
        subseed_list = [base + index for index in range(batch)]
    else:
        subseed_list = _check_seed_list(subseeds, "subseeds", batch)
    return seed_list, subseed_list


def _check_resize(seed_resize_from: Any) -> tuple[int, int] | None:
    if seed_resize_from is None:
        return None
    if not isinstance(seed_resize_from, (tuple, list)) or len(seed_resize_from) != 2:
        raise ValueError(f"seed_resize_from must be (width, height) in pixels, got {seed_resize_from!r}")
    width = _check_int(seed_resize_from[0], "seed_resize_from[0] (width)", 0, MAX_LATENT_SIDE * 8)
    height = _check_int(seed_resize_from[1], "seed_resize_from[1] (height)", 0, MAX_LATENT_SIDE * 8)
    # A1111 ignores the resize unless both sides are positive, and draws at (side // 8) latents.
    if width <= 0 or height <= 0 or width // 8 == 0 or height // 8 == 0:
        return None
    return width, height


def a1111_noise(
    shape: Sequence[int],
    seeds: int | Sequence[int],
    *,
    subseeds: int | Sequence[int] | None = None,
    subseed_strength: float = 0.0,
    seed_resize_from: tuple[int, int] | None = None,
    rng: str = "gpu",
    ensd: int = 0,
    geometry: CudaGeometry | str | None = None,
    sampler: str | None = None,
) -> ToolNoise:
    """The noise AUTOMATIC1111 (1.6 - 1.10) made for a batch: starting latents and each image's later-noise generator.

    Args:
        shape (`tuple[int]`):
            ``(batch, channels, height // 8, width // 8)`` of the latents.
        seeds (`int` or `list[int]`):
            An int is A1111's ``Seed`` of the batch's first image: image ``i`` gets ``seed + i``, or ``seed`` itself
            for every image when ``subseed_strength`` is not 0 (as A1111 does). A list gives each image's seed (the
            ``Seed`` of each image's infotext: image 2 of a batch alone is ``shape[0] = 1`` and ``seeds=[seed + 2]``).
        subseeds (`int` or `list[int]`, *optional*):
            ``Variation seed``: an int gives image ``i`` ``subseed + i``; a list each image's own.
        subseed_strength (`float`, *optional*, defaults to 0):
            ``Variation seed strength``, between 0 and 1.
        seed_resize_from (`tuple[int, int]`, *optional*):
            ``Seed resize from`` as ``(width, height)`` in pixels.
        rng (`str`, *optional*, defaults to ``"gpu"``):
            ``RNG``: ``"cpu"``, ``"gpu"`` (A1111 reads a missing ``RNG`` field as GPU) or ``"nv"``.
        ensd (`int`, *optional*, defaults to 0):
            ``ENSD`` (eta noise seed delta): the later noise restarts each image's generator at ``seed + ensd``.
        geometry (`CudaGeometry` or `str`, *optional*):
            For ``rng="gpu"``: the geometry of the GPU that made the image, needed when one image's latents hold more
            than `~diffusers_repro.cuda_rng.GEOMETRY_FREE_LIMIT` values (SDXL at 1024 x 1024).
        sampler (`str`, *optional*):
            A1111's ``Sampler`` name; samplers with Brownian-tree noise (the ``SDE`` ones) get a blocker.

    Returns:
        `ToolNoise`: latents ``shape``, one generator per image (``rng="gpu"`` and ``"nv"`` need ``context()``).

    Example:

    ```py
    >>> from diffusers_repro.interop.noise import a1111_noise
    >>> noise = a1111_noise((1, 4, 8, 8), [44], rng="cpu", ensd=31337)
    >>> noise.generator[0].initial_seed()
    31381
    ```
    """
    batch, channels, height, width = _check_shape(shape)
    if rng not in _A1111_RNGS:
        raise ValueError(f"rng must be one of {', '.join(map(repr, _A1111_RNGS))} (A1111's RNG field), got {rng!r}")
    if isinstance(subseed_strength, bool) or not isinstance(subseed_strength, numbers.Real):
        raise TypeError(f"subseed_strength must be a number between 0 and 1, got {subseed_strength!r}")
    subseed_strength = float(subseed_strength)
    if not 0.0 <= subseed_strength <= 1.0:
        raise ValueError(f"subseed_strength must be between 0 and 1, got {subseed_strength}")
    seed_list, subseed_list = _a1111_seeds(seeds, subseeds, subseed_strength, batch)
    ensd = _check_int(ensd, "ensd", 0, 2**32 - 1)
    if ensd and max(seed_list) + ensd > MAX_SEED:
        raise ValueError(f"seed {max(seed_list)} + ensd {ensd} is past the largest seed {MAX_SEED}")
    geometry = _check_geometry(geometry)
    resize = _check_resize(seed_resize_from)
    if sampler is not None and not isinstance(sampler, str):
        raise TypeError(f"sampler must be A1111's sampler name (a string) or None, got {sampler!r}")

    image_shape = (channels, height, width)
    noise_shape = image_shape if resize is None else (channels, resize[1] // 8, resize[0] // 8)
    draws = _A1111Draws(rng, geometry)
    images = []
    for seed, subseed in zip(seed_list, subseed_list, strict=True):
        # Each image's own generator draws once at the image's size, and the pasted or slerped draws come from fresh
        # generators of the same seeds, so each draw is a first draw.
        noise = draws.first(seed, noise_shape)
        if subseed_strength != 0:
            noise = _a1111_slerp(subseed_strength, noise, draws.first(subseed, noise_shape))
        if noise_shape != image_shape:
            noise = _paste_centred(noise, draws.first(seed, image_shape))
        images.append(noise)
    latents = torch.stack(images)
    generators = [
        draws.later(seed + ensd, 0, image_shape) if ensd else draws.later(seed, 1, image_shape) for seed in seed_list
    ]

    blockers, notes = [], []
    if sampler is not None and "SDE" in sampler.upper():
        blockers.append(
            f"A1111's {sampler} draws its later noise from a Brownian tree (torchsde) per image seed, which "
            f"diffusers' generators do not reproduce"
        )
    if rng == "gpu":
        notes.append(
            "RNG: GPU is torch's CUDA generator, emulated on the CPU within 1e-6 of a GPU's values (the GPU's fast "
            "sine is not repeatable bit for bit); on a CUDA GPU of that geometry torch's own generator gives its bits"
        )
    if subseed_strength != 0:
        notes.append(
            "A1111 slerps the variation seed on its device (a GPU, usually); this slerp ran on the CPU, whose float32 "
            "norm, acos and sin may round the last bit differently"
        )
    notes.append("A1111's k-diffusion samplers scale the latents by the first sigma (diffusers' init_noise_sigma)")
    return ToolNoise(
        latents=latents,
        generator=generators,
        blockers=tuple(blockers),
        notes=tuple(notes),
        rng={"cpu": "cpu", "gpu": "cuda", "nv": "a1111-nv"}[rng],
        geometry=geometry if rng == "gpu" else None,
    )


# ----------------------------------------------------------------------------------------------------------------
# ComfyUI


def comfyui_noise(
    shape: Sequence[int],
    seed: int,
    *,
    batch_size: int | None = None,
    batch_index: int | Sequence[int] | None = None,
    sampler_device: str = "cuda",
    geometry: CudaGeometry | str | None = None,
    sampler: str | None = None,
) -> ToolNoise:
    """The noise ComfyUI's KSampler made: its ``prepare_noise`` batch, and its ancestral samplers' generator.

    ComfyUI draws the whole batch's starting noise ``(batch_size, C, H, W)`` from one CPU generator seeded once, so
    image ``k`` of the batch is the rows after the first ``k`` images' values. Its ancestral samplers draw batch-shaped
    noise from one generator on the sampling device seeded with ``seed`` (``seed + 1`` on the CPU).

    Args:
        shape (`tuple[int]`):
            ``(images, channels, height // 8, width // 8)``: the latents of the images the call makes.
        seed (`int`):
            The KSampler's ``seed`` (``noise_seed`` of KSamplerAdvanced).
        batch_size (`int`, *optional*):
            The ``batch_size`` of ComfyUI's empty latent; defaults to ``shape[0]``.
        batch_index (`int` or `list[int]`, *optional*):
            Which images of ComfyUI's batch the call makes, one per image of ``shape``; `None` makes the whole batch.
            A ComfyUI file does not say which image of its batch it is: try each index the batch size allows.
        sampler_device (`str`, *optional*, defaults to ``"cuda"``):
            The device ComfyUI sampled on, which draws the ancestral noise: ``"cuda"`` or ``"cpu"``.
        geometry (`CudaGeometry` or `str`, *optional*):
            The GPU's geometry, for CUDA draws of more than `~diffusers_repro.cuda_rng.GEOMETRY_FREE_LIMIT` values.
        sampler (`str`, *optional*):
            ComfyUI's ``sampler_name``; the ``sde`` ones get a blocker (Brownian-tree noise).

    Returns:
        `ToolNoise`: latents ``shape``; ``generator`` a single generator for the whole batch in order (what ComfyUI's
        ancestral samplers draw from), or `None` with a blocker when the call makes part of the batch.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro.interop.noise import comfyui_noise
    >>> whole = comfyui_noise((3, 4, 8, 8), 7, sampler_device="cpu")
    >>> second = comfyui_noise((1, 4, 8, 8), 7, batch_size=3, batch_index=1)
    >>> torch.equal(whole.latents[1:2], second.latents)
    True
    ```
    """
    images, channels, height, width = _check_shape(shape)
    seed = _check_int(seed, "seed", 0, MAX_SEED - 1)
    batch_size = images if batch_size is None else _check_int(batch_size, "batch_size", 1, MAX_NOISE_BATCH)
    if batch_index is None:
        if batch_size != images:
            raise ValueError(
                f"batch_index is needed when the call makes {images} of ComfyUI's batch of {batch_size} images"
            )
        indices = list(range(batch_size))
    elif isinstance(batch_index, numbers.Integral) and not isinstance(batch_index, (bool, np.bool_)):
        indices = [_check_int(batch_index, "batch_index", 0, batch_size - 1)]
    elif isinstance(batch_index, Sequence) and not isinstance(batch_index, (str, bytes)):
        indices = [_check_int(index, f"batch_index[{n}]", 0, batch_size - 1) for n, index in enumerate(batch_index)]
    else:
        raise TypeError(f"batch_index must be an int, a list of ints or None, got {batch_index!r}")
    if len(indices) != images:
        raise ValueError(f"batch_index names {len(indices)} images but the call makes {images} (shape[0])")
    if sampler_device not in _COMFYUI_DEVICES:
        raise ValueError(f"sampler_device must be 'cuda' or 'cpu' (where ComfyUI sampled), got {sampler_device!r}")
    geometry = _check_geometry(geometry)
    if sampler is not None and not isinstance(sampler, str):
        raise TypeError(f"sampler must be ComfyUI's sampler_name (a string) or None, got {sampler!r}")

    generator = torch.Generator("cpu").manual_seed(seed)
    batch = torch.randn((batch_size, channels, height, width), generator=generator)
    latents = batch[indices].clone()

    blockers, notes = [], []
    whole_batch = indices == list(range(batch_size))
    later: torch.Generator | None = None
    rng, used_geometry = "cpu", None
    if not whole_batch:
        blockers.append(
            f"ComfyUI's ancestral samplers draw noise for the whole batch of {batch_size} from one generator; images "
            f"{indices} alone cannot be given their rows of it (regenerate the whole batch in order)"
        )
    elif sampler_device == "cpu":
        later = torch.Generator("cpu").manual_seed(seed + 1)
    else:
        numel = batch_size * channels * height * width
        later = EmulatedCudaGenerator(_cuda_philox(seed, numel, geometry, "ComfyUI's ancestral sampler"))
        rng, used_geometry = "cuda", geometry
        notes.append("ComfyUI's ancestral noise on a GPU is torch's CUDA generator, emulated within 1e-6 of a GPU's")
    if sampler is not None and "sde" in sampler.lower():
        blockers.append(
            f"ComfyUI's {sampler} draws its later noise from a Brownian tree (torchsde), which diffusers' generators "
            f"do not reproduce"
        )
    notes.append("pass generator= as one generator, not a list: ComfyUI draws each step's noise batch-shaped")
    return ToolNoise(latents, later, tuple(blockers), tuple(notes), rng, used_geometry)


# ----------------------------------------------------------------------------------------------------------------
# InvokeAI


def invokeai_noise(
    shape: Sequence[int],
    seeds: int | Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    rand_device: str = "cpu",
    denoise_device: str = "cuda",
    geometry: CudaGeometry | str | None = None,
) -> ToolNoise:
    """The noise InvokeAI's noise node made (``rand_device: cpu`` or ``cuda``), and its schedulers' generator.

    InvokeAI's ``get_noise`` seeds a fresh generator with the image's seed, on the CPU (``use_cpu``, ``rand_device:
    cpu``) or on the device it runs on (``rand_device: cuda``: ``torch.Generator("cuda")``), and draws ``(1, C, H, W)``
    in its model dtype (float16 on a GPU by default). A half-precision CPU draw is not float32 values rounded; a
    half-precision CUDA draw is (torch's CUDA ``randn`` computes every value in float32), so the CUDA noise is
    `~diffusers_repro.PhiloxGenerator`'s. Its denoise passes schedulers that take one a generator seeded
    ``seed ^ 0xFFFFFFFF`` on the denoising device. The start is not ``noise x init_noise_sigma``: see
    `invokeai_start`.

    Args:
        shape (`tuple[int]`): ``(images, channels, height // 8, width // 8)``.
        seeds (`int` or `list[int]`): Each image's seed (an int for a single image or the same seed for all).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): The dtype InvokeAI drew in (its model's).
        rand_device (`str`, *optional*, defaults to ``"cpu"``): ``rand_device`` of the metadata: ``"cpu"`` or
            ``"cuda"``.
        denoise_device (`str`, *optional*, defaults to ``"cuda"``): Where InvokeAI denoised: ``"cuda"`` or ``"cpu"``
            (``"cuda"`` whenever ``rand_device`` is: InvokeAI draws GPU noise on the device it runs on).
        geometry (`CudaGeometry` or `str`, *optional*): The GPU's geometry, needed for CUDA draws of more than
            `~diffusers_repro.cuda_rng.GEOMETRY_FREE_LIMIT` values per image (SDXL at 1024 x 1024).

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro import PhiloxGenerator
    >>> from diffusers_repro.interop.noise import invokeai_noise
    >>> noise = invokeai_noise((1, 4, 8, 8), 5, denoise_device="cpu")
    >>> torch.equal(noise.latents, torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5)))
    True
    >>> gpu = invokeai_noise((1, 4, 8, 8), 5, dtype=torch.float16, rand_device="cuda")
    >>> torch.equal(gpu.latents, PhiloxGenerator(5).randn((1, 4, 8, 8)).to(torch.float16))
    True
    ```
    """
    images, channels, height, width = _check_shape(shape)
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, (bool, np.bool_)):
        seed_list = [_check_int(seeds, "seeds", 0, INVOKEAI_SEED_MAX)] * images
    else:
        seed_list = _check_seed_list(seeds, "seeds", images, INVOKEAI_SEED_MAX)
    dtype = _check_dtype(dtype)
    if rand_device not in _COMFYUI_DEVICES:
        raise ValueError(f"rand_device must be 'cpu' or 'cuda' (InvokeAI's rand_device), got {rand_device!r}")
    if denoise_device not in _COMFYUI_DEVICES:
        raise ValueError(f"denoise_device must be 'cuda' or 'cpu' (where InvokeAI denoised), got {denoise_device!r}")
    if rand_device == "cuda" and denoise_device != "cuda":
        raise ValueError(
            "denoise_device must be 'cuda' when rand_device is 'cuda': InvokeAI draws GPU noise on the device it "
            f"denoises on, got denoise_device={denoise_device!r}"
        )
    geometry = _check_geometry(geometry)
    image_shape = (1, channels, height, width)
    numel = channels * height * width
    if rand_device == "cpu":
        draws = [
            torch.randn(image_shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)
            for seed in seed_list
        ]
    else:
        what = "InvokeAI's GPU noise (rand_device: cuda)"
        draws = [_cuda_philox(seed, numel, geometry, what).randn(image_shape, dtype=dtype) for seed in seed_list]
    latents = torch.cat(draws)
    later_seeds = [seed ^ 0xFFFFFFFF for seed in seed_list]
    notes = [
        "InvokeAI starts from scheduler.add_noise(zeros, noise, first timestep), not noise x init_noise_sigma "
        "(invokeai_start gives the latents that make the pipeline start there)"
    ]
    rng, used_geometry = "cpu", None
    if denoise_device == "cpu":
        generators: list[torch.Generator] = [torch.Generator("cpu").manual_seed(seed) for seed in later_seeds]
    else:
        # Made without the geometry check: most schedulers never draw from it (a draw that needs the geometry it
        # lacks raises then, naming it).
        generators = [EmulatedCudaGenerator(PhiloxGenerator.with_geometry(seed, geometry)) for seed in later_seeds]
        rng, used_geometry = "cuda", geometry
    if rand_device == "cuda":
        notes.append(
            "rand_device: cuda is torch's CUDA generator, emulated on the CPU within 1e-6 of a GPU's values (float16 "
            "draws are those values rounded); on a CUDA GPU of that geometry torch's own generator gives its bits"
        )
    return ToolNoise(latents, generators, (), tuple(notes), rng, used_geometry)


def _neighbours(values: torch.Tensor, steps: int) -> torch.Tensor:
    """The floats ``steps`` representable values away from ``values`` (through their integer bits: away from zero
    for a positive step)."""
    integer = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[values.dtype]
    return (values.view(integer) + steps).view(values.dtype)


def invokeai_start(noise: torch.Tensor, scheduler: Any, num_inference_steps: int) -> tuple[torch.Tensor, int]:
    """The ``latents=`` that make a diffusers pipeline start where InvokeAI starts, and how many values cannot.

    InvokeAI's denoise starts from ``scheduler.add_noise(zeros, noise, first timestep)`` (its
    ``latents_from_embeddings``; ``init_noise_sigma`` is not used); a diffusers pipeline starts from ``latents x
    scheduler.init_noise_sigma``. This returns the latents whose product with ``init_noise_sigma`` is InvokeAI's start:
    exactly ``add_noise``'s values where ``init_noise_sigma`` is 1 (DDIM, DDPM, PNDM, DPM++ 2M/2S/3M, UniPC, DEIS,
    LCM, TCD) or the first sigma (Euler-type schedulers with ``linspace`` or ``trailing`` spacing). Euler-type
    schedulers with ``leading`` spacing (SD 1.5's and SDXL's own config, which InvokeAI keeps) scale by
    ``sqrt(sigma_max**2 + 1)`` instead: no float times it is some of the start's values, which are then one unit in
    the last place away (counted in the second value returned).

    Args:
        noise (`torch.Tensor`): The starting noise, in the dtype the pipeline runs its denoiser in.
        scheduler (`SchedulerMixin`): The scheduler the call runs (not changed: a copy sets the timesteps).
        num_inference_steps (`int`): The call's steps.

    Returns:
        `tuple[torch.Tensor, int]`: the latents to pass, and the number of their values whose product with
        ``init_noise_sigma`` is not InvokeAI's start (each is one unit in the last place off).

    Example:

    ```py
    >>> import torch
    >>> from diffusers import DDIMScheduler
    >>> from diffusers_repro.interop.noise import invokeai_start
    >>> latents, inexact = invokeai_start(torch.ones(1, 4, 8, 8), DDIMScheduler(), 20)
    >>> round(float(latents[0, 0, 0, 0]), 4), inexact
    (0.9999, 0)
    ```
    """
    if not isinstance(noise, torch.Tensor) or noise.dtype not in _NOISE_DTYPES:
        raise TypeError(f"noise must be a float32, float16 or bfloat16 tensor, got {noise!r:.80}")
    steps = _check_int(num_inference_steps, "num_inference_steps", 1, 10_000)
    copy = type(scheduler).from_config(scheduler.config)
    copy.set_timesteps(steps, device=noise.device)
    first = copy.timesteps[:1].expand(noise.shape[0])
    start = copy.add_noise(torch.zeros_like(noise), noise, first)
    factor = copy.init_noise_sigma
    guess = start / factor
    chosen, found = guess, (guess * factor) == start
    for step in (1, -1, 2, -2):
        candidate = _neighbours(guess, step)
        hit = ((candidate * factor) == start) & ~found
        chosen, found = torch.where(hit, candidate, chosen), found | hit
    return chosen, int((~found).sum())
