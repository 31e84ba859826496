"""The ``diffusers-repro`` command line (also ``python -m diffusers_repro``).

Commands: ``generate`` (a prompt x seed grid, sharded over the processes of ``torchrun`` / ``accelerate launch``,
resumable), ``verify`` (regenerate images from their embedded records and compare the pixels), ``inspect`` (what an
image's record says), ``env`` (this machine's environment fingerprint), ``diff`` (where two images' records differ)
and ``demo`` (generate, generate again, compare, verify: the main job in one command).

Exit codes: 0 success; 1 failure (an image that does not reproduce, ``diff`` of two different records, an unexpected
error); 2 user error (bad argument, missing or unreadable file, changed settings in an output folder), reported as one
line on stderr: ``diffusers-repro: error: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .cli_credentials import add_credentials_commands, add_signing_options, add_trust_option, signing_from_args

__all__ = ["UsageError", "build_parser", "environment_report", "main", "parse_seeds"]

PROG = "diffusers-repro"
MAX_SEED = 2**64 - 1
_DTYPES = ("float32", "float16", "bfloat16")
_DEMO_PROMPTS = ("a red fox in fresh snow", "a lighthouse at dusk")
_DEMO_SEEDS = (0, 1)
_SHOWN_DIFFERENCES = 6
_RAW_CHUNK_CHARS = 2000
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported as one line on stderr, exit code 2."""


class _ArgumentParser(argparse.ArgumentParser):
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer between 0 and 2**64 - 1, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer between 0 and 2**64 - 1, got {text!r}")
    return value


