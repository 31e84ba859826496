"""verify with one read per file: its time and peak memory on 100 tiny-model files, against an earlier version.

The reading edge reads each image file once and keeps that one parsed object (bytes, pixels, record, credentials) for
every later step, where the earlier code opened a file up to seven times. This script makes 100 signed PNG files
with the embedded tiny model (one call per file, 2 steps), then runs ``diffusers-repro verify`` on the folder in
fresh processes, alternating between this checkout and an earlier revision exported from git (``--before``: any
revision that reads these files), and prints per side the median wall time and the peak
resident memory of the verifying process, and their ratios (after / before). Goal: one read is not slower.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_verify_read.py --before 86f8723 [--files 100] [--rounds 3]``;
results go to ``benchmarks/results/verify_read.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "verify_read.json"

# Runs verify in this process and prints the process's own peak resident memory (KiB on Linux) on the last line.
_RUNNER = (
    "import resource, sys\n"
    "from diffusers_repro.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _make_files(folder: Path, count: int) -> None:
    import torch

    from diffusers_repro import ReproStableDiffusionPipeline
    from diffusers_repro.tiny import tiny_pipeline_path

    torch.set_num_threads(1)  # verify replays each file with its recorded thread count
    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    pipe.set_progress_bar_config(disable=True)
    for index in range(count):
        out = pipe(f"a fox number {index}", seed=index, num_inference_steps=2)
        out.save(folder)


def _export(revision: str, into: Path) -> Path:
    """The package of ``revision``, exported from git into ``into`` (nothing is checked out in this tree)."""
    archive = into / "before.tar"
    with open(archive, "wb") as handle:
        subprocess.run(["git", "-C", str(ROOT), "archive", revision, "diffusers_repro"], stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "before", filter="data")
    return into / "before"


def _verify(package_root: Path, folder: Path) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(package_root), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", _RUNNER, "verify", str(folder)],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        output = completed.stdout[-2000:] + completed.stderr[-2000:]
        raise RuntimeError(f"verify failed under {package_root}:\n{output}")
    maxrss = int(completed.stderr.strip().splitlines()[-1].split()[1])
    return elapsed, maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the git revision to compare with, e.g. 86f8723")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        temporary = Path(temporary)
        folder = temporary / "images"
        folder.mkdir()
        _make_files(folder, args.files)
        sides = {"before": _export(args.before, temporary), "after": ROOT}
        figures: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, root in sides.items():  # interleaved: drift in the machine's load hits both alike
                figures[name].append(_verify(root, folder))
    summary = {
        name: {
            "seconds": statistics.median(time for time, _ in runs),
            "peak_rss_mib": max(rss for _, rss in runs) / 1024,
        }
        for name, runs in figures.items()
    }
    time_ratio = summary["after"]["seconds"] / summary["before"]["seconds"]
    memory_ratio = summary["after"]["peak_rss_mib"] / summary["before"]["peak_rss_mib"]
    for name, values in summary.items():
        print(
            f"{name:>6} ({args.before if name == 'before' else 'this checkout'}): verify of {args.files} files "
            f"{values['seconds']:.2f} s (median of {args.rounds}), peak RSS {values['peak_rss_mib']:.0f} MiB"
        )
    print(f"ratio after/before: time {time_ratio:.3f}, peak memory {memory_ratio:.3f} (goal: time <= 1.0 + noise)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "before": args.before,
                "files": args.files,
                "rounds": args.rounds,
                "summary": summary,
                "time_ratio": time_ratio,
                "memory_ratio": memory_ratio,
                "machine": platform.platform(),
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
