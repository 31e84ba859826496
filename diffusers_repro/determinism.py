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

CUBLAS_WORKSPACE_CONFIG = "CUBLAS_WORKSPACE_CONFIG"
DEFAULT_CUBLAS_WORKSPACE = ":16:8"
_VALID_WORKSPACE = re.compile(r"^(:\d+:\d+)+$")

__all__ = ["DeterminismWarning", "determinism_status", "full_determinism"]


class DeterminismWarning(UserWarning):
    """Emitted when full determinism cannot take full effect (for example CUDA was initialized too early)."""


def _fp32_precision_targets() -> list[tuple[Any, str]]:
    # torch >= 2.9 keeps TF32 settings as `fp32_precision` strings next to the older `allow_tf32` booleans; setting
    # a boolean rewrites the string, so restoring exactly means restoring the strings where they exist.
    targets = []
    for owner in (
        getattr(torch.backends, "cuda", None) and torch.backends.cuda.matmul,
        torch.backends.cudnn,
        getattr(torch.backends.cudnn, "conv", None),
        getattr(torch.backends.cudnn, "rnn", None),
        torch.backends,
    ):
        if owner is not None and hasattr(owner, "fp32_precision"):
            targets.append((owner, "fp32_precision"))
    return targets


def determinism_status() -> dict[str, Any]:
    """Snapshot of every setting that ``full_determinism`` controls, as JSON-serializable values.

    Returns:
        `dict`: ``cublas_workspace_config`` (`None` when unset), ``deterministic_algorithms``,
        ``deterministic_algorithms_warn_only``, ``cudnn_deterministic``, ``cudnn_benchmark``, ``matmul_allow_tf32``,
        ``cudnn_allow_tf32``, ``float32_matmul_precision`` and ``full_determinism`` (all of them in force).

    Example:

    ```py
    >>> from diffusers_repro import full_determinism
    >>> from diffusers_repro.determinism import determinism_status
    >>> with full_determinism():
    ...     determinism_status()["full_determinism"]
    True
    ```
    """
    status = {
        "cublas_workspace_config": os.environ.get(CUBLAS_WORKSPACE_CONFIG),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_algorithms_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    workspace = status["cublas_workspace_config"]
    status["full_determinism"] = bool(
        workspace is not None
        and _VALID_WORKSPACE.match(workspace)
        and status["deterministic_algorithms"]
        and not status["deterministic_algorithms_warn_only"]
        and status["cudnn_deterministic"]
        and not status["cudnn_benchmark"]
        and not status["matmul_allow_tf32"]
        and not status["cudnn_allow_tf32"]
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
        saved = {
            "env": os.environ.get(CUBLAS_WORKSPACE_CONFIG),
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "fp32_precision": [(owner, name, getattr(owner, name)) for owner, name in _fp32_precision_targets()],
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
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        except BaseException:
            self._restore(self._saved.pop())
            raise
        return self

    def __exit__(self, *exc_info) -> bool:
        self._restore(self._saved.pop())
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
        torch.backends.cuda.matmul.allow_tf32 = saved["matmul_allow_tf32"]
        torch.backends.cudnn.allow_tf32 = saved["cudnn_allow_tf32"]
        torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
        # The precision strings go last: the boolean setters above rewrite them.
        for owner, name, value in saved["fp32_precision"]:
            setattr(owner, name, value)
