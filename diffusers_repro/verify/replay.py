"""Reproduce and verify: regenerate one image from its provenance record and say whether the pixels match, and why not.

`reproduce` loads the recorded model (or uses the pipeline it is given), puts the recorded scheduler on it, calls it
with this image's own recorded arguments and seed, and compares:

- the new output's digest with the record's ``output_digest`` (what the pipeline returned: PIL pixels, or the float
  array for ``output_type="np"``/``"pt"``);
- when a file was given, the new image's 8-bit pixels with the file's pixels: ``max_abs_diff`` and ``psnr`` are
  measured on those, in units of the ``[0, 1]`` range (one 8-bit step is ``1/255``).

``differences`` lists the recipe and environment fields that differ between the record and the regeneration, with
both values, so that a result that is not bitwise comes with its likely causes.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..files import ImageFile, file_credentials, read_image, to_pil_image
from ..records import Provenance, check_record, image_digest, jsonable
from .limits import DEFAULT_LIMITS, ReplayLimits, check_limits
from .reproduction import (
    BATCH_ARGUMENTS,
    LOSSY_FORMATS,
    Difference,
    Reproduction,
    compare_pixels,
    metadata_differences,
    record_differences,
    replay_differences,
)
from .siblings import batch_prompt_lists, find_siblings

__all__ = [
    "DEFAULT_TOLERANCE",
    "Difference",
    "ReproductionError",
    "Reproduction",
    "VERDICTS",
    "load_pipeline",
    "record_differences",
    "reproduce",
]

DEFAULT_TOLERANCE = 2 / 255
"""Largest per-pixel difference (in ``[0, 1]`` units: two 8-bit steps) for which a regeneration counts as close."""

VERDICTS = ("bitwise", "close", "different", "tampered", "unsupported")
"""The verdicts of `reproduce`, best first. ``tampered``: the file's Content Credentials show that its pixels or
record changed after it was signed (whatever the regeneration gives). ``unsupported``: another tool's recipe that no
diffusers call can make (its blockers say why); nothing was run."""

# Call arguments that reproduce takes from the record itself.
_RESERVED_OVERRIDES = frozenset({"seed", "generator", "deterministic", "batch_invariant", "return_dict"})
# jsonable() keeps only a digest of these values: they cannot be rebuilt from JSON.
_DIGEST_KEYS = ("tensor_digest", "array_digest", "image_digest", "callable")


class ReproductionError(ValueError):
    """A record cannot be replayed as it stands: a tensor argument is missing, the model cannot be found, ..."""


# ----------------------------------------------------------------------------------------------------------------
# Pipelines


def _repro_class(pipeline_class: Any) -> type:
    import diffusers

    from ..pipelines import reproducible

    vanilla = getattr(diffusers, pipeline_class, None) if isinstance(pipeline_class, str) else None
    # Only diffusers' own pipeline classes: a record never names code to import (no custom or remote pipelines).
    if not (
        isinstance(vanilla, type)
        and issubclass(vanilla, diffusers.DiffusionPipeline)
        and vanilla.__module__.startswith("diffusers.")
        and vanilla.__name__ == pipeline_class
        and vanilla is not diffusers.DiffusionPipeline
    ):
        raise ReproductionError(
            f"the record's pipeline_class {pipeline_class!r} is not a pipeline class of diffusers "
            f"{diffusers.__version__}; pass pipe= a reproducible pipeline that can make the image"
        )
    return reproducible(vanilla)


def _available(device: str | None) -> bool:
    if device is None:
        return False
    kind = torch.device(device).type
    if kind == "cpu":
        return True
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return torch.backends.mps.is_available()
    return False


def _recorded_dtype(record: Provenance) -> torch.dtype | None:
    name = record.environment.get("dtype")
    dtype = getattr(torch, str(name).removeprefix("torch."), None) if name else None
    return dtype if isinstance(dtype, torch.dtype) else None


def _dtype_keyword() -> str:
    # Newer diffusers take `dtype=` and deprecate `torch_dtype=`; older ones know only `torch_dtype=`.
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


def load_pipeline(
    provenance: Provenance,
    device: str | torch.device | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    allow_pickle: bool = False,
    download: bool = False,
) -> Any:
    """Loads the pipeline a record was made with: recorded source, revision, pipeline class and dtype.

    A local source is loaded from its recorded folder; a hub source from ``repo_id`` at the recorded revision, from
    what this machine already has (the local Hugging Face cache) unless ``download=True``: a record from anyone never
    makes us ask the Hub for a repository (which would tell its author who verified the file, and when). The class is
    the recorded pipeline class made reproducible.

    Args:
        provenance (`Provenance`): The record.
        device (`str` or `torch.device`, *optional*): Where to put the pipeline; defaults to the recorded device when
            this machine has it, else the CPU.
        cache_dir (`str` or `os.PathLike`, *optional*): The Hugging Face cache to find a hub model in (the record
            does not say which cache the original used); defaults to huggingface_hub's.
        allow_pickle (`bool`, *optional*, defaults to `False`): Also load pickled weights (``.bin``, ``.ckpt``),
            which can run code while they load. By default only safetensors files are loaded, and never remote code.
        download (`bool`, *optional*, defaults to `False`): Fetch a hub model (and hub LoRA adapters) the local
            cache does not hold. ``HF_HUB_OFFLINE=1`` still wins.

    Raises:
        `ReproductionError`: when the model was built in memory (no source to load), the folder is missing, or the
            hub files are not available.

    Example:

    ```py
    >>> from diffusers_repro.files import read_provenance
    >>> from diffusers_repro.replay import load_pipeline
    >>> pipe = load_pipeline(read_provenance("outputs/00000-seed42.png"))  # doctest: +SKIP
    ```
    """
    from huggingface_hub import constants

    model = provenance.recipe.get("model") or {}
    kind = model.get("type")
    kwargs: dict[str, Any] = {}
    dtype = _recorded_dtype(provenance)
    if dtype is not None and dtype != torch.float32:
        kwargs[_dtype_keyword()] = dtype
    if kind == "local":
        source = model.get("path")
        if source and os.path.isdir(source):
            source = os.path.realpath(source)
        if not source or not os.path.isdir(source):
            raise ReproductionError(
                f"the record's model folder {source!r} does not exist on this machine; pass pipe= a pipeline loaded "
                "from the same weights"
            )
        _check_model_folder(source)
    elif kind == "hub" and model.get("repo_id"):
        source = model["repo_id"]
        kwargs["revision"] = model.get("revision")
        kwargs["local_files_only"] = bool(constants.HF_HUB_OFFLINE) or not download
        if cache_dir is not None:
            kwargs["cache_dir"] = os.fspath(cache_dir)
    else:
        raise ReproductionError(
            f"the record's model was not loaded from a folder or the hub (source type {kind!r}), so there is "
            "nothing to load; pass pipe= the pipeline (same weights) to reproduce with"
        )
    if model.get("variant"):
        kwargs["variant"] = model["variant"]
    if not isinstance(allow_pickle, bool):
        raise TypeError(f"allow_pickle must be a bool, got {allow_pickle!r}")
    kwargs.update(trust_remote_code=False, use_safetensors=not allow_pickle)
    cls = _repro_class(provenance.recipe.get("pipeline_class"))
    try:
        pipe = cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        where = f"{source} at revision {kwargs.get('revision')}" if kind == "hub" else source
        if constants.HF_HUB_OFFLINE and kind == "hub":
            offline = " (HF_HUB_OFFLINE is set: only the local cache is searched)"
        elif kind == "hub" and not download:
            offline = (
                " (only the local Hugging Face cache is searched: pass download=True, or --download, to fetch it from "
                "the Hub, which then learns who asked and when; or pass pipe=/--model a pipeline with its weights)"
            )
        else:
            offline = ""
        raise ReproductionError(f"cannot load the record's model {where}{offline}: {error}") from None
    operations = (model.get("lora") or {}).get("operations") or []
    _replay_lora_operations(pipe, operations, allow_pickle=allow_pickle, download=download)
    recorded_device = provenance.environment.get("device")
    if device is None:
        device = recorded_device if _available(recorded_device) else "cpu"
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


_MAX_MODEL_FOLDER_ENTRIES = 10_000


def _check_model_folder(folder: str) -> None:
    """Refuses a model folder (named by a record from anyone) holding, at the two levels diffusers reads, something
    loading would hang or never end on: a named pipe, a device or a socket, directly or through a link."""
    import stat

    pending, seen = [(folder, 0)], 0
    while pending:
        directory, depth = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                seen += 1
                if seen > _MAX_MODEL_FOLDER_ENTRIES:
                    raise ReproductionError(
                        f"the record's model folder {folder!r} holds more than {_MAX_MODEL_FOLDER_ENTRIES} entries; "
                        "pass pipe= a pipeline loaded from the same weights"
                    )
                try:
                    mode = os.stat(entry.path).st_mode
                except OSError:
                    continue  # a broken link: diffusers does not read what is not there
                if stat.S_ISDIR(mode):
                    if depth == 0:
                        pending.append((entry.path, 1))
                elif not stat.S_ISREG(mode):
                    raise ReproductionError(
                        f"the record's model folder {folder!r} holds {entry.path!r}, which is not a regular file (a "
                        "named pipe, a device or a socket); pass pipe= a pipeline loaded from the same weights"
                    )


def _replay_lora_operations(
    pipe: Any, operations: list[dict[str, Any]], allow_pickle: bool = False, download: bool = False
) -> None:
    """Applies the recorded LoRA operations (load, set_adapters, fuse, ...) to a freshly loaded pipeline, in order.

    Only the operations of `diffusers_repro.schema.LORA_OPERATIONS` are replayed, each with its own typed arguments
    (the schema checked them); a record never chooses which method runs. An adapter loaded from a safetensors file on
    this machine or from the hub is loaded again (a pickled file only with ``allow_pickle=True``); one that was
    passed as an in-memory state dict cannot be, and raises `ReproductionError`. The replayed record carries the
    adapters' digests, so an adapter file that changed since shows up among the differences.
    """
    for operation in operations:
        name = operation["op"]
        if name == "load_lora_weights":
            _replay_lora_load(pipe, operation, allow_pickle, download)
        elif name in ("set_adapters", "delete_adapters"):
            arguments = {"adapter_names": operation["adapter_names"]}
            if name == "set_adapters":
                arguments["adapter_weights"] = operation.get("adapter_weights")
            getattr(pipe, name)(**arguments)
        elif name == "fuse_lora":
            arguments = {
                key: operation[key]
                for key in ("components", "lora_scale", "safe_fusing", "adapter_names")
                if key in operation
            }
            pipe.fuse_lora(**arguments)
        elif name == "unfuse_lora":
            pipe.unfuse_lora(**({"components": operation["components"]} if "components" in operation else {}))
        elif name in ("unload_lora_weights", "enable_lora", "disable_lora"):
            getattr(pipe, name)()
        else:  # the schema refuses any other operation; this keeps the allowlist true on its own
            raise ReproductionError(f"the record's LoRA operation {name!r} is not one that a replay performs")


def _replay_lora_load(pipe: Any, operation: dict[str, Any], allow_pickle: bool, download: bool = False) -> None:
    source = operation["source"]
    adapter_name = operation.get("adapter_name")
    if adapter_name is None and len(operation.get("adapter_names") or []) == 1:
        adapter_name = operation["adapter_names"][0]
    if source["type"] == "local" and os.path.isfile(source.get("path") or ""):
        if not allow_pickle and not source["path"].endswith(".safetensors"):
            raise ReproductionError(
                f"the record's LoRA adapter {adapter_name!r} was loaded from {source['path']!r}, which is not a "
                "safetensors file; loading a pickled file can run code: pass allow_pickle=True (--allow-pickle) if "
                "you trust it"
            )
        pipe.load_lora_weights(source["path"], adapter_name=adapter_name)
    elif source["type"] == "hub" and source.get("repo_id"):
        weight_name = source.get("weight_name")
        if not allow_pickle and weight_name and not weight_name.endswith(".safetensors"):
            raise ReproductionError(
                f"the record's LoRA adapter {adapter_name!r} is the hub file {weight_name!r}, which is not a "
                "safetensors file; pass allow_pickle=True (--allow-pickle) if you trust it"
            )
        kwargs = {key: source[key] for key in ("weight_name", "revision") if source.get(key)}
        kwargs["local_files_only"] = not download
        pipe.load_lora_weights(
            source["repo_id"], adapter_name=adapter_name, use_safetensors=not allow_pickle, **kwargs
        )
    else:
        where = source.get("path") or source.get("type")
        raise ReproductionError(
            f"the record's LoRA adapter {adapter_name!r} was loaded from {where!r}, which cannot be loaded "
            "again here; pass pipe= a pipeline with the same adapters loaded"
        )


def _recorded_schedulers(record: Provenance) -> dict[str, Any]:
    """The recorded schedulers, by component name: ``recipe.schedulers`` for pipelines with several (UnCLIP),
    else ``recipe.scheduler``."""
    import diffusers

    recorded = record.recipe.get("schedulers")
    if not isinstance(recorded, dict):
        recorded = {"scheduler": record.recipe.get("scheduler")}
    schedulers = {}
    for name, scheduler in recorded.items():
        if not isinstance(scheduler, dict) or not scheduler.get("class"):
            continue
        cls = getattr(diffusers, scheduler["class"], None)
        # Only diffusers' own scheduler classes, whatever the record names.
        if not (
            isinstance(cls, type)
            and issubclass(cls, diffusers.SchedulerMixin)
            and cls.__module__.startswith("diffusers.")
            and cls.__name__ == scheduler["class"]
        ):
            # Not a scheduler of this diffusers version: the pipeline keeps its own and the difference is reported.
            continue
        try:
            schedulers[name] = cls.from_config(scheduler.get("config") or {})
        except Exception as error:  # noqa: BLE001 - a config from a file that the class refuses, in any way
            raise ReproductionError(
                f"the record's {name} config cannot build a {cls.__name__}: {type(error).__name__}: {error}"
            ) from None
    return schedulers


# ----------------------------------------------------------------------------------------------------------------
# The call


def _needs_value(value: Any) -> bool:
    if isinstance(value, dict):
        return any(key in value for key in _DIGEST_KEYS) or any(_needs_value(item) for item in value.values())
    if isinstance(value, list):
        return any(_needs_value(item) for item in value)
    return False


def _describe_placeholder(value: Any) -> str:
    if isinstance(value, dict) and "tensor_digest" in value:
        return f"a tensor of shape {value.get('shape')} ({value['tensor_digest'][:19]}...)"
    if isinstance(value, dict) and "array_digest" in value:
        return f"an array of shape {value.get('shape')} ({value['array_digest'][:19]}...)"
    if isinstance(value, dict) and "image_digest" in value:
        return f"an image of size {value.get('size')}"
    if isinstance(value, dict) and "callable" in value:
        return f"the callable {value['callable']}"
    return "a value JSON keeps only a digest of"


def _call_arguments(
    pipe: Any, record: Provenance, overrides: dict[str, Any], prompt_lists: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    # prompt_lists: the whole batch's prompt lists for a whole-batch replay, None to make the image alone.
    whole_batch = prompt_lists is not None
    reserved = sorted(_RESERVED_OVERRIDES & overrides.keys())
    if reserved:
        raise TypeError(
            f"reproduce() takes {', '.join(reserved)} from the record; pass only call arguments to override"
        )
    parameters = inspect.signature(pipe.__call__).parameters
    arguments = {}
    missing = []
    for name, value in record.call_arguments.items():
        if name in overrides:
            continue
        if whole_batch and name in prompt_lists:
            value = prompt_lists[name]
        elif name in BATCH_ARGUMENTS and not whole_batch:
            value = 1
        # Only named parameters: a name the vanilla **kwargs would take is never passed from a record.
        if name not in parameters:
            if value is None:
                continue  # a parameter of another diffusers version, left at its default
            raise ReproductionError(
                f"the record's call argument {name}={value!r} is not a parameter of "
                f"{type(pipe).__name__}.__call__ in this diffusers version"
            )
        if _needs_value(value):
            missing.append((name, _describe_placeholder(value)))
            continue
        arguments[name] = value
    if missing:
        described = "; ".join(f"{name} ({what})" for name, what in missing)
        example = ", ".join(f"{name}=..." for name, _ in missing)
        raise ReproductionError(
            f"the record's call argument(s) {described} cannot be rebuilt from JSON, which keeps only a digest; "
            f"pass the value(s) to reproduce: reproduce(..., {example})"
        )
    arguments.update(overrides)
    return arguments


def _can_replay_whole_batch(record: Provenance, overrides: dict[str, Any]) -> str | None:
    """Why the whole original batch cannot be regenerated, or `None` when it can."""
    batch = record.batch
    if batch.get("size", 1) <= 1:
        return "the image was made alone"
    if "prompt_lists" not in batch and "prompt_list_lengths" not in batch:
        return "the record does not describe the batch's prompts (made by an older diffusers-repro)"
    if record.seed_source not in ("seed", "random"):
        return "the batch was seeded with user generators, not seeds"
    seeds = batch.get("seeds")
    if not isinstance(seeds, list) or not all(isinstance(seed, int) for seed in seeds):
        return "the record does not list the batch's seeds"
    if overrides:
        return "call arguments were overridden"
    if record.recipe.get("requires_inputs"):
        return f"the call had tensor inputs ({', '.join(record.recipe['requires_inputs'])}) recorded as digests only"
    return None


def _rng_arguments(record: Provenance) -> dict[str, Any]:
    """``rng=`` for a record made with ``rng="cuda"`` (its recorded geometry), else nothing."""
    from ..generation import rng_from_record

    rng = record.recipe.get("rng")
    if isinstance(rng, dict) and rng.get("type") == "cuda":
        return {"rng": rng_from_record(rng)}
    return {}


def _seed_arguments(record: Provenance) -> dict[str, Any]:
    from ..generation import CudaGeometry, rng_from_record

    if record.seed is None:
        raise ReproductionError("the record has no seed, so its starting noise cannot be drawn again")
    generator = record.recipe.get("generator")
    device = generator.get("device") if isinstance(generator, dict) else None
    if device and torch.device(device).type == "cuda":
        # torch's CUDA generator: real on this machine's GPU of the recorded geometry, emulated anywhere else.
        geometry = rng_from_record(generator, "recipe.generator")
        if _available(device) and geometry in ("cuda", CudaGeometry.from_device(device)):
            return {"generator": [torch.Generator(device).manual_seed(record.seed)]}
        return {"seed": record.seed, "rng": geometry}
    if device and torch.device(device).type != "cpu" and _available(device):
        # A user generator on an accelerator drew the noise there; the same seed on the CPU gives other noise.
        return {"generator": [torch.Generator(device).manual_seed(record.seed)]}
    return {"seed": record.seed, **_rng_arguments(record)}


def _reencoding_matches(regenerated: Any, image_file: Any) -> bool:
    from ..files import reencoded_pixels

    if image_file.quality is None:
        return False
    try:
        pixels = reencoded_pixels(regenerated, image_file.format, image_file.quality)
    except OSError:  # an image the format cannot hold (alpha in a JPEG) was not what the file holds
        return False
    return pixels.shape == image_file.pixels.shape and bool(np.array_equal(pixels, image_file.pixels))


def reproduce(
    path_or_provenance: str | os.PathLike | Provenance,
    pipe: Any | None = None,
    device: str | torch.device | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    cache_dir: str | os.PathLike | None = None,
    whole_batch: bool | None = None,
    batch_from: Any = None,
    limits: ReplayLimits | None = None,
    allow_pickle: bool = False,
    trust: Sequence[str | os.PathLike] = (),
    download: bool = False,
    checkpoint: str | os.PathLike | None = None,
    **call_overrides: Any,
) -> Reproduction:
    """Regenerates one image from its provenance record alone and compares it with the original.

    The pipeline is called with this image's own recorded arguments (its prompt, steps, guidance, output type, ...),
    ``seed=record.seed``, and ``deterministic=True`` when the record says full determinism was on. The recorded
    scheduler class and config are put on the pipeline for the call; its own scheduler is put back afterwards.

    An image made alone, or in batch-invariant mode (which promises each image equals the same image made alone),
    is regenerated alone. An image of a normal batch of more than one is regenerated within its whole batch (the
    batch's prompts and seeds, in order) and picked out by its index, since kernels block differently for other
    batch sizes. A record never holds another image's prompt: when every image had the same prompts the record says
    so and is enough; otherwise the siblings' records are gathered (beside the file, from the run manifest there, or
    from ``batch_from``), checked against the digests the record lists, and each image's prompts are taken from its
    own record. Without them, or with ``whole_batch=False``, the image is made alone and ``recipe.batch`` is
    reported among the differences.

    The record is hostile input: it was checked against the schema when read, and what it asks for is checked
    against ``limits`` before any model loads. Only diffusers' own pipeline and scheduler classes are used, only
    the allowlisted LoRA operations replayed, and weights load from safetensors files only unless
    ``allow_pickle=True``.

    Args:
        path_or_provenance (`str`, `os.PathLike`, `ImageFile` or `Provenance`):
            An image written by `save_image` (then its pixels are compared too), read once (a regular file within
            ``limits.max_file_bytes``); the same file already read (`diffusers_repro.imagefile.read_image`); or a
            record. Every comparison, the Content Credentials and the report are about that one set of bytes.
        pipe (`DiffusionPipeline`, *optional*):
            A reproducible pipeline (a ``ReproducibleMixin`` class) to regenerate with. Without it the recorded model
            is loaded (see `load_pipeline`).
        device (`str` or `torch.device`, *optional*):
            Where to run. With ``pipe`` it moves the pipeline there; without, it defaults to the recorded device when
            this machine has it, else the CPU.
        tolerance (`float`, *optional*, defaults to `DEFAULT_TOLERANCE` = 2/255):
            The largest per-pixel difference against the file, in ``[0, 1]`` units, for the verdict ``"close"``.
        cache_dir (`str` or `os.PathLike`, *optional*):
            The Hugging Face cache to load a hub model from when no ``pipe`` is given.
        whole_batch (`bool`, *optional*):
            `None` (default): regenerate the whole batch when the image came from a normal batch of more than one and
            the record allows it, else alone. `False`: always alone (cheaper, not bitwise for such images). `True`:
            require the whole batch, raising `ReproductionError` when the record does not allow it or the siblings'
            records are not found.
        batch_from (`str`, `os.PathLike`, a list of them, or a list of `Provenance`, *optional*):
            Where the siblings of an image of a mixed batch are (files, folders or records); defaults to the
            image's folder and its run manifest.
        limits (`ReplayLimits`, *optional*, defaults to `diffusers_repro.limits.DEFAULT_LIMITS`):
            Bounds on pixels, steps and images per call; a record that asks for more raises `LimitExceededError`.
        allow_pickle (`bool`, *optional*, defaults to `False`):
            Load pickled weights too (only with a trusted record: unpickling can run code).
        trust (`list` of paths, *optional*):
            PEM files of further trust anchors for the file's Content Credentials (see
            `diffusers_repro.credentials.read_credentials`).
        download (`bool`, *optional*, defaults to `False`):
            Let `load_pipeline` fetch a hub model the local cache does not hold (see there).
        checkpoint (`str` or `os.PathLike`, *optional*):
            For another tool's image: the checkpoint file ``pipe`` was loaded from, whose hash is compared with the
            model hash of the file's recipe (A1111's ``Model hash``, InvokeAI's blake3).
        **call_overrides:
            Call arguments to use instead of the recorded ones. Tensor-valued arguments (``prompt_embeds``,
            ``latents``, ...) are recorded as digests only and must be passed here; an override that changes a
            recorded value shows up in ``differences``.

    Returns:
        `Reproduction`: the image, the new record, ``bitwise_equal``, ``max_abs_diff``, ``psnr``, ``verdict`` and
        ``differences``.

    Raises:
        `ImageProvenanceError`: when the file carries no readable record.
        `ReproductionError`: when the record cannot be replayed (missing tensor argument, model not found, ...).
        `LimitExceededError`: when the record asks for more work than ``limits`` allow.

    Example:

    ```py
    >>> from diffusers_repro import ReproStableDiffusionPipeline
    >>> from diffusers_repro.replay import reproduce
    >>> from diffusers_repro.tiny import tiny_pipeline_path
    >>> pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    >>> out = pipe(["a fox", "a bear", "a cat"], seed=42, num_inference_steps=2, batch_invariant=True)
    >>> paths = out.save("outputs")
    >>> result = reproduce(paths[1])
    >>> result.verdict, result.differences
    ('bitwise', [])
    ```
    """
    limits = DEFAULT_LIMITS if limits is None else limits
    if not isinstance(limits, ReplayLimits):
        raise TypeError(f"limits must be a diffusers_repro.ReplayLimits, got {type(limits).__name__}")
    path_or_provenance = _read_once(path_or_provenance, limits)
    foreign = _foreign_recipe(path_or_provenance)
    if foreign is not None:
        _check_options(tolerance, whole_batch)
        return _reproduce_foreign(
            path_or_provenance, foreign, pipe, device, tolerance, limits, checkpoint, call_overrides
        )
    record, image_file, credentials = _read_what_to_replay(path_or_provenance, limits, trust)
    _check_options(tolerance, whole_batch)
    prompt_lists = _batch_to_replay(record, image_file, whole_batch, batch_from, limits, call_overrides)
    # Bounded work, before any model loads: images counted from what the call would really make.
    check_limits(record, limits, prompt_lists=prompt_lists)
    pipe = _pipeline_for(record, pipe, device, cache_dir=cache_dir, allow_pickle=allow_pickle, download=download)
    call = _build_call(pipe, record, call_overrides, prompt_lists)
    image, current = _regenerate(pipe, call)
    comparison = _compare(image, current, record, image_file, credentials)
    return _explain(comparison, image, current, record, image_file, credentials, call, tolerance)


# --------------------------------------------------------------------------------------------------------------------
# The steps of reproduce


def _check_options(tolerance: Any, whole_batch: Any) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance must be a number between 0 and 1 (in [0, 1] pixel units), got {tolerance!r}")
    if whole_batch not in (None, True, False):
        raise TypeError(f"whole_batch must be None, True or False, got {whole_batch!r}")


def _batch_to_replay(
    record: Provenance,
    image_file: Any,
    whole_batch: bool | None,
    batch_from: Any,
    limits: ReplayLimits,
    overrides: dict,
) -> dict[str, list[str]] | None:
    """The prompt lists of the whole batch to regenerate, or `None` to regenerate the image alone."""
    in_batch = record.batch.get("size", 1) > 1 and not record.batch.get("batch_invariant", False)
    obstacle = _can_replay_whole_batch(record, overrides)
    if whole_batch is True and obstacle is not None:
        raise ReproductionError(f"cannot regenerate the whole batch of this image: {obstacle}")
    if whole_batch is False or not in_batch or obstacle is not None:
        return None
    needs_siblings = "prompt_lists" not in record.batch and not record.batch.get("same_prompts")
    siblings = find_siblings(record, image_file, batch_from, limits=limits) if needs_siblings else None
    prompt_lists = batch_prompt_lists(record, siblings)
    if prompt_lists is None and whole_batch is True:
        raise ReproductionError(
            "cannot regenerate the whole batch of this image: the records of its siblings in batch "
            f"{record.batch.get('id')} were not found; pass batch_from= the folder or files of the batch"
        )
    return prompt_lists


def _pipeline_for(record: Provenance, pipe: Any, device: Any, **load_options: Any) -> Any:
    """The caller's reproducible pipeline (moved to ``device``), or the recorded model loaded."""
    from ..pipelines import ReproducibleMixin

    if pipe is None:
        return load_pipeline(record, device, **load_options)
    if not isinstance(pipe, ReproducibleMixin):
        raise TypeError(
            f"pipe must be a reproducible pipeline (a ReproducibleMixin class such as "
            f"ReproStableDiffusionPipeline), got {type(pipe).__name__}"
        )
    if device is not None:
        pipe.to(device)
    return pipe


