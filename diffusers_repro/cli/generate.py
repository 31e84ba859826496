"""``diffusers-repro generate``: a prompt x seed grid into a folder, sharded and resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    DTYPES,
    MAX_SEED,
    UsageError,
    check_device,
    count,
    is_main_process,
    load_model,
    parse_seeds,
    positive_int,
    rng_argument,
    scheduler_class,
    seed_argument,
)
from .credentials import add_signing_options, signing_from_args


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


# --------------------------------------------------------------------------------------------------------------------
# generate


def generate_command(args: argparse.Namespace) -> int:
    sign = signing_from_args(args)
    prompts = _read_prompts(args)
    seeds = _seeds(args)
    scheduler = scheduler_class(args.scheduler)
    device = check_device(args.device)
    pipe = load_model(args.model, args.dtype)
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
    from ..runs import SettingsMismatchError, generate

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
    except SettingsMismatchError as error:
        raise UsageError(error.for_command_line()) from None
    finally:
        import torch.distributed

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if is_main_process():
        print(
            f"{count(result.num_jobs, 'image')} in {result.out_dir} ({result.generated} generated, {result.skipped} "
            f"already there) by {count(result.num_processes, 'process', 'processes')} with "
            f"{count(result.torch_num_threads, 'torch thread')} each; manifest: {result.manifest_path}"
        )
    return 0


def add_generate_parser(commands: Any) -> None:
    """``diffusers-repro generate``: its options."""
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
