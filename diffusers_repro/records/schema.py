"""The provenance record schema: every field replay uses, with its type, range and allowed keys.

A record comes from a file anyone may have written, so it is checked here, once, before anything reads it:
`check_record` walks the parsed JSON against the schema of its ``schema_version`` and raises `ProvenanceError`
naming the field path, the value and what is expected. Code past this edge (replay, the CLI) trusts the types.

- Fields replay uses (seed, call arguments, batch, model source, scheduler, LoRA operations) are typed with ranges
  and, where they become arguments of a method, a closed set of keys.
- Other fields (environment details, notes) are only checked to be plain JSON: they are shown and compared, never
  passed to code.
- `parse_json` parses record text with caps on its size and nesting depth, so a hostile text cannot exhaust the
  stack or the memory.

Version 1 records (which carried every prompt of the batch in ``recipe.batch.prompt_lists``) are still read; version
2 records name their batch by ``recipe.batch.id`` and their siblings' record digests instead.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from typing import Any

__all__ = [
    "LORA_OPERATIONS",
    "MAX_DEPTH",
    "MAX_RECORD_CHARS",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "ProvenanceError",
    "check_record",
    "parse_json",
    "record_digest",
]

SCHEMA_NAME = "diffusers-repro/provenance"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
SEED_SOURCES = ("seed", "random", "generator")

MAX_RECORD_CHARS = 1 << 20
"""Longest record text read (1 MiB); real records are a few KiB."""

MAX_DEPTH = 32
"""Deepest nesting of objects and lists in a record; real records nest 7 levels."""

_MAX_SEED = 2**64 - 1
_MAX_STRING = 1 << 16
_MAX_LIST = 4096
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class ProvenanceError(ValueError):
    """A provenance record (or a file meant to carry one) is missing, malformed or of an unknown schema version."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Invalid(Exception):
    def __init__(self, path: str, expected: str, value: Any):
        self.path, self.expected, self.value = path, expected, value


# --------------------------------------------------------------------------------------------------------------------
# Field types. Each is a callable (value, path) -> None that raises _Invalid.


def _plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(low: int, high: int, nullable: bool = False):
    expected = f"an int from {low} to {high}" + (" or null" if nullable else "")

    def check(value: Any, path: str) -> None:
        if value is None and nullable:
            return
        if not _plain_int(value) or not low <= value <= high:
            raise _Invalid(path, expected, value)

    return check


def _number(low: float, high: float, nullable: bool = False):
    expected = f"a number from {low:g} to {high:g}" + (" or null" if nullable else "")

    def check(value: Any, path: str) -> None:
        if value is None and nullable:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(path, expected, value)
        if not (math.isfinite(value) and low <= value <= high):
            raise _Invalid(path, expected, value)

    return check


def _bool(nullable: bool = False):
    def check(value: Any, path: str) -> None:
        if not (isinstance(value, bool) or (value is None and nullable)):
            raise _Invalid(path, "true or false" + (" or null" if nullable else ""), value)

    return check


def _string(
    nullable: bool = False, pattern: re.Pattern | None = None, choices: tuple[str, ...] | None = None, what: str = ""
):
    if choices is not None:
        expected = f"one of {', '.join(map(repr, choices))}"
    else:
        expected = what or "a string"
    expected += " or null" if nullable else ""

    def check(value: Any, path: str) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, str) or len(value) > _MAX_STRING:
            raise _Invalid(path, expected, value)
        if (choices is not None and value not in choices) or (pattern is not None and not pattern.fullmatch(value)):
            raise _Invalid(path, expected, value)
        if not value.isascii():
            _check_unicode(value, path)

    return check


def _check_unicode(value: str, path: str) -> None:
    # json.loads turns a lone "\udc80" escape into a surrogate that no UTF-8 output can print.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(path, "text without lone surrogates", value) from None