def _rng(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:<multiprocessors>x<max threads per multiprocessor>`` / ``cuda:<GPU>``."""
    from .cuda_noise import parse_rng

    try:
        parse_rng(text)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _tolerance(text: str) -> float:
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
# Parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``diffusers-repro``, with one subcommand per job."""
    parser = _ArgumentParser(
        prog=PROG,
        description="Reproducible diffusers generation: same seed, same pixels; every image carries its recipe.",
        epilog="Exit codes: 0 success, 1 failure (an image does not reproduce), 2 user error.",
    )
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of unexpected errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)

    generate = commands.add_parser(
        "generate",
        help="generate a prompt x seed grid into a folder (sharded under torchrun / accelerate launch, resumable)",
        description=(
            "Generates every prompt with every seed (job order: for each prompt, for each seed) into --out: one PNG "
            "per job with its provenance record, manifest.jsonl (one line per job, in job order) and run.json (the "
            "settings). Runs unchanged under `torchrun --nproc_per_node N -m diffusers_repro generate ...` and "
            "`accelerate launch -m diffusers_repro generate ...`: micro-batches are spread over the processes, and "
            "every image is bitwise the same at any process count. Rerunning the same command resumes."
        ),
    )
    generate.add_argument(
        "--model", help="pipeline folder or Hub repo id (default: the embedded tiny Stable Diffusion pipeline)"
    )
    prompts = generate.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", action="append", help="a prompt; repeat for several")
    prompts.add_argument("--prompts-file", type=Path, help="a UTF-8 text file with one prompt per line")
    generate.add_argument("--negative-prompt", help="one negative prompt for every image")
    seeds = generate.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=_seed, help="first seed: seeds N .. N+num_images-1 (default: 0)")
    seeds.add_argument("--seeds", help="seed list with inclusive ranges, e.g. 0-15,42")
    generate.add_argument(
        "--num-images", type=_positive_int, help="images per prompt with --seed (default: 1)", metavar="K"
    )
    generate.add_argument("--steps", type=_positive_int, help="denoising steps (default: the pipeline's)")
    generate.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the pipeline's)")
    generate.add_argument("--height", type=_positive_int, help="image height in pixels (default: the model's)")
    generate.add_argument("--width", type=_positive_int, help="image width in pixels (default: the model's)")
    generate.add_argument("--scheduler", help="a diffusers scheduler class name, e.g. EulerDiscreteScheduler")
    generate.add_argument("--dtype", choices=_DTYPES, help="weights dtype (default: as saved)")
    generate.add_argument("--device", help="cpu, cuda, mps, ... (default: each process's accelerator, else the CPU)")
    generate.add_argument("--deterministic", action="store_true", help="run inside full_determinism()")
    generate.add_argument(
        "--rng",
        type=_rng,
        help="noise generators: cpu (default); cuda: what torch.Generator('cuda') draws, on any device (emulated off "
        "a GPU); cuda:108x2048 or cuda:A100 names the GPU geometry (multiprocessors x max threads per "
        "multiprocessor) that lays out large draws",
    )
    generate.add_argument(
        "--batch-invariant",
        action="store_true",
        help="evaluate the models one image at a time: every image independent of --batch-size",
    )
    generate.add_argument("--batch-size", type=_positive_int, default=1, help="images per pipeline call (default: 1)")
    generate.add_argument(
        "--threads",
        type=_positive_int,
        help="torch threads of every process (default: the main process's current count); CPU bits depend on it",
    )
    generate.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    generate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --out (without it, other settings are refused and the same ones resume)",
    )
    generate.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_signing_options(generate)
    generate.set_defaults(handler=_generate)

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
        "--tolerance",
        type=_tolerance,
        help="accept images whose largest pixel difference is at most this, in [0, 1] units or as N/255",
    )
    verify.add_argument("--model", help="load this pipeline instead of the recorded model source")
    verify.add_argument("--device", help="where to regenerate (default: the recorded device when present, else CPU)")
    verify.add_argument(
        "--threads",
        type=_positive_int,
        help="torch threads (default: each image's recorded count, which CPU bits depend on)",
    )
    verify.add_argument("--json", action="store_true", help="one JSON object per image, then a summary object")
    _add_replay_safety_arguments(verify)
    add_trust_option(verify)
    verify.add_argument(
        "--report",
        type=Path,
        metavar="FILE.html",
        help="also write a self-contained HTML page: each file beside its regeneration, difference heatmaps",
    )
    verify.set_defaults(handler=_verify)

    inspect_ = commands.add_parser(
        "inspect",
        help="show how an image was made",
        description="Shows the provenance record embedded in an image: prompt, seed, model, settings, environment.",
    )
    inspect_.add_argument(
        "path", type=Path, metavar="PATH", help="an image (PNG, JPEG, WebP) written by diffusers-repro"
    )
    inspect_.add_argument("--json", action="store_true", help="print the full record as JSON")
    add_trust_option(inspect_)
    inspect_.set_defaults(handler=_inspect)

    env = commands.add_parser(
        "env",
        help="this machine's environment fingerprint and whether full determinism is possible",
        description=(
            "Prints the environment that decides whether bits reproduce (device, versions, threads, determinism "
            "settings) and whether full determinism can be switched on here."
        ),
    )
    env.add_argument("--device", help="the device to describe (default: cpu)")
    env.add_argument("--json", action="store_true", help="print JSON")
    env.set_defaults(handler=_env)

    diff = commands.add_parser(
        "diff",
        help="the fields in which two images' records differ",
        description="Lists the fields in which two images' records differ. Exit 0 when they are equal, 1 otherwise.",
    )
    diff.add_argument("a", type=Path, metavar="A", help="a PNG written by diffusers-repro")
    diff.add_argument("b", type=Path, metavar="B", help="another one")
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.add_argument(
        "--heatmap",
        type=Path,
        metavar="OUT.png",
        help="also write the picture of the pixel differences (the images' size, with a scale below)",
    )
    diff.set_defaults(handler=_diff)

    demo = commands.add_parser(
        "demo",
        help="generate with the embedded tiny model twice, show the bits are identical, verify the images",
        description=(
            f"Generates {len(_DEMO_PROMPTS)} prompts x {len(_DEMO_SEEDS)} seeds with the embedded tiny Stable "
            "Diffusion model (built on first use, no download), generates them again, shows that both runs are "
            "bitwise identical, saves the images with their provenance and verifies them."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: outputs/demo)")
    demo.add_argument("--steps", type=_positive_int, default=10, help="denoising steps (default: 10)")
    demo.add_argument(
        "--threads", type=_positive_int, default=1, help="torch threads, pinned for both runs (default: 1)"
    )
    demo.set_defaults(handler=_demo)
    add_credentials_commands(commands, _ArgumentParser)
    return parser


# --------------------------------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def _command_environment() -> Iterator[None]:
    """Quiets the libraries' loading bars and notices, and logs our own lines to stderr; all restored afterwards.

    A command line shows its own progress: the libraries' bars would drown it. The settings are put back on exit so
    that ``main()`` called in a Python process (tests, notebooks) leaves that process as it found it.
    """
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
    if importlib.util.find_spec(f"{__package__}.factory") is not None:
        from .factory import ReproDiffusionPipeline

        return ReproDiffusionPipeline
    from .pipelines import ReproStableDiffusionPipeline

    return ReproStableDiffusionPipeline


def _check_device(device: str | None, option: str = "--device") -> str | None:
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


def _scheduler_class(name: str | None) -> type | None:
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


def _load_pipeline(model: str | None, dtype: str | None = None, option: str = "--model") -> Any:
    import torch

    from .tiny import tiny_pipeline_path

    source = str(tiny_pipeline_path("sd")) if model is None else model
    # "org/name" is a Hub repo id; anything else with a separator, or starting with ".", "/" or "~", is a folder.
    looks_like_path = (
        source.startswith((".", "/", "~")) or source.count("/") > 1 or (os.sep != "/" and os.sep in source)
    )
    if model is not None and looks_like_path and not os.path.isdir(source):
        raise UsageError(f"{option} {model!r}: no such folder")
    kwargs = {"torch_dtype": getattr(torch, dtype)} if dtype else {}
    try:
        pipe = _pipeline_class().from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"{option} {source!r}: cannot load a diffusers pipeline from it: {message}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _read_prompts(args: argparse.Namespace) -> list[str] | None:
    if args.prompts_file is not None:
        try:
            text = args.prompts_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"--prompts-file {str(args.prompts_file)!r}: no such file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--prompts-file {str(args.prompts_file)!r}: cannot read it: {error}") from None
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise UsageError(f"--prompts-file {str(args.prompts_file)!r} holds no prompt (one per line expected)")
        return prompts
    return args.prompt


