"""``verify --model`` / ``--models``: the model another tool's image was made with, on this machine.

``--model`` names one model: a diffusers folder or Hub id (loaded as for our own files), or one single-file
``.safetensors`` checkpoint, loaded with diffusers' ``from_single_file``: offline that needs ``--model-config``, a
local diffusers folder of the same architecture (diffusers would otherwise fetch the configs from the Hub).

``--models DIR`` finds each file's model in a folder of checkpoints the way the tool names it: A1111's ``Model hash``
(the first 10 hex digits of the sha256 of the whole checkpoint file, or its legacy 8-digit hash), ComfyUI's
``ckpt_name`` (the file's path below its checkpoints folder), InvokeAI's blake3 hash; a diffusers folder is found by
its name (the tool's model name, or a checkpoint name without its suffix). The search is bounded (entries, depth,
file sizes), never follows a link that leads out of the folder, and hashes a file at most once per process.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import UsageError

__all__ = ["ModelSource", "find_model", "load_foreign_model"]

MAX_ENTRIES = 10_000
"""Most entries of a ``--models`` folder looked at."""
MAX_DEPTH = 4
"""Deepest subfolder of a ``--models`` folder searched."""
MAX_CHECKPOINT_BYTES = 64 << 30
"""Largest checkpoint file hashed (64 GiB)."""
CHECKPOINT_SUFFIXES = (".safetensors",)

# (path, size, mtime) -> hashes; a file is hashed once per process.
_HASHES: dict[tuple[str, int, int, bool], dict[str, str]] = {}


@dataclass(frozen=True)
class ModelSource:
    """Where a model was found: a diffusers folder, or a checkpoint file (then its hash is compared)."""

    path: Path
    checkpoint: bool
    found_by: str

    @property
    def key(self) -> tuple[str, bool]:
        return (str(self.path), self.checkpoint)


def _inside(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([os.path.realpath(path), os.fspath(root)]) == os.fspath(root)
    except ValueError:
        return False


def _entries(root: Path) -> tuple[list[Path], list[Path]]:
    """The checkpoint files and diffusers folders below ``root`` (bounded; links out of it skipped)."""
    root = Path(os.path.realpath(root))
    files: list[Path] = []
    folders: list[Path] = []
    pending, seen = [(root, 0)], 0
    while pending:
        directory, depth = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_ENTRIES:
                raise UsageError(
                    f"--models {str(root)!r} holds more than {MAX_ENTRIES} entries; name a smaller folder"
                )
            path = Path(entry.path)
            if entry.name.startswith(".") or not _inside(path, root):
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if (path / "model_index.json").is_file():
                    folders.append(path)
                elif depth + 1 < MAX_DEPTH:
                    pending.append((path, depth + 1))
            elif stat.S_ISREG(mode) and path.suffix.lower() in CHECKPOINT_SUFFIXES:
                files.append(path)
    return files, folders


def _hashes(path: Path, blake3: bool = False) -> dict[str, str] | None:
    from ..verify import checkpoint_hashes

    info = os.stat(path)
    if info.st_size > MAX_CHECKPOINT_BYTES:
        return None
    key = (os.path.realpath(path), info.st_size, info.st_mtime_ns, blake3)
    if key not in _HASHES:
        _HASHES[key] = checkpoint_hashes(path, blake3=blake3)
    return _HASHES[key]


def _stem(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".safetensors", ".ckpt", ".pt", ".bin"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def find_model(recipe: Any, folder: Path) -> ModelSource | None:
    """The model of ``recipe`` in ``folder``: by hash first, then by name; `None` when nothing matches."""
    model = recipe.model or {}
    files, folders = _entries(folder)
    root = Path(os.path.realpath(folder))
    name, digest, kind = model.get("name"), model.get("hash"), model.get("hash_kind")
    stem = _stem(name)
    if recipe.source == "comfyui" and isinstance(name, str):
        wanted = name.replace("\\", "/").lstrip("/")
        for path in files:
            if path.relative_to(root).as_posix() == wanted:
                return ModelSource(path, True, f"ComfyUI ckpt_name {name!r}")
    if isinstance(digest, str) and kind in ("a1111-sha256-prefix-10", "a1111-legacy-8", "invokeai-blake3"):
        # Files named like the model first: most folders hold the file the tool names.
        ordered = sorted(files, key=lambda path: path.stem != stem)
        for path in ordered:
            hashes = _hashes(path, blake3=kind == "invokeai-blake3")
            if hashes is not None and hashes.get(kind) == digest.lower():
                return ModelSource(path, True, f"{kind} {digest}")
    for path in files:
        if stem is not None and path.stem == stem:
            return ModelSource(path, True, f"the name {name!r} (hash not matched)")
    for path in folders:
        if stem is not None and path.name == stem:
            return ModelSource(path, False, f"the name {name!r} (a diffusers folder: its hash cannot be compared)")
    return None


def load_foreign_model(source: ModelSource, config: str | None, dtype: str | None = None) -> Any:
    """A Repro pipeline of a model found for another tool's image: a diffusers folder as ``--model`` loads one, a
    checkpoint file through diffusers' ``from_single_file`` with ``config`` (a local diffusers folder)."""
    from diffusers import StableDiffusionPipeline

    from ..pipelines import reproducible
    from .common import load_model

    if not source.checkpoint:
        return load_model(str(source.path), dtype)
    if config is None:
        raise UsageError(
            f"{str(source.path)!r} is a single-file checkpoint: loading it offline needs --model-config FOLDER, a "
            "local diffusers folder of the same architecture (diffusers' from_single_file would fetch the configs "
            "from the Hub)"
        )
    if not os.path.isdir(config):
        raise UsageError(f"--model-config {config!r}: no such folder")
    try:
        # The pipeline class the config folder names is the one from_single_file needs; SD is what these tools run.
        cls = reproducible(_config_class(config) or StableDiffusionPipeline)
        pipe = cls.from_single_file(os.fspath(source.path), config=os.fspath(config), local_files_only=True)
    except Exception as error:  # noqa: BLE001 - diffusers' single-file loader raises many kinds
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"cannot load the checkpoint {str(source.path)!r} with diffusers' from_single_file and --model-config "
            f"{config!r}: {message}"
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _config_class(config: str) -> Any:
    import json

    import diffusers

    try:
        with open(os.path.join(config, "model_index.json"), encoding="utf-8") as file:
            name = json.load(file).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    # Only diffusers' own pipeline classes, whatever the folder names.
    if (
        isinstance(cls, type)
        and issubclass(cls, diffusers.DiffusionPipeline)
        and cls.__module__.startswith("diffusers.")
    ):
        return cls
    return None
