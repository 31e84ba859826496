"""Commands with nothing to compute start fast: the wall time of ``inspect``, ``find``, ``keys show`` and ``--help``
against ``python -c pass`` and against ``import torch, diffusers`` (what every command paid before).

Each command runs in a fresh process (``python -m diffusers_repro ...``), interleaved with the references, and the
median of ``--rounds`` runs is printed with the time it adds to a bare interpreter. Goal: ``inspect`` of a PNG within a
few tenths of a second.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_cli_start.py [--rounds 7]``; results go to
``benchmarks/results/cli_start.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "cli_start.json"


def _image(folder: Path) -> Path:
    from diffusers_repro import ReproStableDiffusionPipeline
    from diffusers_repro.tiny import tiny_pipeline_path

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    pipe.set_progress_bar_config(disable=True)
    return pipe("a fox", seed=0, num_inference_steps=2).save(folder)[0]


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        image = _image(folder)
        python = [sys.executable]
        command = [*python, "-m", "diffusers_repro"]
        cases = {
            "python -c pass": [*python, "-c", "pass"],
            "import torch, diffusers": [*python, "-c", "import torch, diffusers"],
            "--help": [*command, "--help"],
            "inspect FILE.png": [*command, "inspect", str(image)],
            "find FILE.png DIR": [*command, "find", str(image), str(folder)],
            "keys show": [*command, "keys", "show"],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, argv in cases.items():
                times[name].append(_seconds(argv))
    medians = {name: statistics.median(values) for name, values in times.items()}
    bare = medians["python -c pass"]
    for name, value in medians.items():
        print(f"{name:<24} {value * 1000:7.0f} ms  (+{(value - bare) * 1000:.0f} ms over python -c pass)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "rounds": args.rounds,
                "median_seconds": medians,
                "machine": platform.platform(),
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
