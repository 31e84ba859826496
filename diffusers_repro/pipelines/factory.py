"""Repro classes for any diffusers pipeline: `reproducible(PipelineClass)` and `ReproDiffusionPipeline`.

``reproducible(StableDiffusionXLPipeline)`` is ``class ReproStableDiffusionXLPipeline(ReproducibleMixin,
StableDiffusionXLPipeline)``, made once and cached. The classes are published in this module under their names, and
made on first access when missing (``diffusers_repro.factory.ReproUnCLIPPipeline``), so pipelines and classes pickle by
reference, in this process and in a fresh one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline

from .mixin import ReproducibleMixin, vanilla_pipeline_class
from .named import ReproDDIMPipeline, ReproStableDiffusionPipeline

__all__ = ["ReproDiffusionPipeline", "reproducible"]

# vanilla class -> its Repro class. The named classes of pipelines.py are the Repro classes of their vanilla classes,
# so that `reproducible(StableDiffusionPipeline) is ReproStableDiffusionPipeline`.
_REPRO_CLASSES: dict[type, type] = {
    vanilla_pipeline_class(repro): repro for repro in (ReproDDIMPipeline, ReproStableDiffusionPipeline)
}
_LOCK = threading.RLock()


def reproducible(pipeline_class: type[DiffusionPipeline]) -> type[DiffusionPipeline]:
    """Returns the Repro class of a diffusers pipeline class: ``Repro<Name>(ReproducibleMixin, <Name>)``.

    The class is made once and cached: every call with the same pipeline class returns the same class. A Repro class
    is returned as it is. The Repro class loads, saves and calls like the vanilla one (``save_pretrained`` writes the
    vanilla class name), and its ``__call__`` adds ``seed``, ``deterministic`` and ``batch_invariant`` and attaches
    one provenance record per image.

    Args:
        pipeline_class (`type`):
            A `diffusers.DiffusionPipeline` subclass whose ``__call__`` takes ``generator``.

    Returns:
        `type`: the Repro subclass.

    Raises:
        `TypeError`: when ``pipeline_class`` is not a `DiffusionPipeline` subclass (an instance, say), or its
            ``__call__`` has no ``generator`` parameter to seed.

    Example:

    ```py
    >>> from diffusers import DDPMPipeline, StableDiffusionPipeline
    >>> from diffusers_repro import ReproStableDiffusionPipeline, reproducible
    >>> ReproDDPMPipeline = reproducible(DDPMPipeline)
    >>> ReproDDPMPipeline.__name__, reproducible(DDPMPipeline) is ReproDDPMPipeline
    ('ReproDDPMPipeline', True)
    >>> reproducible(StableDiffusionPipeline) is ReproStableDiffusionPipeline
    True
    ```
    """
    if not isinstance(pipeline_class, type):
        hint = (
            " (pass type(pipe), or use ReproDiffusionPipeline.from_pipe(pipe))" if _is_pipeline(pipeline_class) else ""
        )
        raise TypeError(f"reproducible() takes a diffusers pipeline class, got {_describe(pipeline_class)}{hint}")
    if issubclass(pipeline_class, ReproducibleMixin):
        return pipeline_class
    if not issubclass(pipeline_class, DiffusionPipeline):
        raise TypeError(
            "reproducible() takes a diffusers DiffusionPipeline subclass, got the class "
            f"{pipeline_class.__module__}.{pipeline_class.__qualname__}"
        )
    if pipeline_class is DiffusionPipeline:
        raise TypeError(
            "reproducible(DiffusionPipeline): DiffusionPipeline picks its class from model_index.json when loading; "
            "use ReproDiffusionPipeline.from_pretrained(path_or_id) to load any pipeline as its Repro class"
        )
    with _LOCK:
        repro = _REPRO_CLASSES.get(pipeline_class)
        if repro is None:
            repro = _make_repro_class(pipeline_class)
            _REPRO_CLASSES[pipeline_class] = repro
    return repro


def _make_repro_class(pipeline_class: type) -> type:
    name = f"Repro{pipeline_class.__name__}"
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": (
            f"`{pipeline_class.__name__}` with per-image seeds, full determinism on demand and provenance per image; "
            "made by `diffusers_repro.reproducible`."
        ),
    }
    try:
        # ReproducibleMixin.__init_subclass__ checks the class and raises for a __call__ without `generator`; the
        # class is then neither cached nor published.
        repro = type(name, (ReproducibleMixin, pipeline_class), namespace)
    except TypeError as error:
        raise TypeError(f"reproducible({pipeline_class.__name__}) failed: {error}") from None
    # globals(), not getattr(module): a missing name would go through the module's __getattr__, which makes classes.
    published = globals()
    if name not in published:
        published[name] = repro
    else:
        # Two vanilla classes with the same name (a custom pipeline named like a diffusers one): the second Repro
        # class is published under a name that adds its vanilla module, so that it still pickles by reference.
        unique = f"{name}_{pipeline_class.__module__.replace('.', '_')}"
        repro.__qualname__ = unique
        published.setdefault(unique, repro)
    return repro


def __getattr__(name: str) -> type:
    # Unpickling a Repro class (or a pipeline) in a fresh process looks it up here before anything has made it:
    # make the Repro class of the diffusers pipeline of that name on first access.
    if name.startswith("Repro") and len(name) > len("Repro"):
        import diffusers

        vanilla = getattr(diffusers, name[len("Repro") :], None)
        if isinstance(vanilla, type) and issubclass(vanilla, DiffusionPipeline):
            return reproducible(vanilla)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_pipeline(value: Any) -> bool:
    return isinstance(value, DiffusionPipeline)


def _describe(value: Any) -> str:
    if _is_pipeline(value):
        return f"an instance of {type(value).__name__}"
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} of type {type(value).__name__}"


def _load_model_index(name_or_path: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """model_index.json of a local folder or a Hub repo (cache first; HF_HUB_OFFLINE and cache_dir respected)."""
    if os.path.isdir(name_or_path):
        folder = Path(name_or_path)
        if not (folder / "model_index.json").is_file():
            raise OSError(
                f"pretrained_model_name_or_path={name_or_path!r} is a folder without model_index.json; expected a "
                "folder written by save_pretrained"
            )
        return DiffusionPipeline.load_config(folder), folder
    options = {
        key: kwargs[key]
        for key in ("cache_dir", "revision", "token", "force_download", "proxies", "local_files_only")
        if key in kwargs
    }
    config = DiffusionPipeline.load_config(name_or_path, **options)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(
        name_or_path, "model_index.json", cache_dir=kwargs.get("cache_dir"), revision=kwargs.get("revision")
    )
    return config, Path(cached).parent if isinstance(cached, str) else None


class ReproDiffusionPipeline:
    """Loads any diffusers pipeline as its Repro class, the way `DiffusionPipeline` picks the class.

    ``ReproDiffusionPipeline.from_pretrained(path_or_id)`` reads ``_class_name`` from the folder's or repo's
    ``model_index.json`` (from the Hugging Face cache when offline) and returns
    ``reproducible(ThatClass).from_pretrained(path_or_id, **kwargs)``. It is a loader, like diffusers'
    ``AutoPipeline`` classes: it is not instantiated, and the pipelines it returns are instances of their Repro
    class.

    Example:

    ```py
    >>> from diffusers_repro import ReproDiffusionPipeline
    >>> from diffusers_repro.tiny import tiny_pipeline_path
    >>> pipe = ReproDiffusionPipeline.from_pretrained(tiny_pipeline_path("ddim"))
    >>> type(pipe).__name__
    'ReproDDIMPipeline'
    >>> pipe(num_inference_steps=2, seed=3).provenance[0].seed
    3
    ```
    """

    def __init__(self, *args, **kwargs):
        raise TypeError(
            "ReproDiffusionPipeline is a loader and is not instantiated: use ReproDiffusionPipeline.from_pretrained("
            "path_or_id), ReproDiffusionPipeline.from_pipe(pipe), or reproducible(PipelineClass)(**components)"
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> DiffusionPipeline:
        """Loads the pipeline that ``model_index.json`` names, as its Repro class.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`):
                A folder written by ``save_pretrained`` or a Hub repo id (read from the cache with
                ``HF_HUB_OFFLINE=1``).
            kwargs:
                Everything `DiffusionPipeline.from_pretrained` accepts (``torch_dtype``, ``cache_dir``,
                ``revision``, ``variant``, components to replace, ...), passed through.

        Returns:
            The pipeline, an instance of ``reproducible(<class in model_index.json>)``.
        """
        from diffusers.pipelines.pipeline_loading_utils import _get_pipeline_class, _resolve_custom_pipeline_and_cls

        name = os.fspath(pretrained_model_name_or_path)
        config, folder = _load_model_index(name, kwargs)
        custom_pipeline, custom_class_name = kwargs.get("custom_pipeline"), None
        if folder is not None:
            custom_pipeline, custom_class_name = _resolve_custom_pipeline_and_cls(
                folder=folder, config=config, custom_pipeline=custom_pipeline
            )
        # diffusers reads the class from model_index.json only when the calling class is literally named
        # "DiffusionPipeline": resolve it here, then load with the Repro class.
        vanilla = _get_pipeline_class(
            DiffusionPipeline,
            config=config,
            load_connected_pipeline=kwargs.get("load_connected_pipeline", False),
            custom_pipeline=custom_pipeline,
            class_name=custom_class_name,
            cache_dir=kwargs.get("cache_dir"),
            revision=kwargs.get("custom_revision"),
            trust_remote_code=kwargs.get("trust_remote_code", False),
        )
        repro = reproducible(vanilla)
        pipe = repro.from_pretrained(pretrained_model_name_or_path, **kwargs)
        if not isinstance(pipe, ReproducibleMixin):
            # A custom pipeline's code (or a connected pipeline) decides its class inside diffusers: wrap the loaded
            # pipeline, sharing its components, and record where it came from.
            pipe = reproducible(type(pipe)).from_pipe(pipe)
            pipe._repro_record_source(pretrained_model_name_or_path, kwargs)
        return pipe

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs) -> DiffusionPipeline:
        """The Repro version of an existing pipeline, sharing its components (no copy, no reload).

        Args:
            pipeline (`DiffusionPipeline`):
                A vanilla or Repro pipeline.
            kwargs:
                Passed to `DiffusionPipeline.from_pipe` (components to replace, ...).

        Example:

        ```py
        >>> from diffusers_repro import ReproDiffusionPipeline
        >>> from diffusers_repro.tiny import build_tiny_pipeline
        >>> pipe = ReproDiffusionPipeline.from_pipe(build_tiny_pipeline("ddim"))
        >>> type(pipe).__name__
        'ReproDDIMPipeline'
        ```
        """
        if not _is_pipeline(pipeline):
            raise TypeError(f"ReproDiffusionPipeline.from_pipe() takes a pipeline, got {_describe(pipeline)}")
        return reproducible(vanilla_pipeline_class(type(pipeline))).from_pipe(pipeline, **kwargs)
