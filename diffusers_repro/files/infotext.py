"""The A1111 infotext: the ``parameters`` text Stable Diffusion web UIs and image sites read and show.

`format_infotext` writes it from a provenance record (the ``parameters`` chunk of a PNG, the EXIF ``UserComment`` of a
JPEG or WebP, see `diffusers_repro.files` and `diffusers_repro.exif`); `parse_infotext` reads it back, ours or another
Stable Diffusion tool's. The infotext is a summary for other tools; the ``diffusers-repro`` record is what `reproduce`
reads.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path
from typing import Any

from ..generation import to_a1111
from ..records import Provenance

__all__ = ["INFOTEXT_PAIR", "MAX_PARAMETERS_LINE", "format_infotext", "parse_infotext"]

# The components the mixin takes for the denoiser, in its order: the first one recorded gives the Model hash.
_DENOISER_NAMES = ("unet", "transformer", "prior", "decoder")


def _quote(value: Any) -> str:
    text = str(value)
    # The reader splits on ", " and ": "; values that could be mistaken for those (or for a quoted value) are JSON
    # strings, as the web UIs write them.
    if any(char in text for char in ",:\n\r") or text.startswith('"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _denoiser_hash(components: dict[str, Any]) -> str | None:
    for name in _DENOISER_NAMES:
        component = components.get(name)
        if not isinstance(component, dict):
            continue
        files = component.get("files") or {}
        digest = next(iter(files.values())) if len(files) == 1 else component.get("weights_digest")
        if isinstance(digest, str) and digest.startswith("sha256:"):
            return digest.removeprefix("sha256:")[:10]
    return None


def _model_name(model: dict[str, Any]) -> str | None:
    if model.get("repo_id"):
        return model["repo_id"]
    path = model.get("path") or model.get("name_or_path")
    return Path(str(path)).name if path else None


def _sampler_fields(scheduler: dict[str, Any]) -> dict[str, Any]:
    """A1111's ``Sampler`` and ``Schedule type`` where A1111 has the scheduler's method and steps; else only the class
    under a key A1111 does not read (A1111 falls back to its first sampler for a name it does not know)."""
    class_name = scheduler.get("class")
    if class_name is None:
        return {}
    names = to_a1111(class_name, scheduler.get("config") or {})
    if names is None:
        return {"Diffusers scheduler": class_name}
    return {"Sampler": names[0], "Schedule type": names[1]}


def _rng_field(provenance: Provenance) -> str | None:
    """``CPU`` for CPU generators; ``NV`` for ``rng="cuda"`` where A1111's NV draws the same starting noise (draws up
    to the GPU geometry's threshold: its emulation ignores the grid clamp above it); else nothing."""
    recipe = provenance.recipe
    rng, generator = recipe.get("rng"), recipe.get("generator")
    if isinstance(generator, dict) and not str(generator.get("device", "cpu")).startswith("cpu"):
        return None
    if not isinstance(rng, dict):
        return "CPU"
    shape = (provenance.result.get("noise") or {}).get("shape")
    if not isinstance(shape, list) or not all(isinstance(side, int) for side in shape):
        return None
    geometry = rng.get("geometry")
    if isinstance(geometry, dict):
        # torch launches blocks of 256 threads: draws past multiprocessors x (threads // 256) x 256 are grid-strided.
        threshold = geometry["multiprocessors"] * (geometry["max_threads_per_multiprocessor"] // 256) * 256
    else:
        from ..generation import GEOMETRY_FREE_LIMIT as threshold
    return "NV" if math.prod(shape) <= threshold else None


def _infotext_fields(provenance: Provenance, size: tuple[int, int] | None) -> dict[str, Any]:
    from ..version import __version__

    call = provenance.call_arguments
    recipe = provenance.recipe
    scheduler = recipe.get("scheduler") or {}
    if size is None and call.get("width") is not None and call.get("height") is not None:
        size = (call["width"], call["height"])
    clip_skip = call.get("clip_skip")
    eta = call.get("eta")
    fields = {
        "Steps": call.get("num_inference_steps"),
        **_sampler_fields(scheduler),
        "CFG scale": call.get("guidance_scale"),
        "Seed": provenance.seed,
        "Size": f"{size[0]}x{size[1]}" if size is not None else None,
        "Model hash": _denoiser_hash((recipe.get("model") or {}).get("components") or {}),
        "Model": _model_name(recipe.get("model") or {}),
        # A1111 counts the last layer as 1: its "Clip skip: 2" is diffusers' clip_skip=1.
        "Clip skip": clip_skip + 1 if isinstance(clip_skip, int) else None,
        # Of diffusers' schedulers only DDIM uses eta (0 adds no noise); A1111 writes DDIM's as "Eta DDIM" when not 0.
        "Eta DDIM": eta if scheduler.get("class") == "DDIMScheduler" and eta else None,
        "RNG": _rng_field(provenance),
        "Version": f"diffusers-repro {__version__}",
    }
    return {key: value for key, value in fields.items() if value is not None}


def format_infotext(provenance: Provenance, size: tuple[int, int] | None = None) -> str:
    """The ``parameters`` text of an image, in the format Stable Diffusion web UIs and image sites read.

    Line 1 is the prompt (left out when the pipeline takes none, as ``DDIMPipeline``), then ``Negative prompt: ...``
    when there is one, then one line of ``Key: value`` pairs: ``Steps``, ``Sampler`` and ``Schedule type``, ``CFG
    scale``, ``Seed``, ``Size`` (``WIDTHxHEIGHT``), ``Model hash``, ``Model``, ``Clip skip``, ``Eta DDIM`` (DDIM's
    eta when not 0: diffusers' other schedulers do not use eta), ``RNG``, ``Version``; a pair is left out when the
    record has no value for it. A value containing ``,``, ``:`` or a newline is written as a JSON string.

    ``Sampler`` and ``Schedule type`` are A1111 1.10's names for the scheduler (`diffusers_repro.interop.samplers.
    to_a1111`) when A1111 has a sampler that runs the same method with the same steps. When it has none, no
    ``Sampler`` is written (A1111 would silently use its first sampler for an unknown name) and the class is written
    as ``Diffusers scheduler``, a key A1111 shows and ignores. ``Clip skip`` is A1111's numbering (diffusers'
    ``clip_skip`` + 1). ``RNG: CPU`` is written for CPU generators (A1111 reads a missing ``RNG`` as GPU); for
    ``rng="cuda"`` ``RNG: NV`` is written when the starting noise is no larger than the recorded GPU geometry's
    threshold (A1111's NV emulation draws the same values there, not above it), else nothing.

    ``Model hash`` is the first 10 hex digits of the sha256 of the denoiser's (UNet's) weights file. When the
    denoiser was not loaded from a single file (built in code, or sharded), it is the first 10 hex digits of the
    component's ``weights_digest`` instead (a digest of its tensors or of its files' digests), which still tells
    models apart but does not match the sha256 of any one file.

    The infotext is a summary for other tools; the ``diffusers-repro`` record is what `reproduce` reads.

    Args:
        provenance (`Provenance`): The image's record.
        size (`tuple[int, int]`, *optional*): ``(width, height)`` of the image; defaults to the recorded call's
            ``width`` and ``height`` (left out when they were not passed).

    Example:

    ```py
    >>> from diffusers_repro.files import format_infotext
    >>> print(format_infotext(record, size=(64, 64)))  # doctest: +SKIP
    a fox
    Negative prompt: blurry
    Steps: 2, Sampler: DDIM, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 64x64, Model hash: ...
    ```
    """
    if not isinstance(provenance, Provenance):
        raise TypeError(f"provenance must be a diffusers_repro.Provenance, got {type(provenance).__name__}")
    lines = []
    prompt = provenance.call_arguments.get("prompt")
    if isinstance(prompt, str):
        lines.append(prompt)
    negative = provenance.call_arguments.get("negative_prompt")
    if isinstance(negative, str) and negative:
        if not lines:
            lines.append("")
        lines.append(f"Negative prompt: {negative}")
    fields = _infotext_fields(provenance, size)
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields.items()))
    return "\n".join(lines)


