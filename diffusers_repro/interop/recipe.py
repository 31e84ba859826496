"""`Recipe`: what any image file says about how it was made, in one shape, and the checks its readers share.

A recipe is read from the metadata another tool wrote (AUTOMATIC1111/Forge/SD.Next, ComfyUI, InvokeAI). Its
``blockers`` are plain sentences naming what stands between the recipe and an exact rerun with diffusers: a sampler
with no diffusers equivalent, prompt syntax diffusers reads as plain text, hires fix, a refiner, a LoRA, a ComfyUI node
we do not follow, ... The readers are in ``a1111.py``, ``comfyui.py`` and ``invokeai.py``; this module holds the
shape they fill and the checks they share; ``read.py`` picks the reader.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

__all__ = [
    "MAX_METADATA_CHARS",
    "SOURCES",
    "ForeignMetadataError",
    "Recipe",
    "check_float",
    "check_int",
    "check_text",
    "load_json_object",
    "prompt_blockers",
    "shown",
]

SOURCES = ("diffusers-repro", "a1111", "comfyui", "invokeai")
"""The tools a recipe can come from."""

MAX_METADATA_CHARS = 4 << 20
"""Longest metadata text read (an infotext, a JSON chunk): 4 Mi characters, far above any real one."""

MAX_JSON_DEPTH = 64
"""Deepest nesting of a JSON chunk read (ComfyUI and InvokeAI nest a few levels)."""

MAX_SEED = 2**64 - 1
MAX_STEPS = 10_000
MAX_SIDE = 65_536


class ForeignMetadataError(ValueError):
    """Another tool's metadata in a file is missing, malformed, partial or contradictory. The message names the
    field."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How an image was made, as its file says, in diffusers' terms where they exist.

    Args:
        source (`str`): ``"diffusers-repro"``, ``"a1111"``, ``"comfyui"`` or ``"invokeai"``.
        source_version (`str` or `None`): The tool's version, where the file says it.
        prompt, negative_prompt (`str` or `None`): As the tool wrote them (its own syntax kept).
        seed, steps (`int` or `None`), guidance_scale (`float` or `None`), width, height (`int` or `None`).
        sampler, schedule_type (`str` or `None`): The tool's own names.
        scheduler (`str` or `None`): The diffusers scheduler class (`None` when there is no faithful one).
        scheduler_config (`dict`): Its config keys that differ from the class defaults.
        model (`dict` or `None`): ``name``, ``hash`` and ``hash_kind`` (``"a1111-sha256-prefix-10"``,
            ``"a1111-legacy-8"``, ``"invokeai-blake3"``, ...), where known.
        loras (`tuple[dict, ...]`): ``name``, ``weight`` and ``hash`` (where known) of each LoRA.
        clip_skip (`int` or `None`): In diffusers' numbering (A1111's "Clip skip: 2" is ``clip_skip=1``).
        batch_index, batch_size (`int` or `None`): This image's place in its batch and the batch's size, where known.
        rng (`str` or `None`): Where the starting noise was drawn: ``"cpu"``, ``"gpu"`` (A1111's torch CUDA
            generator), ``"nv"`` (A1111's NV emulation), ``"cuda"`` (InvokeAI's CUDA generator).
        extras (`dict`): Other fields the tool wrote (variation seed, eta, ENSD, denoising strength, hires, ...).
        blockers (`tuple[str, ...]`): What stands between this recipe and an exact diffusers rerun.
        runs_anyway (`tuple[str, ...]`): Those of the blockers that leave a call to run (prompt syntax read as plain
            text, a LoRA, an eta, a resize after generation): a regeneration runs it and names them among the
            differences. The reader decides, from what it parsed, never from the sentences' text.
        notes (`tuple[str, ...]`): Known small differences that do not block a rerun (sampler implementation
            details).
    """

    source: str
    source_version: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    schedule_type: str | None = None
    scheduler: str | None = None
    scheduler_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: dict[str, Any] | None = None
    loras: tuple[dict[str, Any], ...] = ()
    clip_skip: int | None = None
    batch_index: int | None = None
    batch_size: int | None = None
    rng: str | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    blockers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    runs_anyway: tuple[str, ...] = ()

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if not set(self.runs_anyway) <= set(self.blockers):
            raise ValueError("runs_anyway must name blockers of the recipe")

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON values (what ``inspect --json`` prints)."""
        data = dataclasses.asdict(self)
        data["loras"] = [dict(lora) for lora in self.loras]
        data["blockers"] = list(self.blockers)
        data["notes"] = list(self.notes)
        data["runs_anyway"] = list(self.runs_anyway)
        return data


# --------------------------------------------------------------------------------------------------------------------
# Checks the readers share