def _seeds(args: argparse.Namespace) -> list[int]:
    if args.seeds is not None:
        if args.num_images is not None:
            raise UsageError("--num-images goes with --seed N (seeds N..N+K-1); with --seeds the list says it all")
        return parse_seeds(args.seeds)
    first = 0 if args.seed is None else args.seed
    count = 1 if args.num_images is None else args.num_images
    if first + count - 1 > MAX_SEED:
        raise UsageError(f"--seed {first} with --num-images {count} goes past the largest seed {MAX_SEED}")
    return list(range(first, first + count))


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _image_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            # Regular files only: opening a named pipe that ends in .png would wait forever.
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
            if not found:
                raise UsageError(f"{str(path)!r} is a folder without image files (.png, .jpg, .jpeg, .webp)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise UsageError(f"{str(path)!r} is not a regular file or a folder")
        else:
            raise UsageError(f"{str(path)!r}: no such file or folder")
    return files


def _read_image(path: Path) -> Any:
    from .files import read_image_file

    if not path.exists():
        raise UsageError(f"{str(path)!r}: no such file")
    return read_image_file(path)


def _short_digest(digest: Any) -> str:
    return digest[:19] + "..." if isinstance(digest, str) and len(digest) > 22 else str(digest)


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)


# --------------------------------------------------------------------------------------------------------------------
# generate


def _generate(args: argparse.Namespace) -> int:
    sign = signing_from_args(args)
    prompts = _read_prompts(args)
    seeds = _seeds(args)
    scheduler = _scheduler_class(args.scheduler)
    device = _check_device(args.device)
    pipe = _load_pipeline(args.model, args.dtype)
    if scheduler is not None:
        pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    import inspect

    takes_prompt = "prompt" in inspect.signature(type(pipe).__call__).parameters
    if takes_prompt and not prompts:
        raise UsageError("generate: give at least one --prompt or a --prompts-file")
    if not takes_prompt and prompts:
        raise UsageError(f"generate: the model's {type(pipe).__name__} takes no prompt; leave out --prompt")
    call_kwargs = {
        name: value
        for name, value in (
            ("num_inference_steps", args.steps),
            ("guidance_scale", args.guidance),
            ("height", args.height),
            ("width", args.width),
            # rng="cpu" is the default call: left out, so runs made before --rng existed resume unchanged.
            ("rng", None if args.rng == "cpu" else args.rng),
        )
        if value is not None
    }
    from .distributed import generate

    try:
        result = generate(
            pipe,
            prompts if takes_prompt else None,
            seeds,
            args.out,
            batch_size=args.batch_size,
            negative_prompt=args.negative_prompt,
            overwrite=args.overwrite,
            batch_invariant=args.batch_invariant,
            deterministic=args.deterministic,
            threads=args.threads,
            device=device,
            progress=not args.no_progress,
            format=args.format,
            quality=args.quality,
            sign=sign,
            **call_kwargs,
        )
    finally:
        import torch.distributed

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if _is_main_process():
        print(
            f"{result.num_jobs} images in {result.out_dir} ({result.generated} generated, {result.skipped} already "
            f"there) by {result.num_processes} process(es) with {result.torch_num_threads} torch thread(s) each; "
            f"manifest: {result.manifest_path}"
        )
    return 0


