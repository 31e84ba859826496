"""``rng="cuda"`` in pipeline calls: every draw of an image's generator is what ``torch.Generator("cuda")`` draws.

On a CUDA device of the requested geometry the call gets real CUDA generators. Anywhere else each image gets an
`EmulatedCudaGenerator`: a CPU ``torch.Generator`` that stands for a `~diffusers_repro.PhiloxGenerator`. diffusers'
``randn_tensor`` draws with it on the CPU as with any CPU generator, and `CudaRandnMode` - a torch function mode, per
thread, active for the call only - answers those ``torch.randn`` calls with the emulated values (and those of the
fresh generators torchsde's Brownian tree makes, which are CUDA generators on a GPU). No diffusers function is
patched, and the mode nests with other torch function modes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .cuda_rng import KNOWN_GEOMETRIES, CudaGeometry, PhiloxGenerator

__all__ = [
    "CudaRandnMode",
    "CudaRng",
    "EmulatedCudaGenerator",
    "cuda_generators",
    "describe_rng",
    "generator_geometry",
    "parse_rng",
    "refuse_philox_generators",
    "rng_from_record",
]


class EmulatedCudaGenerator(torch.Generator):
    """A CPU ``torch.Generator`` that stands for a `PhiloxGenerator` in diffusers' calls.

    diffusers' ``randn_tensor`` draws on the CPU with a CPU generator and moves the noise to the pipeline's device;
    inside `CudaRandnMode`, ``torch.randn`` with this generator returns its `PhiloxGenerator`'s values instead. Its
    own CPU state is never drawn from.
    """

    philox: PhiloxGenerator

    def __new__(cls, philox: PhiloxGenerator):
        generator = super().__new__(cls, "cpu")
        generator.philox = philox
        return generator

    def __init__(self, philox: PhiloxGenerator):
        # torch.Generator is set up in __new__; seeding the CPU state keeps it a valid, if unused, generator.
        self.manual_seed(philox.initial_seed())

    def initial_seed(self) -> int:
        return self.philox.initial_seed()


def _find_generator(args: tuple, kwargs: dict) -> torch.Generator | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Generator):
            return value
    return None


def _is_fresh(generator: torch.Generator) -> bool:
    fresh = torch.Generator(generator.device).manual_seed(generator.initial_seed())
    return torch.equal(fresh.get_state(), generator.get_state())


def _randn_shape(args: tuple) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(int(size) for size in args[0])
    return tuple(int(size) for size in args)


class CudaRandnMode(TorchFunctionMode):
    """Answers ``torch.randn(..., generator=g)`` inside a ``rng="cuda"`` call as torch's CUDA generator would.

    ``g`` an `EmulatedCudaGenerator`: its `PhiloxGenerator` draws. ``g`` a fresh CPU generator made inside the block
    (torchsde's Brownian tree, which ``DPMSolverSDEScheduler`` uses, makes one per draw on the latents' device, a CUDA
    generator on a GPU): a `PhiloxGenerator` of its seed draws, and keeps drawing for it. Other generators draw as
    usual. Torch function modes are per thread, so a call running in one thread never sees another thread's mode;
    random functions other than ``torch.randn`` given an emulated generator raise, rather than draw other numbers than
    the GPU would.

    Args:
        geometry (`CudaGeometry`, *optional*): The GPU geometry for the fresh generators' draws.
    """

    def __init__(self, geometry: CudaGeometry | None = None):
        super().__init__()
        self.geometry = geometry
        self._adopted: weakref.WeakKeyDictionary[torch.Generator, PhiloxGenerator] = weakref.WeakKeyDictionary()

    def _philox_for(self, func: Any, generator: torch.Generator) -> PhiloxGenerator | None:
        if isinstance(generator, EmulatedCudaGenerator):
            return generator.philox
        adopted = self._adopted.get(generator)
        if adopted is None and func is torch.randn and generator.device.type == "cpu" and _is_fresh(generator):
            adopted = self._adopted[generator] = PhiloxGenerator.with_geometry(generator.initial_seed(), self.geometry)
        return adopted

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        generator = _find_generator(args, kwargs)
        philox = None if generator is None else self._philox_for(func, generator)
        if philox is None:
            return func(*args, **kwargs)
        if func is not torch.randn or kwargs.get("out") is not None or kwargs.get("names") is not None:
            name = getattr(func, "__name__", repr(func))
            raise NotImplementedError(
                f"rng='cuda' emulates torch.randn of torch.Generator('cuda') only, but {name} was called with an "
                "image's generator; use rng='cpu', or run on a CUDA device"
            )
        dtype = kwargs.get("dtype") or torch.get_default_dtype()
        layout = kwargs.get("layout") or torch.strided
        if layout is not torch.strided:
            raise NotImplementedError(f"rng='cuda' emulates strided torch.randn only, got layout={layout}")
        values = philox.randn(_randn_shape(args), dtype=dtype)
        device = kwargs.get("device")
        if device is not None:
            values = values.to(device)
        if kwargs.get("requires_grad"):
            values.requires_grad_(True)
        return values


def refuse_philox_generators(generator: Any) -> None:
    """A `PhiloxGenerator` passed as a pipeline's ``generator`` is not a torch generator: say what to pass instead."""
    generators = generator if isinstance(generator, (list, tuple)) else [generator]
    for item in generators:
        if isinstance(item, PhiloxGenerator):
            geometry = f"'cuda:{item.geometry}'" if item.geometry is not None else "'cuda'"
            raise TypeError(
                f"generator={item!r} is not a torch.Generator; to draw a pipeline's noise as torch.Generator('cuda') "
                f"would, pass seed={item.initial_seed()} with rng={geometry}"
            )


