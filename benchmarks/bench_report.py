"""A verify report of 1,000 images stays usable: its size per image, the time to write it, the time to open it.

Builds ``--images`` synthetic verify results per scenario: files on disk with smooth, photo-like content (a coarse
random field enlarged, plus fine noise, so PNG and JPEG sizes are realistic) and regenerated images, at 64x64 (what
the embedded tiny model makes) and 512x512 (Stable Diffusion 1.5):

- "mixed": 95% bitwise, 3% close (one 8-bit step off on 0.1% of the pixels), 2% different (a brightened patch);
- "model change": every image close, one step off on 20% of the pixels (what a new torch version does to a run).

Then:

- the time to build the report entries (reading each file again, thumbnails, heatmaps, encoding) and to write the
  page, the page's size and its size per image;
- the time headless Chromium takes to open the page and paint the first screen (``--screenshot``), median of
  ``--rounds`` runs, against an empty page opened the same way (the browser's own start), when ``chromium`` is
  installed (``make browser``).

There is no vanilla diffusers counterpart to compare with: the figures are absolute.

Run: ``python benchmarks/bench_report.py [--images 1000] [--sizes 64,512] [--rounds 3]``; results go to
``benchmarks/results/report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image

from diffusers_repro.records.provenance import Provenance, environment_fingerprint
from diffusers_repro.verify.report import report_entry, write_report
from diffusers_repro.verify.reproduction import Difference, Reproduction

BENCH_FORMAT_VERSION = 1
RESULTS = Path(__file__).parent / "results" / "report.json"
# name, size, share close, share different, share of a close image's pixels that are off by one step
SCENARIOS = (("mixed", 64, 0.03, 0.02, 0.001), ("mixed", 512, 0.03, 0.02, 0.001), ("model change", 512, 1.0, 0, 0.2))


def photo_like(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = PIL.Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), PIL.Image.Resampling.BICUBIC)).astype(np.int16)
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


def synthetic_results(
    folder: Path, count: int, size: int, close_share: float, different_share: float, drift: float
) -> list[Reproduction]:
    rng = np.random.default_rng(size)
    environment = environment_fingerprint()
    results = []
    for index in range(count):
        pixels = photo_like(rng, size)
        path = folder / f"job{index:06d}-seed{index}.png"
        PIL.Image.fromarray(pixels).save(path)
        regenerated = pixels.copy()
        verdict = "bitwise"
        differences = []
        if index % 100 < different_share * 100:
            verdict = "different"
            patch = (slice(size // 4, size // 2), slice(size // 3, size // 2))
            regenerated[patch] = np.clip(regenerated[patch].astype(int) + 50, 0, 255)
            differences = [Difference("environment.versions.torch", "2.4.0", "2.13.0")]
        elif index % 100 < (different_share + close_share) * 100:
            verdict = "close"
            rows, columns = np.nonzero(rng.random((size, size)) < drift)
            regenerated[rows, columns, 0] ^= 1
            differences = [Difference("environment.torch_num_threads", 1, 2)]
        record = Provenance(
            index,
            "seed",
            {"call": {"prompt": f"a photo, variation {index}", "num_inference_steps": 30}},
            environment,
            {},
        )
        results.append(
            Reproduction(
                image=PIL.Image.fromarray(regenerated),
                provenance=record,
                recorded=record,
                bitwise_equal=verdict == "bitwise",
                output_digest_equal=verdict == "bitwise",
                pixels_equal=verdict == "bitwise",
                max_abs_diff=0.0 if verdict == "bitwise" else (1 / 255 if verdict == "close" else 50 / 255),
                psnr=None,
                verdict=verdict,
                differences=differences,
                tolerance=2 / 255,
                path=path,
            )
        )
    return results


def open_in_chromium(chromium: str, page: Path, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as profile:
            command = [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={Path(profile) / 'shot.png'}",
                "--window-size=1280,1600",
                page.as_uri(),
            ]
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True, timeout=600)
            times.append(time.perf_counter() - started)
            if not (Path(profile) / "shot.png").exists():
                raise RuntimeError(f"chromium wrote no screenshot of {page}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="chromium openings per page (median)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        empty = scratch / "empty.html"
        empty.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
        baseline = statistics.median(open_in_chromium(chromium, empty, args.rounds)) if chromium else None
        for number, (name, size, close_share, different_share, drift) in enumerate(SCENARIOS):
            folder = scratch / f"images-{number}"
            folder.mkdir()
            results = synthetic_results(folder, args.images, size, close_share, different_share, drift)
            file_bytes = sum(path.stat().st_size for path in folder.iterdir())
            started = time.perf_counter()
            entries = [report_entry(result) for result in results]
            built = time.perf_counter() - started
            page = scratch / f"report-{number}.html"
            started = time.perf_counter()
            write_report(entries, page)
            written = time.perf_counter() - started
            page_bytes = page.stat().st_size
            opened = open_in_chromium(chromium, page, args.rounds) if chromium else None
            run = {
                "scenario": name,
                "images": args.images,
                "size": size,
                "verdicts": {v: sum(r.verdict == v for r in results) for v in ("bitwise", "close", "different")},
                "png_files_kb_per_image": round(file_bytes / args.images / 1024, 1),
                "entries_s": round(built, 2),
                "entries_ms_per_image": round(1000 * built / args.images, 2),
                "write_s": round(written, 2),
                "page_mb": round(page_bytes / 2**20, 2),
                "page_kb_per_image": round(page_bytes / args.images / 1024, 1),
                "chromium_open_s": None if opened is None else round(statistics.median(opened), 2),
                "chromium_open_s_all": None if opened is None else [round(t, 2) for t in opened],
            }
            runs.append(run)
            print(json.dumps(run))
            shutil.rmtree(folder)
    result = {
        "format_version": BENCH_FORMAT_VERSION,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "chromium": None
        if chromium is None
        else subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip(),
        "chromium_empty_page_s": None if baseline is None else round(baseline, 2),
        "runs": runs,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"empty page in chromium: {result['chromium_empty_page_s']} s")
    print("| scenario | images | size | page | per image | entries | write | open in chromium |")
    for run in runs:
        print(
            f"| {run['scenario']} | {run['images']} | {run['size']}x{run['size']} | {run['page_mb']} MB "
            f"| {run['page_kb_per_image']} KB | {run['entries_s']} s | {run['write_s']} s "
            f"| {run['chromium_open_s']} s |"
        )


if __name__ == "__main__":
    main()
