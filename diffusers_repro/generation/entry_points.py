"""Per-thread behaviour at the entry points of shared components: one stand-in per method, driven per call.

Two things a call wants from the models it runs, and only for itself: batch-invariant mode splits a model's batch
(`batching.one_image_at_a_time`), and the stray-randomness mode steps aside while a clean model runs
(`randomness.seeded_stray_randomness`). Components are shared between pipelines (``from_pipe``) that other threads
call, so neither may change a component's methods for everyone. Instead, the first call that needs a component's
entry point puts in place a stand-in (an instance attribute over the class method) that looks up, in a
`contextvars.ContextVar` (per thread, per asyncio task), what the call running in its own thread asked for that
component; a call that asked nothing - any other thread's call - goes straight to the method itself. A count of users
per stand-in (under a small lock, held only while installing or removing) lets the last call to leave put the
method back as found.

The entry points are the methods diffusers pipelines call on their models: ``forward`` (reached through
``module(...)``), the autoencoders' ``encode``/``decode`` and their private and tiled variants, and the CLIP models'
``get_text_features``/``get_image_features``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["ENTRY_POINTS", "EntryPlan", "call_without_mode", "planned_entry_points"]

ENTRY_POINTS = (
    "forward",
    "encode",
    "decode",
    "_encode",
    "_decode",
    "tiled_encode",
    "tiled_decode",
    "get_text_features",
    "get_image_features",
)
"""Methods of a model that pipelines call from outside it (``__call__`` runs ``forward``)."""


@dataclasses.dataclass(frozen=True)
class EntryPlan:
    """What the call running in this thread wants at one component's entry points.

    Args:
        split (`Callable`, *optional*):
            Makes a splitting version of a method (batch-invariant mode); applied to the methods in ``split_methods``.
        split_methods (`frozenset[str]`):
            The entry points that ``split`` applies to.
        aside (`TorchFunctionMode`, *optional*):
            A function mode of this thread to take off the stack while any entry point runs.
    """

    split: Callable[[Callable], Callable] | None = None
    split_methods: frozenset[str] = frozenset()
    aside: TorchFunctionMode | None = None

    def run(self, name: str, method: Callable, args: tuple, kwargs: dict) -> Any:
        call = self.split(method) if self.split is not None and name in self.split_methods else method
        if self.aside is None:
            return call(*args, **kwargs)
        return call_without_mode(self.aside, call, args, kwargs)


def call_without_mode(mode: TorchFunctionMode, call: Callable, args: tuple, kwargs: dict) -> Any:
    """Calls ``call(*args, **kwargs)`` with ``mode`` off this thread's function-mode stack, and puts it back.

    Modes above ``mode`` (entered after it, such as the CUDA-noise mode) stay in place, in their order; a ``mode`` not
    on the stack (an entry point called from inside another one) costs nothing more.
    """
    if torch.overrides._get_current_function_mode() is mode:
        torch.overrides._pop_mode()
        try:
            return call(*args, **kwargs)
        finally:
            torch.overrides._push_mode(mode)
    if not torch._C._len_torch_function_stack() or not any(
        m is mode for m in torch.overrides._get_current_function_mode_stack()
    ):
        return call(*args, **kwargs)
    above = []
    while (top := torch.overrides._pop_mode()) is not mode:
        above.append(top)
    for other in reversed(above):
        torch.overrides._push_mode(other)
    try:
        return call(*args, **kwargs)
    finally:
        for _ in above:
            torch.overrides._pop_mode()
        torch.overrides._push_mode(mode)
        for other in reversed(above):
            torch.overrides._push_mode(other)


# Per thread (and per asyncio task): what the call running here wants of each component, by id(component).
_PLANS: contextvars.ContextVar[dict[int, EntryPlan] | None] = contextvars.ContextVar(
    "diffusers_repro_entry_plans", default=None
)
# The stand-ins in place on shared components, keyed by (id(component), method name): the stand-in, the instance
# attribute it replaced (or _MISSING) and how many blocks, in any thread, are using it now.
_INSTALLED: dict[tuple[int, str], list[Any]] = {}
_INSTALLED_LOCK = threading.Lock()
_MISSING = object()


def _stand_in(component_id: int, name: str, method: Callable) -> Callable:
    """A stand-in for a component's method: does what the call running in this thread planned, if anything."""

    def entry_point(*args, **kwargs):
        plans = _PLANS.get()
        plan = plans.get(component_id) if plans is not None else None
        if plan is None:
            return method(*args, **kwargs)  # another thread's call, or a plain call: the method itself, unchanged
        return plan.run(name, method, args, kwargs)

    return entry_point


def _install(component: torch.nn.Module, name: str) -> None:
    key = (id(component), name)
    with _INSTALLED_LOCK:
        entry = _INSTALLED.get(key)
        if entry is None:
            method = getattr(component, name)
            # An instance attribute shadows the class method; remember any instance attribute to put it back.
            previous = component.__dict__.get(name, _MISSING)
            stand_in = _stand_in(id(component), name, method)
            setattr(component, name, stand_in)
            entry = _INSTALLED[key] = [stand_in, previous, 0]
        entry[2] += 1


def _uninstall(component: torch.nn.Module, name: str) -> None:
    key = (id(component), name)
    with _INSTALLED_LOCK:
        entry = _INSTALLED[key]
        entry[2] -= 1
        if entry[2]:
            return
        del _INSTALLED[key]
        stand_in, previous = entry[0], entry[1]
        if component.__dict__.get(name) is not stand_in:
            return  # replaced by someone else meanwhile: theirs stays
        if previous is _MISSING:
            component.__dict__.pop(name, None)
        else:
            component.__dict__[name] = previous


@contextlib.contextmanager
def planned_entry_points(
    plans: Iterable[tuple[torch.nn.Module, dict[str, Any]]], names: Iterable[str]
) -> Iterator[None]:
    """Inside the block, this thread's calls of ``names`` on each component follow its plan (see `EntryPlan`).

    A plan is added to what an enclosing block of this thread planned for the same component (batch-invariant
    splitting and stepping aside combine); other threads see the methods unchanged.

    Args:
        plans (iterable of (`torch.nn.Module`, `dict`)):
            Each component with the fields of `EntryPlan` to set for it (``split`` and ``split_methods``, or
            ``aside``); a component listed twice keeps its first plan.
        names (iterable of `str`):
            The entry points to stand in for; those a component lacks are skipped.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro.entry_points import planned_entry_points
    >>> linear = torch.nn.Linear(2, 2)
    >>> with planned_entry_points([(linear, {"split": None})], ["forward"]):
    ...     "forward" in vars(linear)
    True
    >>> "forward" in vars(linear)
    False
    ```
    """
    names = tuple(names)
    outer = _PLANS.get() or {}
    planned = dict(outer)  # a call made from inside another call keeps the outer call's other components
    installed: list[tuple[torch.nn.Module, str]] = []
    token = None
    try:
        for component, fields in plans:
            if id(component) in planned and planned[id(component)] is not outer.get(id(component)):
                continue  # listed twice
            planned[id(component)] = dataclasses.replace(outer.get(id(component), EntryPlan()), **fields)
            for name in names:
                if callable(getattr(component, name, None)):
                    _install(component, name)
                    installed.append((component, name))
        token = _PLANS.set(planned)
        yield
    finally:
        if token is not None:
            _PLANS.reset(token)
        for component, name in reversed(installed):
            _uninstall(component, name)
