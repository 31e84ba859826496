"""Throughput of `diffusers_repro.runs.distributed.generate` on one job list at several process and thread counts.

Configurations, each in fresh processes on the same prompt x seed grid (the small-but-real ``sd-small`` tiny model,
256x256, classifier-free guidance):

- vanilla diffusers, 1 process x 1 thread: a plain loop of ``StableDiffusionPipeline`` calls with a CPU generator per
  image, saving plain PNGs (the baseline for our overhead: provenance, atomic PNG writes, manifest);
- ``generate``, 1 process x 1 thread;
- ``generate``, 2 processes x 1 thread (``torchrun --nproc_per_node 2``);
- ``generate``, 1 process x 2 threads.

The timed region of each run starts once every process has loaded the model and made one warm-up call, and ends when
``generate`` returns (the manifest is written). Prints images per second and the speedup of 2 processes over 1
(target: >= 1.7x on 2 cores), checks that the 1- and 2-process runs wrote bitwise identical images, and writes
``benchmarks/results/distributed.json``.

Usage:

```bash
.venv/bin/python benchmarks/bench_distributed.py            # about 2 minutes on 2 CPU cores
.venv/bin/python benchmarks/bench_distributed.py --jobs 8   # a quick look
```
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.json"
PROMPTS = ["a red fox in fresh snow", "a lighthouse at dusk", "a bowl of ramen", "a city street in the rain"]
TARGET_SPEEDUP = 1.7

CONFIGS = [
    # (key, label, mode, processes, threads)
    ("vanilla_1x1", "vanilla diffusers loop, 1 process x 1 thread", "vanilla", 1, 1),
    ("generate_1x1", "generate, 1 process x 1 thread", "generate", 1, 1),
    ("generate_2x1", "generate, 2 processes x 1 thread", "generate", 2, 1),
    ("generate_1x2", "generate, 1 process x 2 threads", "generate", 1, 2),
]


def _grid(jobs: int) -> tuple[list[str], list[int]]:
    prompts = PROMPTS[: min(len(PROMPTS), jobs)]
    per_prompt = -(-jobs // len(prompts))
    return prompts, list(range(per_prompt))


def worker(args: argparse.Namespace) -> None:
    """One process of one configuration: load, warm up, wait for the others, time the run."""
    import torch

    torch.set_num_threads(args.threads)
    prompts, seeds = _grid(args.jobs)
    out = Path(args.out)
    if args.mode == "vanilla":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(args.model)
        pipe.set_progress_bar_config(disable=True)
        pipe(prompts[0], num_inference_steps=1, generator=torch.Generator().manual_seed(0))
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        count = 0
        for prompt in prompts:
            for seed in seeds:
                generator = torch.Generator("cpu").manual_seed(seed)
                image = pipe(prompt, num_inference_steps=args.steps, generator=generator).images[0]
                image.save(out / f"{count:06d}-seed{seed}.png")
                count += 1
        seconds, processes, is_main = time.perf_counter() - started, 1, True
    else:
        from accelerate import PartialState

        from diffusers_repro import ReproStableDiffusionPipeline
        from diffusers_repro.runs.distributed import generate

        state = PartialState(cpu=True)
        pipe = ReproStableDiffusionPipeline.from_pretrained(args.model)
        pipe.set_progress_bar_config(disable=True)
        pipe(prompts[0], num_inference_steps=1, seed=0)
        state.wait_for_everyone()
        started = time.perf_counter()
        result = generate(
            pipe,
            prompts,
            seeds,
            out,
            threads=args.threads,
            overwrite=True,
            progress=False,
            num_inference_steps=args.steps,
        )
        seconds = time.perf_counter() - started
        count, processes, is_main = result.generated, result.num_processes, state.is_main_process
    if is_main:
        Path(args.report).write_text(json.dumps({"seconds": seconds, "images": count, "processes": processes}))


def _launch(key: str, mode: str, processes: int, threads: int, args: argparse.Namespace, work: Path) -> dict:
    report = work / f"{key}.json"
    worker_args = ["--worker", "--mode", mode, "--threads", str(threads), "--model", args.model]
    worker_args += ["--jobs", str(args.jobs), "--steps", str(args.steps)]
    worker_args += ["--out", str(work / key), "--report", str(report)]
    if processes == 1:
        command = [sys.executable, __file__, *worker_args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        command += [__file__, *worker_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{key} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    measured = json.loads(report.read_text())
    return {
        **measured,
        "wall_seconds_with_startup": wall,
        "images_per_second": measured["images"] / measured["seconds"],
    }


def _manifest_digests(folder: Path) -> list[str]:
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line)["pixel_digest"] for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=32, help="images per configuration (default: 32, ~30 s each)")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps (default: 10)")
    parser.add_argument("--kind", default="sd-small", help="tiny model kind (default: sd-small)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    from diffusers_repro.tiny import tiny_pipeline_path

    args.model = str(tiny_pipeline_path(args.kind))
    prompts, seeds = _grid(args.jobs)
    args.jobs = len(prompts) * len(seeds)
    print(
        f"{args.jobs} jobs ({len(prompts)} prompts x {len(seeds)} seeds), tiny '{args.kind}' model, {args.steps} "
        f"steps, on {os.cpu_count()} CPU core(s), torch {torch.__version__}"
    )
    # Other work on the machine skews every figure here (2 processes need 2 idle cores): recorded with the results.
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as folder:
        work = Path(folder)
        for key, label, mode, processes, threads in CONFIGS:
            results[key] = {"label": label, **_launch(key, mode, processes, threads, args, work)}
            print(
                f"  {label:<46} {results[key]['images_per_second']:6.2f} images/s "
                f"({results[key]['images']} images in {results[key]['seconds']:.1f} s)"
            )
        identical = _manifest_digests(work / "generate_1x1") == _manifest_digests(work / "generate_2x1")
    base = results["generate_1x1"]["images_per_second"]
    speedup = results["generate_2x1"]["images_per_second"] / base
    threads_speedup = results["generate_1x2"]["images_per_second"] / base
    overhead = results["vanilla_1x1"]["images_per_second"] / base  # time per image of generate over vanilla
    print(f"speedup of 2 processes over 1:          {speedup:.2f}x (target >= {TARGET_SPEEDUP}x)")
    print(f"speedup of 2 threads over 1:            {threads_speedup:.2f}x")
    print(f"time per image, generate / vanilla:     {overhead:.3f}x (1 process x 1 thread)")
    print(f"1 and 2 processes bitwise identical:    {'yes' if identical else 'NO'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "distributed generation throughput",
        "model": f"tiny {args.kind}",
        "jobs": args.jobs,
        "steps": args.steps,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "load_average_1min_before_and_after": [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
        "configs": results,
        "speedup_2_processes_over_1": speedup,
        "speedup_2_threads_over_1": threads_speedup,
        "generate_time_per_image_over_vanilla": overhead,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": speedup >= TARGET_SPEEDUP,
        "bitwise_identical_1_vs_2_processes": identical,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