@dataclasses.dataclass
class _Call:
    """The call that regenerates a record's image: its arguments, and which image of the output is the one."""

    arguments: dict[str, Any]
    # seed, rng, deterministic, batch_invariant: passed beside the call's own arguments, never merged into them
    repro_arguments: dict[str, Any]
    schedulers: dict[str, Any]
    index: int
    whole_batch: bool


def _build_call(pipe: Any, record: Provenance, overrides: dict[str, Any], prompt_lists: Any) -> _Call:
    from diffusers import SchedulerMixin

    whole_batch = prompt_lists is not None
    if whole_batch:
        seed_arguments = {"seed": list(record.batch["seeds"]), **_rng_arguments(record)}
    else:
        seed_arguments = _seed_arguments(record)
    determinism = record.environment.get("determinism") or {}
    arguments = _call_arguments(pipe, record, overrides, prompt_lists)
    repro_arguments = {
        **seed_arguments,
        "deterministic": bool(determinism.get("full_determinism", False)),
        # For one image, batch-invariant mode is the plain call; passed as recorded all the same.
        "batch_invariant": bool(record.batch.get("batch_invariant", False)),
    }
    # Only the pipeline's own scheduler components are replaced, whatever names the record gives.
    schedulers = {
        name: value
        for name, value in _recorded_schedulers(record).items()
        if name in pipe.components and isinstance(pipe.components[name], SchedulerMixin)
    }
    index = record.batch.get("index", 0) if whole_batch else 0
    return _Call(arguments, repro_arguments, schedulers, index=index, whole_batch=whole_batch)