def _list(item, max_items: int = _MAX_LIST, nullable: bool = False, what: str = "a list"):
    expected = f"{what} of at most {max_items} items" + (" or null" if nullable else "")

    def check(value: Any, path: str) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, list) or len(value) > max_items:
            raise _Invalid(path, expected, value)
        for index, entry in enumerate(value):
            item(entry, f"{path}[{index}]")

    return check


def _one_of(*checks, expected: str):
    def check(value: Any, path: str) -> None:
        for candidate in checks:
            try:
                candidate(value, path)
                return
            except _Invalid:
                continue
        raise _Invalid(path, expected, value)

    return check


def _json(value: Any, path: str, depth: int = 0) -> None:
    """Any plain JSON value (from_dict may be handed Python objects that JSON would never produce)."""
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(path, "a finite number", value)
        return
    if isinstance(value, str):
        if len(value) > _MAX_STRING:
            raise _Invalid(path, f"a string of at most {_MAX_STRING} characters", value)
        if not value.isascii():
            _check_unicode(value, path)
        return
    if depth >= MAX_DEPTH:
        raise _Invalid(path, f"nesting at most {MAX_DEPTH} levels deep", "...")
    if isinstance(value, list):
        for index, entry in enumerate(value):
            _json(entry, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, entry in value.items():
            if not isinstance(key, str):
                raise _Invalid(path, "an object with string keys", value)
            _json(entry, f"{path}.{key}", depth + 1)
        return
    raise _Invalid(path, "a JSON value", value)


def _object(fields: dict[str, Any], required: tuple[str, ...] = (), extra=None, nullable: bool = False, keys=None):
    """An object with typed ``fields``; other keys are checked by ``extra`` or refused when ``extra`` is None."""

    def check(value: Any, path: str) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, dict):
            raise _Invalid(path, "an object" + (" or null" if nullable else ""), value)
        missing = [name for name in required if name not in value]
        if missing:
            raise _Invalid(f"{path}.{missing[0]}" if path else missing[0], "present", "nothing")
        for key, entry in value.items():
            where = f"{path}.{key}" if path else str(key)
            checker = fields.get(key, extra)
            if checker is None:
                allowed = ", ".join(sorted(fields))
                raise _Invalid(where, f"absent (allowed keys: {allowed})", entry)
            if keys is not None and key not in fields and not (isinstance(key, str) and keys.fullmatch(key)):
                raise _Invalid(where, "a key that is a Python identifier", key)
            checker(entry, where)

    return check


def _any(value: Any, path: str) -> None:
    _json(value, path, path.count(".") + path.count("["))


# --------------------------------------------------------------------------------------------------------------------
# The record

_DIGEST_STRING = _string(pattern=_DIGEST, what="a 'sha256:' followed by 64 hex digits")
_NULLABLE_DIGEST = _string(nullable=True, pattern=_DIGEST, what="a 'sha256:' followed by 64 hex digits")
_CLASS_NAME = _string(pattern=_IDENTIFIER, what="a class name (a Python identifier)")
_NAMES = _list(_string(pattern=_IDENTIFIER, what="a name (a Python identifier)"), 256)
_ADAPTER_NAME = _string(what="an adapter name")
_ADAPTER_NAMES = _one_of(_ADAPTER_NAME, _list(_ADAPTER_NAME, 256), expected="an adapter name or a list of them")
LIMIT_STEPS = 10_000
LIMIT_SIDE = 65_536
LIMIT_ORDER = 16
# Scheduler config fields that size each step's work or memory (diffusers 0.42's schedulers).
_SCHEDULER_ORDERS = ("solver_order", "predictor_order", "corrector_order", "order")
_SCHEDULER_STEP_COUNTS = (
    "original_inference_steps",
    "num_inference_steps",
    "tail_steps",
    "corrector_steps",
    "num_policy_substeps",
    "jump_n_sample",
    "jump_length",
    "n_grid",
    "stages",
)

