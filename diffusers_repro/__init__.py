"""diffusers-repro: reproducible Hugging Face diffusers generation.

Same seed, same pixels; every image carries the recipe that made it.

The public names are imported on first use, so that ``diffusers-repro --help`` and ``inspect`` do not pay for
importing diffusers and transformers.
"""

import importlib as _importlib
import typing as _typing

from .version import __version__

# public name -> the subpackage that exports it
_EXPORTS = {
    "full_determinism": "generation",
    "CudaGeometry": "generation",
    "PhiloxGenerator": "generation",
    "ReproDiffusionPipeline": "pipelines",
    "reproducible": "pipelines",
    "ReproducibleMixin": "pipelines",
    "ReproDDIMPipeline": "pipelines",
    "ReproStableDiffusionPipeline": "pipelines",
    "Provenance": "records",
    "ProvenanceError": "records",
    "ImageProvenanceError": "files",
    "read_provenance": "files",
    "save_image": "files",
    "Credentials": "files",
    "read_credentials": "files",
    "CredentialsError": "files",
    "SigningIdentity": "files",
    "Reproduction": "verify",
    "ReproductionError": "verify",
    "reproduce": "verify",
    "LimitExceededError": "verify",
    "ReplayLimits": "verify",
    "write_report": "verify",
    "difference_heatmap": "verify",
    "write_heatmap": "verify",
    "SettingsMismatchError": "runs",
    "Recipe": "interop",
    "read_recipe": "interop",
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
    "Recipe",
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
    "read_recipe",
    "reproduce",
    "reproducible",
    "save_image",
    "write_heatmap",
    "write_report",
]

if _typing.TYPE_CHECKING:
    from .files import (
        Credentials,
        CredentialsError,
        ImageProvenanceError,
        SigningIdentity,
        read_credentials,
        read_provenance,
        save_image,
    )
    from .generation import CudaGeometry, PhiloxGenerator, full_determinism
    from .interop import Recipe, read_recipe
    from .pipelines import (
        ReproDDIMPipeline,
        ReproDiffusionPipeline,
        ReproducibleMixin,
        ReproStableDiffusionPipeline,
        reproducible,
    )
    from .records import Provenance, ProvenanceError
    from .runs import SettingsMismatchError
    from .verify import (
        LimitExceededError,
        ReplayLimits,
        Reproduction,
        ReproductionError,
        difference_heatmap,
        reproduce,
        write_heatmap,
        write_report,
    )


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diffusers_repro' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_")} | set(__all__))