# --------------------------------------------------------------------------------------------------------------------
# replay safety: files come from anyone


def _add_replay_safety_arguments(parser: argparse.ArgumentParser) -> None:
    from_defaults = "(default: %(default)s)"
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load pickled weights (.bin, .ckpt), which can run code while loading; only for trusted files",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=4096 * 4096,
        help=f"largest height x width replayed {from_defaults}",
    )
    parser.add_argument("--max-steps", type=_positive_int, default=1000, help=f"most denoising steps {from_defaults}")
    parser.add_argument(
        "--max-batch-images",
        type=_positive_int,
        default=64,
        help=f"most images regenerated together for a whole-batch replay {from_defaults}",
    )


def _replay_limits(args: argparse.Namespace) -> Any:
    from .limits import ReplayLimits

    return ReplayLimits(max_pixels=args.max_pixels, max_steps=args.max_steps, max_batch_images=args.max_batch_images)


def _refusal_types() -> tuple[type[BaseException], ...]:
    from .identity import CredentialsError
    from .limits import LimitExceededError
    from .provenance import ProvenanceError
    from .replay import ReproductionError

    # CredentialsError: a manifest that does not parse refuses its own file, not the whole run.
    return (ProvenanceError, ReproductionError, LimitExceededError, CredentialsError)


def _reason(path: Path, error: BaseException) -> str:
    text = " ".join(str(error).split())
    # Messages about a file start with its name, which the refused line already shows.
    for prefix in (f"provenance record in {path}", str(path)):
        if text.startswith(prefix):
            text = ("provenance record" if prefix != str(path) else "") + text[len(prefix) :]
            break
    return _printable(text.lstrip(": ")) or type(error).__name__


def _checked_record(path: Path, limits: Any) -> Any:
    """The file's record once it passed the schema and the limits, else the one-line reason it is refused."""
    from .limits import check_limits

    try:
        record = _read_image(path).provenance
        in_batch = record.batch.get("size", 1) > 1 and not record.batch.get("batch_invariant", False)
        check_limits(record, limits, record.batch.get("size", 1) if in_batch else 1)
    except _refusal_types() as error:
        return _reason(path, error)
    return record


def _print_refused(args: argparse.Namespace, path: Path, reason: str) -> None:
    if args.json:
        print(json.dumps({"path": str(path), "refused": reason}))
    else:
        print(f"{_printable(str(path))}: refused: {reason}")


