"""torch's CUDA ``randn`` on any device: Philox4x32-10 and Box-Muller as torch's CUDA kernels lay them out.

Most diffusers code seeds with ``torch.Generator("cuda").manual_seed(s)``; a CPU generator with the same seed gives
other noise. `PhiloxGenerator` computes what such a generator's ``torch.randn`` returns, with numpy on the CPU:

- Philox4x32-10 keyed by the seed (low and high 32 bits). A draw of ``numel`` values starts at the generator's
  offset and advances it by ``((numel - 1) // (256 * grid * 4) + 1) * 4``, where
  ``grid = min(ceil(numel / 256), multiprocessors * (max_threads_per_multiprocessor // 256))``.
- Thread ``t`` of the draw is curand subsequence ``t``; its ``k``-th ``curand_normal4`` call uses the counter
  ``(offset / 4 + k, 0, t, 0)`` and turns its 4 outputs into 4 normals by Box-Muller. Element
  ``t + stride * (4k + j)`` (``stride = 256 * grid``) takes value ``j`` of call ``k``. A draw of at most
  ``multiprocessors x max_threads_per_multiprocessor`` values is element ``i`` = thread ``i``, first value, whatever
  the GPU; a larger one is laid out by the GPU's multiprocessor count.
- The GPU evaluates Box-Muller in float32 with its fast ``__sincosf``; the emulation is close, not bitwise (see
  ``EMULATION_TOLERANCE``). float16 and bfloat16 draws are the float32 values rounded.

Pipeline calls use it through `diffusers_repro.cuda_noise` (``rng="cuda"``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "EMULATION_TOLERANCE",
    "GEOMETRY_FREE_LIMIT",
    "KNOWN_GEOMETRIES",
    "CudaGeometry",
    "PhiloxGenerator",
    "box_muller",
    "offset_increment",
    "philox4x32_10",
    "philox_normal",
]

_BLOCK = 256  # threads per block of torch's random kernels
_UNROLL = 4  # values per curand_normal4 call
_MASK = 0xFFFFFFFF
_MULTIPLIERS = np.array([[0xD2511F53], [0xCD9E8D57]], dtype=np.uint64)
_KEY_BUMPS = (0x9E3779B9, 0xBB67AE85)
_INV_2POW32 = np.float32(2.0**-32)
_HALF_INV_2POW32 = np.float32(2.0**-33)
_INV_2POW32_2PI = np.float32(2.0 * math.pi * 2.0**-32)  # curand's CURAND_2POW32_INV_2PI, a float
_INV_2PI = np.float32(1.0 / (2.0 * math.pi))
_CHUNK = 1 << 15  # threads per numpy pass: the working arrays stay in the CPU's cache
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

EMULATION_TOLERANCE = 1e-6
"""Largest absolute difference between an emulated float32 value and the GPU's, as tests state it (measured on the
known seed-0 vector: 2.4e-7, at most 7 float32 ulp). The GPU's ``__sincosf`` is a hardware approximation that the CPU
cannot repeat bit for bit."""


@dataclasses.dataclass(frozen=True)
class CudaGeometry:
    """The two GPU properties that decide how torch's CUDA ``randn`` lays out a large draw.

    Args:
        multiprocessors (`int`):
            ``torch.cuda.get_device_properties(d).multi_processor_count``.
        max_threads_per_multiprocessor (`int`):
            ``torch.cuda.get_device_properties(d).max_threads_per_multi_processor``.

    Example:

    ```py
    >>> from diffusers_repro.cuda_rng import CudaGeometry
    >>> CudaGeometry(108, 2048).threshold
    221184
    >>> CudaGeometry.parse("132x2048")
    CudaGeometry(multiprocessors=132, max_threads_per_multiprocessor=2048)
    ```
    """

    multiprocessors: int
    max_threads_per_multiprocessor: int

    def __post_init__(self):
        for name in ("multiprocessors", "max_threads_per_multiprocessor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.max_threads_per_multiprocessor < _BLOCK:
            raise ValueError(
                f"max_threads_per_multiprocessor must be at least {_BLOCK} (one block of torch's random kernels), "
                f"got {self.max_threads_per_multiprocessor}"
            )

    @property
    def max_blocks(self) -> int:
        """The most blocks torch launches for a random draw on this GPU."""
        return self.multiprocessors * (self.max_threads_per_multiprocessor // _BLOCK)

    @property
    def threshold(self) -> int:
        """Draws of more values than this are laid out by the GPU's geometry (grid-stride)."""
        return self.max_blocks * _BLOCK

    def to_dict(self) -> dict[str, int]:
        return {
            "multiprocessors": self.multiprocessors,
            "max_threads_per_multiprocessor": self.max_threads_per_multiprocessor,
        }

    def __str__(self) -> str:
        return f"{self.multiprocessors}x{self.max_threads_per_multiprocessor}"

    @classmethod
    def from_device(cls, device: torch.device | str | int | None = None) -> CudaGeometry:
        """The geometry of a CUDA device of this machine (the current one by default)."""
        properties = torch.cuda.get_device_properties(device if device is not None else torch.cuda.current_device())
        return cls(int(properties.multi_processor_count), int(properties.max_threads_per_multi_processor))

    @classmethod
    def parse(cls, text: str) -> CudaGeometry:
        """``"108x2048"`` (multiprocessors x max threads per multiprocessor) or a name of `KNOWN_GEOMETRIES`."""
        if not isinstance(text, str):
            raise TypeError(f"a CUDA geometry must be a string such as '108x2048' or 'A100', got {text!r}")
        known = {name.lower(): geometry for name, geometry in KNOWN_GEOMETRIES.items()}
        if text.strip().lower() in known:
            return known[text.strip().lower()]
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
        if match is None:
            raise ValueError(
                f"a CUDA geometry must be MULTIPROCESSORSxMAX_THREADS_PER_MULTIPROCESSOR (e.g. '108x2048') or one of "
                f"{', '.join(KNOWN_GEOMETRIES)}, got {text!r}"
            )
        return cls(int(match.group(1)), int(match.group(2)))


