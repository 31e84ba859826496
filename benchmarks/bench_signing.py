"""The cost of Content Credentials: writing one 512x512 image, and signing inside a `generate` run.

Part 1 - one 512x512 RGB image (smooth structure plus fine noise, so it compresses like a generated image), written
with `save_image` in each configuration, interleaved rounds, median:

- a plain ``PIL.Image.save`` PNG (vanilla, no record);
- `save_image` PNG unsigned, PNG signed, JPEG unsigned / signed, WebP unsigned / signed (quality 95).

"Signing adds" is the signed minus the unsigned median of the same format (the C2PA manifest: c2pa-python's builder,
an ES256 signature and the rewrite of the file with the manifest embedded); ``sign_image_bytes`` is also timed alone
on the encoded files, which measures the same cost without the encoders' run-to-run noise around it. Target: at most
15 ms per image.

Part 2 - `diffusers_repro.runs.distributed.generate` on the ``sd-small`` tiny model (256x256, 10 steps, CFG), the same
grid with ``sign=False`` and ``sign=True`` in interleaved rounds, 1 thread. Target: signing adds at most 5%.

Usage:

```bash
.venv/bin/python benchmarks/bench_signing.py               # about a minute on 2 CPU cores
.venv/bin/python benchmarks/bench_signing.py --rounds 3    # a quick look
```

Writes ``benchmarks/results/signing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "signing.json"
PROMPTS = ["a red fox in fresh snow", "a lighthouse at dusk"]


def _image():
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(0)
    coarse = PIL.Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((512, 512), 3)
    fine = rng.normal(0, 6, (512, 512, 3))
    return PIL.Image.fromarray(np.clip(np.asarray(coarse) + fine, 0, 255).astype(np.uint8))


def _record():
    from diffusers_repro import ReproDDIMPipeline
    from diffusers_repro.tiny import tiny_pipeline_path

    pipe = ReproDDIMPipeline.from_pretrained(str(tiny_pipeline_path("ddim")))
    pipe.set_progress_bar_config(disable=True)
    return pipe(num_inference_steps=1, seed=0).provenance[0]


def write_one_image(rounds: int, folder: Path) -> dict[str, float]:
    from diffusers_repro.files.save import save_image

    image, record = _image(), _record()
    configs = {
        "vanilla PIL PNG (no record)": lambda path: image.save(path.with_suffix(".png")),
        "PNG unsigned": lambda path: save_image(image, path.with_suffix(".png"), record, sign=False),
        "PNG signed": lambda path: save_image(image, path.with_suffix(".png"), record),
        "JPEG unsigned": lambda path: save_image(image, path.with_suffix(".jpg"), record, sign=False),
        "JPEG signed": lambda path: save_image(image, path.with_suffix(".jpg"), record),
        "WebP unsigned": lambda path: save_image(image, path.with_suffix(".webp"), record, sign=False),
        "WebP signed": lambda path: save_image(image, path.with_suffix(".webp"), record),
    }
    for write in configs.values():  # warm-up: identity made and loaded, encoders and c2pa initialized
        write(folder / "warmup")
    times: dict[str, list[float]] = {name: [] for name in configs}
    for index in range(rounds):
        for name, write in configs.items():
            started = time.perf_counter()
            write(folder / f"{index}-{name.replace(' ', '_')}")
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def sign_alone(rounds: int, folder: Path) -> dict[str, float]:
    """`sign_image_bytes` on the encoded file alone, with the ISCC soft binding computed from the pixels: the signing
    cost without the encoders' noise around it."""
    from diffusers_repro.files.fingerprints import iscc_image_code
    from diffusers_repro.files.identity import default_identity
    from diffusers_repro.files.save import save_image
    from diffusers_repro.files.signing import sign_image_bytes

    image, record, identity = _image(), _record(), default_identity()
    encoded = {
        fmt: save_image(image, folder / f"alone{suffix}", record, sign=False).read_bytes()
        for fmt, suffix in (("png", ".png"), ("jpeg", ".jpg"), ("webp", ".webp"))
    }
    record_json = record.to_json()
    times: dict[str, list[float]] = {fmt: [] for fmt in encoded}
    for _ in range(rounds):
        for fmt, data in encoded.items():
            started = time.perf_counter()
            sign_image_bytes(data, fmt, identity, record_json, iscc_image_code(image))
            times[fmt].append(time.perf_counter() - started)
    return {fmt: statistics.median(values) * 1000 for fmt, values in times.items()}


def generate_run(rounds: int, seeds: int, steps: int, folder: Path) -> dict[str, float]:
    import torch

    from diffusers_repro import ReproStableDiffusionPipeline
    from diffusers_repro.runs.distributed import generate
    from diffusers_repro.tiny import tiny_pipeline_path

    torch.set_num_threads(1)
    pipe = ReproStableDiffusionPipeline.from_pretrained(str(tiny_pipeline_path("sd-small")))
    pipe.set_progress_bar_config(disable=True)
    pipe(PROMPTS[0], num_inference_steps=1, seed=0)
    times: dict[str, list[float]] = {"unsigned": [], "signed": []}
    for index in range(rounds):
        for name, sign in (("unsigned", False), ("signed", True)):
            out = folder / f"run-{index}-{name}"
            started = time.perf_counter()
            generate(
                pipe, PROMPTS, list(range(seeds)), out, threads=1, progress=False, sign=sign, num_inference_steps=steps
            )
            times[name].append(time.perf_counter() - started)
    ratios = [signed / unsigned for signed, unsigned in zip(times["signed"], times["unsigned"], strict=True)]
    return {
        "images": len(PROMPTS) * seeds,
        "unsigned_median_s": statistics.median(times["unsigned"]),
        "signed_median_s": statistics.median(times["signed"]),
        "median_paired_ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the one-image writes (default: 15)")
    parser.add_argument("--generate-rounds", type=int, default=3, help="rounds of the generate runs (default: 3)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt in a generate run (default: 2)")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps (default: 10)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        # A throwaway identity: the benchmark never touches the user's own.
        os.environ["DIFFUSERS_REPRO_HOME"] = str(Path(tmp) / "home")
        writes = write_one_image(args.rounds, Path(tmp))
        print(f"one 512x512 image, median of {args.rounds} interleaved rounds:")
        for name, ms in writes.items():
            print(f"  {name:<28} {ms:7.2f} ms")
        added = {fmt: writes[f"{fmt} signed"] - writes[f"{fmt} unsigned"] for fmt in ("PNG", "JPEG", "WebP")}
        for fmt, ms in added.items():
            verdict = "met" if ms <= 15 else "NOT met"
            print(f"  signing adds ({fmt}):{'':<10} {ms:7.2f} ms per image (target <= 15 ms: {verdict})")
        alone = sign_alone(args.rounds, Path(tmp))
        for fmt, ms in alone.items():
            print(f"  sign_image_bytes alone ({fmt}): {ms:6.2f} ms")
        run = generate_run(args.generate_rounds, args.seeds, args.steps, Path(tmp))
        overhead = (run["median_paired_ratio"] - 1) * 100
        met = "met" if overhead <= 5 else "NOT met"
        print(
            f"generate, sd-small, {run['images']} images, {args.steps} steps, 1 thread: unsigned "
            f"{run['unsigned_median_s']:.2f} s, signed {run['signed_median_s']:.2f} s, median paired ratio "
            f"{run['median_paired_ratio']:.3f} ({overhead:+.1f}%; target <= +5%: {met})"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "one_image_ms": writes,
                "signing_adds_ms": added,
                "sign_image_bytes_alone_ms": alone,
                "generate": run,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