def shown(value: Any) -> str:
    """A value from a file as it goes into a message: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(value: Any, field: str, low: int, high: int, where: str, nullable: bool = True) -> int | None:
    """``value`` as an int in ``[low, high]`` (an int, or a string of digits); else a `ForeignMetadataError`."""
    if value is None and nullable:
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,30}\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ForeignMetadataError(f"{where}: {field} must be an integer from {low} to {high}, got {shown(value)}")
    return value


def check_float(value: Any, field: str, where: str, low: float = -1e6, high: float = 1e6) -> float | None:
    """``value`` as a finite float in ``[low, high]``; else a `ForeignMetadataError`."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if len(value) < 64 else value
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        value = math.inf  # a JSON integer of hundreds of digits: no float holds it (and float() would overflow)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ForeignMetadataError(f"{where}: {field} must be a finite number, got {shown(value)}")
    if not low <= value <= high:
        raise ForeignMetadataError(f"{where}: {field} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def check_text(value: Any, field: str, where: str, nullable: bool = True) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ForeignMetadataError(f"{where}: {field} must be a string, got {type(value).__name__}")
    if len(value) > MAX_METADATA_CHARS:
        raise ForeignMetadataError(f"{where}: {field} is longer than {MAX_METADATA_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON can spell one): no tokenizer takes it, so it is refused here, before any model loads.
        raise ForeignMetadataError(f"{where}: {field} holds a lone surrogate, which is not text") from None
    return value


def _depth(value: Any, limit: int) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        nested = []
        for item in level:
            if isinstance(item, dict):
                nested.extend(item.values())
            elif isinstance(item, list):
                nested.extend(item)
        level = nested
    return depth


def load_json_object(text: Any, field: str, where: str) -> dict[str, Any]:
    """A metadata chunk's JSON text as a dict: length and depth bounded, every parse failure a
    `ForeignMetadataError` naming the chunk."""
    text = check_text(text, field, where, nullable=False)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        message = str(error).split("\n")[0][:120] if isinstance(error, ValueError) else "nested too deeply"
        raise ForeignMetadataError(f"{where}: the {field!r} chunk is not valid JSON ({message})") from None
    if not isinstance(value, dict):
        raise ForeignMetadataError(f"{where}: the {field!r} chunk must be a JSON object, got {type(value).__name__}")
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ForeignMetadataError(f"{where}: the {field!r} chunk is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# Prompt syntax that diffusers' plain text encoding reads as words: each tool's own.
# Every pattern here runs in time linear in the prompt (a prompt is anyone's text, up to MAX_METADATA_CHARS): no
# pattern has two unbounded runs that can both match the same characters. "[a|b]" and "[a:b:N]" are told apart in
# Python from the innermost bracket groups, which one linear pattern finds.
_BRACKET_GROUP = re.compile(r"\[([^\[\]]*)\]")
_EDIT_STEP = re.compile(r"\s*[\d.]+\s*")
_ALTERNATION, _EDITING = 'alternation syntax "[a|b]"', 'prompt editing syntax "[a:b:N]"'
_A1111_SYNTAX = (
    (re.compile(r"(?<!\\)[(\[]"), 'prompt weighting "(word:1.2)" / "(word)" / "[word]"'),
    (re.compile(r"\bAND\b"), "composable prompts (AND)"),
    (re.compile(r"\bBREAK\b"), "BREAK (a new 75-token chunk)"),
    (re.compile(r"<(lora|lyco|hypernet):[^<>]*>"), "extra networks in the prompt (<lora:...>)"),
)
_COMFYUI_SYNTAX = (
    (re.compile(r"(?<!\\)\("), 'prompt weighting "(word:1.2)"'),
    (re.compile(r"\bembedding:"), "textual inversion embeddings (embedding:name)"),
)
_INVOKEAI_SYNTAX = (
    (re.compile(r"[\w)\]]([+]+|-+)(?=[\s,.)]|$)"), 'prompt weighting "word+" / "word-"'),
    (re.compile(r"\)\s*[\d.]+"), 'prompt weighting "(words)1.2"'),
    (re.compile(r"\.(and|blend|swap)\("), "Compel's .and() / .blend() / .swap() syntax"),
    (re.compile(r"withLora\("), "withLora() in the prompt"),
)
_SYNTAX = {"a1111": _A1111_SYNTAX, "comfyui": _COMFYUI_SYNTAX, "invokeai": _INVOKEAI_SYNTAX}


def prompt_blockers(prompt: str | None, field: str, source: str) -> list[str]:
    """Blockers for the prompt syntax of ``source`` in ``prompt``: diffusers passes a prompt to the tokenizer as
    plain text, so weights, alternation and editing syntax change the image in the tool and not in diffusers."""
    if not prompt:
        return []
    found = []
    if source == "a1111":
        groups = [match.group(1) for match in _BRACKET_GROUP.finditer(prompt)]
        if any("|" in group for group in groups):
            found.append(_ALTERNATION)
        if any(sep and _EDIT_STEP.fullmatch(step) for _, sep, step in (group.rpartition(":") for group in groups)):
            found.append(_EDITING)
    found += [name for pattern, name in _SYNTAX[source] if pattern.search(prompt)]
    tool = {"a1111": "A1111", "comfyui": "ComfyUI", "invokeai": "InvokeAI"}[source]
    return [
        f"the {field} uses {tool}'s {name}, which diffusers reads as plain text (the embeddings differ)"
        for name in found
    ]


# --------------------------------------------------------------------------------------------------------------------
# Dispatch
