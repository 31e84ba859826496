"""``diffusers-repro inspect``: what an image's record says, or the recipe another tool's metadata gives; with
``--as-code``, a Python script that makes the image with diffusers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import UsageError, add_max_file_bytes_argument, printable, short_digest, value_text
from .credentials import add_trust_option
from .verify import refusal_reason

_RAW_CHUNK_CHARS = 2000
_PROMPT_CHARS = 2000  # a prompt from another tool's file, shown up to this many characters (--json: all of it)
_VALUE_CHARS = 200  # a name or value from another tool's file
_SENTENCE_CHARS = 600  # a blocker or note (they quote names from the file)
_TOOLS = {"a1111": "AUTOMATIC1111/Forge/SD.Next", "comfyui": "ComfyUI", "invokeai": "InvokeAI"}
_SAMPLER_FIELDS = {
    "a1111": ("Sampler", "Schedule type"),
    "comfyui": ("sampler_name", "scheduler"),
    "invokeai": ("scheduler", None),
}
_HASH_KINDS = {
    "a1111-sha256-prefix-10": "A1111's: the first 10 hex digits of the checkpoint file's sha256",
    "a1111-legacy-8": "A1111's old hash: 8 hex digits of a sha256 over 64 KiB of the checkpoint file",
    "invokeai-blake3": "InvokeAI's BLAKE3 of the model's files",
    "invokeai-sha256": "InvokeAI's sha256 of the model's files",
}
_RNGS = {
    "cpu": "CPU: torch.Generator('cpu')",
    "gpu": "GPU: torch.Generator('cuda') (A1111's default; diffusers-repro emulates it on the CPU)",
    "nv": "NV: A1111's own numpy Philox, neither CPU nor GPU noise",
    "cuda": "CUDA: torch.Generator('cuda')",
}


# --------------------------------------------------------------------------------------------------------------------
# inspect


def _describe_rng(recipe: dict[str, Any]) -> str | None:
    if not recipe.get("rng") and not recipe.get("generator"):
        return None  # CPU noise: nothing to say, and no reason to import torch
    from ..generation import describe_rng

    return describe_rng(recipe)


def inspect_lines(image_file: Any) -> list[str]:
    record = image_file.provenance
    call, recipe, env, batch = record.call_arguments, record.recipe, record.environment, record.batch
    model = recipe.get("model") or {}
    scheduler = recipe.get("scheduler") or {}
    versions = env.get("versions") or {}
    width, height = image_file.image.size
    if model.get("type") == "hub":
        source = f"{model.get('repo_id')} (Hub, revision {model.get('revision')})"
    else:
        source = f"{model.get('path') or model.get('name_or_path')} ({model.get('type')})"
    weights = ", ".join(
        f"{name} {short_digest(item.get('weights_digest'))}" for name, item in (model.get("components") or {}).items()
    )
    determinism = env.get("determinism") or {}
    cuda_noise = _describe_rng(recipe)
    pixels = {
        True: "intact (they match the digest written with them)",
        False: "CHANGED since the file was written",
        None: "no pixel digest stored in the file",
    }[image_file.pixels_intact]
    if image_file.format != "png":
        pixels = (
            f"lossy {image_file.format}: the encoded image is digested; the Content Credentials vouch for the file"
        )
    lines = [
        f"file:            {image_file.path}",
        f"prompt:          {call.get('prompt')!r}" if "prompt" in call else None,
        f"negative prompt: {call.get('negative_prompt')!r}" if call.get("negative_prompt") else None,
        f"seed:            {record.seed} (from {record.seed_source})",
        f"noise rng:       {cuda_noise}" if cuda_noise else None,
        f"pipeline:        {recipe.get('pipeline_class')}",
        f"model:           {source}",
        f"weights:         {weights}",
        f"scheduler:       {scheduler.get('class')}",
        _a1111_sampler_line(scheduler),
        f"steps:           {call.get('num_inference_steps')}",
        f"guidance:        {call.get('guidance_scale')}" if "guidance_scale" in call else None,
        f"size:            {width}x{height}",
        f"batch:           image {batch.get('index')} of {batch.get('size')} (seeds {batch.get('seeds')}); "
        f"batch-invariant: {'yes' if batch.get('batch_invariant') else 'no'}",
        f"device:          {env.get('device')} ({env.get('device_name')}), dtype {env.get('dtype')}, "
        f"{env.get('torch_num_threads')} torch thread(s)",
        f"determinism:     {'full' if determinism.get('full_determinism') else 'not full'}",
        "versions:        " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"output digest:   {record.result.get('output_digest')}",
        f"noise digest:    {record.result.get('noise_digest')}",
        f"pixels:          {pixels}",
    ]
    return [printable(line) for line in lines if line is not None]


def inspect_command(args: argparse.Namespace) -> int:
    from ..files import PROVENANCE_KEY, file_credentials, read_image
    from ..interop import metadata_source, record_code

    if not args.path.exists():
        raise UsageError(f"{str(args.path)!r}: no such file")
    # One read: the record, the raw chunks of a refused record and the Content Credentials all come from these bytes.
    image_file = read_image(args.path, args.max_file_bytes)
    source = metadata_source(image_file)
    if source not in (None, "diffusers-repro"):
        return _inspect_foreign(args, image_file)
    if args.as_code:
        image_file.require_record()
        print(record_code(image_file.provenance, str(args.path)), end="")
        return 0
    if image_file.record_error is not None:
        lossy = image_file.format != "png"
        if ("record" if lossy else PROVENANCE_KEY) not in image_file.metadata:
            raise image_file.record_error  # no record: nothing to show
        # A record that does not fit the schema is shown as text, escaped and cut short; nothing in it is used.
        print(f"file:            {printable(str(args.path))}")
        print(f"refused:         {refusal_reason(args.path, image_file.record_error)}")
        for key, text in image_file.metadata.items():
            shown = text if len(text) <= _RAW_CHUNK_CHARS else text[:_RAW_CHUNK_CHARS] + f"... ({len(text)} chars)"
            print(f"{'xmp' if lossy else 'chunk'} {printable(key)!r}: {printable(shown)}")
        return 1
    image_file.require_record()
    credentials = file_credentials(image_file, args.trust)
    if args.json:
        print(image_file.provenance.to_json(indent=2))
    else:
        print("\n".join(inspect_lines(image_file)))
        print(printable(f"credentials:     {credentials.summary}"))
        if credentials.generator:
            # The signer's own text: anyone's, so shown escaped like the record's.
            print(printable(f"made by:         {credentials.generator} ({credentials.action})"))
        if credentials.timestamp:
            print(printable(f"time-stamp:      {credentials.timestamp} (RFC 3161)"))
        if credentials.parent:
            print(printable(f"edited from:     {credentials.parent}"))
        if credentials.disclosure:
            print(printable(f"ai disclosure:   {credentials.disclosure}"))
    # A file changed after it was signed is not what it says it is.
    return 1 if credentials.state == "tampered" else 0


# --------------------------------------------------------------------------------------------------------------------
# Other tools' files


def _a1111_sampler_line(scheduler: dict[str, Any]) -> str | None:
    """What A1111 calls our record's scheduler: a line of its own after ``scheduler:`` (every other line as before)."""
    from ..generation import to_a1111

    name, config = scheduler.get("class"), scheduler.get("config")
    if not isinstance(name, str):
        return None
    names = to_a1111(name, config if isinstance(config, dict) else {})
    if names is None:
        return f"a1111 sampler:   none (A1111 has no sampler that runs {name} with this config)"
    return f"a1111 sampler:   {names[0]}, schedule type {names[1]} (A1111's names for this scheduler and config)"