def parse_rng(rng: Any) -> CudaGeometry | str:
    """Checks a pipeline call's ``rng``: ``"cpu"``, ``"cuda"`` (geometry from the device, or none),
    ``"cuda:108x2048"`` / ``"cuda:A100"`` or a `CudaGeometry` (torch's CUDA generator of that GPU).

    Returns:
        ``"cpu"``, ``"cuda"`` or the `CudaGeometry`.

    Example:

    ```py
    >>> from diffusers_repro.cuda_noise import parse_rng
    >>> parse_rng("cuda:A100")
    CudaGeometry(multiprocessors=108, max_threads_per_multiprocessor=2048)
    ```
    """
    if isinstance(rng, CudaGeometry) or rng in ("cpu", "cuda"):
        return rng
    if isinstance(rng, str) and rng.startswith("cuda:"):
        return CudaGeometry.parse(rng.removeprefix("cuda:"))
    raise ValueError(
        f"rng must be 'cpu', 'cuda', 'cuda:<multiprocessors>x<max threads per multiprocessor>' (e.g. "
        f"'cuda:108x2048'), 'cuda:<GPU>' with a GPU of {', '.join(KNOWN_GEOMETRIES)}, or a CudaGeometry; got {rng!r}"
    )


def rng_from_record(record: Any, field: str = "recipe.rng") -> CudaGeometry | str:
    """The ``rng`` argument that replays a record's ``recipe.rng`` (or a CUDA ``recipe.generator``): its geometry."""
    geometry = record.get("geometry") if isinstance(record, dict) else None
    if geometry is None:
        return "cuda"
    try:
        return CudaGeometry(geometry.get("multiprocessors"), geometry.get("max_threads_per_multiprocessor"))
    except (AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"the record's {field}.geometry {geometry!r} is not a GPU geometry: {error}") from None