def _regenerate(pipe: Any, call: _Call) -> tuple[Any, Provenance]:
    """Runs the call with the recorded schedulers on the pipeline (its own are put back): the image, its record."""
    previous_schedulers = {name: getattr(pipe, name) for name in call.schedulers}
    for name, scheduler in call.schedulers.items():
        setattr(pipe, name, scheduler)
    try:
        output = pipe(**call.arguments, **call.repro_arguments)
    finally:
        for name, scheduler in previous_schedulers.items():
            setattr(pipe, name, scheduler)
    return output.images[call.index], output.provenance[call.index]


@dataclasses.dataclass
class _Comparison:
    bitwise_equal: bool
    output_digest_equal: bool | None
    pixels_equal: bool | None
    max_abs_diff: float | None
    psnr: float | None
    reencoding_equal: bool | None


def _compare(image: Any, current: Provenance, record: Provenance, image_file: Any, credentials: Any) -> _Comparison:
    """The regenerated image against the record's output digest and the file's pixels (or, for a lossy file, what
    vouches for them)."""
    recorded_digest = record.result.get("output_digest")
    output_digest_equal = None if recorded_digest is None else current.result.get("output_digest") == recorded_digest
    pixels_equal = max_abs_diff = psnr = reencoding_equal = None
    if image_file is not None:
        pixels_equal, max_abs_diff, psnr = compare_pixels(image, image_file.pixels)
    checks = [check for check in (output_digest_equal, pixels_equal) if check is not None]
    if image_file is not None and image_file.format in LOSSY_FORMATS:
        # A lossy file's pixels carry the encoder's loss: the output digest, the digest of the 8-bit image that was
        # encoded and the Content Credentials (which vouch the file is the one written) decide instead.
        regenerated = to_pil_image(image)
        source_equal = image_file.source_pixel_digest == image_digest(regenerated)
        # Anyone can sign a file: only a trusted signer vouches for its pixels; otherwise they must be what encoding
        # the regenerated image gives. The re-encoding is compared either way, and the verdict says which held.
        reencoding_equal = _reencoding_matches(regenerated, image_file)
        pixels_vouched = credentials.state == "trusted" or reencoding_equal
        checks = [
            check
            for check in (output_digest_equal, source_equal, credentials.intact, pixels_vouched)
            if check is not None
        ]
    return _Comparison(
        bitwise_equal=bool(checks) and all(checks),
        output_digest_equal=output_digest_equal,
        pixels_equal=pixels_equal,
        max_abs_diff=max_abs_diff,
        psnr=psnr,
        reencoding_equal=reencoding_equal,
    )


