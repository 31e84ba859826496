"""``diffusers-repro generate``: a prompt x seed grid into a folder, sharded and resumable."""

from __future__ import annotations

import argparse

from .common import (
    MAX_SEED,
    UsageError,
    check_device,
    count,
    is_main_process,
    load_model,
    parse_seeds,
    scheduler_class,
)
from .credentials import signing_from_args


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