KNOWN_GEOMETRIES = {
    "H100-SXM": CudaGeometry(132, 2048),
    "H200": CudaGeometry(132, 2048),
    "H100-PCIe": CudaGeometry(114, 2048),
    "A100": CudaGeometry(108, 2048),
    "V100": CudaGeometry(80, 2048),
    "L4": CudaGeometry(58, 1536),
    "A10G": CudaGeometry(80, 1536),
    "RTX4090": CudaGeometry(128, 1536),
    "RTX3090": CudaGeometry(82, 1536),
    "T4": CudaGeometry(40, 1024),
}
"""Published geometries of common GPUs, for naming one (``CudaGeometry.parse("A100")``); the geometry a record states
is always the one read from the device, or the one the caller gave."""

GEOMETRY_FREE_LIMIT = min(geometry.threshold for geometry in KNOWN_GEOMETRIES.values())
"""Without a geometry, draws of up to this many values (40,960: the T4's threshold, the smallest in
`KNOWN_GEOMETRIES`) are allowed: every listed GPU lays them out the same way. Larger draws need the geometry."""


# ----------------------------------------------------------------------------------------------------------------
# Philox4x32-10 and Box-Muller, vectorized


def philox4x32_10(counter: int, threads: np.ndarray, seed: int, outputs: int = 4) -> tuple[np.ndarray, ...]:
    """The uint32 outputs of Philox4x32-10 at counter ``(counter low, counter high, t, 0)`` for each thread ``t``.

    Args:
        counter (`int`): The 64-bit block counter (``offset / 4 + k``), the same for every thread.
        threads (`np.ndarray` of `uint32`): The curand subsequences (thread indices).
        seed (`int`): The 64-bit key.
        outputs (`int`, *optional*, defaults to 4): 4, or 2 for the first two only (a draw that uses only the first
            normal of each thread), which spares half of the last round.
    """
    count = threads.shape[0]
    xz = np.empty((2, count), dtype=np.uint32)  # rows: ctr.x, ctr.z
    xz[0], xz[1] = counter & _MASK, threads
    yw: np.ndarray = np.array([[(counter >> 32) & _MASK], [0]], dtype=np.uint32)  # rows: ctr.y, ctr.w
    # Two product buffers, used in turn: the low halves of one round's products are the next round's y and w, read
    # in place as views rather than copied.
    buffers = (np.empty((2, count), dtype=np.uint64), np.empty((2, count), dtype=np.uint64))
    keys = np.empty((2, 1), dtype=np.uint32)
    key0, key1 = seed & _MASK, (seed >> 32) & _MASK
    for round_index in range(9 if outputs == 2 else 10):
        products = buffers[round_index % 2]
        np.multiply(_MULTIPLIERS, xz, out=products)
        halves = products.view(np.uint32)  # little-endian: [low, high] of each product
        keys[0, 0], keys[1, 0] = key0, key1
        # x' = hi(M1 z) ^ y ^ k0, z' = hi(M0 x) ^ w ^ k1, y' = lo(M1 z), w' = lo(M0 x)
        np.bitwise_xor(halves[::-1, 1::2], yw, out=xz)
        np.bitwise_xor(xz, keys, out=xz)
        yw = halves[::-1, 0::2]
        key0, key1 = (key0 + _KEY_BUMPS[0]) & _MASK, (key1 + _KEY_BUMPS[1]) & _MASK
    if outputs == 2:
        # The last round's x and y come from M1 z alone: hi(M1 z) ^ y ^ k0 and lo(M1 z).
        last = xz[1].astype(np.uint64)
        last *= _MULTIPLIERS[1, 0]
        halves = last.view(np.uint32)
        return halves[1::2] ^ yw[0] ^ np.uint32(key0), halves[0::2]
    return xz[0], yw[0], xz[1], yw[1]