def _explain(
    comparison: _Comparison,
    image: Any,
    current: Provenance,
    record: Provenance,
    image_file: Any,
    credentials: Any,
    call: _Call,
    tolerance: float,
) -> Reproduction:
    """The verdict and the differences between the record and its replay that explain it."""
    bitwise_equal = comparison.bitwise_equal
    differences = replay_differences(record, current, image_file, whole_batch=call.whole_batch)
    if image_file is not None:
        differences += metadata_differences(record, image_file)
    if credentials is not None and credentials.state == "tampered":
        bitwise_equal = False
        differences.append(Difference("file.credentials", "unchanged since signed", ", ".join(credentials.failures)))
        verdict = "tampered"
    elif bitwise_equal:
        verdict = "bitwise"
    elif comparison.max_abs_diff is not None and comparison.max_abs_diff <= tolerance:
        verdict = "close"
    else:
        verdict = "different"
    return Reproduction(
        image=image,
        provenance=current,
        recorded=record,
        bitwise_equal=bitwise_equal,
        output_digest_equal=comparison.output_digest_equal,
        pixels_equal=comparison.pixels_equal,
        max_abs_diff=comparison.max_abs_diff,
        psnr=comparison.psnr,
        verdict=verdict,
        differences=differences,
        tolerance=float(tolerance),
        path=image_file.path if image_file is not None else None,
        whole_batch=call.whole_batch,
        credentials=credentials,
        file_format=image_file.format if image_file is not None else None,
        reencoding_equal=comparison.reencoding_equal,
        file=image_file,
    )


