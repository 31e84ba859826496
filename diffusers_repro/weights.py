"""Weights digests of a pipeline's components: from the files ``from_pretrained`` read, or from their tensors.

A component loaded from a folder gets the digest of its files (all weights files of its subfolder, the chosen
``variant`` first); a component built in code gets a digest of its tensors (or of its vocabulary, or its config) on
first use. Digests are cached per component object, keyed weakly, and dropped when a LoRA fusion changes the tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Any

import torch

from .adapters import base_weights_record, has_adapters
from .provenance import file_digest, jsonable, state_dict_digest

__all__: list[str] = []

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".gguf")

# Weights digests, computed once per component object: loading from files fills it from the files' digests, a
# component built in code gets a digest of its tensors on first use. Keyed weakly so components can be freed. A LoRA
# fusion (or unfusion) changes a component's tensors, and drops its entry so that the tensors are digested again.
_COMPONENT_DIGESTS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _qualified_class(obj: Any) -> str:
    module = type(obj).__module__.split(".")[0]
    return f"{module}.{type(obj).__name__}"


def _component_record(component: Any) -> dict[str, Any]:
    record = _COMPONENT_DIGESTS.get(component) if _is_weakrefable(component) else None
    if record is None:
        record = _digest_in_memory(component)
        if _is_weakrefable(component):
            _COMPONENT_DIGESTS[component] = record
    return {"class": _qualified_class(component), **record}


def _is_weakrefable(obj: Any) -> bool:
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


def _digest_folder(folder: Path, variant: str | None, all_files: bool) -> dict[str, Any] | None:
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and (all_files or p.name.endswith(_WEIGHT_SUFFIXES)))
    if variant and not all_files:
        files = [p for p in files if f".{variant}." in p.name] or files
    if not files:
        return None
    file_digests = {path.name: file_digest(path) for path in files}
    combined = hashlib.sha256("".join(f"{name}={digest}\n" for name, digest in file_digests.items()).encode())
    return {"weights_digest": "sha256:" + combined.hexdigest(), "digest_of": "files", "files": file_digests}


def _snapshot_folder(name_or_path: str, kwargs: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
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