@dataclasses.dataclass
class CudaRng:
    """The generators of a call made with ``rng="cuda"``, how they draw, and the record of it.

    Args:
        generators (`list[torch.Generator]`): One per image: CUDA generators, or `EmulatedCudaGenerator` stand-ins.
        geometry (`CudaGeometry` or `None`): The GPU geometry the draws are laid out for.
        emulated (`bool`): The draws are computed by `PhiloxGenerator` (needs `CudaRandnMode`, see `context`).
        geometry_from (`str` or `None`): ``"device"`` (read from this machine's GPU) or ``"caller"``.
    """

    generators: list[torch.Generator]
    geometry: CudaGeometry | None
    emulated: bool
    geometry_from: str | None

    @property
    def record(self) -> dict[str, Any]:
        return {
            "type": "cuda",
            "emulated": self.emulated,
            "geometry": self.geometry.to_dict() if self.geometry is not None else None,
            "geometry_from": self.geometry_from,
        }

    def context(self) -> contextlib.AbstractContextManager:
        """`CudaRandnMode` when the draws are emulated, else nothing."""
        return CudaRandnMode(self.geometry) if self.emulated else contextlib.nullcontext()

    def first_noise(self, index: int, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """Image ``index``'s first ``randn`` of ``shape`` from a fresh copy of its generator."""
        generator = self.generators[index]
        if self.emulated:
            return PhiloxGenerator.with_geometry(generator.initial_seed(), self.geometry).randn(shape, dtype=dtype)
        fresh = torch.Generator(generator.device).manual_seed(generator.initial_seed())
        return torch.randn(tuple(shape), generator=fresh, device=generator.device, dtype=dtype)


def cuda_generators(
    seeds: Sequence[int], device: torch.device | str | None = None, geometry: CudaGeometry | None = None
) -> CudaRng:
    """One generator per seed that draws what ``torch.Generator("cuda").manual_seed(seed)`` draws on a GPU.

    On a CUDA ``device`` whose geometry is ``geometry`` (or any, when ``geometry`` is `None`), real CUDA generators
    on it; elsewhere `EmulatedCudaGenerator` stand-ins, whose draws need `CudaRandnMode` (``CudaRng.context()``). The
    geometry is the one given, else the one of this machine's current CUDA device when there is one.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro.cuda_noise import cuda_generators
    >>> rng = cuda_generators([0], "cpu")
    >>> with rng.context():
    ...     noise = torch.randn((3, 4), generator=rng.generators[0])
    >>> rng.emulated, round(noise[0, 0].item(), 4)
    (True, -0.9247)
    ```
    """
    device = torch.device(device) if device is not None else None
    geometry_from = "caller" if geometry is not None else None
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        own = CudaGeometry.from_device(device)
        if geometry is None or geometry == own:
            generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
            return CudaRng(generators, own, emulated=False, geometry_from="device")
    if geometry is None and torch.cuda.is_available():
        geometry, geometry_from = CudaGeometry.from_device(), "device"
    generators = [EmulatedCudaGenerator(PhiloxGenerator.with_geometry(seed, geometry)) for seed in seeds]
    return CudaRng(generators, geometry, emulated=True, geometry_from=geometry_from)


def describe_rng(recipe: dict[str, Any]) -> str | None:
    """One line on a record's CUDA noise (``rng="cuda"`` or a user's CUDA generator); `None` for CPU noise."""
    rng, generator = recipe.get("rng"), recipe.get("generator")
    if isinstance(rng, dict):
        how = "emulated by PhiloxGenerator" if rng.get("emulated") else "real CUDA generators"
    elif isinstance(generator, dict) and str(generator.get("device", "")).startswith("cuda"):
        rng, how = generator, f"the caller's generator on {generator.get('device')}, offset {generator.get('offset')}"
    else:
        return None
    geometry = rng.get("geometry")
    layout = (
        f"GPU geometry {geometry.get('multiprocessors')}x{geometry.get('max_threads_per_multiprocessor')}"
        if isinstance(geometry, dict)
        else "no GPU geometry (draws up to the smallest threshold)"
    )
    return f"torch.Generator('cuda') noise, {how}; {layout}"


def generator_geometry(generator: torch.Generator) -> dict[str, int] | None:
    """The geometry of the GPU a CUDA ``torch.Generator`` draws on (`None` for other generators)."""
    if generator.device.type != "cuda":
        return None
    return CudaGeometry.from_device(generator.device).to_dict()