def _cut(text: str, limit: int) -> str:
    """``repr`` of a string from a file, cut short at ``limit`` characters (the count said)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters; --json prints all of them)"


def _text(value: Any, limit: int = _VALUE_CHARS) -> str:
    if value is None:
        return "not in the file"
    if isinstance(value, str):
        return _cut(value, limit)
    text = value_text(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _sentence(text: str) -> str:
    return text if len(text) <= _SENTENCE_CHARS else text[:_SENTENCE_CHARS] + f"... ({len(text)} characters)"


def _model_text(model: dict[str, Any] | None) -> str:
    if not model or (model.get("name") is None and model.get("hash") is None):
        return "not in the file"
    text = _text(model.get("name"))
    if model.get("hash") is not None:
        kind = model.get("hash_kind")
        meaning = _HASH_KINDS.get(kind, _text(kind) if kind is not None else "of an unknown kind")
        text += f", hash {_text(model.get('hash'))} ({meaning})"
    if model.get("base") is not None:
        text += f", base {_text(model.get('base'))}"
    return text


def _sampler_text(recipe: Any) -> str:
    sampler_field, schedule_field = _SAMPLER_FIELDS[recipe.source]
    text = f"{sampler_field} {_text(recipe.sampler)}"
    if schedule_field is not None:
        text += f", {schedule_field} {_text(recipe.schedule_type)}"
    return text + f" ({_TOOLS[recipe.source].split('/')[0]}'s names)"


def _scheduler_text(recipe: Any) -> str:
    if recipe.scheduler is None:
        if recipe.sampler is None:
            return "none (the file names no sampler)"
        return "none: no diffusers scheduler runs this sampler faithfully (see the blockers)"
    config = value_text(recipe.scheduler_config) if recipe.scheduler_config else "the class defaults"
    return f"{recipe.scheduler}, config {config}"


def _clip_skip_text(recipe: Any) -> str:
    if recipe.clip_skip is None:
        return "none (the text encoder's last layer)"
    text = f"{_text(recipe.clip_skip)} (diffusers' numbering: clip_skip=N skips the last N layers"
    if recipe.source == "a1111" and "a1111_clip_skip" in recipe.extras:
        text += f"; A1111's 'Clip skip: {_text(recipe.extras['a1111_clip_skip'])}'"
    return text + ")"


def _batch_text(recipe: Any) -> str | None:
    if recipe.batch_index is None and recipe.batch_size is None:
        return None
    size = _text(recipe.batch_size) if recipe.batch_size is not None else "unknown size"
    if recipe.batch_index is None:
        return f"one image of a batch of {size}; the file does not say which"
    return f"image {_text(recipe.batch_index)} of {size}"


def recipe_lines(recipe: Any, image_file: Any) -> list[str]:
    """The lines ``inspect`` shows for another tool's file: its recipe, every value from the file escaped and cut
    short."""
    version = f", version {_text(recipe.source_version)}" if recipe.source_version is not None else ""
    size = "not in the file"
    if recipe.width is not None and recipe.height is not None:
        size = f"{recipe.width}x{recipe.height}"
    width, height = image_file.image.size
    lines = [
        f"file:            {image_file.path}",
        f"source:          {_TOOLS[recipe.source]} ({recipe.source}){version}",
        f"prompt:          {_text(recipe.prompt, _PROMPT_CHARS)}",
        f"negative prompt: {_text(recipe.negative_prompt, _PROMPT_CHARS)}",
        f"seed:            {_text(recipe.seed)}",
        f"steps:           {_text(recipe.steps)}",
        f"guidance:        {_text(recipe.guidance_scale)}",
        f"size:            {size} (the image is {width}x{height})",
        f"sampler:         {_sampler_text(recipe)}",
        f"scheduler:       {_scheduler_text(recipe)}",
        f"model:           {_model_text(recipe.model)}",
    ]
    lines += [
        f"lora:            {_text(lora.get('name'))}, weight {_text(lora.get('weight'))}"
        + (f", hash {_text(lora.get('hash'))}" if lora.get("hash") is not None else "")
        for lora in recipe.loras
    ]
    lines.append(f"clip skip:       {_clip_skip_text(recipe)}")
    batch = _batch_text(recipe)
    if batch is not None:
        lines.append(f"batch:           {batch}")
    lines.append(f"noise rng:       {_RNGS.get(recipe.rng, _text(recipe.rng))}")
    extras = [f"{key}={_text(value)}" for key, value in recipe.extras.items() if key != "a1111_clip_skip"]
    if extras:
        lines.append(f"extras:          {', '.join(extras)}")
    if recipe.blockers:
        lines.append(f"blockers:        {len(recipe.blockers)}: what stands between this recipe and an exact rerun")
        lines += [f"  - {_sentence(blocker)}" for blocker in recipe.blockers]
    else:
        lines.append("blockers:        none known")
    if recipe.notes:
        lines.append("notes:")
        lines += [f"  - {_sentence(note)}" for note in recipe.notes]
    return [printable(line) for line in lines]


def _inspect_foreign(args: argparse.Namespace, image_file: Any) -> int:
    """``inspect`` of a file with another tool's metadata: its recipe as text, JSON or code."""
    from ..files import file_credentials
    from ..interop import recipe_code, recipe_from_image_file

    recipe = recipe_from_image_file(image_file)
    if args.as_code:
        print(recipe_code(recipe), end="")
        return 0
    if args.json:
        # ASCII only: every character a terminal could act on is a JSON escape.
        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    print("\n".join(recipe_lines(recipe, image_file)))
    credentials = file_credentials(image_file, args.trust)
    print(printable(f"credentials:     {credentials.summary}"))
    return 1 if credentials.state == "tampered" else 0


