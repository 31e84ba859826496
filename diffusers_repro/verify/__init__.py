"""Reproduce and what it shows: `reproduce` as named steps (read, check limits, load, build the call, regenerate,
compare, explain), its outcome, replay limits, batch siblings, the HTML report and heatmaps.

Modules:

- ``replay``: `reproduce`: the steps from a file to a `Reproduction`.
- ``reproduction``: `Reproduction` and the `Difference`s that explain it.
- ``foreign``: another tool's image (A1111, ComfyUI, InvokeAI) regenerated from its recipe with the tool's noise.
- ``limits``: `ReplayLimits`: what a record may ask a machine to do, checked before any model loads.
- ``siblings``: a batch's other files, found again for a whole-batch replay.
- ``report``: the verify report: one self-contained HTML page.
- ``heatmap``: difference heatmaps.
"""

import typing as _typing

from ..lazy import lazy_exports

# public name -> the module of this subpackage that defines it (imported on first use)
EXPORTS = {
    "check_recipe_limits": "foreign",
    "checkpoint_hashes": "foreign",
    "regeneration_blockers": "foreign",
    "reproduce_recipe": "foreign",
    "difference_heatmap": "heatmap",
    "write_heatmap": "heatmap",
    "check_limits": "limits",
    "LimitExceededError": "limits",
    "ReplayLimits": "limits",
    "usable_threads": "limits",
    "DEFAULT_TOLERANCE": "replay",
    "load_pipeline": "replay",
    "reproduce": "replay",
    "ReproductionError": "replay",
    "report_entry": "report",
    "write_report": "report",
    "compare_pixels": "reproduction",
    "record_differences": "reproduction",
    "Reproduction": "reproduction",
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, globals())

if _typing.TYPE_CHECKING:
    from .foreign import check_recipe_limits, checkpoint_hashes, regeneration_blockers, reproduce_recipe  # noqa: F401
    from .heatmap import difference_heatmap, write_heatmap  # noqa: F401
    from .limits import LimitExceededError, ReplayLimits, check_limits, usable_threads  # noqa: F401
    from .replay import DEFAULT_TOLERANCE, ReproductionError, load_pipeline, reproduce  # noqa: F401
    from .report import report_entry, write_report  # noqa: F401
    from .reproduction import Reproduction, compare_pixels, record_differences  # noqa: F401
