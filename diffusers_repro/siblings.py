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

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .provenance import Provenance, jsonable
from .schema import record_digest

__all__ = ["batch_id", "batch_prompt_lists", "find_siblings", "link_batch_records", "record_digest_of"]

MAX_SIBLING_FILES = 4096
"""Most files looked at beside an image when its siblings are searched for."""


def record_digest_of(record: Provenance) -> str:
    """The `diffusers_repro.schema.record_digest` of a record."""
    # jsonable builds new dicts and lists all the way down: the record's own parts need no deep copy first.
    return record_digest(jsonable(record._as_dict(lambda part: part)))


def batch_id(digests: Sequence[str]) -> str:
    """The id of a batch: sha256 of its records' digests, one per line, in image order."""
    return "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()


def link_batch_records(records: Sequence[Provenance]) -> None:
    """Writes ``id`` and ``record_digests`` into the batch context of every record of one call, in place."""
    for record in records:
        record.recipe["batch"]["id"] = None
    digests = [record_digest_of(record) for record in records]
    identifier = batch_id(digests)
    for record in records:
        record.recipe["batch"]["id"] = identifier
        record.recipe["batch"]["record_digests"] = list(digests)


def _digest_without_id(record: Provenance) -> str:
    data = jsonable(record.to_dict())
    data["recipe"]["batch"] = {**data["recipe"]["batch"], "id": None}
    return record_digest(data)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _candidate_files(path: Path | None, batch_from: Any) -> list[Path]:
    if batch_from is not None:
        items = [batch_from] if isinstance(batch_from, (str, os.PathLike)) else list(batch_from)
        files = []
        for item in items:
            item = Path(item)
            files.extend(_images_in(item) if item.is_dir() else [item])
        return files
    if path is None:
        return []
    folder = path.parent
    files = _images_in(folder)
    manifest = folder / "manifest.jsonl"
    if manifest.is_file() and manifest.stat().st_size < (64 << 20):
        files.extend(_manifest_files(manifest))
    return files


def _images_in(folder: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(folder))[:MAX_SIBLING_FILES]
    except OSError:
        return []
    files = [folder / name for name in names if name.lower().endswith(_IMAGE_SUFFIXES) and not name.startswith(".")]
    # Regular files only: opening a named pipe would wait forever.
    return [file for file in files if file.is_file()]


def _manifest_files(manifest: Path) -> Iterable[Path]:
    with open(manifest, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):  # a line from anyone: broken, or nested past the parser's depth
                continue
            name = entry.get("file") if isinstance(entry, dict) else None
            # Only names inside the run folder: a manifest never sends the search elsewhere.
            if isinstance(name, str) and name == Path(name).name and (manifest.parent / name).is_file():
                yield manifest.parent / name


def find_siblings(record: Provenance, path: Path | None, batch_from: Any = None) -> list[Provenance] | None:
    """The records of the whole batch of ``record``, in image order, or `None` when some are missing.

    Args:
        record (`Provenance`): A record of a mixed batch (``recipe.batch.record_digests`` set).
        path (`pathlib.Path`, *optional*): The record's file: siblings are looked for in its folder and the run
            manifest there.
        batch_from (`str`, `os.PathLike`, a list of them, or a list of `Provenance`, *optional*): Where to look
            instead: files, folders or records.
    """
    from .files import read_provenance
    from .schema import ProvenanceError

    batch = record.batch
    digests, index = batch.get("record_digests"), batch.get("index")
    if not digests or index is None:
        return None  # the record does not name its siblings
    if batch_id(digests) != batch.get("id") or _digest_without_id(record) != digests[index]:
        return None  # the record was edited: its batch cannot be trusted
    found: dict[str, Provenance] = {digests[index]: record}
    wanted = set(digests)
    if batch_from is not None and all(isinstance(item, Provenance) for item in batch_from):
        candidates: Iterable[Provenance] = batch_from
    else:
        candidates = (_read(file, read_provenance, ProvenanceError) for file in _candidate_files(path, batch_from))
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


def _read(file: Path, read_provenance: Any, error_type: type) -> Provenance | None:
    try:
        return read_provenance(file)
    except (error_type, OSError):
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