# "pil", "np", "pt", "latent"; Shap-E adds "mesh": a short name, never a value that selects code.
_OUTPUT_TYPE = _string(nullable=True, pattern=re.compile(r"[a-z]{1,16}"), what="an output type name such as 'pil'")
_PROMPT = _one_of(_string(nullable=True), _list(_string(), 4096), expected="a string, a list of strings or null")
_CALL_FIELDS = {
    "prompt": _PROMPT,
    "prompt_2": _PROMPT,
    "prompt_3": _PROMPT,
    "negative_prompt": _PROMPT,
    "negative_prompt_2": _PROMPT,
    "negative_prompt_3": _PROMPT,
    "num_inference_steps": _int(1, LIMIT_STEPS, nullable=True),
    "num_images_per_prompt": _int(1, _MAX_LIST, nullable=True),
    "batch_size": _int(1, _MAX_LIST, nullable=True),
    "height": _int(1, LIMIT_SIDE, nullable=True),
    "width": _int(1, LIMIT_SIDE, nullable=True),
    "guidance_scale": _number(-1e6, 1e6, nullable=True),
    "guidance_rescale": _number(-1e6, 1e6, nullable=True),
    "eta": _number(-1e6, 1e6, nullable=True),
    "strength": _number(0, 1, nullable=True),
    "clip_skip": _int(0, 1024, nullable=True),
    "output_type": _OUTPUT_TYPE,
    "timesteps": _list(_number(-1e9, 1e9), LIMIT_STEPS, nullable=True),
    "sigmas": _list(_number(-1e9, 1e9), LIMIT_STEPS, nullable=True),
    "original_size": _list(_int(1, LIMIT_SIDE), 2, nullable=True),
    "target_size": _list(_int(1, LIMIT_SIDE), 2, nullable=True),
    "crops_coords_top_left": _list(_int(0, LIMIT_SIDE), 2, nullable=True),
    "cross_attention_kwargs": _object({}, extra=_any, keys=_IDENTIFIER, nullable=True),
}
_CALL = _object(_CALL_FIELDS, extra=_any, keys=_IDENTIFIER)

_SCHEDULER = _object(
    {
        "class": _CLASS_NAME,
        "config": _object(
            {
                "num_train_timesteps": _int(1, 100_000, nullable=True),
                # Numbers of a scheduler config that size the work or the memory of every step (a solver of order
                # 3e7 keeps 3e7 model outputs): bounded like the call's own step counts.
                **{name: _int(1, LIMIT_ORDER, nullable=True) for name in _SCHEDULER_ORDERS},
                **{name: _int(0, LIMIT_STEPS, nullable=True) for name in _SCHEDULER_STEP_COUNTS},
            },
            extra=_any,
            keys=_IDENTIFIER,
        ),
    },
    required=("class",),
    extra=_any,
    nullable=True,
)

_BATCH_COMMON = {
    "size": _int(1, _MAX_LIST),
    "index": _int(0, _MAX_LIST - 1),
    "seeds": _list(_int(0, _MAX_SEED, nullable=True), _MAX_LIST),
    "batch_invariant": _bool(),
    "description": _string(),
    "global_rng_seed": _int(0, _MAX_SEED, nullable=True),
    "global_rng_used": _bool(),
    "global_rng_used_on": _list(_string(), 64),
    "note": _string(),
}
_BATCH_V1 = _object(
    {**_BATCH_COMMON, "prompt_lists": _object({}, extra=_list(_string(), _MAX_LIST), keys=_IDENTIFIER)},
)
_BATCH_V2 = _object(
    {
        **_BATCH_COMMON,
        "id": _NULLABLE_DIGEST,
        "same_prompts": _bool(),
        "prompt_list_lengths": _object({}, extra=_int(1, _MAX_LIST), keys=_IDENTIFIER),
        "record_digests": _list(_DIGEST_STRING, _MAX_LIST),
    },
)

