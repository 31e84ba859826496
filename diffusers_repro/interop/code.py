"""Python code that makes an image again with diffusers, from what its file says: what ``inspect --as-code`` prints.

`recipe_code` writes a plain diffusers call for another tool's recipe (A1111, ComfyUI, InvokeAI): the model (a
placeholder to replace), the mapped scheduler, the prompts and numbers, and that tool's noise from
`diffusers_repro.interop.noise`, with the recipe's blockers as comments at the top. `record_code` writes a Repro
pipeline call with one of our own records' arguments and seed.

The code is made from hostile input and must stay what it looks like, whatever the file says:

- every string from a file enters the code as ``repr(text)`` (a literal the parser reads back as the same string),
  every number through ``int()``/``float()``, every list or dict through `python_literal`, which refuses other types;
- a name used as code (a pipeline or scheduler class, a keyword argument) is our table's, or checked to be a plain
  ASCII identifier, else left out with a comment;
- comments carry file text only through `_comment`: non-printable characters (line breaks among them) escaped, so a
  comment never ends early, and cut short;
- the first two lines are fixed text: Python reads a coding declaration there (``# coding: utf-7`` would let a later
  comment decode into code), so no file text may sit in them.

This module imports neither torch nor diffusers: it writes text.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Mapping
from typing import Any

from ..records import Provenance
from .recipe import Recipe

__all__ = ["MODEL_PLACEHOLDER", "python_literal", "recipe_code", "record_code"]

MODEL_PLACEHOLDER = "REPLACE-WITH-A-DIFFUSERS-MODEL"
"""The model string of `recipe_code`'s code: other tools name a checkpoint file, not a diffusers folder or Hub id."""

_HEADER = (
    "# Made by `diffusers-repro inspect --as-code` from the metadata of an image file.",
    "# Every value below was read from that file: look it over before you run it.",
)
_TOOLS = {"a1111": "AUTOMATIC1111/Forge/SD.Next", "comfyui": "ComfyUI", "invokeai": "InvokeAI"}
_COMMENT_CHARS = 400
_MAX_LITERAL_DEPTH = 32
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DTYPES = {"torch.float16": "torch.float16", "torch.bfloat16": "torch.bfloat16"}


# --------------------------------------------------------------------------------------------------------------------
# Values as code


def python_literal(value: Any, depth: int = 0) -> str:
    """``value`` as a Python expression that evaluates to it: strings through `repr`, numbers through `int`/`float`
    (non-finite floats as ``float('inf')``), lists, tuples and dicts with string keys element by element.

    Raises:
        `TypeError`: for any other type (nothing else comes out of a JSON or infotext reader).
        `ValueError`: nested deeper than 32 levels.

    Example:

    ```py
    >>> from diffusers_repro.interop.code import python_literal
    >>> print(python_literal({"prompt": "a fox'); import os", "steps": 20, "cfg": 7.5, "ok": None}))
    {'prompt': "a fox'); import os", 'steps': 20, 'cfg': 7.5, 'ok': None}
    ```
    """
    if depth > _MAX_LITERAL_DEPTH:
        raise ValueError(f"a value nested deeper than {_MAX_LITERAL_DEPTH} levels is not written as code")
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        number = float(value)
        return repr(number) if math.isfinite(number) else f"float({repr(str(number))})"
    if isinstance(value, list | tuple):
        items = [python_literal(item, depth + 1) for item in value]
        return (
            f"[{', '.join(items)}]"
            if isinstance(value, list)
            else f"({', '.join(items)}{',' if len(items) == 1 else ''})"
        )
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"a dict written as code must have string keys, got {type(key).__name__}")
            items.append(f"{repr(str(key))}: {python_literal(item, depth + 1)}")
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"a value of type {type(value).__name__} is not written as code")


