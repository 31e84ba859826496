"""The Repro pipelines and what they record: `ReproducibleMixin` around any diffusers pipeline's call,
`reproducible()`, the named classes, and the pieces of the record a call is made of.

Modules:

- ``mixin``: `ReproducibleMixin`: seeds, determinism and the record around ``__call__``.
- ``factory``: `reproducible(PipelineClass)` and `ReproDiffusionPipeline`.
- ``named``: the named Repro pipelines (`ReproStableDiffusionPipeline`, `ReproDDIMPipeline`).
- ``keywords``: typos in pipeline calls that vanilla ``**kwargs`` would swallow.
- ``weights``: weights digests of the components.
- ``lora``: the LoRA history of a Repro pipeline.
- ``adapters``: LoRA adapters in the record.
- ``recipe``: the recipe pieces of a record: batched input rows, the batch, schedulers, caller latents.
- ``noise``: the starting noise of a call's images: user generators' seeds and each image's noise digest.
- ``clip_skip``: ``clip_skip`` where diffusers' SD ``encode_prompt`` cannot (no ``text_encoder.text_model``): the
  skipped layer's prompt embeddings and the ``encode_prompt`` wrapper the mixin puts on SD-family classes.
"""

import typing as _typing

from ..lazy import lazy_exports

# public name -> the module of this subpackage that defines it (imported on first use)
EXPORTS = {
    "clip_skip_prompt_embeds": "clip_skip",
    "ReproDiffusionPipeline": "factory",
    "reproducible": "factory",
    "ReproducibleMixin": "mixin",
    "vanilla_pipeline_class": "mixin",
    "ReproDDIMPipeline": "named",
    "ReproStableDiffusionPipeline": "named",
    "scheduler_record": "recipe",
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, globals())

if _typing.TYPE_CHECKING:
    from .clip_skip import clip_skip_prompt_embeds  # noqa: F401
    from .factory import ReproDiffusionPipeline, reproducible  # noqa: F401
    from .mixin import ReproducibleMixin, vanilla_pipeline_class  # noqa: F401
    from .named import ReproDDIMPipeline, ReproStableDiffusionPipeline  # noqa: F401
    from .recipe import scheduler_record  # noqa: F401
