"""``diffusers-repro verify``: regenerate images from their records and compare the pixels; what a file from anyone
may ask for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .common import (
    DTYPES,
    UsageError,
    add_max_file_bytes_argument,
    check_device,
    count,
    image_files,
    load_model,
    positive_int,
    printable,
    tolerance_argument,
    value_text,
)
from .credentials import add_trust_option

_SHOWN_DIFFERENCES = 6


# --------------------------------------------------------------------------------------------------------------------
# replay safety: files come from anyone


def add_replay_safety_arguments(parser: argparse.ArgumentParser) -> None:
    from_defaults = "(default: %(default)s)"
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load pickled weights (.bin, .ckpt), which can run code while loading; only for trusted files",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=4096 * 4096,
        help=f"largest height x width replayed {from_defaults}",
    )
    parser.add_argument("--max-steps", type=positive_int, default=1000, help=f"most denoising steps {from_defaults}")
    parser.add_argument(
        "--max-batch-images",
        type=positive_int,
        default=64,
        help=f"most images regenerated in one call (a whole batch, or a record's list of prompts) {from_defaults}",
    )
    add_max_file_bytes_argument(parser)
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch a recorded Hub model the local Hugging Face cache does not hold (the Hub then learns who asked "
        "and when); by default only what this machine already has is loaded",
    )


def _replay_limits(args: argparse.Namespace) -> Any:
    from ..verify import ReplayLimits

    return ReplayLimits(
        max_pixels=args.max_pixels,
        max_steps=args.max_steps,
        max_batch_images=args.max_batch_images,
        max_file_bytes=args.max_file_bytes,
    )


def _refusal_types() -> tuple[type[BaseException], ...]:
    from ..files import CredentialsError
    from ..interop import ForeignMetadataError
    from ..records import ProvenanceError
    from ..verify import LimitExceededError, ReproductionError

    # CredentialsError: a manifest that does not parse refuses its own file, not the whole run.
    return (ProvenanceError, ReproductionError, LimitExceededError, CredentialsError, ForeignMetadataError)


def refusal_reason(path: Path, error: BaseException) -> str:
    text = " ".join(str(error).split())
    # Messages about a file start with its name, which the refused line already shows.
    for prefix in (f"provenance record in {path}", str(path)):
        if text.startswith(prefix):
            text = ("provenance record" if prefix != str(path) else "") + text[len(prefix) :]
            break
    return printable(text.lstrip(": ")) or type(error).__name__


def _read_checked(path: Path, limits: Any) -> Any:
    """The file, read once, once its record passed the schema and the limits; else the one-line reason it is refused.

    Everything later (pipeline, replay, credentials, report) works from this one read of the file's bytes.
    """
    from ..files import read_image
    from ..interop import foreign_source, recipe_from_image_file
    from ..verify import check_limits, check_recipe_limits

    try:
        image_file = read_image(path, max_bytes=limits.max_file_bytes)
        if foreign_source(image_file) is not None:
            # Another tool's image: its recipe, checked against the limits before any model loads.
            recipe = recipe_from_image_file(image_file)
            check_recipe_limits(recipe, limits, image_file.image.size)
            return _ForeignFile(image_file, recipe)
        image_file = image_file.require_record()
        record = image_file.provenance
        in_batch = record.batch.get("size", 1) > 1 and not record.batch.get("batch_invariant", False)
        check_limits(record, limits, record.batch.get("size", 1) if in_batch else 1)
    except _refusal_types() as error:
        return refusal_reason(path, error)
    except OSError as error:  # gone or unreadable since the folder was listed
        return printable(f"cannot read it: {error.strerror or error}")
    except Exception as error:  # noqa: BLE001 - a reader's slip on one file from anyone refuses that file, not the run
        if os.environ.get("DIFFUSERS_REPRO_TRACEBACK"):
            traceback.print_exc()
        return printable(f"its metadata could not be read: {type(error).__name__}: {refusal_reason(path, error)}")
    return image_file


class _ForeignFile:
    """Another tool's image, read once, and its recipe."""

    def __init__(self, image_file: Any, recipe: Any):
        self.image_file = image_file
        self.recipe = recipe


