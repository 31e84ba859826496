"""diffusers-repro: reproducible Hugging Face diffusers generation.

Same seed, same pixels; every image carries the recipe that made it.

The public names are imported on first use, so that ``diffusers-repro --help`` and ``inspect`` do not pay for
importing diffusers and transformers.
"""

import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "full_determinism": "determinism",
    "CudaGeometry": "cuda_rng",
    "PhiloxGenerator": "cuda_rng",
    "ReproDiffusionPipeline": "factory",
    "reproducible": "factory",
    "ReproducibleMixin": "mixin",
    "ReproDDIMPipeline": "pipelines",
    "ReproStableDiffusionPipeline": "pipelines",
    "Provenance": "provenance",
    "ProvenanceError": "provenance",
    "ImageProvenanceError": "files",
    "read_provenance": "files",
    "save_image": "files",
    "Reproduction": "replay",
    "ReproductionError": "replay",
    "reproduce": "replay",
    "SettingsMismatchError": "distributed",
    "LimitExceededError": "limits",
    "ReplayLimits": "limits",
    "Credentials": "credentials",
    "read_credentials": "credentials",
    "CredentialsError": "identity",
    "SigningIdentity": "identity",
    "write_report": "report",
    "difference_heatmap": "heatmap",
    "write_heatmap": "heatmap",
}

__all__ = [
    "__version__",
    "CudaGeometry",
    "Credentials",
    "CredentialsError",
    "ImageProvenanceError",
    "LimitExceededError",
    "PhiloxGenerator",
    "Provenance",
    "ProvenanceError",
    "ReplayLimits",
    "ReproDDIMPipeline",
    "ReproDiffusionPipeline",
    "ReproStableDiffusionPipeline",
    "ReproducibleMixin",
    "Reproduction",
    "ReproductionError",
    "SettingsMismatchError",
    "SigningIdentity",
    "difference_heatmap",
    "full_determinism",
    "read_credentials",
    "read_provenance",
    "reproduce",
    "reproducible",
    "save_image",
    "write_heatmap",
    "write_report",
]

if _typing.TYPE_CHECKING:
    from .credentials import Credentials, read_credentials
    from .cuda_rng import CudaGeometry, PhiloxGenerator
    from .determinism import full_determinism
    from .distributed import SettingsMismatchError
    from .factory import ReproDiffusionPipeline, reproducible
    from .files import ImageProvenanceError, read_provenance, save_image
    from .heatmap import difference_heatmap, write_heatmap
    from .identity import CredentialsError, SigningIdentity
    from .limits import LimitExceededError, ReplayLimits
    from .mixin import ReproducibleMixin
    from .pipelines import ReproDDIMPipeline, ReproStableDiffusionPipeline
    from .provenance import Provenance, ProvenanceError
    from .replay import Reproduction, ReproductionError, reproduce
    from .report import write_report


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diffusers_repro' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_")} | set(__all__))