def _read_what_to_replay(
    path_or_provenance: Any, limits: ReplayLimits, trust: Sequence[str | os.PathLike]
) -> tuple[Provenance, ImageFile | None, Any]:
    """The record to replay, the file it came from (read once) and that file's Content Credentials."""
    if isinstance(path_or_provenance, Provenance):
        # A record built in code (not read from a file) meets the same schema before any work.
        check_record(jsonable(path_or_provenance.to_dict()), source="the record passed to reproduce")
        return path_or_provenance, None, None
    if isinstance(path_or_provenance, ImageFile):
        image_file = path_or_provenance.require_record()
    else:
        raise TypeError(
            "path_or_provenance must be a path to an image written by diffusers-repro, an ImageFile or a Provenance, "
            f"got {type(path_or_provenance).__name__}"
        )
    # Before any work, and over the bytes the record and pixels came from: a manifest that does not parse is an
    # error naming the file.
    return image_file.provenance, image_file, file_credentials(image_file, trust)


# --------------------------------------------------------------------------------------------------------------------
# Another tool's image


def _read_once(path_or_provenance: Any, limits: ReplayLimits) -> Any:
    """A path read once into an `ImageFile` (a regular file within ``limits.max_file_bytes``); anything else as is."""
    if isinstance(path_or_provenance, (str, os.PathLike)):
        return read_image(path_or_provenance, max_bytes=limits.max_file_bytes)
    return path_or_provenance


