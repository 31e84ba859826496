"""Full determinism on demand, restored exactly afterwards.

``full_determinism()`` borrows global state (an environment variable and torch's backend flags) and gives every piece
of it back as found, on exit, on exceptions and when nested: an unset ``CUBLAS_WORKSPACE_CONFIG`` is unset again,
not left as an empty string.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from typing import Any

import torch

from .concurrency import SETTINGS_LOCK

CUBLAS_WORKSPACE_CONFIG = "CUBLAS_WORKSPACE_CONFIG"
DEFAULT_CUBLAS_WORKSPACE = ":16:8"
_VALID_WORKSPACE = re.compile(r"^(:\d+:\d+)+$")

__all__ = ["DeterminismWarning", "determinism_status", "full_determinism"]


class DeterminismWarning(UserWarning):
    """Emitted when full determinism cannot take full effect (for example CUDA was initialized too early)."""


def _tf32_targets() -> list[Any]:
    # torch >= 2.9 has per-backend `fp32_precision` strings beside the legacy `allow_tf32` booleans, and refuses a
    # legacy read when the two disagree. full_determinism sets (and restores) both, booleans first.
    owners = [
        torch.backends.cuda.matmul,
        getattr(torch.backends.cudnn, "conv", None),
        getattr(torch.backends.cudnn, "rnn", None),
    ]
    if all(owner is not None and hasattr(owner, "fp32_precision") for owner in owners):
        return owners
    return []


def _legacy_tf32() -> tuple[bool | None, bool | None]:
    """The legacy ``allow_tf32`` booleans of matmul and cuDNN, ``None`` where torch refuses to tell.

    torch refuses the legacy cuDNN read when its conv and RNN precisions disagree with the boolean. Where conv and
    RNN agree the boolean can only be their opposite (that is why the read failed), so it is known all the same.
    """
    values: list[bool | None] = []
    for getter, owners in (
        (lambda: torch.backends.cuda.matmul.allow_tf32, (torch.backends.cuda.matmul,)),
        (lambda: torch.backends.cudnn.allow_tf32, _cudnn_owners()),
    ):
        try:
            values.append(bool(getter()))
        except RuntimeError:
            precisions = {getattr(owner, "fp32_precision", None) for owner in owners}
            values.append(None if len(precisions) != 1 else precisions != {"tf32"})
    return values[0], values[1]


def _cudnn_owners() -> tuple[Any, ...]:
    return tuple(owner for owner in (getattr(torch.backends.cudnn, name, None) for name in ("conv", "rnn")) if owner)


def _set_legacy_tf32(matmul: bool | None, cudnn: bool | None) -> None:
    # torch's legacy setters also set the per-backend precision strings: set the strings after them.
    if matmul is not None:
        torch.backends.cuda.matmul.allow_tf32 = matmul
    if cudnn is not None:
        torch.backends.cudnn.allow_tf32 = cudnn


def _read(getter: Any) -> Any:
    try:
        return getter()
    except RuntimeError:
        # torch raises when legacy and new TF32 APIs were mixed by someone; report that rather than fail.
        return "mixed"


def determinism_status() -> dict[str, Any]:
    """Snapshot of every setting that ``full_determinism`` controls, as JSON-serializable values.

    Returns:
        `dict`: ``cublas_workspace_config`` (`None` when unset), ``deterministic_algorithms``,
        ``deterministic_algorithms_warn_only``, ``cudnn_deterministic``, ``cudnn_benchmark``, ``tf32_disabled``,
        ``tf32_precision`` (the per-backend precision strings, on torch versions that have them),
        ``matmul_allow_tf32``, ``cudnn_allow_tf32`` and ``full_determinism`` (all of them in force).

    Example:

    ```py
    >>> from diffusers_repro import full_determinism
    >>> from diffusers_repro.determinism import determinism_status
    >>> with full_determinism():
    ...     determinism_status()["full_determinism"]
    True
    ```
    """
    targets = _tf32_targets()
    status = {
        "cublas_workspace_config": os.environ.get(CUBLAS_WORKSPACE_CONFIG),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_algorithms_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "matmul_allow_tf32": _read(lambda: bool(torch.backends.cuda.matmul.allow_tf32)),
        "cudnn_allow_tf32": _read(lambda: bool(torch.backends.cudnn.allow_tf32)),
    }
    if targets:
        names = ("cuda_matmul", "cudnn_conv", "cudnn_rnn")
        status["tf32_precision"] = {name: owner.fp32_precision for name, owner in zip(names, targets, strict=True)}
        status["tf32_disabled"] = all(value == "ieee" for value in status["tf32_precision"].values())
    else:
        status["tf32_precision"] = None
        status["tf32_disabled"] = status["matmul_allow_tf32"] is False and status["cudnn_allow_tf32"] is False
    workspace = status["cublas_workspace_config"]
    status["full_determinism"] = bool(
        workspace is not None
        and _VALID_WORKSPACE.match(workspace)
        and status["deterministic_algorithms"]
        and not status["deterministic_algorithms_warn_only"]
        and status["cudnn_deterministic"]
        and not status["cudnn_benchmark"]
        and status["tf32_disabled"]
    )
    return status


class full_determinism(contextlib.ContextDecorator):  # noqa: N801 - used like a function, as contextlib's helpers
    """Turns on every determinism setting torch has, and restores each one exactly on exit.

    Sets ``CUBLAS_WORKSPACE_CONFIG`` (to ``":16:8"`` unless a valid value is already set),
    ``torch.use_deterministic_algorithms(True)``, ``torch.backends.cudnn.deterministic = True``,
    ``torch.backends.cudnn.benchmark = False`` and turns TF32 off for matmul and cuDNN. Usable as a context manager
    or a decorator, and nestable; the same object can be entered again.

    Args:
        warn_only (`bool`, *optional*, defaults to `False`):
            Passed to ``torch.use_deterministic_algorithms``: with `True`, an operation without a deterministic
            implementation warns instead of raising.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro import full_determinism
    >>> with full_determinism():
    ...     torch.are_deterministic_algorithms_enabled()
    True
    >>> torch.are_deterministic_algorithms_enabled()
    False
    ```
    """

    def __init__(self, warn_only: bool = False):
        if not isinstance(warn_only, bool):
            raise TypeError(f"warn_only must be a bool, got {warn_only!r}")
        self.warn_only = warn_only
        self._saved: list[dict[str, Any]] = []

    def __enter__(self) -> full_determinism:
        # The settings are process-wide: wait until no call in another thread runs, and keep new ones out until exit.
        SETTINGS_LOCK.acquire_exclusive()
        try:
            self._enter()
        except BaseException:
            SETTINGS_LOCK.release_exclusive()
            raise
        return self

    def _enter(self) -> None:
        saved = {
            "env": os.environ.get(CUBLAS_WORKSPACE_CONFIG),
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32": [(owner, owner.fp32_precision) for owner in _tf32_targets()],
            "legacy_tf32": _legacy_tf32(),
        }
        self._saved.append(saved)
        try:
            current = saved["env"]
            if current is None or not _VALID_WORKSPACE.match(current):
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    warnings.warn(
                        f"CUDA was initialized before {CUBLAS_WORKSPACE_CONFIG} was set, so cuBLAS may not use a "
                        "deterministic workspace in this process. Set the variable (or enter full_determinism()) "
                        "before the first CUDA call for bitwise-reproducible matmuls.",
                        DeterminismWarning,
                        stacklevel=2,
                    )
                os.environ[CUBLAS_WORKSPACE_CONFIG] = DEFAULT_CUBLAS_WORKSPACE
            torch.use_deterministic_algorithms(True, warn_only=self.warn_only)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            # The legacy booleans first, then the precision strings: legacy reads (torch._inductor makes them) and
            # new ones both answer "TF32 off" inside.
            _set_legacy_tf32(False, False)
            for owner, _ in saved["tf32"]:
                owner.fp32_precision = "ieee"
        except BaseException:
            self._restore(self._saved.pop())
            raise

    def __exit__(self, *exc_info) -> bool:
        try:
            self._restore(self._saved.pop())
        finally:
            SETTINGS_LOCK.release_exclusive()
        return False

    @staticmethod
    def _restore(saved: dict[str, Any]) -> None:
        if saved["env"] is None:
            os.environ.pop(CUBLAS_WORKSPACE_CONFIG, None)
        else:
            os.environ[CUBLAS_WORKSPACE_CONFIG] = saved["env"]
        torch.use_deterministic_algorithms(saved["algorithms"], warn_only=saved["warn_only"])
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
        _set_legacy_tf32(*saved["legacy_tf32"])
        for owner, value in saved["tf32"]:
            owner.fp32_precision = value
