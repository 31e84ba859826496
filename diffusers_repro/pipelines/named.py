"""The named Repro pipelines: vanilla diffusers classes with ``ReproducibleMixin`` in front.

These two are spelled out because they are the most used; every other diffusers pipeline whose ``__call__`` takes
``generator`` gets its Repro class from `diffusers_repro.reproducible` (``reproducible(DDPMPipeline)``), and
``reproducible(StableDiffusionPipeline)`` is `ReproStableDiffusionPipeline` itself. `ReproDiffusionPipeline` loads any
saved pipeline as its Repro class.
"""

from __future__ import annotations

from diffusers import DDIMPipeline, StableDiffusionPipeline

from .mixin import ReproducibleMixin

__all__ = ["ReproDDIMPipeline", "ReproStableDiffusionPipeline"]


class ReproDDIMPipeline(ReproducibleMixin, DDIMPipeline):
    """`DDIMPipeline` with per-image seeds, full determinism on demand and provenance per image.

    Example:

    ```py
    >>> from diffusers_repro import ReproDDIMPipeline
    >>> from diffusers_repro.tiny import tiny_pipeline_path
    >>> pipe = ReproDDIMPipeline.from_pretrained(tiny_pipeline_path("ddim"))
    >>> out = pipe(batch_size=4, seed=0, eta=0.5, num_inference_steps=2)
    >>> [record.seed for record in out.provenance]
    [0, 1, 2, 3]
    ```
    """


class ReproStableDiffusionPipeline(ReproducibleMixin, StableDiffusionPipeline):
    """`StableDiffusionPipeline` with per-image seeds, full determinism on demand and provenance per image.

    Example:

    ```py
    >>> from diffusers_repro import ReproStableDiffusionPipeline
    >>> from diffusers_repro.tiny import tiny_pipeline_path
    >>> pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    >>> out = pipe(["a fox", "a bear"], num_images_per_prompt=2, seed=42, num_inference_steps=2)
    >>> [(record.seed, record.call_arguments["prompt"]) for record in out.provenance]
    [(42, 'a fox'), (43, 'a fox'), (44, 'a bear'), (45, 'a bear')]
    ```
    """