def _foreign_recipe(image_file: Any) -> Any:
    """Another tool's recipe of a file with no record of ours (a malformed one raises `ForeignMetadataError`); `None`
    for our files, records, and files with no metadata we read (they take our path, which says why not)."""
    from ..interop import foreign_source, recipe_from_image_file

    if not isinstance(image_file, ImageFile) or foreign_source(image_file) is None:
        return None
    return recipe_from_image_file(image_file)


def _reproduce_foreign(
    image_file: ImageFile,
    recipe: Any,
    pipe: Any,
    device: Any,
    tolerance: float,
    limits: ReplayLimits,
    checkpoint: Any,
    overrides: dict[str, Any],
) -> Reproduction:
    from .foreign import check_recipe_limits, regeneration_blockers, reproduce_recipe

    if overrides:
        raise TypeError(
            f"reproduce() takes the call of a {recipe.source} image from its recipe; call overrides "
            f"({', '.join(sorted(overrides))}) are for records of diffusers-repro"
        )
    check_recipe_limits(recipe, limits, image_file.image.size)
    if pipe is None and not regeneration_blockers(recipe):
        raise ReproductionError(
            f"{image_file.path or 'the file'} is a {recipe.source} image with no diffusers-repro record: its recipe "
            "names no model diffusers-repro can load by itself; pass pipe= a pipeline of its model (verify: --model "
            "or --models)"
        )
    if pipe is not None and device is not None:
        pipe.to(device)
    return reproduce_recipe(image_file, recipe, pipe, tolerance=tolerance, limits=limits, checkpoint=checkpoint)
