"""A run folder and the processes that fill it: a prompt x seed grid, sharded over processes, resumable.

Modules:

- ``folder``: a run folder: jobs, ``run.json``, the manifest, resume.
- ``distributed``: `generate`: plan the grid, deal the jobs, run them, write the manifest.
"""

import typing as _typing

from ..lazy import lazy_exports

# public name -> the module of this subpackage that defines it (imported on first use)
EXPORTS = {
    "generate": "distributed",
    "SettingsMismatchError": "folder",
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, globals())

if _typing.TYPE_CHECKING:
    from .distributed import generate  # noqa: F401
    from .folder import SettingsMismatchError  # noqa: F401
