"""Weights digests of a pipeline's components: from the files ``from_pretrained`` read, or from their tensors.

A component loaded from a folder gets the digest of its files (all weights files of its subfolder, the chosen
``variant`` first); a component built in code gets a digest of its tensors (or of its vocabulary, or its config) on
first use. Digests are cached per component object, keyed weakly, and dropped when a LoRA fusion changes the tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import weakref
from pathlib import Path
from typing import Any

import torch

from ..records import file_digest, jsonable, state_dict_digest
from .adapters import base_weights_record, has_adapters

__all__: list[str] = []

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".gguf")

# Weights digests, computed once per component object: loading from files fills it from the files' digests, a
# component built in code gets a digest of its tensors on first use. Keyed weakly so components can be freed. A LoRA
# fusion (or unfusion) changes a component's tensors, and drops its entry so that the tensors are digested again.
COMPONENT_DIGESTS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _qualified_class(obj: Any) -> str:
    module = type(obj).__module__.split(".")[0]
    return f"{module}.{type(obj).__name__}"


def component_record(component: Any) -> dict[str, Any]:
    record = COMPONENT_DIGESTS.get(component) if is_weakrefable(component) else None
    if record is None:
        record = _digest_in_memory(component)
        if is_weakrefable(component):
            COMPONENT_DIGESTS[component] = record
    return {"class": _qualified_class(component), **record}


def is_weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def _digest_in_memory(component: Any) -> dict[str, Any]:
    if isinstance(component, torch.nn.Module):
        if has_adapters(component):
            return base_weights_record(component)
        return {"weights_digest": state_dict_digest(component), "digest_of": "tensors"}
    if hasattr(component, "get_vocab"):
        vocab = json.dumps(component.get_vocab(), sort_keys=True, ensure_ascii=False).encode()
        return {"weights_digest": "sha256:" + hashlib.sha256(vocab).hexdigest(), "digest_of": "vocabulary"}
    config = getattr(component, "config", None) or getattr(component, "to_dict", lambda: None)()
    text = json.dumps(jsonable(dict(config) if config else {}), sort_keys=True).encode()
    return {"weights_digest": "sha256:" + hashlib.sha256(text).hexdigest(), "digest_of": "config"}


MAX_HASHED_FILE_BYTES = 64 << 20
"""Largest non-weights file (tokenizer, config, ...) of a component folder hashed into its digest; larger ones are
left out (a model folder named by a record from anyone may hold anything)."""


def _model_roots(folder: Path) -> tuple[Path, ...]:
    # A component folder's files may link anywhere under the model folder; in the Hugging Face cache, where a
    # snapshot's files link to ../../blobs, anywhere under the repository's cache folder.
    model = folder.resolve().parent
    return (model, model.parent.parent) if model.parent.name == "snapshots" else (model,)


def _hashable_files(folder: Path, all_files: bool) -> list[Path]:
    """The component folder's regular files to digest: links only to files under the model folder, and
    non-weights files only up to `MAX_HASHED_FILE_BYTES` (never a named pipe, a device or a link to a secret)."""
    roots = _model_roots(folder)
    files = []
    for path in sorted(folder.iterdir()):
        weights = path.name.endswith(_WEIGHT_SUFFIXES)
        if not (all_files or weights):
            continue
        try:
            target = path.resolve(strict=True)
            status = target.stat()
        except (OSError, RuntimeError):  # a broken link or a link loop
            continue
        if not stat.S_ISREG(status.st_mode) or not any(target.is_relative_to(root) for root in roots):
            continue
        if not weights and status.st_size > MAX_HASHED_FILE_BYTES:
            continue
        files.append(path)
    return files


def digest_folder(folder: Path, variant: str | None, all_files: bool) -> dict[str, Any] | None:
    if not folder.is_dir():
        return None
    files = _hashable_files(folder, all_files)
    if variant and not all_files:
        files = [p for p in files if f".{variant}." in p.name] or files
    if not files:
        return None
    file_digests = {path.name: file_digest(path) for path in files}
    combined = hashlib.sha256("".join(f"{name}={digest}\n" for name, digest in file_digests.items()).encode())
    return {"weights_digest": "sha256:" + combined.hexdigest(), "digest_of": "files", "files": file_digests}


def snapshot_folder(name_or_path: str, kwargs: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """Where ``from_pretrained`` read the pipeline from, and the source record (repo id or path, revision, variant)."""
    # The weights variant (e.g. "fp16") picks other files with other weights: a replay must load the same ones.
    variant = kwargs.get("variant")
    if os.path.isdir(name_or_path):
        folder = Path(name_or_path).resolve()
        return folder, {"type": "local", "path": str(folder), "repo_id": None, "revision": None, "variant": variant}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(
        name_or_path, "model_index.json", cache_dir=kwargs.get("cache_dir"), revision=kwargs.get("revision")
    )
    if isinstance(cached, str):
        folder = Path(cached).parent
        return folder, {
            "type": "hub",
            "path": None,
            "repo_id": name_or_path,
            "revision": folder.name,
            "variant": variant,
        }
    return None, {
        "type": "hub",
        "path": None,
        "repo_id": name_or_path,
        "revision": kwargs.get("revision"),
        "variant": variant,
    }