def _escaped(text: str) -> str:
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _comment(text: str, limit: int = _COMMENT_CHARS) -> str:
    """One comment line: file text escaped (no character can end the line) and cut short."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    return ("# " + _escaped(text)).rstrip()


def _shown(value: Any, limit: int = 120) -> str:
    """A value from a file, for a comment: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _identifier(name: Any) -> str | None:
    """``name`` when it is a plain ASCII identifier (usable as code), else `None`."""
    if isinstance(name, str) and _IDENTIFIER.fullmatch(name) and not keyword.iskeyword(name):
        return name
    return None


def _as_int(value: Any) -> int | None:
    try:
        number = int(str(value).strip()) if isinstance(value, str) else value
    except ValueError:
        return None
    return int(number) if isinstance(number, int) and not isinstance(number, bool) else None


def _as_float(value: Any) -> float | None:
    try:
        number = float(str(value).strip()) if isinstance(value, str) else value
    except ValueError:
        return None
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        return None
    return float(number)


def _call(target: str, arguments: list[tuple[str, str]], indent: str = "") -> list[str]:
    """``target(name=code, ...)``, one argument a line."""
    lines = [f"{indent}{target}("]
    lines.extend(f"{indent}    {name}={code}," for name, code in arguments)
    lines.append(f"{indent})")
    return lines


def _bullets(title: str, items: tuple[str, ...] | list[str], empty: str | None = None) -> list[str]:
    if not items:
        return [_comment(f"{title} {empty}")] if empty else []
    return [_comment(title)] + [_comment(f"- {item}") for item in items]


# --------------------------------------------------------------------------------------------------------------------
# Other tools' recipes


def _model_comment(recipe: Recipe) -> list[str]:
    model = recipe.model or {}
    if not model.get("name") and not model.get("hash"):
        return ["# The file does not name its model."]
    said = f"The file's model: {_shown(model.get('name'))}"
    if model.get("hash"):
        said += f", hash {_shown(model.get('hash'))} ({_shown(model.get('hash_kind'))})"
    return [_comment(said), "# A single checkpoint file loads with StableDiffusionPipeline.from_single_file(path)."]


def _noise_lines(recipe: Recipe, images: int) -> tuple[str | None, list[str], list[str]]:
    """The noise import, the lines that make ``noise``, and the blockers of the code itself."""
    shape = (
        f"({images}, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)"
    )
    blockers: list[str] = []
    if recipe.seed is None:
        return None, [], ["the file gives no seed: the noise below is diffusers' own, not the tool's"]
    seed = int(recipe.seed)
    sampler = [("sampler", repr(str(recipe.sampler)))] if recipe.sampler is not None else []
    if recipe.source == "a1111":
        rng = recipe.rng if recipe.rng in ("cpu", "gpu", "nv") else "gpu"
        arguments = [("rng", repr(rng))]
        extras = recipe.extras
        subseed = _as_int(extras.get("variation_seed"))
        strength = _as_float(extras.get("variation_seed_strength"))
        if subseed is not None and strength:
            arguments += [("subseeds", f"[{subseed}]"), ("subseed_strength", repr(strength))]
        resize = re.fullmatch(r"\s*(\d{1,6})\s*x\s*(\d{1,6})\s*", str(extras.get("seed_resize_from", "")))
        if resize:
            arguments.append(("seed_resize_from", f"({int(resize.group(1))}, {int(resize.group(2))})"))
        ensd = _as_int(extras.get("ensd", extras.get("eta_noise_seed_delta")))
        if ensd:
            arguments.append(("ensd", str(ensd)))
        lines = []
        if rng == "gpu":
            lines.append(
                "# RNG GPU: latents of more than 40,960 values per image (SDXL at 1024x1024) also need the GPU's "
                "geometry='<multiprocessors>x<threads>' (or a name such as 'A100')."
            )
        lines += _call("noise = a1111_noise", [("shape", shape), ("seeds", f"[{seed}]"), *arguments, *sampler])
        return "a1111_noise", lines, blockers
    if recipe.source == "comfyui":
        lines = [
            "# sampler_device: where ComfyUI sampled ('cuda', or 'cpu'); its ancestral noise is drawn there (on a",
            "# GPU, a batch of more than 40,960 latent values also needs geometry='<multiprocessors>x<threads>').",
            *_call(
                "noise = comfyui_noise",
                [("shape", shape), ("seed", str(seed)), ("batch_size", str(images))]
                + [("sampler_device", "'cuda'"), *sampler],
            ),
        ]
        return "comfyui_noise", lines, blockers
    rand_device = "cuda" if recipe.rng == "cuda" else "cpu"
    lines = [
        "# InvokeAI draws in its model's dtype (float16 on a GPU by default): the pipeline's dtype here.",
        "# denoise_device: where InvokeAI denoised ('cuda', or 'cpu'); its schedulers' later noise is drawn there.",
    ]
    if rand_device == "cuda":
        lines.append(
            "# rand_device cuda: latents of more than 40,960 values per image (SDXL at 1024x1024) also need the GPU's "
            "geometry='<multiprocessors>x<threads>' (or a name such as 'A100')."
        )
    lines += _call(
        "noise = invokeai_noise",
        [
            ("shape", shape),
            ("seeds", f"[{seed}]"),
            ("dtype", "pipe.unet.dtype"),
            ("rand_device", repr(rand_device)),
            ("denoise_device", "'cuda'"),
        ],
    )
    steps = int(recipe.steps) if recipe.steps is not None else None
    if steps is not None:
        lines += [
            "# InvokeAI starts from pipe.scheduler.add_noise(zeros, noise, first timestep): these latents make the",
            "# pipeline's latents x init_noise_sigma start there (Euler-type schedulers with 'leading' spacing: but",
            "# for a few values, one unit in the last place off).",
            f"latents, _ = invokeai_start(noise.latents, pipe.scheduler, {steps})",
        ]
    return "invokeai_noise", lines, blockers