class _ForeignModels:
    """The pipeline for other tools' images: ``--model`` for all of them, or each one's model found in ``--models``
    (only the last one loaded is kept)."""

    def __init__(self, args: argparse.Namespace, device: str | None):
        self.args = args
        self.device = device
        self.key: Any = None
        self.pipe: Any = None
        self.checkpoint: Any = None

    def get(self, recipe: Any) -> tuple[Any, Any, str | None]:
        """``(pipe, checkpoint file or None, how it was found)``; raises `ReproductionError` when there is none."""
        from ..verify import ReproductionError
        from .checkpoints import ModelSource, find_model, load_foreign_model

        args = self.args
        if args.models is not None:
            source = find_model(recipe, args.models)
            if source is None:
                model = recipe.model or {}
                raise ReproductionError(
                    f"no model in --models {str(args.models)!r} matches the {recipe.source} recipe's model "
                    f"(name {model.get('name')!r}, hash {model.get('hash')!r})"
                )
        elif args.model is not None:
            path = Path(args.model)
            checkpoint = path.suffix.lower() == ".safetensors" and path.is_file()
            source = ModelSource(path if checkpoint else Path(args.model), checkpoint, "--model")
        else:
            raise ReproductionError(
                f"a {recipe.source} image carries no diffusers-repro record naming a model to load: pass --model (a "
                "diffusers folder, Hub id or .safetensors checkpoint) or --models (a folder of checkpoints)"
            )
        if source.key != self.key:
            self.key = self.pipe = self.checkpoint = None  # let the previous pipeline go first
            if source.checkpoint:
                pipe = load_foreign_model(source, args.model_config)
            else:
                pipe = load_model(args.model if args.models is None else str(source.path))
            self.pipe = pipe.to(self.device) if self.device else pipe
            self.key, self.checkpoint = source.key, (source.path if source.checkpoint else None)
        return self.pipe, self.checkpoint, source.found_by


def _print_refused(args: argparse.Namespace, path: Path, reason: str) -> None:
    if args.json:
        print(json.dumps({"path": str(path), "refused": reason}))
    else:
        print(f"{printable(str(path))}: refused: {reason}")


# --------------------------------------------------------------------------------------------------------------------
# verify


class _PipelineCache:
    """The loaded pipeline for the recorded model source (resolved path or repo and revision, dtype, device), reused
    while images name the same model. Only the last one is kept: records from anyone naming many models (or one
    folder spelled many ways) never pile pipelines up in memory."""

    def __init__(self, model: str | None, device: str | None, allow_pickle: bool = False, download: bool = False):
        self.model = model
        self.device = device
        self.allow_pickle = allow_pickle
        self.download = download
        self.key: Any = None
        self.pipe: Any = None

    def get(self, record: Any) -> Any:
        from ..verify import load_pipeline

        dtype = record.environment.get("dtype")
        key = ("given", self.model, dtype) if self.model is not None else _model_key(record)
        if key != self.key:
            self.key = self.pipe = None  # let the previous pipeline go before the next one loads
            if self.model is not None:
                name = str(dtype).removeprefix("torch.") if dtype else None
                pipe = load_model(self.model, name if name in DTYPES else None)
                pipe = pipe.to(self.device) if self.device else pipe
            else:
                pipe = load_pipeline(record, self.device, allow_pickle=self.allow_pickle, download=self.download)
            self.key, self.pipe = key, pipe
        return self.pipe


def _model_key(record: Any) -> tuple:
    model = record.recipe.get("model") or {}
    path = model.get("path")
    if isinstance(path, str) and path:
        path = os.path.realpath(path)  # "./m", "m/" and "//m" are one folder
    return (
        model.get("type"),
        path,
        model.get("repo_id"),
        model.get("revision"),
        model.get("variant"),
        json.dumps(model.get("lora"), sort_keys=True, default=str),
        record.recipe.get("pipeline_class"),
        record.environment.get("dtype"),
    )