_LORA_SOURCE = _object(
    {
        "type": _string(choices=("local", "hub", "state_dict")),
        "path": _string(nullable=True),
        "repo_id": _string(nullable=True, pattern=re.compile(r"[\w.\-]{1,96}(/[\w.\-]{1,96})?"), what="a repo id"),
        "weight_name": _string(nullable=True, pattern=re.compile(r"[\w.\-/]{1,256}"), what="a file name"),
        "revision": _string(nullable=True, pattern=re.compile(r"[\w.\-/]{1,256}"), what="a revision"),
        "file_digest": _NULLABLE_DIGEST,
        "weights_digest": _NULLABLE_DIGEST,
        "tensors": _int(0, 1 << 24, nullable=True),
    },
    required=("type",),
)
_EMPTY_KWARGS = _object({}, nullable=True)
_LORA_SCALE = _number(-1e3, 1e3)
# Per-component and per-block weights are (nested) objects of numbers: {"unet": {"down": 0.5}}.
_BLOCK_WEIGHTS = _object({}, extra=_any, keys=_IDENTIFIER)
_ADAPTER_WEIGHT = _one_of(
    _number(-1e3, 1e3, nullable=True), _BLOCK_WEIGHTS, expected="a number, an object of weights or null"
)
_ADAPTER_WEIGHTS = _one_of(
    _ADAPTER_WEIGHT,
    _list(_ADAPTER_WEIGHT, 256),
    expected="a number, an object of weights, a list of them or null",
)

LORA_OPERATIONS: dict[str, Any] = {
    "load_lora_weights": _object(
        {
            "op": _string(),
            "adapter_name": _string(nullable=True),
            "adapter_names": _list(_ADAPTER_NAME, 256),
            "source": _LORA_SOURCE,
            "hotswap": _bool(),
            "kwargs": _object({}, extra=_any),
        },
        required=("op", "source"),
    ),
    "set_adapters": _object(
        {"op": _string(), "adapter_names": _ADAPTER_NAMES, "adapter_weights": _ADAPTER_WEIGHTS},
        required=("op", "adapter_names"),
    ),
    "delete_adapters": _object({"op": _string(), "adapter_names": _ADAPTER_NAMES}, required=("op", "adapter_names")),
    "fuse_lora": _object(
        {
            "op": _string(),
            "components": _NAMES,
            "lora_scale": _LORA_SCALE,
            "safe_fusing": _bool(),
            "adapter_names": _list(_ADAPTER_NAME, 256, nullable=True),
            "kwargs": _EMPTY_KWARGS,
        },
        required=("op",),
    ),
    "unfuse_lora": _object({"op": _string(), "components": _NAMES, "kwargs": _EMPTY_KWARGS}, required=("op",)),
    "unload_lora_weights": _object({"op": _string()}, required=("op",)),
    "enable_lora": _object({"op": _string()}, required=("op",)),
    "disable_lora": _object({"op": _string()}, required=("op",)),
}
"""The LoRA operations a replay performs, each with the arguments it takes; any other operation is refused."""