def box_muller(x: np.ndarray, y: np.ndarray, cosine: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """curand's float32 Box-Muller of two uint32 arrays: ``(r sin v, r cos v)``.

    ``u = x 2^-32 + 2^-33`` and ``v = y 2pi 2^-32 + pi 2^-32`` in float32 (the GPU fuses the multiply-add, so ``v`` is
    rounded once), ``r = sqrt(-2 ln u)``. The GPU's ``__sincosf`` reduces its argument by a float32 multiply with
    ``1 / 2pi``; the emulation rounds ``v / 2pi`` the same way and then takes an exact sine and cosine, which measured
    closest to the GPU's values on the known vector.
    """
    u = x.astype(np.float32)
    u *= _INV_2POW32
    u += _HALF_INV_2POW32
    v = y.astype(np.float32).astype(np.float64)  # the GPU converts y to float first
    v *= np.float64(_INV_2POW32_2PI)
    v += np.float64(_INV_2POW32_2PI) / 2
    turns = v.astype(np.float32)
    turns *= _INV_2PI
    angle = turns.astype(np.float64)
    angle *= 2.0 * math.pi
    # torch's vectorized float64 log, sin and cos (SLEEF, within 1 float64 ulp) are several times faster than
    # numpy's here; rounded to float32, they give the same values.
    radius = torch.log(torch.from_numpy(u.astype(np.float64))).numpy().astype(np.float32)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    angle_t = torch.from_numpy(angle)
    sine = torch.sin(angle_t).numpy().astype(np.float32)
    sine *= radius
    if not cosine:
        return sine, None
    cos = torch.cos(angle_t).numpy().astype(np.float32)
    cos *= radius
    return sine, cos


def _layout(numel: int, geometry: CudaGeometry | None) -> tuple[int, int]:
    """(threads per pass, curand_normal4 calls per thread) of a CUDA draw of ``numel`` values."""
    blocks = -(-numel // _BLOCK)
    if geometry is not None:
        blocks = min(blocks, geometry.max_blocks)
    elif numel > GEOMETRY_FREE_LIMIT:
        raise ValueError(
            f"a CUDA randn of {numel} values is laid out by the GPU's geometry (above "
            f"multiprocessors x max_threads_per_multiprocessor values), so it needs the GPU's properties: pass "
            f"multiprocessors= and max_threads_per_multiprocessor= (torch.cuda.get_device_properties(d)"
            f".multi_processor_count and .max_threads_per_multi_processor on the GPU that made the image, e.g. "
            f"108 and 2048 for an A100); without them only draws of up to {GEOMETRY_FREE_LIMIT} values are known"
        )
    stride = blocks * _BLOCK
    return stride, (numel - 1) // (stride * _UNROLL) + 1


def philox_normal(numel: int, seed: int, offset: int, geometry: CudaGeometry | None) -> np.ndarray:
    """``numel`` float32 normals as torch's CUDA ``randn`` lays them out, starting at the Philox ``offset``."""
    out = np.empty(numel, dtype=np.float32)
    if numel == 0:
        return out
    stride, calls = _layout(numel, geometry)
    for call in range(calls):
        base = call * _UNROLL * stride
        active = min(stride, numel - base)  # threads with at least one element in this call
        needs = [min(active, max(numel - (base + j * stride), 0)) for j in range(_UNROLL)]
        for start in range(0, active, _CHUNK):
            stop = min(start + _CHUNK, active)
            threads = np.arange(start, stop, dtype=np.uint32)
            both_pairs = needs[2] > start
            words = philox4x32_10(offset // 4 + call, threads, seed, outputs=4 if both_pairs else 2)
            for pair, (a, b) in enumerate((words[0:2], words[2:4]) if both_pairs else (words[0:2],)):
                first, second = needs[2 * pair], needs[2 * pair + 1]
                if first <= start:
                    break
                sine, cos = box_muller(a, b, cosine=second > start)
                for j, values in ((2 * pair, sine), (2 * pair + 1, cos)):
                    stop_j = min(stop, needs[j])
                    if stop_j > start:
                        where = base + j * stride
                        out[where + start : where + stop_j] = values[: stop_j - start]
    return out


def offset_increment(numel: int, geometry: CudaGeometry | None) -> int:
    """How far a CUDA draw of ``numel`` values advances the generator's Philox offset."""
    if numel == 0:
        return 0
    return _layout(numel, geometry)[1] * _UNROLL


# ----------------------------------------------------------------------------------------------------------------
# The generator


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int between 0 and 2**64 - 1, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be between 0 and 2**64 - 1, got {seed}")
    return int(seed)


class PhiloxGenerator:
    """What ``torch.Generator("cuda")`` draws with ``torch.randn``, computed on the CPU.

    Behaves like a CUDA generator: consecutive draws continue its stream (``get_offset`` advances as on the GPU), and
    ``get_state``/``set_state`` use the CUDA generator's 16-byte layout (seed, then offset), so a state moves between
    the two.

    Args:
        seed (`int`): The seed, as given to ``torch.Generator("cuda").manual_seed``.
        multiprocessors (`int`, *optional*): The GPU's ``multi_processor_count``.
        max_threads_per_multiprocessor (`int`, *optional*): The GPU's ``max_threads_per_multi_processor``.
            Both are needed for draws of more than `GEOMETRY_FREE_LIMIT` values, whose layout depends on them.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro import PhiloxGenerator
    >>> generator = PhiloxGenerator(0)
    >>> generator.randn((3, 4))[0]
    tensor([-0.9247, -0.4253, -2.6438,  0.1452])
    >>> generator.get_offset()
    4
    ```
    """

    device = torch.device("cuda")

    def __init__(
        self, seed: int, multiprocessors: int | None = None, max_threads_per_multiprocessor: int | None = None
    ):
        self._seed = _check_seed(seed)
        self._offset = 0
        if (multiprocessors is None) != (max_threads_per_multiprocessor is None):
            raise ValueError(
                "pass both multiprocessors and max_threads_per_multiprocessor (the GPU's geometry) or neither, got "
                f"multiprocessors={multiprocessors!r} and max_threads_per_multiprocessor="
                f"{max_threads_per_multiprocessor!r}"
            )
        self.geometry = (
            None if multiprocessors is None else CudaGeometry(multiprocessors, max_threads_per_multiprocessor)
        )

    @classmethod
    def with_geometry(cls, seed: int, geometry: CudaGeometry | None) -> PhiloxGenerator:
        if geometry is None:
            return cls(seed)
        return cls(seed, geometry.multiprocessors, geometry.max_threads_per_multiprocessor)

    def __repr__(self) -> str:
        geometry = f", geometry={self.geometry}" if self.geometry is not None else ""
        return f"PhiloxGenerator(seed={self._seed}, offset={self._offset}{geometry})"

    def manual_seed(self, seed: int) -> PhiloxGenerator:
        """Seeds the generator and resets its offset to 0, as a CUDA generator does; returns it."""
        self._seed = _check_seed(seed)
        self._offset = 0
        return self

    def initial_seed(self) -> int:
        return self._seed

    def get_offset(self) -> int:
        """The Philox offset: 0 when fresh, advanced by every draw."""
        return self._offset

    def set_offset(self, offset: int) -> PhiloxGenerator:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or offset % 4:
            raise ValueError(f"offset must be a non-negative multiple of 4, got {offset!r}")
        self._offset = offset
        return self

    def get_state(self) -> torch.Tensor:
        """16 bytes, as ``torch.Generator("cuda").get_state()``: the seed then the offset, little-endian."""
        data = np.array([self._seed], dtype=np.uint64).tobytes() + np.array([self._offset], dtype=np.int64).tobytes()
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def set_state(self, state: torch.Tensor) -> PhiloxGenerator:
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.numel() != 16:
            raise ValueError("state must be a uint8 tensor of 16 bytes, as torch.Generator('cuda').get_state() gives")
        data = state.cpu().numpy().tobytes()
        self._seed = int(np.frombuffer(data[:8], dtype=np.uint64)[0])
        return self.set_offset(int(np.frombuffer(data[8:], dtype=np.int64)[0]))

    def randn(self, shape: Sequence[int] | int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """What ``torch.randn(shape, generator=g, device="cuda", dtype=dtype)`` gives, as a CPU tensor.

        Args:
            shape (`tuple[int]`): The shape.
            dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): float32, float16 or bfloat16 (the
                float32 values rounded, as on the GPU).

        Raises:
            `ValueError`: for a draw of more than `GEOMETRY_FREE_LIMIT` values without the GPU's geometry.
        """
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(shape)
        if any(isinstance(size, bool) or not isinstance(size, int) or size < 0 for size in shape):
            raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
        if dtype not in _DTYPES:
            raise TypeError(
                f"dtype must be one of torch.float32, torch.float16, torch.bfloat16 (CUDA randn of other dtypes uses "
                f"another algorithm), got {dtype!r}"
            )
        numel = math.prod(shape)
        values = torch.from_numpy(philox_normal(numel, self._seed, self._offset, self.geometry)).reshape(shape)
        self._offset += offset_increment(numel, self.geometry)
        return values if dtype == torch.float32 else values.to(dtype)
