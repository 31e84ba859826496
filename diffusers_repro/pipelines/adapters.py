"""LoRA adapters in provenance: which adapters a component carries, their digests, and its own weights' digest.

diffusers loads LoRA adapters through peft, which wraps layers and renames their weights; these helpers undo the
renaming to digest a component's own weights, digest each adapter's tensors, and find where an adapter was loaded
from. ``ReproducibleMixin`` wraps the pipeline's LoRA methods and calls them.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

import torch

from ..records import file_digest, jsonable, named_tensors_digest

__all__ = [
    "ADAPTER_DIGESTS",
    "adapter_record",
    "base_weights_record",
    "has_adapters",
    "is_adapter_key",
    "lora_file",
    "lora_layers",
    "lora_source",
    "lora_state",
]

# Digests of LoRA adapter tensors: component -> {adapter name -> record}; dropped by every LoRA operation.
ADAPTER_DIGESTS: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def has_adapters(module: Any) -> bool:
    # diffusers' ModelMixin and transformers' PreTrainedModel both keep `peft_config` once an adapter is injected.
    return isinstance(module, torch.nn.Module) and bool(getattr(module, "peft_config", None))


def lora_layers(module: torch.nn.Module) -> list[Any]:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # without peft, diffusers cannot load LoRA adapters at all
        return []
    return [layer for layer in module.modules() if isinstance(layer, BaseTunerLayer)]


def is_adapter_key(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


def base_weights_record(module: torch.nn.Module) -> dict[str, Any]:
    """The digest of a module's own weights, with injected LoRA adapters left out.

    peft renames a wrapped weight ``to_q.weight`` to ``to_q.base_layer.weight`` and adds ``lora_A``/``lora_B``
    tensors: undoing the renaming and leaving the adapters out gives the digest the module had before the injection,
    as long as no adapter was fused into it. A fused adapter changes the base weights, and so the digest.
    """
    items = [
        (name.replace(".base_layer.", ".").removesuffix(".base_layer"), tensor)
        for name, tensor in module.state_dict().items()
        if not is_adapter_key(name)
    ]
    record = {"weights_digest": named_tensors_digest(items), "digest_of": "tensors"}
    fused = sorted({name for layer in lora_layers(module) for name in layer.merged_adapters})
    if fused:
        record["fused_adapters"] = fused
        record["note"] = "LoRA adapter(s) fused into the weights in memory: the digest is of the fused tensors"
    return record


def adapter_record(component: torch.nn.Module, adapter: str) -> dict[str, Any]:
    """Digest, rank and alpha of one adapter's tensors in one component; computed once per LoRA operation."""
    cache = ADAPTER_DIGESTS.setdefault(component, {})
    record = cache.get(adapter)
    if record is None:
        marker = f".{adapter}."
        items = [(n, t) for n, t in component.state_dict().items() if is_adapter_key(n) and marker in f"{n}."]
        config = component.peft_config.get(adapter)
        record = {
            "weights_digest": named_tensors_digest(items),
            "tensors": len(items),
            "rank": getattr(config, "r", None),
            "lora_alpha": getattr(config, "lora_alpha", None),
            "use_dora": getattr(config, "use_dora", None),
            "target_modules": jsonable(sorted(getattr(config, "target_modules", None) or [])),
        }
        cache[adapter] = record
    return dict(record)


def lora_state(pipe: Any) -> dict[str, dict[str, Any]]:
    """Per component with adapters: the component, its adapter names and the adapters fused into it."""
    state = {}
    # A Repro pipeline's own list skips diffusers' inspect.signature of the class (~0.5 ms, every call).
    components = pipe._repro_components() if hasattr(pipe, "_repro_components") else pipe.components
    for name, component in components.items():
        if has_adapters(component):
            layers = lora_layers(component)
            state[name] = {
                "component": component,
                "adapters": list(component.peft_config),
                "merged": sorted({adapter for layer in layers for adapter in layer.merged_adapters}),
            }
    return state


def lora_file(path: str, weight_name: str | None) -> str | None:
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        return None
    if weight_name:
        candidate = os.path.join(path, weight_name)
        return candidate if os.path.isfile(candidate) else None
    names = sorted(name for name in os.listdir(path) if name.endswith((".safetensors", ".bin")))
    preferred = [name for name in names if name.startswith("pytorch_lora_weights.")]
    chosen = preferred or names
    return os.path.join(path, chosen[0]) if len(chosen) == 1 else None


def lora_source(arguments: dict[str, Any]) -> dict[str, Any]:
    """Where ``load_lora_weights`` read an adapter from: a state dict's digest, or a file path and its digest."""
    source = arguments.get("pretrained_model_name_or_path_or_dict")
    kwargs = {**arguments.get("kwargs", {})}
    weight_name = kwargs.get("weight_name")
    if isinstance(source, dict):
        tensors = [(str(k), v) for k, v in source.items() if isinstance(v, torch.Tensor)]
        return {"type": "state_dict", "weights_digest": named_tensors_digest(tensors), "tensors": len(tensors)}
    path = os.fspath(source)
    local = lora_file(path, weight_name)
    if local is not None:
        return {"type": "local", "path": str(Path(local).resolve()), "file_digest": file_digest(local)}
    record = {"type": "hub", "repo_id": path, "weight_name": weight_name, "revision": kwargs.get("revision")}
    if weight_name:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(
            path, weight_name, cache_dir=kwargs.get("cache_dir"), revision=record["revision"]
        )
        if isinstance(cached, str):
            record.update(revision=Path(cached).parent.name, file_digest=file_digest(cached))
    return record
