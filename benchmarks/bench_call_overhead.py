"""What a reproducible call costs: the Repro call with ``seed=`` against vanilla diffusers with the equivalent
generator list, over the very same components, interleaved in one run on the CPU.

Two configurations, 2 images with classifier-free guidance, one torch thread by default (``--threads``):
- ``sd-small``: a small-but-real SD config (10 steps, about 0.6 s per call): prints the paired median time ratio
  (target <= 1.01);
- ``sd``: the embedded tiny config (4 steps): prints the added milliseconds per call (target <= 3 ms).

Each also prints how many torch operations passed through the stray-randomness mode in one call (the pipeline's
and the scheduler's own operations: the models' layers never reach it).

Run: ``.venv/bin/python benchmarks/bench_call_overhead.py`` (writes ``benchmarks/results/call_overhead.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from diffusers_repro import ReproStableDiffusionPipeline
from diffusers_repro.generation.randomness import _SeededStrayRandomness
from diffusers_repro.records.provenance import environment_fingerprint
from diffusers_repro.tiny import build_tiny_pipeline

CONFIGS = {
    # kind, call arguments, rounds
    "sd-small": ({"prompt": ["a fox in the snow", "a bear"], "num_inference_steps": 10, "output_type": "np"}, 15),
    "sd": ({"prompt": ["a fox in the snow", "a bear"], "num_inference_steps": 4, "output_type": "np"}, 60),
}


def operations_through_mode(pipe, **call) -> int:
    """The torch operations that reached the stray-randomness mode's ``__torch_function__`` during one call."""
    original = _SeededStrayRandomness.__torch_function__
    seen = [0]

    def counting(self, func, types, args=(), kwargs=None):
        seen[0] += 1
        return original(self, func, types, args, kwargs)

    _SeededStrayRandomness.__torch_function__ = counting
    try:
        pipe(**call)
    finally:
        _SeededStrayRandomness.__torch_function__ = original
    return seen[0]


def _timed(function, *args, **kwargs) -> tuple[float, float]:
    """Wall-clock and this thread's CPU seconds of one call (with one torch thread, all its work is this thread's)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    function(*args, **kwargs)
    return time.perf_counter() - wall, time.thread_time() - cpu


def _paired(repro_times: list[float], vanilla_times: list[float]) -> dict[str, float]:
    pairs = list(zip(repro_times, vanilla_times, strict=True))
    return {
        "vanilla_median_s": statistics.median(vanilla_times),
        "repro_median_s": statistics.median(repro_times),
        "median_ratio": statistics.median([r / v for r, v in pairs]),
        "added_ms_paired_median": 1000 * statistics.median([r - v for r, v in pairs]),
        # The fastest call of each side: the one least disturbed by other work on a shared machine.
        "min_ratio": min(repro_times) / min(vanilla_times),
        "added_ms_min": 1000 * (min(repro_times) - min(vanilla_times)),
    }


def measure(kind: str, call: dict, rounds: int) -> dict:
    plain = build_tiny_pipeline(kind)
    plain.set_progress_bar_config(disable=True)
    repro = ReproStableDiffusionPipeline(**plain.components)
    repro.set_progress_bar_config(disable=True)
    num_images = len(call["prompt"])

    def run_vanilla(seed: int) -> tuple[float, float]:
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]
        return _timed(plain, **call, generator=generators)

    def run_repro(seed: int) -> tuple[float, float]:
        return _timed(repro, **call, seed=seed)

    for seed in range(2):  # warm-up: first calls pay for allocations and lazy digests
        run_vanilla(seed), run_repro(seed)
    vanilla_times, repro_times = [], []
    for seed in range(rounds):
        # Alternate the order so that drift in machine load hits both sides alike.
        if seed % 2:
            vanilla_times.append(run_vanilla(seed))
            repro_times.append(run_repro(seed))
        else:
            repro_times.append(run_repro(seed))
            vanilla_times.append(run_vanilla(seed))
    wall = _paired([r[0] for r in repro_times], [v[0] for v in vanilla_times])
    # CPU time of the calling thread: on a shared machine, time spent waiting for a core is left out.
    cpu = _paired([r[1] for r in repro_times], [v[1] for v in vanilla_times])
    return {
        "kind": kind,
        "rounds": rounds,
        "images_per_call": num_images,
        "steps": call["num_inference_steps"],
        **wall,
        "cpu": cpu,
        "operations_through_mode": operations_through_mode(repro, **call, seed=0),
        # The machine may be shared: its load (1 and 5 minute averages) after the rounds, beside the figures.
        "load_average": [round(value, 2) for value in os.getloadavg()[:2]],
    }


def per_call_parts(kind: str, repeat: int = 7, number: int = 50) -> dict[str, float]:
    """Microseconds of per-call pieces of our own, best of ``repeat`` runs of ``number`` (little disturbed by load).

    ``clean components``: which components draw nothing stray (the mode steps aside in them); ``environment``: the
    environment fingerprint; ``batch links``: linking the records of a 2-image call by their digests.
    """
    import timeit

    from diffusers_repro.generation import randomness
    from diffusers_repro.records.batch import link_batch_records

    pipe = ReproStableDiffusionPipeline(**build_tiny_pipeline(kind).components)
    pipe.set_progress_bar_config(disable=True)
    records = pipe(**CONFIGS[kind][0], seed=0).provenance
    # The tree before the cache had no draws_nothing_stray_cached: run the same script there for "before" figures.
    clean = getattr(randomness, "draws_nothing_stray_cached", randomness.draws_nothing_stray)
    modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
    pieces = {
        "clean components": lambda: [clean(module) for module in modules],
        "environment": lambda: environment_fingerprint("cpu", torch.float32),
        "batch links": lambda: link_batch_records(records),
    }
    return {
        name: 1e6 * min(timeit.repeat(piece, repeat=repeat, number=number)) / number for name, piece in pieces.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=None, help="rounds per configuration (default: per config)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument("--parts", action="store_true", help="also time per-call pieces of our own (best of 7)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "call_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    for kind in args.kinds:
        call, rounds = CONFIGS[kind]
        result = measure(kind, call, args.rounds or rounds)
        if args.parts:
            result["per_call_parts_us"] = per_call_parts(kind)
            print(f"{kind:9s} per-call parts (us, best of 7): {result['per_call_parts_us']}")
        results.append(result)
        cpu = result["cpu"]
        print(
            f"{kind:9s} wall: vanilla {result['vanilla_median_s'] * 1000:.1f} ms,"
            f" repro {result['repro_median_s'] * 1000:.1f} ms,"
            f" paired median ratio {result['median_ratio']:.4f},"
            f" added {result['added_ms_paired_median']:+.2f} ms/call"
            f" | thread CPU: vanilla {cpu['vanilla_median_s'] * 1000:.1f} ms,"
            f" paired median ratio {cpu['median_ratio']:.4f},"
            f" added {cpu['added_ms_paired_median']:+.2f} ms/call"
            f" | fastest calls: ratio {result['min_ratio']:.4f}, added {result['added_ms_min']:+.2f} ms"
            f" | {result['operations_through_mode']} operations through the mode/call"
            f" | load average {result['load_average']}"
        )
    env = environment_fingerprint()
    report = {
        "benchmark": "call_overhead",
        "torch_num_threads": torch.get_num_threads(),
        "versions": env["versions"],
        "processor": env["processor"],
        "results": results,
        "targets": {"sd-small median_ratio": "<= 1.01", "sd added_ms": "<= 3"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