def verify_command(args: argparse.Namespace) -> int:
    import torch

    from ..verify import report_entry, reproduce

    device = check_device(args.device)
    files = image_files(args.paths, recursive=args.recursive)
    limits = _replay_limits(args)
    # Every record is read and checked (schema, limits) before any work; a refused file is reported on its own line
    # and the others go on. Only the records are kept (reproduce reads each file again), so a folder of thousands of
    # images does not fill the memory.
    # Each file is read once, at its turn: checked (schema, limits) before any work on it, then replayed, compared
    # and reported from that one read. A refused file is reported on its own line and the others go on.
    cache = _PipelineCache(args.model, device, allow_pickle=args.allow_pickle, download=args.download)
    report = _report_entries(args.report)
    if args.model is not None and args.models is not None:
        raise UsageError("--model and --models name the model two ways: pass one of them")
    if args.models is not None and not args.models.is_dir():
        raise UsageError(f"--models {str(args.models)!r}: no such folder")
    foreign_models = _ForeignModels(args, device)
    counts = {"bitwise": 0, "close": 0, "different": 0, "refused": 0, "tampered": 0, "unsupported": 0}
    failed = 0
    previous_threads = torch.get_num_threads()
    progress = _VerifyProgress(files)
    try:
        for path in progress:
            image_file = _read_checked(path, limits)
            if isinstance(image_file, str):
                _print_refused(args, path, image_file)
                counts["refused"] += 1
                continue
            if isinstance(image_file, _ForeignFile):
                result = _verify_foreign(args, path, image_file, foreign_models, previous_threads)
                if result is None:
                    counts["refused"] += 1
                    continue
                counts[result.verdict] += 1
                failed += _print_foreign(args, path, result, report)
                continue
            record = image_file.provenance
            # Never more threads than this machine has, whatever the record says.
            threads = args.threads or _usable_threads(record.environment.get("torch_num_threads"), previous_threads)
            torch.set_num_threads(int(threads))
            try:
                result = reproduce(
                    image_file,
                    pipe=cache.get(record),
                    tolerance=args.tolerance if args.tolerance is not None else _default_tolerance(),
                    limits=limits,
                    allow_pickle=args.allow_pickle,
                    trust=args.trust,
                )
            except _refusal_types() as error:
                _print_refused(args, path, refusal_reason(path, error))
                counts["refused"] += 1
                continue
            except Exception as error:  # noqa: BLE001 - a value diffusers itself refuses stops this file, not the run
                if os.environ.get("DIFFUSERS_REPRO_TRACEBACK"):
                    traceback.print_exc()
                failure = f"{type(error).__name__}: {refusal_reason(path, error)}"
                reason = f"the pipeline failed on the record's call: {failure}"
                _print_refused(args, path, reason)
                counts["refused"] += 1
                continue
            counts[result.verdict] += 1
            if report is not None:
                report.append(report_entry(result))
            # A tolerance forgives drift between machines, never a file edited after it was written.
            accepted = result.bitwise_equal or (
                args.tolerance is not None
                and not result.file_edited
                and result.max_abs_diff is not None
                and result.max_abs_diff <= args.tolerance
            )
            failed += not accepted
            if args.json:
                print(json.dumps({**result.to_dict(), "accepted": accepted}, default=str))
                continue
            print(
                f"{printable(str(path))}: {printable(result.summary)}"
                + (" - the file was edited after it was written" if result.file_edited else "")
            )
            if result.credentials is not None and result.verdict != "tampered":
                print(printable(f"    credentials: {result.credentials.summary}"))
                if result.credentials.timestamp:
                    print(printable(f"    time-stamp: {result.credentials.timestamp} (RFC 3161)"))
                if result.credentials.disclosure:
                    print(printable(f"    ai disclosure: {result.credentials.disclosure}"))
            if result.bitwise_equal:
                for field, recorded, current in result.metadata_warnings[:_SHOWN_DIFFERENCES]:
                    # Reproduces, but other tools show something else: a file edited, or carrying another's graph.
                    print(
                        printable(f"    warning: {field}: record {value_text(recorded)}, file {value_text(current)}")
                    )
            if not result.bitwise_equal:
                for field, recorded, current in result.differences[:_SHOWN_DIFFERENCES]:
                    print(printable(f"    {field}: {value_text(recorded)} -> {value_text(current)}"))
                if len(result.differences) > _SHOWN_DIFFERENCES:
                    print(f"    ... and {len(result.differences) - _SHOWN_DIFFERENCES} more differences")
    finally:
        progress.close()
        torch.set_num_threads(previous_threads)
    total = len(files)
    ok = failed == 0 and counts["refused"] == 0 and counts["unsupported"] == 0
    if args.json:
        shown = {key: value for key, value in counts.items() if key != "unsupported" or value}
        failures = failed + counts["refused"] + counts["unsupported"]
        print(json.dumps({"summary": {"images": total, **shown, "failed": failures, "ok": ok}}))
    else:
        print(_summary_line(total, counts, failed, args.tolerance))
    if report is not None:
        write_report_file(report, args.report, quiet=args.json)
    return 0 if ok else 1