def _printable(text: str) -> str:
    """Text from a file, safe for a terminal: control characters (escape sequences, newlines) shown escaped."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


# --------------------------------------------------------------------------------------------------------------------
# verify


class _PipelineCache:
    """One loaded pipeline per recorded model source (and dtype, device), reused for every image that names it."""

    def __init__(self, model: str | None, device: str | None, allow_pickle: bool = False):
        self.model = model
        self.device = device
        self.allow_pickle = allow_pickle
        self.pipes: dict[Any, Any] = {}

    def get(self, record: Any) -> Any:
        from .replay import load_pipeline

        model = record.recipe.get("model") or {}
        dtype = record.environment.get("dtype")
        if self.model is not None:
            key = ("given", self.model, dtype)
        else:
            key = (
                model.get("type"),
                model.get("path"),
                model.get("repo_id"),
                model.get("revision"),
                model.get("variant"),
                record.recipe.get("pipeline_class"),
                dtype,
            )
        if key not in self.pipes:
            if self.model is not None:
                name = str(dtype).removeprefix("torch.") if dtype else None
                pipe = _load_pipeline(self.model, name if name in _DTYPES else None)
                self.pipes[key] = pipe.to(self.device) if self.device else pipe
            else:
                self.pipes[key] = load_pipeline(record, self.device, allow_pickle=self.allow_pickle)
        return self.pipes[key]


def _verify(args: argparse.Namespace) -> int:
    import torch

    from .replay import reproduce

    device = _check_device(args.device)
    files = _image_files(args.paths)
    limits = _replay_limits(args)
    # Every record is read and checked (schema, limits) before any work; a refused file is reported on its own line
    # and the others go on. Only the records are kept (reproduce reads each file again), so a folder of thousands of
    # images does not fill the memory.
    entries = [(path, _checked_record(path, limits)) for path in files]
    cache = _PipelineCache(args.model, device, allow_pickle=args.allow_pickle)
    report = _report_entries(args.report)
    counts = {"bitwise": 0, "close": 0, "different": 0, "refused": 0, "tampered": 0}
    failed = 0
    previous_threads = torch.get_num_threads()
    progress = _VerifyProgress(entries)
    try:
        for path, record in progress:
            if isinstance(record, str):
                _print_refused(args, path, record)
                counts["refused"] += 1
                continue
            # Never more threads than this machine has, whatever the record says.
            threads = args.threads or _usable_threads(record.environment.get("torch_num_threads"), previous_threads)
            torch.set_num_threads(int(threads))
            try:
                result = reproduce(
                    path,
                    pipe=cache.get(record),
                    tolerance=args.tolerance if args.tolerance is not None else _default_tolerance(),
                    limits=limits,
                    allow_pickle=args.allow_pickle,
                    trust=args.trust,
                )
            except _refusal_types() as error:
                _print_refused(args, path, _reason(path, error))
                counts["refused"] += 1
                continue
            except Exception as error:  # noqa: BLE001 - a value diffusers itself refuses stops this file, not the run
                if os.environ.get("DIFFUSERS_REPRO_TRACEBACK"):
                    traceback.print_exc()
                reason = f"the pipeline failed on the record's call: {type(error).__name__}: {_reason(path, error)}"
                _print_refused(args, path, reason)
                counts["refused"] += 1
                continue
            counts[result.verdict] += 1
            if report is not None:
                report.append(_report_entry(result))
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
                f"{_printable(str(path))}: {result.summary}"
                + (" - the file was edited after it was written" if result.file_edited else "")
            )
            if result.credentials is not None and result.verdict != "tampered":
                print(f"    credentials: {result.credentials.summary}")
            if not result.bitwise_equal:
                for field, recorded, current in result.differences[:_SHOWN_DIFFERENCES]:
                    print(_printable(f"    {field}: {_value(recorded)} -> {_value(current)}"))
                if len(result.differences) > _SHOWN_DIFFERENCES:
                    print(f"    ... and {len(result.differences) - _SHOWN_DIFFERENCES} more differences")
    finally:
        progress.close()
        torch.set_num_threads(previous_threads)
    total = len(entries)
    failed += counts["refused"]
    ok = failed == 0
    if args.json:
        print(json.dumps({"summary": {"images": total, **counts, "failed": failed, "ok": ok}}))
    else:
        criterion = (
            "bitwise" if args.tolerance is None else f"within {args.tolerance:.4g} ({args.tolerance * 255:g}/255)"
        )
        outcome = "OK" if ok else f"FAILED: {failed} image(s) do not reproduce {criterion}"
        refused = f", {counts['refused']} refused" if counts["refused"] else ""
        print(
            f"{total} image(s): {counts['bitwise']} bitwise, {counts['close']} close, {counts['different']} "
            f"different" + (f", {counts['tampered']} TAMPERED" if counts["tampered"] else "") + f"{refused}; {outcome}"
        )
    if report is not None:
        _write_report(report, args.report, quiet=args.json)
    return 0 if ok else 1


def _usable_threads(recorded: Any, fallback: int) -> int:
    from .limits import usable_threads

    return usable_threads(recorded, fallback)


def _default_tolerance() -> float:
    from .replay import DEFAULT_TOLERANCE

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


def _report_entry(result: Any) -> Any:
    from .report import report_entry

    return report_entry(result)


def _write_report(entries: list, path: Path, quiet: bool) -> None:
    from .report import write_report

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


# --------------------------------------------------------------------------------------------------------------------
# inspect


def _inspect_lines(image_file: Any) -> list[str]:
    from .cuda_noise import describe_rng

    record = image_file.provenance
    call, recipe, env, batch = record.call_arguments, record.recipe, record.environment, record.batch
    model = recipe.get("model") or {}
    scheduler = recipe.get("scheduler") or {}
    versions = env.get("versions") or {}
    width, height = image_file.image.size
    if model.get("type") == "hub":
        source = f"{model.get('repo_id')} (Hub, revision {model.get('revision')})"
    else:
        source = f"{model.get('path') or model.get('name_or_path')} ({model.get('type')})"
    weights = ", ".join(
        f"{name} {_short_digest(item.get('weights_digest'))}" for name, item in (model.get("components") or {}).items()
    )
    determinism = env.get("determinism") or {}
    cuda_noise = describe_rng(recipe)
    pixels = {
        True: "intact (they match the digest written with them)",
        False: "CHANGED since the file was written",
        None: "no pixel digest stored in the file",
    }[image_file.pixels_intact]
    if image_file.format != "png":
        pixels = (
            f"lossy {image_file.format}: the encoded image is digested; the Content Credentials vouch for the file"
        )
    lines = [
        f"file:            {image_file.path}",
        f"prompt:          {call.get('prompt')!r}" if "prompt" in call else None,
        f"negative prompt: {call.get('negative_prompt')!r}" if call.get("negative_prompt") else None,
        f"seed:            {record.seed} (from {record.seed_source})",
        f"noise rng:       {cuda_noise}" if cuda_noise else None,
        f"pipeline:        {recipe.get('pipeline_class')}",
        f"model:           {source}",
        f"weights:         {weights}",
        f"scheduler:       {scheduler.get('class')}",
        f"steps:           {call.get('num_inference_steps')}",
        f"guidance:        {call.get('guidance_scale')}" if "guidance_scale" in call else None,
        f"size:            {width}x{height}",
        f"batch:           image {batch.get('index')} of {batch.get('size')} (seeds {batch.get('seeds')}); "
        f"batch-invariant: {'yes' if batch.get('batch_invariant') else 'no'}",
        f"device:          {env.get('device')} ({env.get('device_name')}), dtype {env.get('dtype')}, "
        f"{env.get('torch_num_threads')} torch thread(s)",
        f"determinism:     {'full' if determinism.get('full_determinism') else 'not full'}",
        "versions:        " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"output digest:   {record.result.get('output_digest')}",
        f"noise digest:    {record.result.get('noise_digest')}",
        f"pixels:          {pixels}",
    ]
    return [_printable(line) for line in lines if line is not None]


def _inspect(args: argparse.Namespace) -> int:
    from .credentials import file_credentials
    from .exif import read_xmp_properties, sniff_format
    from .files import PROVENANCE_KEY, read_text_chunks
    from .provenance import ProvenanceError

    try:
        image_file = _read_image(args.path)
    except ProvenanceError as error:
        lossy = sniff_format(args.path) is not None
        read_raw = read_xmp_properties if lossy else read_text_chunks
        chunks = read_raw(args.path) if args.path.exists() else {}
        if ("record" if lossy else PROVENANCE_KEY) not in chunks:
            raise  # not an image, or no record: nothing to show
        # A record that does not fit the schema is shown as text, escaped and cut short; nothing in it is used.
        print(f"file:            {_printable(str(args.path))}")
        print(f"refused:         {_reason(args.path, error)}")
        for key, text in chunks.items():
            shown = text if len(text) <= _RAW_CHUNK_CHARS else text[:_RAW_CHUNK_CHARS] + f"... ({len(text)} chars)"
            print(f"{'xmp' if lossy else 'chunk'} {_printable(key)!r}: {_printable(shown)}")
        return 1
    credentials = file_credentials(image_file, args.trust)
    if args.json:
        print(image_file.provenance.to_json(indent=2))
    else:
        print("\n".join(_inspect_lines(image_file)))
        print(f"credentials:     {credentials.summary}")
        if credentials.generator:
            # The signer's own text: anyone's, so shown escaped like the record's.
            print(_printable(f"made by:         {credentials.generator} (c2pa.created, trainedAlgorithmicMedia)"))
    # A file changed after it was signed is not what it says it is.
    return 1 if credentials.state == "tampered" else 0


# --------------------------------------------------------------------------------------------------------------------
# env


def environment_report(device: str | None = None) -> dict[str, Any]:
    """The environment fingerprint of ``device`` plus whether full determinism can be switched on here.

    Example:

    ```py
    >>> from diffusers_repro.cli import environment_report
    >>> environment_report()["environment"]["device"]
    'cpu'
    ```
    """
    import torch

    from .determinism import determinism_status, full_determinism
    from .provenance import environment_fingerprint

    device_ = torch.device(device or "cpu")
    notes = []
    try:
        with full_determinism():
            possible = bool(determinism_status()["full_determinism"])
    except Exception as error:  # noqa: BLE001 - any failure means "not possible here", with the reason
        possible = False
        notes.append(f"full_determinism() failed: {error}")
    if device_.type == "cpu":
        notes.append(
            f"CPU results are bitwise the same run to run for a fixed torch thread count (now "
            f"{torch.get_num_threads()}); pin it with --threads"
        )
    if device_.type == "cuda" and torch.cuda.is_initialized() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        possible = False
        notes.append("CUDA was initialized before CUBLAS_WORKSPACE_CONFIG was set: cuBLAS may not be deterministic")
    notes.append("batched images match one-at-a-time generation bitwise only with --batch-invariant")
    accelerators = {"cuda": torch.cuda.is_available(), "cuda_device_count": torch.cuda.device_count()}
    mps = getattr(torch.backends, "mps", None)
    accelerators["mps"] = bool(mps and mps.is_available())
    return {
        "environment": environment_fingerprint(device_),
        "full_determinism_possible": possible,
        "accelerators": accelerators,
        "notes": notes,
    }


def _env(args: argparse.Namespace) -> int:
    device = _check_device(args.device)
    report = environment_report(device)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    env = report["environment"]
    versions = env.get("versions") or {}
    accelerators = report["accelerators"]
    lines = [
        f"device:            {env['device']} ({env['device_name']})",
        f"accelerators:      cuda {'yes' if accelerators['cuda'] else 'no'} ({accelerators['cuda_device_count']} "
        f"device(s)), mps {'yes' if accelerators['mps'] else 'no'}",
        f"torch threads:     {env['torch_num_threads']}",
        f"platform:          {env['platform']}",
        "versions:          " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"determinism now:   {'full' if env['determinism']['full_determinism'] else 'not full'}",
        f"full determinism:  {'possible here' if report['full_determinism_possible'] else 'NOT possible here'} "
        "(generate --deterministic)",
    ]
    lines += [f"note:              {note}" for note in report["notes"]]
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------------------------------------------------
# diff


def _diff(args: argparse.Namespace) -> int:
    from .replay import record_differences

    a, b = _read_image(args.a), _read_image(args.b)
    differences = record_differences(a.provenance, b.provenance)
    heatmap = _heatmap(args, a, b) if args.heatmap is not None else None
    if args.json:
        print(json.dumps([difference._asdict() for difference in differences], indent=2, default=str))
    elif not differences:
        print(f"the records of {args.a} and {args.b} are identical")
    else:
        print(f"{len(differences)} field(s) differ between {args.a} and {args.b}:")
        for field, left, right in differences:
            print(_printable(f"  {field}: {_value(left)} -> {_value(right)}"))
    if heatmap is not None and not args.json:
        pixels = (
            f"max diff {heatmap.max_diff}/255, {heatmap.changed_pixels} of {heatmap.total_pixels} pixels differ"
            if heatmap.max_diff
            else "the pixels are identical"
        )
        print(f"heatmap: {args.heatmap} ({pixels})")
    return 0 if not differences else 1


def _heatmap(args: argparse.Namespace, a: Any, b: Any) -> Any:
    """Writes ``diff --heatmap``: the pixel differences of the two files, with a scale."""
    from .heatmap import write_heatmap

    path = args.heatmap
    if path.suffix.lower() != ".png":
        raise UsageError(f"--heatmap {str(path)!r}: expected a .png file (a lossy format would blur the differences)")
    if not path.parent.is_dir():
        raise UsageError(f"--heatmap {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    if a.image.size != b.image.size:
        (aw, ah), (bw, bh) = a.image.size, b.image.size
        raise UsageError(
            f"--heatmap: the images differ in size ({args.a} is {aw}x{ah}, {args.b} is {bw}x{bh}); a heatmap needs "
            "two images of one size"
        )
    return write_heatmap(a.image, b.image, path)


# --------------------------------------------------------------------------------------------------------------------
# demo


def _demo(args: argparse.Namespace) -> int:
    import time

    import torch

    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    # CPU bits depend on the thread count: both runs and the verification use the same, pinned one.
    torch.set_num_threads(args.threads)
    try:
        return _run_demo(args, started)
    finally:
        torch.set_num_threads(previous_threads)


def _run_demo(args: argparse.Namespace, started: float) -> int:
    import time

    from .distributed import generate
    from .files import read_image_file
    from .replay import reproduce
    from .tiny import tiny_pipeline_path

    model = tiny_pipeline_path("sd")
    print(f"diffusers-repro demo: the embedded tiny Stable Diffusion model in {model} (built in code, no download)")
    pipe = _load_pipeline(str(model))
    prompts, seeds = list(_DEMO_PROMPTS), list(_DEMO_SEEDS)
    runs = [args.out / "run-1", args.out / "run-2"]
    results = []
    for number, folder in enumerate(runs, start=1):
        again = " again" if number > 1 else ""
        print(
            f"{number}. generate{again} {len(prompts)} prompts x {len(seeds)} seeds ({args.steps} steps) -> {folder}"
        )
        results.append(
            generate(
                pipe,
                prompts,
                seeds,
                folder,
                overwrite=True,
                progress=False,
                threads=args.threads,
                num_inference_steps=args.steps,
            )
        )
    print("3. compare the two runs, image by image (pixel digests read back from the files):")
    print(f"   {'file':<22} {'prompt':<26} {'run 1':<24} {'run 2':<24} same")
    identical = 0
    for first, second in zip(results[0].paths, results[1].paths, strict=True):
        a, b = read_image_file(first), read_image_file(second)
        same = a.pixel_digest == b.pixel_digest
        identical += same
        prompt = a.provenance.call_arguments.get("prompt")
        print(
            f"   {first.name:<22} {prompt:<26.26} {_short_digest(a.pixel_digest):<24} "
            f"{_short_digest(b.pixel_digest):<24} {'yes' if same else 'NO'}"
        )
    total = len(results[0].paths)
    print(f"   {identical}/{total} images bitwise identical across the two runs")
    print(f"4. verify {runs[0]}: regenerate every image from the record embedded in its PNG")
    bitwise = 0
    report = []
    for path in results[0].paths:
        result = reproduce(path, pipe=pipe)
        bitwise += result.bitwise_equal
        report.append(_report_entry(result))
        print(f"   {path.name}: {result.summary}")
    print(f"   {bitwise}/{total} images reproduce bitwise")
    signed = _demo_inspect(results[0].paths[0])
    _write_report(report, args.out / "report.html", quiet=True)
    print(f"   the report, each file beside its regeneration: {args.out / 'report.html'}")
    ok = identical == total and bitwise == total and signed
    print(
        f"{'OK' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s. Next: "
        f"`{PROG} inspect {results[0].paths[0]}`, `{PROG} verify {runs[0]}`, "
        f"`{PROG} diff {results[0].paths[0]} {results[0].paths[1]}`, "
        f"`{PROG} verify {runs[0]} --report report.html`"
    )
    return 0 if ok else 1


def _demo_inspect(path: Path) -> bool:
    from .credentials import file_credentials
    from .files import read_image_file

    print(f"5. inspect {path}: its record and its Content Credentials (signed C2PA manifest)")
    image_file = read_image_file(path)
    credentials = file_credentials(image_file)
    for line in _inspect_lines(image_file):
        print(f"   {line}")
    print(f"   credentials:     {credentials.summary}")
    print(f"   made by:         {credentials.generator} (c2pa.created, trainedAlgorithmicMedia)")
    return credentials.intact


# --------------------------------------------------------------------------------------------------------------------
# main


def _user_error_types() -> tuple[type[BaseException], ...]:
    from .provenance import ProvenanceError

    # Our own errors for bad input are ValueErrors (STYLE.md): changed settings in an output folder, a record that
    # cannot be replayed, an unreadable image. OSErrors about the user's paths are user errors too.
    return (
        UsageError,
        ProvenanceError,
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``diffusers-repro`` with ``argv`` (default: ``sys.argv[1:]``) and returns the exit code.

    Example:

    ```py
    >>> from diffusers_repro.cli import main
    >>> main(["inspect", "outputs/demo/run-1/job000000-seed0.png"])  # doctest: +SKIP
    0
    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # --traceback is accepted anywhere on the line, before or after the command.
    show_traceback = "--traceback" in argv or bool(os.environ.get("DIFFUSERS_REPRO_TRACEBACK"))
    argv = [arg for arg in argv if arg != "--traceback"]
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(
                "a command is required: generate, verify, inspect, env, diff, demo, keys or find (see diffusers-repro "
                "--help)"
            )
        with _command_environment():
            return args.handler(args)
    except SystemExit as exit_:
        # --help (0) and argparse's own exits.
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except _user_error_types() as error:
        if show_traceback:
            traceback.print_exc()
        if _is_main_process() or os.environ.get("WORLD_SIZE", "1") == "1":
            message = " ".join(str(error).split()) or type(error).__name__
            print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - the command line reports every failure as one line and exit code 1
        if show_traceback:
            traceback.print_exc()
        where = f" [process {os.environ['RANK']}]" if os.environ.get("WORLD_SIZE", "1") != "1" else ""
        message = " ".join(str(error).split())
        print(
            f"{PROG}: error{where}: {type(error).__name__}: {message} (run with --traceback for details)",
            file=sys.stderr,
        )
        return 1