def add_inspect_parser(commands: Any) -> None:
    """``diffusers-repro inspect``: its options."""
    inspect_ = commands.add_parser(
        "inspect",
        help="show how an image was made",
        description="Shows the provenance record embedded in an image: prompt, seed, model, settings, environment. "
        "For an image made by AUTOMATIC1111/Forge/SD.Next, ComfyUI or InvokeAI, shows the recipe its metadata gives, "
        "in diffusers' terms, and what stands between it and an exact rerun with diffusers.",
    )
    inspect_.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        help="an image (PNG, JPEG or WebP) written by diffusers-repro, AUTOMATIC1111/Forge/SD.Next, ComfyUI or "
        "InvokeAI",
    )
    shown = inspect_.add_mutually_exclusive_group()
    shown.add_argument(
        "--json", action="store_true", help="print the full record as JSON (another tool's file: its recipe)"
    )
    shown.add_argument(
        "--as-code",
        action="store_true",
        help="print a Python script that makes the image with diffusers: a Repro pipeline call for a diffusers-repro "
        "file; for another tool's file, a plain diffusers call with the mapped scheduler and that tool's noise, what "
        "stands in the way of an exact rerun as comments at the top (replace the model placeholder)",
    )
    add_trust_option(inspect_)
    add_max_file_bytes_argument(inspect_)
    inspect_.set_defaults(handler=inspect_command)
