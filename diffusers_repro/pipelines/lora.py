"""The LoRA history of a Repro pipeline: its wrapped LoRA methods, the log of their operations, and the record.

The Repro class wraps each LoRA method the vanilla class has (`LORA_METHODS`): after the call, digests the operation
made stale are dropped (a fusion rewrites the base weights) and the operation is logged with its arguments, so that
``recipe.model.lora`` can say which adapters are loaded, with which weights and scales, and how they came to be.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..generation import forget_cleanliness
from ..records import jsonable
from .adapters import ADAPTER_DIGESTS, adapter_record, lora_layers, lora_source, lora_state
from .weights import COMPONENT_DIGESTS

__all__: list[str] = []

# Pipeline methods that add, remove, rescale, fuse or unfuse LoRA adapters; the Repro class wraps the ones the vanilla
# class has, to log them and to drop cached digests of the components they changed.
LORA_METHODS = (
    "load_lora_weights",
    "set_adapters",
    "delete_adapters",
    "fuse_lora",
    "unfuse_lora",
    "unload_lora_weights",
    "enable_lora",
    "disable_lora",
)


def tracking_lora(name: str, method: Callable) -> Callable:
    """Wraps a vanilla LoRA method: logs the operation and drops the digests it made stale."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        before = lora_state(self)
        result = method(self, *args, **kwargs)
        _lora_changed(self, name, signature.bind(self, *args, **kwargs), before)
        return result

    return wrapper


def _lora_changed(pipe: Any, name: str, bound: inspect.BoundArguments, before: dict[str, Any]) -> None:
    """Called after a wrapped LoRA method of ``pipe``: drop stale digests, log the operation."""
    after = lora_state(pipe)
    for component_name in {*before, *after}:
        old, new = before.get(component_name, {}), after.get(component_name, {})
        component = old.get("component", new.get("component"))
        ADAPTER_DIGESTS.pop(component, None)
        forget_cleanliness(component)  # new adapter layers: their modes are checked from the next call on
        merged_before, merged_after = old.get("merged", []), new.get("merged", [])
        # Fusing or unfusing rewrites the base weights; unloading keeps whatever was fused into them. Either way
        # the cached digest (maybe of the files loaded) no longer describes the tensors: digest them again.
        if merged_before != merged_after or (name == "unload_lora_weights" and merged_before):
            COMPONENT_DIGESTS.pop(component, None)
    # Defaults included: the log must say what fuse_lora() did (lora_scale, components), not only what was passed.
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    operation: dict[str, Any] = {"op": name}
    weights = dict(pipe._repro_adapter_weights or {})
    if name == "load_lora_weights":
        names_before = {a for state in before.values() for a in state["adapters"]}
        loaded = sorted({a for state in after.values() for a in state["adapters"]} - names_before)
        operation.update(
            adapter_name=arguments.get("adapter_name"),
            adapter_names=loaded,
            source=lora_source(arguments),
            hotswap=bool(arguments.get("hotswap", False)),
            kwargs=jsonable(arguments.get("kwargs") or {}),
        )
        weights.update({adapter: 1.0 for adapter in loaded})
    else:
        operation.update({k: jsonable(v) for k, v in arguments.items()})
    if name == "set_adapters":
        names = arguments.get("adapter_names")
        names = [names] if isinstance(names, str) else list(names)
        values = arguments.get("adapter_weights")
        values = [values] * len(names) if not isinstance(values, (list, tuple)) else list(values)
        weights.update({adapter: jsonable(1.0 if v is None else v) for adapter, v in zip(names, values, strict=True)})
    remaining = {a for state in after.values() for a in state["adapters"]}
    pipe._repro_adapter_weights = {a: w for a, w in weights.items() if a in remaining}
    pipe._repro_lora_operations = (*pipe._repro_lora_operations, operation)


def lora_record(pipe: Any) -> dict[str, Any] | None:
    """Adapters as they are now (digests, rank, scales, fusion), and the LoRA operations that led there."""
    state = lora_state(pipe)
    if not state and not pipe._repro_lora_operations:
        return None
    weights = pipe._repro_adapter_weights or {}
    sources = {}
    for operation in pipe._repro_lora_operations:
        if operation["op"] == "load_lora_weights":
            sources.update({adapter: operation["source"] for adapter in operation["adapter_names"]})
    adapters: dict[str, Any] = {}
    active: list[str] = []
    enabled = True
    for component_name, component_state in state.items():
        component = component_state["component"]
        layers = lora_layers(component)
        scalings: dict[str, set[float]] = {}
        for layer in layers:
            enabled = enabled and not getattr(layer, "disable_adapters", False)
            for adapter in layer.active_adapters:
                if adapter not in active:
                    active.append(adapter)
            for adapter, value in getattr(layer, "scaling", {}).items():
                scalings.setdefault(adapter, set()).add(float(value))
        for adapter in component_state["adapters"]:
            entry = adapters.setdefault(
                adapter,
                {"weight": weights.get(adapter, 1.0), "source": sources.get(adapter), "components": {}},
            )
            entry["components"][component_name] = {
                **adapter_record(component, adapter),
                # Effective multipliers of the adapter's layers: lora_alpha / rank x the set_adapters weight.
                "scaling": sorted(scalings.get(adapter, ())),
                "fused": adapter in component_state["merged"],
            }
    return {
        "active_adapters": active,
        "enabled": enabled,
        "adapters": adapters,
        "operations": [dict(operation) for operation in pipe._repro_lora_operations],
    }
