"""The cost of ``batch_invariant=True`` against normal batching, on the small-but-real SD config (``sd-small``).

One call makes 2 prompts x ``num_images_per_prompt=2`` = 4 images of 256x256 with classifier-free guidance (7.5) and
10 DDIM steps. Three ways to get those 4 images are timed, interleaved round by round:

- ``batched``: one normal call (fastest; image i is not bitwise equal to generating it alone);
- ``batch_invariant``: one call with ``batch_invariant=True`` (every image bitwise equal to generating it alone);
- ``one_by_one``: four calls of one image each (what a user would do without the mode).

Each way is warmed up once first (CPU kernels are prepared per shape on first use). The ratios are given for the
best of the rounds (least disturbed by other work on the machine) and for the medians. The script also checks the
promise it measures: the batch-invariant images equal the one-by-one images bitwise, the batched ones do not.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_batch_invariant.py [--rounds 7] [--threads N]``; results go to
``benchmarks/results/batch_invariant.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

PROMPTS = ["a red fox in the snow", "a brown bear by a river"]
PER_PROMPT = 2
STEPS = 10
GUIDANCE = 7.5
SEED = 0
RESULTS = Path(__file__).parent / "results" / "batch_invariant.json"


def _batched(pipe, batch_invariant: bool) -> np.ndarray:
    return pipe(
        PROMPTS,
        num_images_per_prompt=PER_PROMPT,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        seed=SEED,
        output_type="np",
        batch_invariant=batch_invariant,
    ).images


def _one_by_one(pipe) -> np.ndarray:
    images = []
    for index in range(len(PROMPTS) * PER_PROMPT):
        prompt = PROMPTS[index // PER_PROMPT]
        call = pipe(prompt, num_inference_steps=STEPS, guidance_scale=GUIDANCE, seed=SEED + index, output_type="np")
        images.append(call.images[0])
    return np.stack(images)


def _timed(function, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    images = function(*args)
    return time.perf_counter() - start, images


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds (default 7)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own); 1 keeps the figures steady on a machine shared with "
        "other work, where several threads per process wait on each other",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    import diffusers
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from diffusers_repro import ReproStableDiffusionPipeline
    from diffusers_repro.tiny import tiny_pipeline_path

    for logging in (diffusers_logging, transformers_logging):
        logging.disable_progress_bar()
        logging.set_verbosity_error()
    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd-small"))
    pipe.set_progress_bar_config(disable=True)

    ways = {
        "batched": lambda: _batched(pipe, batch_invariant=False),
        "batch_invariant": lambda: _batched(pipe, batch_invariant=True),
        "one_by_one": lambda: _one_by_one(pipe),
    }
    outputs = {name: way() for name, way in ways.items()}  # warm-up, and the images to check
    times: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for round_index in range(args.rounds):
        # Rotate the order each round so that drift in machine load does not favour one way.
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed, _ = _timed(ways[name])
            times[name].append(elapsed)

    medians = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    batched_difference = float(np.abs(outputs["batched"] - outputs["one_by_one"]).max())

    def ratios(stat: dict[str, float]) -> dict[str, float]:
        return {
            "batch_invariant_vs_batched": round(stat["batch_invariant"] / stat["batched"], 3),
            "one_by_one_vs_batched": round(stat["one_by_one"] / stat["batched"], 3),
            "batch_invariant_vs_one_by_one": round(stat["batch_invariant"] / stat["one_by_one"], 3),
        }

    results = {
        "benchmark": "batch_invariant",
        "pipeline": "diffusers_repro.tiny sd-small",
        "call": {
            "prompts": len(PROMPTS),
            "num_images_per_prompt": PER_PROMPT,
            "images": len(PROMPTS) * PER_PROMPT,
            "size": list(outputs["batched"].shape[1:3]),
            "num_inference_steps": STEPS,
            "guidance_scale": GUIDANCE,
        },
        "rounds": args.rounds,
        "seconds": {name: [round(t, 4) for t in values] for name, values in times.items()},
        "best_s": {name: round(value, 4) for name, value in best.items()},
        "median_s": {name: round(value, 4) for name, value in medians.items()},
        # Best-of-N is the figure least disturbed by other work on the machine; the medians are kept alongside.
        "ratios_best": ratios(best),
        "ratios_median": ratios(medians),
        "bitwise_batch_invariant_equals_one_by_one": bool(
            np.array_equal(outputs["batch_invariant"], outputs["one_by_one"])
        ),
        "max_abs_diff_batched_vs_one_by_one": batched_difference,
        "environment": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "torch_num_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
        },
    }
    print(
        f"{results['call']['images']} images, {STEPS} steps, CFG {GUIDANCE}, "
        f"{results['call']['size'][0]}x{results['call']['size'][1]}, {torch.get_num_threads()} threads"
    )
    for name in names:
        print(
            f"  {name:<16} best {best[name]:.3f} s, median {medians[name]:.3f} s  "
            f"({', '.join(f'{t:.3f}' for t in times[name])})"
        )
    for label, stat in (("best", results["ratios_best"]), ("median", results["ratios_median"])):
        print(
            f"{label:>6}: batch_invariant / batched = {stat['batch_invariant_vs_batched']:.3f}; "
            f"one_by_one / batched = {stat['one_by_one_vs_batched']:.3f}; "
            f"batch_invariant / one_by_one = {stat['batch_invariant_vs_one_by_one']:.3f}"
        )
    print(
        f"batch-invariant images bitwise equal to one-by-one: {results['bitwise_batch_invariant_equals_one_by_one']}; "
        f"batched vs one-by-one max abs diff: {batched_difference:.3g}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return results


if __name__ == "__main__":
    main()