def recipe_code(recipe: Recipe) -> str:
    """A runnable Python script that makes ``recipe``'s image with vanilla diffusers and the tool's own noise.

    The model is `MODEL_PLACEHOLDER` (other tools name a checkpoint, not a diffusers folder): replace it. The
    scheduler is the recipe's mapped class and config (InvokeAI's: its keys over the model's config); the starting
    latents and the later noise's generators come from `a1111_noise`, `comfyui_noise` or `invokeai_noise` (started
    with `invokeai_start`); a clip skip goes through `a1111_prompt_embeds` (both prompts, as the tools skip it). The
    recipe's blockers and notes are comments at the top.

    Args:
        recipe (`Recipe`): Another tool's recipe (``source`` ``"a1111"``, ``"comfyui"`` or ``"invokeai"``).

    Returns:
        `str`: the script; it saves ``regenerated-<i>.png``, one per image made.

    Example:

    ```py
    >>> from diffusers_repro.interop import Recipe
    >>> from diffusers_repro.interop.code import recipe_code
    >>> code = recipe_code(Recipe(source="a1111", prompt="a fox", seed=7, steps=20, rng="cpu"))
    >>> "a1111_noise(" in code
    True
    ```
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    if recipe.source not in _TOOLS:
        raise ValueError(f"recipe_code writes other tools' recipes; a {recipe.source!r} recipe takes record_code")
    images = recipe.batch_size if recipe.source == "comfyui" and recipe.batch_size else 1
    noise_import, noise_lines, code_blockers = _noise_lines(recipe, images)
    scheduler = _identifier(recipe.scheduler)
    sdxl = isinstance(recipe.model, dict) and str(recipe.model.get("base") or "").startswith("sdxl")
    pipeline = "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline"
    clip_skip = _as_int(recipe.clip_skip) if not sdxl else None

    source = f"Source: {_TOOLS[recipe.source]}"
    if recipe.source_version:
        source += f" {_shown(recipe.source_version)}"
    names = ", ".join(f"{_shown(name)}" for name in (recipe.sampler, recipe.schedule_type) if name is not None)
    lines = [*_HEADER, "#", _comment(f"{source}; sampler {names or 'not given'}")]
    lines += [
        "#",
        *_bullets(
            "Blockers: what stands between this code and the tool's exact image:",
            [*recipe.blockers, *code_blockers],
            "none known.",
        ),
    ]
    lines += _bullets("Notes:", recipe.notes)
    imports = sorted({pipeline, *([scheduler] if scheduler else [])})
    starts = ["invokeai_start"] if noise_import == "invokeai_noise" and recipe.steps is not None else []
    interop = sorted(
        {*([noise_import] if noise_import else []), *starts, *(["a1111_prompt_embeds"] if clip_skip else [])}
    )
    lines += ["", f"from diffusers import {', '.join(imports)}", ""]
    if scheduler and recipe.source != "invokeai":
        lines += ["from diffusers_repro.generation import tool_scheduler_config"]
    if interop:
        lines += [f"from diffusers_repro.interop import {', '.join(interop)}"]
    if scheduler or interop:
        lines += [""]
    lines += _model_comment(recipe)
    lines += [f"model = {MODEL_PLACEHOLDER!r}  # a diffusers folder or Hub id: replace it"]
    lines += [f"pipe = {pipeline}.from_pretrained(model)"]
    if scheduler and recipe.source == "invokeai":
        # InvokeAI's own rule: its keys over the model's whole scheduler config (spacing and offset kept).
        config = python_literal(dict(recipe.scheduler_config))
        lines += [f"pipe.scheduler = {scheduler}.from_config({{**pipe.scheduler.config, **{config}}})"]
    elif scheduler:
        config = python_literal(dict(recipe.scheduler_config))
        # The model's betas, the sampler's method and steps (not the model's own spacing or offset).
        lines += [
            f"pipe.scheduler = {scheduler}.from_config(",
            f"    tool_scheduler_config({scheduler!r}, {config}, pipe.scheduler.config)",
            ")",
        ]
    elif recipe.sampler is None:
        lines += ["# The file names no sampler: the model's own scheduler is kept."]
    else:
        lines += ["# No diffusers scheduler runs this sampler faithfully (see the blockers): the model's own is kept."]
    for lora in recipe.loras:
        lines += [
            _comment(
                f"LoRA {_shown(lora.get('name'))}, weight {_shown(lora.get('weight'))}: "
                "pipe.load_lora_weights(<its file>) before the call"
            )
        ]
    lines += [""]
    lines += _values(recipe)
    lines += _call_lines(recipe, noise_lines, clip_skip, images)
    return "\n".join(lines) + "\n"


def _values(recipe: Recipe) -> list[str]:
    lines = [f"prompt = {python_literal(recipe.prompt if recipe.prompt is not None else '')}"]
    if recipe.prompt is None:
        lines[0] += "  # the file gives no prompt"
    lines.append(f"negative_prompt = {python_literal(recipe.negative_prompt or '')}")
    if recipe.width is not None and recipe.height is not None:
        lines.append(f"width, height = {int(recipe.width)}, {int(recipe.height)}")
    else:
        lines.append("width = height = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the file gives no size")
    return lines


def _call_lines(recipe: Recipe, noise_lines: list[str], clip_skip: int | None, images: int) -> list[str]:
    lines = list(noise_lines)
    arguments: list[tuple[str, str]] = []
    if clip_skip:
        tools = {
            "a1111": f"A1111's 'Clip skip: {clip_skip + 1}'",
            "comfyui": f"ComfyUI's stop_at_clip_layer {-clip_skip - 1}",
            "invokeai": f"InvokeAI's clip_skip {clip_skip}",
        }
        lines += [
            f"# Clip skip {clip_skip} in diffusers' numbering ({tools[recipe.source]}), for the prompt and the "
            "negative prompt, as the tool skips it.",
            "prompt_embeds, negative_prompt_embeds = a1111_prompt_embeds(",
            f"    pipe, prompt, negative_prompt, clip_skip={clip_skip}",
            ")",
        ]
        arguments += [("prompt_embeds", "prompt_embeds"), ("negative_prompt_embeds", "negative_prompt_embeds")]
    else:
        arguments += [("prompt", "prompt"), ("negative_prompt", "negative_prompt")]
    if recipe.steps is not None:
        arguments.append(("num_inference_steps", str(int(recipe.steps))))
    if recipe.guidance_scale is not None:
        arguments.append(("guidance_scale", repr(float(recipe.guidance_scale))))
    rescale = _as_float(recipe.extras.get("cfg_rescale_multiplier")) if recipe.source == "invokeai" else None
    if rescale:
        arguments.append(("guidance_rescale", repr(rescale)))
    arguments += [("width", "width"), ("height", "height")]
    if images > 1:
        arguments.append(("num_images_per_prompt", str(int(images))))
    if noise_lines:
        # In the denoiser's dtype, as the tools draw or cast it (the pipeline moves latents given to it, never casts).
        latents = (
            "latents"
            if any(line.startswith("latents, _ = ") for line in noise_lines)
            else "noise.latents.to(pipe.unet.dtype)"
        )
        arguments += [("latents", latents), ("generator", "noise.generator")]
        lines += ["with noise.context():", *_call("images = pipe", arguments, indent="    ")[:-1], "    ).images"]
    else:
        lines += [*_call("images = pipe", arguments)[:-1], ").images"]
    lines += ["for index, image in enumerate(images):", '    image.save(f"regenerated-{index}.png")']
    return lines


# --------------------------------------------------------------------------------------------------------------------
# Our own records


def _model_source(model: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The ``from_pretrained`` source and keyword arguments of a recorded model."""
    if model.get("type") == "hub" and isinstance(model.get("repo_id"), str):
        keywords = [
            (name, repr(str(model[name]))) for name in ("revision", "variant") if isinstance(model.get(name), str)
        ]
        return repr(str(model["repo_id"])), keywords
    for name in ("path", "name_or_path"):
        if isinstance(model.get(name), str):
            variant = [("variant", repr(str(model["variant"])))] if isinstance(model.get("variant"), str) else []
            return repr(str(model[name])), variant
    return repr(MODEL_PLACEHOLDER), []


