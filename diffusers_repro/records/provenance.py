"""Provenance: one self-contained record per image, enough to regenerate that image alone.

A record has four parts (see the README's "Provenance record" section for every field):

- ``seed`` and ``seed_source``: the seed of this image and where it came from (``"seed"``, ``"random"``,
  ``"generator"``).
- ``recipe``: pipeline class, model source and revision, components with weights digests, scheduler class and
  config, the call arguments that affect pixels (this image's own prompt), the batch context.
- ``environment``: device, dtype, library versions, thread count, determinism settings, platform.
- ``result``: digests of this image's starting noise and of its output pixels/array.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from .schema import SCHEMA_NAME, SCHEMA_VERSION, ProvenanceError, check_record, parse_json

__all__ = [
    "SCHEMA_VERSION",
    "Provenance",
    "ProvenanceError",
    "array_digest",
    "environment_fingerprint",
    "file_digest",
    "image_digest",
    "jsonable",
    "tensor_digest",
]


@dataclasses.dataclass
class Provenance:
    """How one image was made: enough to regenerate it alone, and to explain why it might not reproduce.

    Args:
        seed (`int` or `None`):
            This image's seed. With ``seed_source="generator"`` it is the generator's ``initial_seed()``, which is
            the seed that made the image only when ``recipe["generator"]["seed_certain"]`` is `True`.
        seed_source (`str`):
            ``"seed"`` (passed as ``seed=``), ``"random"`` (drawn because neither seed nor generator was given) or
            ``"generator"`` (a user ``generator=``).
        recipe (`dict`):
            Pipeline class, model, components, scheduler, call arguments and batch context.
        environment (`dict`):
            Device, dtype, versions, threads, determinism settings, platform.
        result (`dict`):
            ``noise_digest``, ``output_digest`` and how they were computed.
        schema_version (`int`, *optional*, defaults to `SCHEMA_VERSION`):
            Version of this record's layout.

    Example:

    ```py
    >>> from diffusers_repro import ReproDDIMPipeline, Provenance
    >>> from diffusers_repro.tiny import tiny_pipeline_path
    >>> pipe = ReproDDIMPipeline.from_pretrained(tiny_pipeline_path("ddim"))
    >>> record = pipe(num_inference_steps=2, seed=7).provenance[0]
    >>> record.seed, Provenance.from_dict(record.to_dict()) == record
    (7, True)
    ```
    """

    seed: int | None
    seed_source: str
    recipe: dict[str, Any]
    environment: dict[str, Any]
    result: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    @property
    def call_arguments(self) -> dict[str, Any]:
        """The recorded call arguments of this image (its own prompt, steps, guidance, ...)."""
        return self.recipe.get("call", {})

    @property
    def batch(self) -> dict[str, Any]:
        """The batch context: ``size``, ``index``, ``seeds`` and ``batch_invariant``."""
        return self.recipe.get("batch", {})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict; ``Provenance.from_dict(record.to_dict()).to_dict() == record.to_dict()``."""
        return self._as_dict(copy.deepcopy)

    def _as_dict(self, copy_part: Any) -> dict[str, Any]:
        # copy_part: copy.deepcopy for to_dict; identity for a reader that copies anyway (jsonable, for a digest).
        return {
            "schema": SCHEMA_NAME,
            "schema_version": self.schema_version,
            "seed": self.seed,
            "seed_source": self.seed_source,
            "recipe": copy_part(self.recipe),
            "environment": copy_part(self.environment),
            "result": copy_part(self.result),
        }

    def to_json(self, indent: int | None = None) -> str:
        """The record as a JSON string (keys sorted, so equal records give equal strings)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Provenance:
        """Builds a record from ``to_dict()`` output, checking the schema.

        Args:
            data (`dict`): A dict as written by ``to_dict``.
            source (`str`, *optional*): Where the data came from (a file name), quoted in errors.

        Raises:
            `ProvenanceError`: when the data does not fit the record schema (see `diffusers_repro.schema`): the
                message names the field path, the value and what is expected.
        """
        check_record(data, source)
        version = data["schema_version"]
        return cls(
            seed=data["seed"],
            seed_source=data["seed_source"],
            recipe=copy.deepcopy(data["recipe"]),
            environment=copy.deepcopy(data["environment"]),
            result=copy.deepcopy(data["result"]),
            schema_version=version,
        )

    @classmethod
    def from_json(cls, text: str | bytes, source: str | None = None) -> Provenance:
        """Parses a record from JSON text: too long, too deep or broken JSON raises `ProvenanceError`, never
        `JSONDecodeError` or `RecursionError`; then checks it as `from_dict` does."""
        data = parse_json(text, source)
        check_record(data, source)
        # Freshly parsed: nothing else holds these dicts, so no copy is needed.
        return cls(
            seed=data["seed"],
            seed_source=data["seed_source"],
            recipe=data["recipe"],
            environment=data["environment"],
            result=data["result"],
            schema_version=data["schema_version"],
        )


# --------------------------------------------------------------------------------------------------------------------
# Digests


def _sha256(*chunks: bytes) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _is_tensor(value: Any) -> bool:
    # A tensor exists only once torch is imported: reading a record never imports it.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 over a tensor's dtype, shape and bytes (moved to the CPU; bfloat16 and friends included)."""
    import torch

    tensor = tensor.detach().to("cpu").contiguous()
    header = f"{tensor.dtype}|{tuple(tensor.shape)}|".encode()
    return _sha256(header, tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def array_digest(array: np.ndarray) -> str:
    """sha256 over a numpy array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    return _sha256(f"{array.dtype.str}|{array.shape}|".encode(), array.tobytes())


def image_digest(image: Any) -> str:
    """Digest of one output image's pixels or values: PIL image, numpy array or torch tensor.

    PIL images are digested as their uint8 pixel array (mode and size included), never as an encoded file, so the
    same pixels give the same digest whatever file format carries them.
    """
    if _is_tensor(image):
        return tensor_digest(image)
    if isinstance(image, np.ndarray):
        return array_digest(image)
    if hasattr(image, "mode") and hasattr(image, "size"):
        return _sha256(f"PIL|{image.mode}|".encode(), array_digest(np.asarray(image)).encode())
    raise TypeError(f"cannot digest an output of type {type(image).__name__}")


def named_tensors_digest(items: Any) -> str:
    """Digest of ``(name, tensor)`` pairs, in name order: each name, dtype, shape and the tensor's bytes."""
    import torch

    hasher = hashlib.sha256()
    for name, tensor in sorted(items, key=lambda item: item[0]):
        tensor = tensor.detach().to("cpu").contiguous()
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        hasher.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return "sha256:" + hasher.hexdigest()


def state_dict_digest(module: torch.nn.Module) -> str:
    """Digest of a module's parameters and buffers as they are in memory (names, dtypes, shapes, bytes)."""
    return named_tensors_digest(module.state_dict().items())


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, read once per (path, size, modification time) in this process.

    A file in the Hugging Face cache is a link to ``blobs/<sha256>`` for weights stored with LFS: its digest is that
    name, taken without reading the file.
    """
    path = Path(path)
    target = path.resolve()
    if path.is_symlink() and target.parent.name == "blobs" and len(target.name) == 64:
        return "sha256:" + target.name
    stat = target.stat()
    key = (str(target), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        hasher = hashlib.sha256()
        with open(target, "rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 22), b""):
                hasher.update(block)
        digest = _FILE_DIGESTS[key] = "sha256:" + hasher.hexdigest()
    return digest


# --------------------------------------------------------------------------------------------------------------------
# JSON


def jsonable(value: Any) -> Any:
    """Turns a call argument or config value into JSON: tensors, arrays and images become their digests."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) or (isinstance(value, np.integer)):
        return int(value)
    if isinstance(value, float) or isinstance(value, np.floating):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if _is_tensor(value):
        return {"tensor_digest": tensor_digest(value), "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.ndarray):
        return {"array_digest": array_digest(value), "shape": list(value.shape), "dtype": str(value.dtype)}
    if hasattr(value, "mode") and hasattr(value, "size") and hasattr(value, "getpixel"):
        return {"image_digest": image_digest(value), "size": list(value.size), "mode": value.mode}
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    torch = sys.modules.get("torch")
    if isinstance(value, Path) or (torch is not None and isinstance(value, (torch.dtype, torch.device))):
        return str(value)
    if callable(value):
        return {"callable": getattr(value, "__qualname__", type(value).__qualname__)}
    return repr(value)


# --------------------------------------------------------------------------------------------------------------------
# Environment


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    # What cannot change while the process runs is computed once: the per-call cost stays a dict copy.
    versions = {
        name: _version(name)
        for name in ("torch", "diffusers", "transformers", "accelerate", "safetensors", "numpy", "diffusers-repro")
    }
    versions["python"] = platform.python_version()
    import torch

    cuda = torch.version.cuda
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "versions": versions,
        "cuda_version": cuda,
        "cudnn_version": cudnn,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python_implementation": sys.implementation.name,
    }


def device_name(device: torch.device) -> str:
    """A human name for the hardware behind ``device`` (GPU model on CUDA, processor on CPU)."""
    import torch

    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return _static_environment()["processor"]


def environment_fingerprint(device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> dict:
    """The environment that decides whether bits reproduce: device, dtype, versions, threads, determinism.

    Args:
        device (`torch.device` or `str`, *optional*, defaults to the CPU):
            The execution device of the pipeline.
        dtype (`torch.dtype`, *optional*):
            The denoiser's dtype.

    Example:

    ```py
    >>> from diffusers_repro.provenance import environment_fingerprint
    >>> environment_fingerprint()["device"]
    'cpu'
    ```
    """
    import torch

    from ..generation import determinism_status

    device = torch.device(device if device is not None else "cpu")
    static = _static_environment()
    return {
        "device": str(device),
        "device_type": device.type,
        "device_name": device_name(device),
        "dtype": str(dtype) if dtype is not None else None,
        "torch_num_threads": torch.get_num_threads(),
        "determinism": determinism_status(),
        # The process's own part, copied: its one nested dict is the versions (a deep copy cost ~40 us a call).
        **static,
        "versions": dict(static["versions"]),
    }
