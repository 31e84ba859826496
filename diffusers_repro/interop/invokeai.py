"""InvokeAI's ``invokeai_metadata`` PNG chunk as a `Recipe`.

InvokeAI's image files service writes up to three PNG text chunks: ``invokeai_metadata`` (the core metadata
invocation's fields as JSON: ``positive_prompt``, ``negative_prompt``, ``seed``, ``steps``, ``cfg_scale``, ``width``,
``height``, ``scheduler``, ``model`` ``{key, hash, name, base, type}``, ``loras`` ``[{model, weight}]``,
``rand_device``, ``clip_skip``, ``generation_mode``, ``app_version``, ...), ``invokeai_workflow`` and
``invokeai_graph``. Its scheduler names map straight to diffusers classes (`from_invokeai`), its CPU noise is
a diffusers CPU generator's, and its ``clip_skip`` counts skipped layers as diffusers does.
"""

from __future__ import annotations

from typing import Any

from ..generation import from_invokeai
from .recipe import (
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    ForeignMetadataError,
    Recipe,
    check_float,
    check_int,
    check_text,
    load_json_object,
    prompt_blockers,
)

__all__ = ["GRAPH_KEY", "METADATA_KEY", "recipe_from_invokeai"]

METADATA_KEY = "invokeai_metadata"
GRAPH_KEY = "invokeai_graph"
_TXT2IMG_MODES = ("txt2img", "sdxl_txt2img")
_RAND_DEVICES = {"cpu": "cpu", "cuda": "cuda"}


