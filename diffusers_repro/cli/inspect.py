"""``diffusers-repro inspect``: what an image's record says."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import UsageError, add_max_file_bytes_argument, printable, short_digest
from .credentials import add_trust_option
from .verify import refusal_reason

_RAW_CHUNK_CHARS = 2000


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

    if not args.path.exists():
        raise UsageError(f"{str(args.path)!r}: no such file")
    # One read: the record, the raw chunks of a refused record and the Content Credentials all come from these bytes.
    image_file = read_image(args.path, args.max_file_bytes)
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


def add_inspect_parser(commands: Any) -> None:
    """``diffusers-repro inspect``: its options."""
    inspect_ = commands.add_parser(
        "inspect",
        help="show how an image was made",
        description="Shows the provenance record embedded in an image: prompt, seed, model, settings, environment.",
    )
    inspect_.add_argument(
        "path", type=Path, metavar="PATH", help="an image (PNG, JPEG or WebP) written by diffusers-repro"
    )
    inspect_.add_argument("--json", action="store_true", help="print the full record as JSON")
    add_trust_option(inspect_)
    add_max_file_bytes_argument(inspect_)
    inspect_.set_defaults(handler=inspect_command)
