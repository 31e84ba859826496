"""A batch's records: linked by digests when written, gathered again for a whole-batch replay.

An image of a normal batch reproduces bitwise only within its whole batch, but its record never carries another
image's prompt. Instead every record of a batch of more than one names the batch:

- ``recipe.batch.record_digests``: the `record_digest` of every record of the batch, in image order;
- ``recipe.batch.id``: the sha256 of those digests (so the id itself vouches for the list);
- ``recipe.batch.same_prompts``: every image had the same prompts (``num_images_per_prompt=4``): then this record
  alone regenerates the batch, and ``prompt_list_lengths`` says how the prompts were passed.

A replay of a mixed batch gathers the siblings' records (the image's folder, its run manifest, or files the user
names), keeps those whose digest is listed, and takes each image's prompts from its own record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..records import Provenance, batch_id, jsonable, record_digest

__all__ = ["batch_prompt_lists", "find_siblings"]

MAX_SIBLING_FILES = 4096
"""Most files looked at beside an image when its siblings are searched for."""


def _digest_without_id(record: Provenance) -> str:
    data = jsonable(record.to_dict())
    data["recipe"]["batch"] = {**data["recipe"]["batch"], "id": None}
    return record_digest(data)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_MANIFEST_BYTES = 64 << 20
"""Largest run manifest (``manifest.jsonl``) read when siblings are searched for."""
MAX_MANIFEST_LINES = 100_000
"""Most manifest lines looked at."""


def _candidate_files(own: Path | None, batch_from: Any) -> list[Path]:
    """Files that may hold the siblings' records: regular files only, each once (by resolved path), at most
    `MAX_SIBLING_FILES`, never the image itself."""
    if batch_from is not None:
        items = [batch_from] if isinstance(batch_from, (str, os.PathLike)) else list(batch_from)
        files: list[Path] = []
        for item in items:
            item = Path(item)
            files.extend(_images_in(item) if item.is_dir() else [item])
    elif own is None:
        return []
    else:
        files = _images_in(own.parent) + _manifest_files(own.parent / "manifest.jsonl")
    seen = {own.resolve()} if own is not None else set()
    unique = []
    for file in files:
        try:
            resolved = file.resolve()
            if resolved in seen or not resolved.is_file():  # a named pipe would wait forever, a device never end
                continue
        except (OSError, RuntimeError, ValueError):  # a link loop; a name with a NUL byte
            continue
        seen.add(resolved)
        unique.append(file)
        if len(unique) >= MAX_SIBLING_FILES:
            break
    return unique


def _images_in(folder: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(folder))[:MAX_SIBLING_FILES]
    except OSError:
        return []
    return [folder / name for name in names if name.lower().endswith(_IMAGE_SUFFIXES) and not name.startswith(".")]


def _manifest_files(manifest: Path) -> list[Path]:
    from ..files import ImageProvenanceError, read_regular_file

    try:
        # One read of a regular file within the cap: a named pipe or a link to /dev/zero is refused, not read.
        data = read_regular_file(manifest, MAX_MANIFEST_BYTES, what="run manifest")
    except (OSError, ImageProvenanceError):
        return []
    names: dict[str, None] = {}
    for line in data.decode("utf-8", errors="replace").splitlines()[:MAX_MANIFEST_LINES]:
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):  # a line from anyone: broken, or nested past the parser's depth
            continue
        name = entry.get("file") if isinstance(entry, dict) else None
        # Only names inside the run folder, each once: a manifest never sends the search elsewhere or in circles.
        if isinstance(name, str) and "\x00" not in name and name == Path(name).name and name not in (".", ".."):
            names[name] = None
    return [manifest.parent / name for name in names]


def find_siblings(
    record: Provenance, image_file: Any = None, batch_from: Any = None, *, limits: Any = None
) -> list[Provenance] | None:
    """The records of the whole batch of ``record``, in image order, or `None` when some are missing.

    Args:
        record (`Provenance`): A record of a mixed batch (``recipe.batch.record_digests`` set).
        image_file (`diffusers_repro.imagefile.ImageFile` or `pathlib.Path`, *optional*): The record's file: siblings
            are looked for in its folder and the run manifest there; a candidate whose image header gives another
            size than this file's is skipped before its pixels are decoded.
        batch_from (`str`, `os.PathLike`, a list of them, or a list of `Provenance`, *optional*): Where to look
            instead: files, folders or records.
        limits (`diffusers_repro.limits.ReplayLimits`, *optional*): Its ``max_file_bytes`` caps each file read.
    """
    batch = record.batch
    digests, index = batch.get("record_digests"), batch.get("index")
    if not digests or index is None:
        return None  # the record does not name its siblings
    if batch_id(digests) != batch.get("id") or _digest_without_id(record) != digests[index]:
        return None  # the record was edited: its batch cannot be trusted
    found: dict[str, Provenance] = {digests[index]: record}
    wanted = set(digests)
    if batch_from is not None and all(isinstance(item, Provenance) for item in batch_from):
        candidates: Iterable[Provenance | None] = batch_from
    else:
        own = getattr(image_file, "path", image_file)
        size = getattr(getattr(image_file, "image", None), "size", None)
        max_bytes = getattr(limits, "max_file_bytes", None)
        files = _candidate_files(Path(own) if own is not None else None, batch_from)
        candidates = (_read_sibling(file, size, max_bytes) for file in files)
    for candidate in candidates:
        if candidate is None or candidate.batch.get("id") != batch.get("id"):
            continue
        digest = _digest_without_id(candidate)
        if digest in wanted:
            found[digest] = candidate
        if len(found) == len(wanted):
            break
    if len(found) < len(wanted):
        return None
    return [found[digest] for digest in digests]


def _read_sibling(file: Path, size: tuple[int, int] | None, max_bytes: int | None) -> Provenance | None:
    """A candidate's record, read once; `None` for anything that is not a sibling-shaped image with a record."""
    import io

    import PIL.Image

    from ..files import ImageProvenanceError, parse_image_bytes, read_regular_file

    try:
        data = read_regular_file(file, max_bytes)
        if size is not None:
            # The header alone, before any pixel is decoded: a batch's images share one size.
            with PIL.Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"]) as header:
                if header.size != size:
                    return None
        return parse_image_bytes(data, file).provenance
    except (ImageProvenanceError, OSError):
        return None
    except Exception:  # noqa: BLE001 - PIL's header parser on bytes from anyone, in any way
        return None


def batch_prompt_lists(record: Provenance, siblings: Sequence[Provenance] | None) -> dict[str, list[str]] | None:
    """The prompt lists of the original call: from ``record`` alone for a same-prompt batch, else from the siblings'
    own records (`None` when they are needed and missing)."""
    batch = record.batch
    if "prompt_lists" in batch:  # version 1 records carried them
        return {name: list(values) for name, values in batch["prompt_lists"].items()}
    lengths = batch.get("prompt_list_lengths") or {}
    call = record.call_arguments
    if batch.get("same_prompts"):
        return {name: [call.get(name)] * length for name, length in lengths.items()}
    if siblings is None:
        return None
    per_prompt = max(len(siblings) // max(max(lengths.values(), default=1), 1), 1)
    return {
        name: [siblings[k * per_prompt].call_arguments.get(name) for k in range(length)]
        for name, length in lengths.items()
    }
