"""diffusers-repro: reproducible Hugging Face diffusers generation.

Same seed, same pixels; every image carries the recipe that made it.
"""

__version__ = "0.1.0"

from .determinism import full_determinism
from .factory import ReproDiffusionPipeline, reproducible
from .mixin import ReproducibleMixin
from .pipelines import ReproDDIMPipeline, ReproStableDiffusionPipeline
from .provenance import Provenance, ProvenanceError

__all__ = [
    "Provenance",
    "ProvenanceError",
    "ReproDDIMPipeline",
    "ReproDiffusionPipeline",
    "ReproStableDiffusionPipeline",
    "ReproducibleMixin",
    "__version__",
    "full_determinism",
    "reproducible",
]
