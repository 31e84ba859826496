"""What every ``diffusers-repro`` command shares: the one-line usage error, the parser, argument values, loading a
pipeline, reading images, showing text from files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "parse_seeds"]

PROG = "diffusers-repro"
MAX_SEED = 2**64 - 1
DTYPES = ("float32", "float16", "bfloat16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported as one line on stderr, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        # No guessing: argparse would take `--prompts "a fox"` for `--prompts-file 'a fox'`.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    # argparse prints the usage and exits 2 on a bad argument; we keep the exit code and make it one line.
    def error(self, message: str):
        raise UsageError(f"{self.prog.removeprefix(PROG).strip() or 'arguments'}: {message} (see {self.prog} --help)")


# --------------------------------------------------------------------------------------------------------------------
# Argument values


def parse_seeds(text: str) -> list[int]:
    """Parses a seed list such as ``"0-15,42"``: comma-separated seeds and inclusive ranges, no repeats.

    Example:

    ```py
    >>> from diffusers_repro.cli import parse_seeds
    >>> parse_seeds("0-3,42")
    [0, 1, 2, 3, 42]
    ```
    """
    seeds: list[int] = []
    seen: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
        if not match:
            raise UsageError(
                f"--seeds {text!r}: {item!r} is not a seed or a range; expected non-negative integers and ranges "
                "like 0-15,42"
            )
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise UsageError(f"--seeds {text!r}: the range {item!r} ends before it starts; write it as {end}-{start}")
        if end > MAX_SEED:
            raise UsageError(f"--seeds {text!r}: {end} is past the largest seed {MAX_SEED} (2**64 - 1)")
        for seed in range(start, end + 1):
            if seed in seen:
                raise UsageError(f"--seeds {text!r}: the seed {seed} appears more than once")
            seen.add(seed)
            seeds.append(seed)
    return seeds


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``"1 image"``, ``"4 images"``: a count with its noun in the right number."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def seed_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer between 0 and 2**64 - 1, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer between 0 and 2**64 - 1, got {text!r}")
    return value


def rng_argument(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:<multiprocessors>x<max threads per multiprocessor>`` / ``cuda:<GPU>``."""
    from ..generation import parse_rng

    try:
        parse_rng(text)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def tolerance_argument(text: str) -> float:
    """A pixel tolerance in [0, 1] units; ``N/255`` is accepted (``2/255``: two 8-bit steps)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*/\s*255\s*", text)
    try:
        value = float(match.group(1)) / 255 if match else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (or N/255), got {text!r}") from None
    if not 0 <= value <= 1 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (or N/255), got {text!r}")
    return value


# --------------------------------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def command_environment(quiet_libraries: bool = True) -> Iterator[None]:
    """Quiets the libraries' loading bars and notices, and logs our own lines to stderr; all restored afterwards.

    A command line shows its own progress: the libraries' bars would drown it. The settings are put back on exit so
    that ``main()`` called in a Python process (tests, notebooks) leaves that process as it found it. Commands that
    load no model (``inspect``, ``diff``, ``find``, ``keys``) pass ``quiet_libraries=False``: they never import
    diffusers or transformers, and start in a few tenths of a second.
    """
    saved = []
    if quiet_libraries:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        saved = [
            (module, module.get_verbosity(), module.is_progress_bar_enabled())
            for module in (diffusers_logging, transformers_logging)
        ]
    logger = logging.getLogger("diffusers_repro")
    saved_level = logger.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    warnings_filter = warnings.catch_warnings()
    try:
        warnings_filter.__enter__()
        # huggingface_hub's deprecation notices about arguments diffusers passes are no news to a user.
        warnings.filterwarnings("ignore", category=UserWarning, module="huggingface_hub")
        for module, _, _ in saved:
            module.set_verbosity_error()
            module.disable_progress_bar()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        yield
    finally:
        warnings_filter.__exit__(None, None, None)
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        for module, verbosity, progress_bar in saved:
            module.set_verbosity(verbosity)
            if progress_bar:
                module.enable_progress_bar()


def _pipeline_class() -> type:
    from ..pipelines import ReproDiffusionPipeline

    return ReproDiffusionPipeline


def check_device(device: str | None, option: str = "--device") -> str | None:
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {device!r} is not a torch device; expected cpu, cuda, cuda:1, mps, ...") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "xpu": bool(getattr(torch, "xpu", None) and torch.xpu.is_available()),
    }.get(parsed.type, True)
    if not available:
        raise UsageError(f"{option} {device!r}: there is no {parsed.type} device on this machine")
    return device


def scheduler_class(name: str | None) -> type | None:
    if name is None:
        return None
    import diffusers

    cls = getattr(diffusers, name, None)
    if not isinstance(cls, type) or not issubclass(cls, diffusers.SchedulerMixin):
        close = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and n.lower().startswith(name[:3].lower()))
        hint = f"; did you mean {', '.join(close[:5])}?" if close else ""
        raise UsageError(
            f"--scheduler {name!r} is not a diffusers scheduler class; expected a class name such as "
            f"EulerDiscreteScheduler or DPMSolverMultistepScheduler{hint}"
        )
    return cls


def load_model(model: str | None, dtype: str | None = None, option: str = "--model") -> Any:
    import torch

    from ..tiny import tiny_pipeline_path

    source = str(tiny_pipeline_path("sd")) if model is None else model
    # "org/name" is a Hub repo id; anything else with a separator, or starting with ".", "/" or "~", is a folder.
    looks_like_path = (
        source.startswith((".", "/", "~")) or source.count("/") > 1 or (os.sep != "/" and os.sep in source)
    )
    if model is not None and looks_like_path and not os.path.isdir(source):
        raise UsageError(f"{option} {model!r}: no such folder")
    from diffusers.utils import deprecation_utils

    # Newer diffusers take `dtype=` and warn on `torch_dtype=`; older ones know only `torch_dtype=`.
    keyword = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    kwargs = {keyword: getattr(torch, dtype)} if dtype else {}
    try:
        pipe = _pipeline_class().from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"{option} {source!r}: cannot load a diffusers pipeline from it: {message}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """The image files in ``folder`` (and below it when ``recursive``; symbolic links to folders are not followed)."""
    found: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if not name.startswith(".")) if recursive else []
        # Regular files only: opening a named pipe that ends in .png would wait forever.
        found.extend(
            Path(root, name)
            for name in sorted(names)
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") and Path(root, name).is_file()
        )
    return found


def _no_images_error(folder: Path) -> UsageError:
    """The usage error for a folder without images of its own: it says where below it the images are, if anywhere."""
    holders = sorted({path.parent for path in _images_in(folder, recursive=True)})
    if not holders:
        return UsageError(f"{str(folder)!r} is a folder without image files (.png, .jpg, .jpeg, .webp)")
    shown = ", ".join(repr(str(holder)) for holder in holders[:3]) + (" ..." if len(holders) > 3 else "")
    return UsageError(
        f"{str(folder)!r} holds no image files itself; its subfolders do ({shown}): pass -r (--recursive) to "
        "verify every image below it, or name a subfolder"
    )


def image_files(paths: Sequence[Path], recursive: bool = False) -> list[Path]:
    """The image files named by ``paths``: files named explicitly must be images (by their suffix); folders give
    their images (and their subfolders' with ``recursive``)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = _images_in(path, recursive)
            if not found:
                raise _no_images_error(path)
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UsageError(
                    f"{str(path)!r} is not an image file; expected a .png, .jpg, .jpeg or .webp file or a folder"
                )
            files.append(path)
        elif path.exists():
            raise UsageError(f"{str(path)!r} is not a regular file or a folder")
        else:
            raise UsageError(f"{str(path)!r}: no such file or folder")
    return files


def read_image(path: Path, max_bytes: int | None = None) -> Any:
    """The file read once through the reading edge, its record required (`diffusers_repro.files.read_image_file`)."""
    from ..files import read_image_file

    if not path.exists():
        raise UsageError(f"{str(path)!r}: no such file")
    return read_image_file(path, max_bytes=max_bytes)


def _byte_count(text: str) -> int:
    """A positive number of bytes; ``K``, ``M`` and ``G`` suffixes (powers of 1024) are accepted."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?)?\s*", text, flags=re.IGNORECASE)
    if match is None or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of bytes such as 300000000 or 512M, got {text!r}"
        )
    unit = (match.group(2) or " ")[0].upper()
    return int(match.group(1)) << {" ": 0, "K": 10, "M": 20, "G": 30}[unit]


def add_max_file_bytes_argument(parser: argparse.ArgumentParser) -> None:
    from ..files import MAX_FILE_BYTES

    parser.add_argument(
        "--max-file-bytes",
        type=_byte_count,
        default=MAX_FILE_BYTES,
        metavar="BYTES",
        help="largest image file read, checked before reading (default: %(default)s = 256M; K/M/G suffixes work)",
    )


def short_digest(digest: Any) -> str:
    return digest[:19] + "..." if isinstance(digest, str) and len(digest) > 22 else str(digest)


def value_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)


def printable(text: str) -> str:
    """Text from a file, safe for a terminal: control characters (escape sequences, newlines) and invisible format
    characters (bidi overrides U+202A-U+202E and isolates U+2066-U+2069 among them) shown escaped."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
