"""Concurrent calls: throughput of plain Repro calls against vanilla diffusers under the ``from_pipe`` pattern, and a
longer stress run that checks every image's bits against the same call made alone.

Throughput: a pool of 2 and 4 worker threads, each request a pipeline made with ``from_pipe`` (shared weights, a
scheduler of its own), one intra-op thread pinned in each worker; vanilla calls get the equivalent CPU generator
lists. Rounds alternate the two sides; the script prints calls/s and the ratio ours / vanilla (goal: >= 0.90).

Stress: plain, ``batch_invariant`` and ``deterministic`` calls mixed over 4 workers; prints how many images differ
from the same call made alone (goal: 0) and whether torch's global RNG state is exactly as before.

Run: ``.venv/bin/python benchmarks/bench_concurrency.py`` (writes ``benchmarks/results/concurrency.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging

from diffusers_repro import ReproStableDiffusionPipeline
from diffusers_repro.records.provenance import environment_fingerprint
from diffusers_repro.tiny import build_tiny_pipeline

CONFIGS = {
    # kind: call arguments (besides the prompt and seeds), calls per round
    "sd": ({"num_inference_steps": 4, "output_type": "np"}, 24),
    "sd-small": ({"num_inference_steps": 4, "output_type": "np"}, 8),
}
PROMPTS = ["a fox in the snow", "a bear"]


def pinned(function, *args):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(previous)


def request_pipe(cls, base):
    extra = {}
    if cls is StableDiffusionPipeline:
        # Vanilla from_pipe shares the fast tokenizer, whose padding state is not thread-safe (calls from threads
        # changed images and once raised "Unable to create tensor"); a careful vanilla server copies it per request,
        # as our from_pipe does, so both sides pay for the copy.
        extra["tokenizer"] = copy.deepcopy(base.tokenizer)
    pipe = cls.from_pipe(base, scheduler=base.scheduler.from_config(base.scheduler.config), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def throughput(kind: str, workers_list: list[int], rounds: int) -> list[dict]:
    call, calls_per_round = CONFIGS[kind]
    vanilla_base = build_tiny_pipeline(kind)
    repro_base = ReproStableDiffusionPipeline(**vanilla_base.components)

    def vanilla_call(seed: int) -> None:
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(PROMPTS))]
        pinned(lambda: request_pipe(StableDiffusionPipeline, vanilla_base)(PROMPTS, generator=generators, **call))

    def repro_call(seed: int) -> None:
        pinned(lambda: request_pipe(ReproStableDiffusionPipeline, repro_base)(PROMPTS, seed=seed, **call))

    def timed(function, workers: int) -> float:
        with ThreadPoolExecutor(workers) as pool:
            start = time.perf_counter()
            list(pool.map(function, range(calls_per_round)))
            return calls_per_round / (time.perf_counter() - start)

    results = []
    for workers in workers_list:
        timed(vanilla_call, workers), timed(repro_call, workers)  # warm-up
        vanilla, repro = [], []
        for index in range(rounds):
            # Alternate the order so that drift in machine load hits both sides alike.
            if index % 2:
                vanilla.append(timed(vanilla_call, workers))
                repro.append(timed(repro_call, workers))
            else:
                repro.append(timed(repro_call, workers))
                vanilla.append(timed(vanilla_call, workers))
        ratios = [r / v for r, v in zip(repro, vanilla, strict=True)]
        result = {
            "kind": kind,
            "workers": workers,
            "rounds": rounds,
            "calls_per_round": calls_per_round,
            "vanilla_calls_per_s": statistics.median(vanilla),
            "repro_calls_per_s": statistics.median(repro),
            "median_ratio": statistics.median(ratios),
        }
        print(
            f"{kind:9s} {workers} workers: vanilla {result['vanilla_calls_per_s']:.2f} calls/s, "
            f"repro {result['repro_calls_per_s']:.2f} calls/s, ratio repro/vanilla {result['median_ratio']:.3f} "
            f"(goal >= 0.90)",
            flush=True,
        )
        results.append(result)
    return results


def stress(calls: int, workers: int) -> dict:
    base = ReproStableDiffusionPipeline(**build_tiny_pipeline("sd").components)
    options = [
        {},
        {"batch_invariant": True},
        {"deterministic": True},
        {"batch_invariant": True, "deterministic": True},
    ]
    requests = [
        {
            "prompt": [f"a fox number {index}", "a bear"] if index % 3 else f"a cat number {index}",
            "seed": index,
            "num_inference_steps": 2 + index % 3,
            "height": 32,
            "width": 32 if index % 4 else 64,
            "output_type": "np",
            **options[index % len(options)],
        }
        for index in range(calls)
    ]

    def one(request):
        return pinned(lambda: request_pipe(ReproStableDiffusionPipeline, base)(**request).images)

    alone = [one(request) for request in requests]
    before = torch.random.get_rng_state()
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        together = list(pool.map(one, requests))
    seconds = time.perf_counter() - start
    differing = sum(not np.array_equal(a, b) for a, b in zip(together, alone, strict=True))
    result = {
        "calls": calls,
        "workers": workers,
        "images": sum(len(images) for images in together),
        "differing_calls": differing,
        "global_rng_unchanged": bool(torch.equal(before, torch.random.get_rng_state())),
        "seconds": seconds,
    }
    print(
        f"stress: {calls} mixed calls ({result['images']} images) over {workers} workers: {differing} differ from "
        f"the call made alone; global RNG unchanged: {result['global_rng_unchanged']} ({seconds:.1f} s)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["sd", "sd-small"], choices=list(CONFIGS))
    parser.add_argument("--workers", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stress-calls", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "concurrency.json")
    args = parser.parse_args()
    diffusers_logging.set_verbosity_error()  # one line per request about the tiny models' missing safety checker
    results = {"environment": environment_fingerprint(), "throughput": [], "stress": None}
    for kind in args.kinds:
        results["throughput"] += throughput(kind, args.workers, args.rounds)
    if args.stress_calls:
        results["stress"] = stress(args.stress_calls, max(args.workers))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