def _record_arguments(record: Provenance, notes: list[str]) -> list[tuple[str, str]]:
    call = record.call_arguments
    recipe = record.recipe
    batch = record.batch
    digests_only = set(recipe.get("requires_inputs") or ())
    arguments = []
    first = ("prompt", "negative_prompt")
    for name, value in sorted(
        call.items(), key=lambda item: (item[0] not in first, first.index(item[0]) if item[0] in first else 0)
    ):
        if value is None or name in digests_only:
            continue
        if _identifier(name) is None:
            notes.append(f"the recorded argument {_shown(name)} is not a plain name and is left out")
            continue
        try:
            arguments.append((name, python_literal(value)))
        except (TypeError, ValueError):
            notes.append(f"the recorded value of {name} is not a plain literal and is left out")
    if int(batch.get("size") or 1) > 1:
        # One image of the batch, made alone: its own seed, one image per call.
        arguments = [
            (name, "1" if name in ("num_images_per_prompt", "batch_size") else code) for name, code in arguments
        ]
    arguments.append(("seed", str(int(record.seed))))
    rng = recipe.get("rng")
    if isinstance(rng, dict) and rng.get("type") == "cuda":
        geometry = rng.get("geometry")
        text = "cuda"
        if isinstance(geometry, dict):
            sms, threads = (
                _as_int(geometry.get("multiprocessors")),
                _as_int(geometry.get("max_threads_per_multiprocessor")),
            )
            if sms is not None and threads is not None:
                text += f":{sms}x{threads}"
        arguments.append(("rng", repr(text)))
    if (record.environment.get("determinism") or {}).get("full_determinism"):
        arguments.append(("deterministic", "True"))
    if batch.get("batch_invariant"):
        arguments.append(("batch_invariant", "True"))
    return arguments