def _model(value: Any, field: str, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ForeignMetadataError(f"{where}: {field} must be an object, got {type(value).__name__}")
    # Older InvokeAI wrote {model_name, base_model}; newer {key, hash, name, base, type}.
    name = check_text(value.get("name", value.get("model_name")), f"{field}.name", where)
    digest = check_text(value.get("hash"), f"{field}.hash", where)
    kind = None
    if digest is not None:
        prefix, sep, _ = digest.partition(":")
        kind = f"invokeai-{prefix.lower()}" if sep and prefix.isalnum() and len(prefix) <= 16 else "invokeai"
    base = check_text(value.get("base", value.get("base_model")), f"{field}.base", where)
    key = check_text(value.get("key"), f"{field}.key", where)
    return {"name": name, "hash": digest, "hash_kind": kind, "base": base, "key": key}


def _loras(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 1024:
        raise ForeignMetadataError(f"{where}: loras must be a list (of at most 1024), got {type(value).__name__}")
    loras = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ForeignMetadataError(f"{where}: loras[{index}] must be an object")
        model = _model(item.get("model", item.get("lora")), f"loras[{index}].model", where) or {}
        weight = check_float(item.get("weight"), f"loras[{index}].weight", where)
        loras.append(
            {
                "name": model.get("name"),
                "weight": weight,
                "hash": model.get("hash"),
                "hash_kind": model.get("hash_kind"),
            }
        )
    return tuple(loras)


def recipe_from_invokeai(
    metadata: dict[str, str], where: str = "<invokeai>", image_size: tuple[int, int] | None = None
) -> Recipe:
    """The recipe of an InvokeAI PNG from its ``invokeai_metadata`` chunk (``metadata``: the PNG's text chunks).

    Raises:
        `ForeignMetadataError`: the chunk is not a JSON object, has no ``seed`` or ``steps``, or a field of the wrong
            type or out of range; the message names the field.

    Example:

    ```py
    >>> import json
    >>> from diffusers_repro.interop.invokeai import recipe_from_invokeai
    >>> chunk = json.dumps({"positive_prompt": "a fox", "seed": 7, "steps": 30, "scheduler": "euler_k"})
    >>> recipe_from_invokeai({"invokeai_metadata": chunk}).scheduler_config
    {'use_karras_sigmas': True}
    ```
    """
    data = load_json_object(metadata.get(METADATA_KEY), METADATA_KEY, where)
    if GRAPH_KEY in metadata:
        load_json_object(metadata[GRAPH_KEY], GRAPH_KEY, where)
    where = f"{where}: {METADATA_KEY}"
    for required in ("seed", "steps"):
        if data.get(required) is None:
            raise ForeignMetadataError(f"{where} has no {required!r}")
    blockers: list[str] = []
    notes: list[str] = []
    extras: dict[str, Any] = {}
    seed = check_int(data.get("seed"), "seed", 0, MAX_SEED, where)
    steps = check_int(data.get("steps"), "steps", 1, MAX_STEPS, where)
    cfg = data.get("cfg_scale")
    if isinstance(cfg, list):  # per-step CFG lists exist in newer InvokeAI
        blockers.append("cfg_scale changes per step; a diffusers call takes one guidance scale")
        cfg = None
    guidance = check_float(cfg, "cfg_scale", where)
    width = check_int(data.get("width"), "width", 1, MAX_SIDE, where)
    height = check_int(data.get("height"), "height", 1, MAX_SIDE, where)
    prompt = check_text(data.get("positive_prompt"), "positive_prompt", where)
    negative = check_text(data.get("negative_prompt"), "negative_prompt", where)
    scheduler_name = check_text(data.get("scheduler"), "scheduler", where)
    scheduler, config = None, {}
    if scheduler_name is None:
        blockers.append("the metadata names no scheduler")
    else:
        mapping = from_invokeai(scheduler_name)
        scheduler, config = mapping.scheduler, dict(mapping.config)
        blockers.extend(mapping.blockers)
        if scheduler == "DPMSolverSDEScheduler":
            config["noise_sampler_seed"] = seed  # InvokeAI seeds the Brownian noise with the image's seed
    rand_device = check_text(data.get("rand_device"), "rand_device", where)
    if rand_device is not None and rand_device not in _RAND_DEVICES:
        raise ForeignMetadataError(f"{where}: rand_device must be 'cpu' or 'cuda', got {rand_device[:40]!r}")
    rng = _RAND_DEVICES.get(rand_device) if rand_device else None
    clip_skip = check_int(data.get("clip_skip"), "clip_skip", 0, 24, where)
    mode = check_text(data.get("generation_mode"), "generation_mode", where)
    if mode is not None and mode not in _TXT2IMG_MODES:
        blockers.append(f"generation_mode {mode[:40]!r}: the source image or canvas is not in the file")
    loras = _loras(data.get("loras"), where)
    # These leave a call to run (the regeneration names them among the differences).
    runs = [
        f"LoRA {lora['name']!r} is applied; a plain diffusers call does not load it (load_lora_weights)"
        for lora in loras
    ]
    blockers.extend(runs)
    for field in ("controlnets", "ipAdapters", "t2iAdapters"):
        if data.get(field):
            blockers.append(f"{field} were used; a plain text-to-image diffusers call has none")
    if data.get("hrf_enabled"):
        blockers.append("high resolution fix ran a second, upscaled pass; a single diffusers call does not")
    if data.get("refiner_model"):
        blockers.append("an SDXL refiner model took over part of the steps")
    if data.get("seamless_x") or data.get("seamless_y"):
        blockers.append("seamless tiling changes the model's convolutions; a plain diffusers call does not")
    for field in ("strength", "cfg_rescale_multiplier", "hrf_strength", "hrf_method", "refiner_steps", "vae"):
        if data.get(field) is not None:
            extras[field] = data[field]
    if extras.get("cfg_rescale_multiplier"):
        notes.append("cfg_rescale_multiplier is diffusers' guidance_rescale")
    syntax = prompt_blockers(prompt, "prompt", "invokeai") + prompt_blockers(negative, "negative prompt", "invokeai")
    blockers.extend(syntax)
    runs.extend(syntax)
    if image_size is not None and width is not None and height is not None and (width, height) != tuple(image_size):
        if not data.get("hrf_enabled"):
            blockers.append(
                f"the image is {image_size[0]}x{image_size[1]} but its metadata says {width}x{height} (resized after "
                "generation)"
            )
            runs.append(blockers[-1])
    return Recipe(
        source="invokeai",
        source_version=check_text(data.get("app_version"), "app_version", where),
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        steps=steps,
        guidance_scale=guidance,
        width=width,
        height=height,
        sampler=scheduler_name,
        schedule_type=None,
        scheduler=scheduler,
        scheduler_config=config,
        model=_model(data.get("model"), "model", where),
        loras=loras,
        clip_skip=clip_skip or None,
        batch_index=None,
        batch_size=None,
        rng=rng,
        extras=extras,
        blockers=tuple(blockers),
        runs_anyway=tuple(runs),
        notes=tuple(notes),
    )
