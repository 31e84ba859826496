"""Values per second of `PhiloxGenerator` (torch's CUDA ``randn`` emulated on the CPU), on one core.

Each case draws a diffusion latent the way diffusers draws it (one ``randn`` per image), with the GPU geometry that
decides its layout: below the threshold every value costs one Philox4x32-10 block, above it each block gives 4
values. torch's own CPU ``randn`` (mt19937) is timed in the same run for scale. ``torch.set_num_threads(1)``: one core.

Run: ``python benchmarks/bench_philox.py [--rounds 5]``; results go to ``benchmarks/results/philox.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from diffusers_repro.generation.cuda_rng import KNOWN_GEOMETRIES, PhiloxGenerator

RESULTS = Path(__file__).parent / "results" / "philox.json"
GOAL = 50e6
CASES = [
    ("SD 1.5 latent, below every threshold", (1, 4, 64, 64), None),
    ("SDXL latent on a T4 (grid-stride)", (1, 4, 128, 128), "T4"),
    ("Flux latent on an A100 (grid-stride)", (1, 16, 128, 128), "A100"),
    ("Flux latent on an H100 (below its threshold)", (1, 16, 128, 128), "H100-SXM"),
    ("8 Flux latents in one draw on an H100", (8, 16, 128, 128), "H100-SXM"),
]


def _rate(draw, numel: int, rounds: int) -> tuple[float, float]:
    draw()  # warm-up
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        draw()
        rates.append(numel / (time.perf_counter() - start))
    return statistics.median(rates), max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, shape, gpu in CASES:
        geometry = KNOWN_GEOMETRIES[gpu] if gpu else None
        generator = PhiloxGenerator.with_geometry(0, geometry)
        numel = torch.Size(shape).numel()
        median, best = _rate(lambda g=generator, s=shape: g.randn(s), numel, args.rounds)
        cpu = torch.Generator().manual_seed(0)
        torch_median, _ = _rate(lambda s=shape, c=cpu: torch.randn(s, generator=c), numel, args.rounds)
        rows.append(
            {
                "case": name,
                "shape": list(shape),
                "geometry": gpu,
                "values_per_second_median": median,
                "values_per_second_best": best,
                "torch_cpu_randn_values_per_second_median": torch_median,
            }
        )
        print(
            f"{name:48s} {numel:>9d} values: {median / 1e6:6.1f} M/s median, {best / 1e6:6.1f} M/s best "
            f"(torch CPU randn {torch_median / 1e6:6.1f} M/s) goal {GOAL / 1e6:.0f} M/s: "
            f"{'met' if median >= GOAL else 'not met'}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "rounds": args.rounds,
        "cases": rows,
    }
    temporary = RESULTS.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(temporary, RESULTS)


if __name__ == "__main__":
    main()
