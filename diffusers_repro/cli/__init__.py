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

from .common import PROG, ArgumentParser, UsageError, command_environment, is_main_process, parse_seeds, printable
from .credentials import add_credentials_commands
from .demo import add_demo_parser
from .generate import add_generate_parser
from .inspect import add_inspect_parser
from .records import add_diff_parser, add_env_parser, environment_report
from .verify import add_verify_parser

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

    add_generate_parser(commands)
    add_verify_parser(commands)
    add_inspect_parser(commands)
    add_env_parser(commands)
    add_diff_parser(commands)
    add_demo_parser(commands)
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