def record_code(record: Provenance, path: str | None = None) -> str:
    """A runnable Python script that makes a diffusers-repro record's image again with a Repro pipeline.

    The recorded model, scheduler class and config, thread count and call arguments, and the image's own seed. An
    image of a normal (not batch-invariant) batch is made alone, which can differ in the last bits from the batch's
    pixels; `diffusers_repro.reproduce` regenerates it within its batch and compares (the script's last lines).

    Args:
        record (`Provenance`): The record (already checked against the schema).
        path (`str`, *optional*): The image file, for the `reproduce` lines.

    Example:

    ```py
    >>> from diffusers_repro.files import read_provenance
    >>> from diffusers_repro.interop.code import record_code
    >>> print(record_code(read_provenance("job000000-seed0.png")))  # doctest: +SKIP
    ```
    """
    if not isinstance(record, Provenance):
        raise TypeError(f"record must be a Provenance, got {type(record).__name__}")
    recipe, env, batch = record.recipe, record.environment, record.batch
    notes: list[str] = []
    blockers = [
        f"the call's {name} is recorded as a digest only: pass the data itself"
        for name in recipe.get("requires_inputs") or ()
    ]
    if int(batch.get("size") or 1) > 1 and not batch.get("batch_invariant"):
        notes.append(
            f"image {_as_int(batch.get('index'))} of a batch of {_as_int(batch.get('size'))}, made alone here: "
            "the pixels can differ from the batch's in the last bits; reproduce() below remakes the whole batch"
        )
    if isinstance(recipe.get("generator"), dict):
        blockers.append("the image was made from the caller's own generator: seed= gives other noise")
    pipeline = _identifier(recipe.get("pipeline_class")) or "StableDiffusionPipeline"
    if pipeline.startswith("Repro"):
        pipeline = pipeline[len("Repro") :]
    scheduler = recipe.get("scheduler") or {}
    scheduler_class = _identifier(scheduler.get("class"))
    arguments = _record_arguments(record, notes)
    source, keywords = _model_source(recipe.get("model") or {})
    dtype = _DTYPES.get(str(env.get("dtype")))
    if dtype:
        keywords.append(("torch_dtype", dtype))

    lines = [*_HEADER, "#", *_bullets("Blockers:", blockers), *_bullets("Notes:", notes)]
    lines += [
        "",
        "import torch",
        f"from diffusers import {', '.join(sorted({pipeline, scheduler_class} - {None}))}",
        "",
    ]
    lines += ["from diffusers_repro import reproducible", ""]
    lines += [
        f"pipe = reproducible({pipeline}).from_pretrained({', '.join([source] + [f'{k}={v}' for k, v in keywords])})"
    ]
    if scheduler_class and isinstance(scheduler.get("config"), Mapping):
        lines += [f"pipe.scheduler = {scheduler_class}.from_config({python_literal(dict(scheduler['config']))})"]
    device = env.get("device")
    if isinstance(device, str) and device != "cpu":
        lines += [f"pipe.to({device!r})"]
    threads = _as_int(env.get("torch_num_threads"))
    if threads:
        lines += [f"torch.set_num_threads({threads})  # CPU results depend on the thread count: the recorded one"]
    lines += ["", *_call("images = pipe", arguments)[:-1], ").images"]
    output_type = record.call_arguments.get("output_type")
    if output_type in (None, "pil"):
        lines += ['images[0].save("regenerated.png")']
    if path is not None:
        lines += [
            "",
            "# To regenerate it and compare with the file (within its whole batch where it needs one):",
            "# from diffusers_repro import reproduce",
            _comment(f"print(reproduce({str(path)!r}).verdict)"),
        ]
    return "\n".join(lines) + "\n"