def _lora_operation(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _Invalid(path, "an object", value)
    name = value.get("op")
    if name not in LORA_OPERATIONS:
        raise _Invalid(f"{path}.op", f"one of the LoRA operations {', '.join(LORA_OPERATIONS)}", name)
    LORA_OPERATIONS[name](value, path)


_MODEL = _object(
    {
        "type": _string(choices=("local", "hub", "in-memory")),
        "path": _string(nullable=True),
        "repo_id": _string(nullable=True, pattern=re.compile(r"[\w.\-]{1,96}(/[\w.\-]{1,96})?"), what="a repo id"),
        "revision": _string(nullable=True, pattern=re.compile(r"[\w.\-/]{1,256}"), what="a revision"),
        "variant": _string(nullable=True, pattern=re.compile(r"[\w\-]{1,64}"), what="a weights variant name"),
        "lora": _object({"operations": _list(_lora_operation, 1024)}, extra=_any, nullable=True),
    },
    extra=_any,
    nullable=True,
)


# rng="cuda": the GPU geometry the draws were laid out for (replay rebuilds a CudaGeometry from it).
_GEOMETRY = _object(
    {"multiprocessors": _int(1, 1 << 16), "max_threads_per_multiprocessor": _int(256, 1 << 16)},
    required=("multiprocessors", "max_threads_per_multiprocessor"),
    nullable=True,
)
_RNG = _object(
    {
        "type": _string(choices=("cuda",)),
        "emulated": _bool(),
        "geometry": _GEOMETRY,
        "geometry_from": _string(nullable=True, choices=("device", "caller", "record")),
    },
    required=("type",),
    nullable=True,
)


def _recipe(batch):
    return _object(
        {
            "pipeline_class": _string(nullable=True, pattern=_IDENTIFIER, what="a class name (a Python identifier)"),
            "model": _MODEL,
            "scheduler": _SCHEDULER,
            "schedulers": _object({}, extra=_SCHEDULER, keys=_IDENTIFIER, nullable=True),
            "call": _CALL,
            "batch": batch,
            "generator": _object({}, extra=_any, nullable=True),
            "rng": _RNG,
            "defaults_resolved": _list(_string(pattern=_IDENTIFIER, what="a parameter name"), 256),
            "requires_inputs": _list(_string(pattern=_IDENTIFIER, what="a parameter name"), 256),
            # What the caller asked for where the pipeline used another value (recipe.call holds the used one);
            # shown, never replayed.
            "requested": _object({}, extra=_any, keys=_IDENTIFIER, nullable=True),
            "denoising_steps": _int(1, LIMIT_STEPS, nullable=True),
        },
        extra=_any,
    )


_ENVIRONMENT = _object(
    {
        "torch_num_threads": _int(1, 1 << 16),
        "determinism": _object({}, extra=_any),
        "device": _string(nullable=True),
        "dtype": _string(nullable=True),
    },
    extra=_any,
)
_RESULT = _object(
    {
        "noise_digest": _NULLABLE_DIGEST,
        "output_digest": _NULLABLE_DIGEST,
        "output_type": _OUTPUT_TYPE,
    },
    extra=_any,
)


def _record(batch):
    return _object(
        {
            "schema": _string(),
            "schema_version": _int(1, SCHEMA_VERSION),
            "seed": _int(0, _MAX_SEED, nullable=True),
            "seed_source": _string(choices=SEED_SOURCES),
            "recipe": _recipe(batch),
            "environment": _ENVIRONMENT,
            "result": _RESULT,
        },
        required=("schema", "schema_version", "seed", "seed_source", "recipe", "environment", "result"),
    )


_RECORDS = {1: _record(_BATCH_V1), 2: _record(_BATCH_V2)}


# --------------------------------------------------------------------------------------------------------------------
# Entry points


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def check_record(data: Any, source: str | None = None) -> None:
    """Checks parsed record data against the schema of its ``schema_version``.

    Args:
        data (`Any`): The parsed JSON (or a dict from ``Provenance.to_dict``).
        source (`str`, *optional*): Where the data came from (a file name), quoted in errors.

    Raises:
        `ProvenanceError`: naming the first field that does not fit, its value and what is expected.

    Example:

    ```py
    >>> from diffusers_repro.schema import check_record
    >>> record = {"schema": "diffusers-repro/provenance", "schema_version": 2, "seed": "7", "seed_source": "seed"}
    >>> check_record({**record, "recipe": {}, "environment": {}, "result": {}}, source="a.png")
    Traceback (most recent call last):
    ...
    diffusers_repro.schema.ProvenanceError: provenance record in a.png: seed must be an int from 0 to ... got '7'
    ```
    """
    where = _where(source)
    if not isinstance(data, dict):
        raise ProvenanceError(f"provenance record{where} must be a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA_NAME:
        raise ProvenanceError(
            f"provenance record{where} has schema {_shown(data.get('schema'))}, expected {SCHEMA_NAME!r}"
        )
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ProvenanceError(
            f"provenance record{where} has schema_version {_shown(version)}, but this diffusers-repro reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; upgrade diffusers-repro to read newer records"
        )
    try:
        _RECORDS[version](data, "")
    except _Invalid as error:
        if error.expected == "present":
            raise ProvenanceError(f"provenance record{where} lacks the field {error.path}") from None
        raise ProvenanceError(
            f"provenance record{where}: {error.path} must be {error.expected}, got {_shown(error.value)}"
        ) from None
    except RecursionError:  # only a dict built in Python can nest deeper than parse_json lets text nest
        raise ProvenanceError(f"provenance record{where} nests more than {MAX_DEPTH} levels deep") from None
    _check_batch(data["recipe"].get("batch"), where)


def _check_batch(batch: dict[str, Any] | None, where: str) -> None:
    # Fields that must agree with each other, so that a replay can pick image `index` out of its batch.
    if not batch or "size" not in batch:
        return
    size = batch["size"]
    if batch.get("index", 0) >= size:
        raise ProvenanceError(
            f"provenance record{where}: recipe.batch.index must be below recipe.batch.size={size}, "
            f"got {batch['index']}"
        )
    for name in ("seeds", "record_digests"):
        if name in batch and len(batch[name]) != size:
            raise ProvenanceError(
                f"provenance record{where}: recipe.batch.{name} must have recipe.batch.size={size} items, got "
                f"{len(batch[name])}"
            )
    lengths = {name: len(values) for name, values in (batch.get("prompt_lists") or {}).items()}
    for name, length in {**lengths, **(batch.get("prompt_list_lengths") or {})}.items():
        if length == 0 or size % length:
            raise ProvenanceError(
                f"provenance record{where}: the batch's {name} list must have a length that divides "
                f"recipe.batch.size={size}, got {length}"
            )


def _depth(text: str) -> int:
    brackets = _NOT_BRACKET.sub("", _STRING_LITERAL.sub("", text))
    if not brackets:
        return 0
    return max(itertools.accumulate(1 if char in "[{" else -1 for char in brackets))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str | bytes, source: str | None = None) -> Any:
    """Parses record text with caps: at most `MAX_RECORD_CHARS` characters and `MAX_DEPTH` levels of nesting.

    Raises:
        `ProvenanceError`: for text that is too long, too deep, not UTF-8 or not JSON (``NaN`` included).
    """
    where = _where(source)
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_RECORD_CHARS:
            raise ProvenanceError(f"provenance record{where} is longer than {MAX_RECORD_CHARS} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ProvenanceError(f"provenance record{where} is not valid UTF-8: {error}") from None
    if not isinstance(text, str):
        raise ProvenanceError(f"provenance record{where} must be JSON text, got {type(text).__name__}")
    if len(text) > MAX_RECORD_CHARS:
        raise ProvenanceError(f"provenance record{where} is longer than {MAX_RECORD_CHARS} characters")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # the C parser stops at the interpreter's recursion limit, cleanly
        data = _TOO_DEEP
    except ValueError as error:  # JSONDecodeError, NaN, ints past Python's digit limit
        raise ProvenanceError(f"provenance record{where} is not valid JSON: {error}") from None
    # Depth is measured on the parsed value (cheap) and, only for a refusal, counted in the text for the message.
    if data is _TOO_DEEP or _too_deep(data):
        raise ProvenanceError(
            f"provenance record{where} nests {_depth(text)} levels deep, at most {MAX_DEPTH} are read"
        )
    return data


_TOO_DEEP = object()


def _too_deep(data: Any) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((item, depth + 1) for item in value if isinstance(item, (dict, list)))
    return False


def record_digest(data: dict[str, Any]) -> str:
    """The digest a sibling record is known by: sha256 of its canonical JSON without ``recipe.batch.record_digests``
    (which lists the digests of the whole batch, its own included, and so cannot be part of it).

    Example:

    ```py
    >>> from diffusers_repro.schema import record_digest
    >>> record_digest({"seed": 1, "recipe": {"batch": {"record_digests": []}}})[:15]
    'sha256:252fc5f3'
    ```
    """
    recipe = dict(data.get("recipe") or {})
    batch = dict(recipe.get("batch") or {})
    batch.pop("record_digests", None)
    recipe["batch"] = batch
    text = json.dumps({**data, "recipe": recipe}, sort_keys=True, allow_nan=False, ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
