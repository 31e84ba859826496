"""Calls made at the same time from several threads: what each call may borrow, and when.

Two kinds of state a call depends on are not per thread, and this module guards them:

- **torch's determinism settings** (``torch.use_deterministic_algorithms``, cuDNN and TF32 flags,
  ``CUBLAS_WORKSPACE_CONFIG``) are process-wide. `SETTINGS_LOCK` is a readers-writer lock over them: every Repro call
  holds its shared side for its whole length (plain calls never wait for each other), and ``full_determinism()``
  holds its exclusive side while the settings are changed, so no call ever runs while another thread's settings are
  in force, and each record states the settings its call really ran with.
- **a pipeline object's own state** (its scheduler's timesteps, ``last_provenance``) is changed by every call on it:
  `serialized_per_object` lets one call at a time run on one pipeline object, so calls on the same object from
  several threads give the bits each gives alone. Calls on different objects (one ``from_pipe`` pipeline per
  request, sharing the weights) do not wait for each other.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["SETTINGS_LOCK", "SettingsLock", "serialized_per_object"]

_F = TypeVar("_F", bound=Callable[..., Any])


class SettingsLock:
    """A readers-writer lock over process-wide settings, re-entrant per thread and fair to writers.

    Any number of threads may hold the shared side at once; the exclusive side waits until no other thread holds
    either side, and while a thread waits for it no other thread is newly granted the shared side (so a stream of
    plain calls cannot starve a deterministic one). A thread that holds the exclusive side may take either side
    again; a thread that holds the shared side may take the exclusive side (it waits for the other threads' shared
    holds to end), but only one thread at a time may do so: two would wait for each other forever, so the second
    gets a `RuntimeError` instead.

    Example:

    ```py
    >>> from diffusers_repro.concurrency import SettingsLock
    >>> lock = SettingsLock()
    >>> with lock.shared(), lock.shared():
    ...     lock.holders()
    {'shared': 1, 'exclusive': None}
    ```
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._readers: dict[int, int] = {}
        self._writer: int | None = None
        self._writer_depth = 0
        self._writers_waiting = 0
        self._upgrading: int | None = None

    def holders(self) -> dict[str, Any]:
        """How many threads hold the shared side, and which thread (its ident) holds the exclusive side."""
        with self._condition:
            return {"shared": len(self._readers), "exclusive": self._writer}

    def acquire_shared(self) -> None:
        me = threading.get_ident()
        with self._condition:
            if self._writer == me or me in self._readers:
                self._readers[me] = self._readers.get(me, 0) + 1
                return
            while self._writer is not None or self._writers_waiting:
                self._condition.wait()
            self._readers[me] = 1

    def release_shared(self) -> None:
        me = threading.get_ident()
        with self._condition:
            count = self._readers.get(me, 0)
            if count == 0:
                raise RuntimeError("release_shared() called by a thread that does not hold the shared side")
            if count == 1:
                del self._readers[me]
                self._condition.notify_all()
            else:
                self._readers[me] = count - 1

    def acquire_exclusive(self) -> None:
        me = threading.get_ident()
        with self._condition:
            if self._writer == me:
                self._writer_depth += 1
                return
            mine = self._readers.get(me, 0)
            if mine:
                if self._upgrading is not None:
                    raise RuntimeError(
                        "full_determinism() entered inside a call in two threads at once: each would wait for the "
                        "other's call to end; enter it before the calls, or pass deterministic=True to them"
                    )
                self._upgrading = me
            self._writers_waiting += 1
            try:
                while self._writer is not None or len(self._readers) > (1 if mine else 0):
                    self._condition.wait()
            finally:
                self._writers_waiting -= 1
                if mine:
                    self._upgrading = None
                self._condition.notify_all()
            self._writer, self._writer_depth = me, 1

    def release_exclusive(self) -> None:
        me = threading.get_ident()
        with self._condition:
            if self._writer != me:
                raise RuntimeError("release_exclusive() called by a thread that does not hold the exclusive side")
            self._writer_depth -= 1
            if self._writer_depth == 0:
                self._writer = None
                self._condition.notify_all()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Holds the shared side for the block."""
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Holds the exclusive side for the block."""
        self.acquire_exclusive()
        try:
            yield
        finally:
            self.release_exclusive()


SETTINGS_LOCK = SettingsLock()
"""The lock over torch's determinism settings: Repro calls hold it shared, ``full_determinism()`` exclusive."""

_OBJECT_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_OBJECT_LOCKS_GUARD = threading.Lock()


def _object_lock(obj: Any) -> threading.RLock:
    with _OBJECT_LOCKS_GUARD:
        lock = _OBJECT_LOCKS.get(obj)
        if lock is None:
            # Kept beside the object rather than on it, so that pickling and deep copies of pipelines keep working.
            lock = _OBJECT_LOCKS[obj] = threading.RLock()
        return lock


def serialized_per_object(method: _F) -> _F:
    """Decorates a method so that calls on one object run one at a time; calls on different objects do not wait.

    Re-entrant: a call made from inside another call on the same object in the same thread (a callback) runs.

    Example:

    ```py
    >>> from diffusers_repro.concurrency import serialized_per_object
    >>> class Counter:
    ...     value = 0
    ...     @serialized_per_object
    ...     def add(self, n):
    ...         self.value += n
    ...         return self.value
    >>> Counter().add(2)
    2
    ```
    """

    @functools.wraps(method)
    def one_at_a_time(self, *args, **kwargs):
        with _object_lock(self):
            return method(self, *args, **kwargs)

    return one_at_a_time  # type: ignore[return-value]