def _summary_line(total: int, counts: dict[str, int], not_reproduced: int, tolerance: float | None) -> str:
    """The last line of ``verify``: the verdicts, then the files that do not reproduce apart from those refused."""
    criterion = "bitwise" if tolerance is None else f"within {tolerance:.4g} ({tolerance * 255:g}/255)"
    failures = []
    if not_reproduced:
        verb = "does" if not_reproduced == 1 else "do"
        failures.append(f"{count(not_reproduced, 'image')} {verb} not reproduce {criterion}")
    if counts["refused"]:
        failures.append(f"{counts['refused']} refused (not verified: see the refused lines for why)")
    if counts.get("unsupported"):
        failures.append(
            f"{counts['unsupported']} unsupported (another tool's recipe that diffusers cannot run: see their lines)"
        )
    outcome = "FAILED: " + "; ".join(failures) if failures else "OK"
    tampered = f", {counts['tampered']} TAMPERED" if counts["tampered"] else ""
    refused = f", {counts['refused']} refused" if counts["refused"] else ""
    unsupported = f", {counts['unsupported']} unsupported" if counts.get("unsupported") else ""
    return (
        f"{count(total, 'image')}: {counts['bitwise']} bitwise, {counts['close']} close, {counts['different']} "
        f"different{tampered}{refused}{unsupported}; {outcome}"
    )


def _verify_foreign(
    args: argparse.Namespace, path: Path, foreign: _ForeignFile, models: _ForeignModels, fallback_threads: int
) -> Any:
    """Another tool's image regenerated with its model; `None` when it is refused (the line is printed)."""
    import torch

    from ..verify import regeneration_blockers, reproduce

    tolerance = args.tolerance if args.tolerance is not None else _default_tolerance()
    limits = _replay_limits(args)
    try:
        pipe, checkpoint = None, None
        if not regeneration_blockers(foreign.recipe):
            pipe, checkpoint, _ = models.get(foreign.recipe)
        torch.set_num_threads(int(args.threads or fallback_threads))
        return reproduce(foreign.image_file, pipe=pipe, tolerance=tolerance, limits=limits, checkpoint=checkpoint)
    except _refusal_types() as error:
        _print_refused(args, path, refusal_reason(path, error))
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - a value diffusers itself refuses stops this file, not the run
        if os.environ.get("DIFFUSERS_REPRO_TRACEBACK"):
            traceback.print_exc()
        reason = f"the pipeline failed on the recipe's call: {type(error).__name__}: {refusal_reason(path, error)}"
        _print_refused(args, path, reason)
    return None


def _print_foreign(args: argparse.Namespace, path: Path, result: Any, report: list | None) -> int:
    """Prints another tool's image's verdict and what explains it; 1 when it does not count as reproduced (an
    unsupported one is counted apart)."""
    from ..verify import report_entry

    if report is not None and result.image is not None:
        report.append(report_entry(result))
    accepted = result.bitwise_equal or (
        args.tolerance is not None and result.max_abs_diff is not None and result.max_abs_diff <= args.tolerance
    )
    if args.json:
        print(json.dumps({**result.to_dict(), "accepted": accepted}, default=str))
    else:
        print(f"{printable(str(path))}: {printable(result.summary)}")
        if not result.bitwise_equal:
            shown = result.differences if result.verdict == "unsupported" else result.differences[:_SHOWN_DIFFERENCES]
            for field, recorded, current in shown:
                print(printable(f"    {field}: {value_text(recorded)} -> {value_text(current)}"))
            if len(result.differences) > len(shown):
                print(f"    ... and {len(result.differences) - len(shown)} more differences")
    return 0 if accepted or result.verdict == "unsupported" else 1


