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
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from .common import (
    DTYPES,
    PROG,
    ArgumentParser,
    UsageError,
    add_max_file_bytes_argument,
    command_environment,
    is_main_process,
    parse_seeds,
    positive_int,
    printable,
    rng_argument,
    seed_argument,
    tolerance_argument,
)
from .credentials import add_credentials_commands, add_signing_options, add_trust_option
from .demo import DEMO_PROMPTS, DEMO_SEEDS, demo_command
from .generate import generate_command
from .inspect import inspect_command
from .records import diff_command, env_command, environment_report
from .verify import add_replay_safety_arguments, verify_command

__all__ = ["UsageError", "build_parser", "environment_report", "main", "parse_seeds"]


# --------------------------------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``diffusers-repro``, with one subcommand per job."""
    parser = ArgumentParser(
        prog=PROG,
        description="Reproducible diffusers generation: same seed, same pixels; every image carries its recipe.",
        epilog="Exit codes: 0 success, 1 failure (an image does not reproduce), 2 user error.",
    )
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of unexpected errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    generate = commands.add_parser(
        "generate",
        help="generate a prompt x seed grid into a folder (sharded under torchrun / accelerate launch, resumable)",
        description=(
            "Generates every prompt with every seed (job order: for each prompt, for each seed) into --out: one image "
            "file per job (--format: PNG, JPEG or WebP) with its provenance record, manifest.jsonl (one line per "
            "job, in job order) and run.json (the settings). Runs unchanged under `torchrun --nproc_per_node N -m "
            "diffusers_repro generate ...` and `accelerate launch -m diffusers_repro generate ...`: micro-batches are "
            "spread over the processes, and every image is bitwise the same at any process count. Rerunning the same "
            "command resumes."
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
    seeds.add_argument("--seed", type=seed_argument, help="first seed: seeds N .. N+num_images-1 (default: 0)")
    seeds.add_argument("--seeds", help="seed list with inclusive ranges, e.g. 0-15,42")
    generate.add_argument(
        "--num-images", type=positive_int, help="images per prompt with --seed (default: 1)", metavar="K"
    )
    generate.add_argument("--steps", type=positive_int, help="denoising steps (default: the pipeline's)")
    generate.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the pipeline's)")
    generate.add_argument("--height", type=positive_int, help="image height in pixels (default: the model's)")
    generate.add_argument("--width", type=positive_int, help="image width in pixels (default: the model's)")
    generate.add_argument("--scheduler", help="a diffusers scheduler class name, e.g. EulerDiscreteScheduler")
    generate.add_argument("--dtype", choices=DTYPES, help="weights dtype (default: as saved)")
    generate.add_argument("--device", help="cpu, cuda, mps, ... (default: each process's accelerator, else the CPU)")
    generate.add_argument("--deterministic", action="store_true", help="run inside full_determinism()")
    generate.add_argument(
        "--rng",
        type=rng_argument,
        help="noise generators: cpu (default); cuda: what torch.Generator('cuda') draws, on any device (emulated off "
        "a GPU); cuda:108x2048 or cuda:A100 names the GPU geometry (multiprocessors x max threads per "
        "multiprocessor) that lays out large draws",
    )
    generate.add_argument(
        "--batch-invariant",
        action="store_true",
        help="evaluate the models one image at a time: every image independent of --batch-size",
    )
    generate.add_argument("--batch-size", type=positive_int, default=1, help="images per pipeline call (default: 1)")
    generate.add_argument(
        "--threads",
        type=positive_int,
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
    generate.set_defaults(handler=generate_command, loads_models=True)

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
    verify.add_argument("--model", help="load this pipeline instead of the recorded model source")
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

    inspect_ = commands.add_parser(
        "inspect",
        help="show how an image was made",
        description="Shows the provenance record embedded in an image: prompt, seed, model, settings, environment.",
    )
    inspect_.add_argument(
        "path", type=Path, metavar="PATH", help="an image (PNG, JPEG or WebP) written by diffusers-repro"
    )
    inspect_.add_argument("--json", action="store_true", help="print the full record as JSON")
    add_trust_option(inspect_)
    add_max_file_bytes_argument(inspect_)
    inspect_.set_defaults(handler=inspect_command)

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
    env.set_defaults(handler=env_command, loads_models=True)

    diff = commands.add_parser(
        "diff",
        help="the fields in which two images' records differ, and how much their pixels differ",
        description=(
            "Lists the fields in which two images' records differ and compares their pixels (max abs diff, PSNR). "
            "Exit 0 when the records and the pixels are equal, 1 otherwise."
        ),
    )
    diff.add_argument("a", type=Path, metavar="A", help="an image (PNG, JPEG or WebP) written by diffusers-repro")
    diff.add_argument("b", type=Path, metavar="B", help="another one")
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.add_argument(
        "--heatmap",
        type=Path,
        metavar="OUT.png",
        help="also write the picture of the pixel differences (the images' size, with a scale below)",
    )
    add_max_file_bytes_argument(diff)
    diff.set_defaults(handler=diff_command)

    demo = commands.add_parser(
        "demo",
        help="generate with the embedded tiny model twice, show the bits are identical, verify the images",
        description=(
            f"Generates {len(DEMO_PROMPTS)} prompts x {len(DEMO_SEEDS)} seeds with the embedded tiny Stable "
            "Diffusion model (built on first use, no download), generates them again, shows that both runs are "
            "bitwise identical, saves the images with their provenance and verifies them."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: outputs/demo)")
    demo.add_argument("--steps", type=positive_int, default=10, help="denoising steps (default: 10)")
    demo.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads, pinned for both runs (default: 1)"
    )
    demo.set_defaults(handler=demo_command, loads_models=True)
    add_credentials_commands(commands, ArgumentParser)
    return parser


# --------------------------------------------------------------------------------------------------------------------
# main


def _user_error_types() -> tuple[type[BaseException], ...]:
    from ..records import ProvenanceError

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
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # Named after the command they were given to (argparse would say "arguments").
            command = f" {args.command}" if args.command else ""
            raise UsageError(
                f"{args.command or 'arguments'}: unrecognized arguments: {' '.join(unknown)} (see {PROG}{command} "
                "--help)"
            )
        if args.command is None:
            raise UsageError(
                "a command is required: generate, verify, inspect, env, diff, demo, keys or find (see diffusers-repro "
                "--help)"
            )
        with command_environment(quiet_libraries=getattr(args, "loads_models", False)):
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
        if is_main_process() or os.environ.get("WORLD_SIZE", "1") == "1":
            # File names, record keys and values in a message come from anyone: escaped for the terminal.
            message = printable(" ".join(str(error).split())) or type(error).__name__
            print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - the command line reports every failure as one line and exit code 1
        if show_traceback:
            traceback.print_exc()
        where = f" [process {os.environ['RANK']}]" if os.environ.get("WORLD_SIZE", "1") != "1" else ""
        message = printable(" ".join(str(error).split()))
        print(
            f"{PROG}: error{where}: {type(error).__name__}: {message} (run with --traceback for details)",
            file=sys.stderr,
        )
        return 1