# One `Key: value` pair of the parameters line: the web UIs' own pattern (a quoted value may hold `,` and `:`), with
# the key and a quoted value bounded, so that a line from anyone takes time linear in its length (the web UIs'
# unbounded key makes a long line without a colon quadratic: a 40,000-character line took 11 s).
INFOTEXT_PAIR = re.compile(r'\s*(\w[\w \-/]{0,63}):\s*("(?:\\.|[^\\"]){1,8192}"|[^,]*)(?:,|$)')
MAX_PARAMETERS_LINE = 1 << 16
"""Longest parameters line (the last line of an infotext) read as ``Key: value`` pairs: 64 Ki characters."""
_NEGATIVE_PREFIX = "Negative prompt:"
_TYPED_FIELDS = {"Steps": ("steps", int), "Seed": ("seed", int), "CFG scale": ("cfg_scale", float)}


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        with contextlib.suppress(json.JSONDecodeError):
            decoded = json.loads(value)
            if isinstance(decoded, str):
                return decoded
    return value


def _field_name(key: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", key.strip().lower()).strip("_")


def parse_infotext(text: str) -> dict[str, Any]:
    """Reads a ``parameters`` infotext (ours or another Stable Diffusion tool's) back into a dict.

    Returns:
        `dict`: ``prompt`` (`str`, empty when there is none), ``negative_prompt`` (`str` or `None`), and one entry
        per ``Key: value`` pair of the last line, with snake_case keys: ``steps`` and ``seed`` (`int`),
        ``cfg_scale`` (`float`), ``width`` and ``height`` (`int`, from ``Size``), ``sampler``, ``model_hash``,
        ``model``, ``version`` and any other key as `str`. A value that does not parse as its type stays a `str`.
        When the last line holds fewer than three pairs it is taken as part of the prompt, as the web UIs do.

    Example:

    ```py
    >>> from diffusers_repro.files import parse_infotext
    >>> fields = parse_infotext('a fox\\nSteps: 2, Sampler: DDIMScheduler, Seed: 42, Size: 64x32, Model: "a, b"')
    >>> fields["prompt"], fields["steps"], fields["seed"], fields["width"], fields["height"], fields["model"]
    ('a fox', 2, 42, 64, 32, 'a, b')
    ```
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    lines = text.strip("\n").split("\n") if text.strip() else []
    pairs = INFOTEXT_PAIR.findall(lines[-1]) if lines and len(lines[-1]) <= MAX_PARAMETERS_LINE else []
    if len(pairs) >= 3:
        lines = lines[:-1]
    else:
        pairs = []
    prompt_lines: list[str] = []
    negative_lines: list[str] | None = None
    for line in lines:
        if negative_lines is None and line.startswith(_NEGATIVE_PREFIX):
            negative_lines = [line[len(_NEGATIVE_PREFIX) :].lstrip(" ")]
        elif negative_lines is not None:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    fields: dict[str, Any] = {
        "prompt": "\n".join(prompt_lines),
        "negative_prompt": "\n".join(negative_lines) if negative_lines is not None else None,
    }
    for key, raw in pairs:
        key, value = key.strip(), _unquote(raw)
        if key in _TYPED_FIELDS:
            name, kind = _TYPED_FIELDS[key]
            with contextlib.suppress(ValueError):
                value = kind(value)
            fields[name] = value
        elif key == "Size" and re.fullmatch(r"\d+x\d+", value):
            width, height = value.split("x")
            fields["width"], fields["height"] = int(width), int(height)
        else:
            fields[_field_name(key)] = value
    return fields