def _usable_threads(recorded: Any, fallback: int) -> int:
    from ..verify import usable_threads

    return usable_threads(recorded, fallback)


def _default_tolerance() -> float:
    from ..verify import DEFAULT_TOLERANCE

    return DEFAULT_TOLERANCE


def _report_entries(path: Path | None) -> list | None:
    """A list to collect ``--report`` entries in (`None` without ``--report``); the path is checked before any work."""
    if path is None:
        return None
    if path.is_dir():
        raise UsageError(f"--report {str(path)!r} is a folder; expected an HTML file to write, e.g. report.html")
    if not path.parent.is_dir():
        raise UsageError(f"--report {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    return []


def write_report_file(entries: list, path: Path, quiet: bool) -> None:
    from ..verify import write_report

    write_report(entries, path)
    if not quiet:
        print(f"report: {path}")


class _VerifyProgress:
    """A tqdm bar with ETA over the images of a verify of more than a few, on stderr when it is a terminal.

    While the bar is shown, lines printed on stdout go above it instead of through it.
    """

    SHOWN_ABOVE = 3

    def __init__(self, items: Sequence[Any]):
        from tqdm import tqdm
        from tqdm.contrib import DummyTqdmFile

        quiet = len(items) <= self.SHOWN_ABOVE
        # disable=None: tqdm stays silent when stderr is not a terminal (a log file, a pipe, CI).
        self.bar = tqdm(items, desc="verify", unit="image", dynamic_ncols=True, disable=True if quiet else None)
        self.stdout = None
        if not self.bar.disable:
            self.stdout, sys.stdout = sys.stdout, DummyTqdmFile(sys.stdout)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.bar)

    def close(self) -> None:
        if self.stdout is not None:
            sys.stdout, self.stdout = self.stdout, None
        self.bar.close()


def add_verify_parser(commands: Any) -> None:
    """``diffusers-repro verify``: its options."""
    verify = commands.add_parser(
        "verify",
        help="regenerate images from their embedded records and check the pixels",
        description=(
            "Regenerates each image from its embedded provenance record and compares it with the file. Prints one "
            "verdict per image (bitwise, close, different) and a summary. A file whose record does not fit the schema "
            "or asks for more than the limits allow is refused (FILE: refused: why) and the others go on. Exit 0 "
            "only when every image reproduces bitwise, or within --tolerance when given; 1 otherwise."
        ),
    )
    verify.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files (PNG, JPEG, WebP) or folders of them"
    )
    verify.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="also verify the images in the folders' subfolders, at any depth (default: the folders' own images)",
    )
    verify.add_argument(
        "--tolerance",
        type=tolerance_argument,
        help="accept images whose largest pixel difference is at most this, in [0, 1] units or as N/255",
    )
    verify.add_argument(
        "--model",
        help="load this pipeline instead of the recorded model source (a diffusers folder or Hub id); for other "
        "tools' images (A1111, ComfyUI, InvokeAI) also a single-file .safetensors checkpoint (with --model-config)",
    )
    verify.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="for other tools' images: find each one's model in DIR by A1111's model hash, ComfyUI's ckpt_name or "
        "InvokeAI's hash (checkpoint files), or by name (diffusers folders); links out of DIR are not followed",
    )
    verify.add_argument(
        "--model-config",
        metavar="FOLDER",
        help="a local diffusers folder of the checkpoint's architecture, to load a single-file checkpoint offline "
        "(diffusers' from_single_file config=)",
    )
    verify.add_argument("--device", help="where to regenerate (default: the recorded device when present, else CPU)")
    verify.add_argument(
        "--threads",
        type=positive_int,
        help="torch threads (default: each image's recorded count, which CPU bits depend on)",
    )
    verify.add_argument("--json", action="store_true", help="one JSON object per image, then a summary object")
    add_replay_safety_arguments(verify)
    add_trust_option(verify)
    verify.add_argument(
        "--report",
        type=Path,
        metavar="FILE.html",
        help="also write a self-contained HTML page: each file beside its regeneration, difference heatmaps",
    )
    verify.set_defaults(handler=verify_command, loads_models=True)
