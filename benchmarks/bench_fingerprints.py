"""Which fingerprint finds a stripped copy better: the 256-bit pHash `find` uses, or the ISCC Content-Code Image.

Images: ``--images`` 256x256 RGB pictures with natural-image statistics (1/f amplitude spectrum per channel, random
phases, so neighbouring pixels correlate as in photos and generated images), one per seed. Copies of each, every byte
of metadata gone: the PNG re-saved (stripped), resized to 128 and to 64 pixels, JPEG at quality 90, 70 and 50,
resized to 64 then JPEG 70 (what chat apps and upload sites do), WebP 60, and upscaled to 512. Unrelated pairs: every
pair of different images.

Per fingerprint (pHash 256 bits, ISCC 64 and 256 bits), ``similarity = 1 - hamming distance / bits``: the lowest
similarity of a copy per kind, the mean, standard deviation and highest of unrelated pairs, the margin (lowest copy
minus highest unrelated: positive means one threshold separates all of them) and the errors at a 0.8 threshold.

Usage:

```bash
.venv/bin/python benchmarks/bench_fingerprints.py              # about 20 s on 2 CPU cores
.venv/bin/python benchmarks/bench_fingerprints.py --images 20  # a quick look
```

Writes ``benchmarks/results/fingerprints.json``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
from pathlib import Path

import numpy as np
import PIL.Image

from diffusers_repro.files.fingerprints import (
    MATCH_THRESHOLD,
    fingerprint,
    iscc_image_code,
    iscc_similarity,
    similarity,
)


def natural_image(seed: int, size: int = 256) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
    amplitude = 1.0 / np.maximum(frequency, 1.0 / size)
    channels = []
    for _ in range(3):
        field = np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((size, size)))))
        channels.append((field - field.min()) / (field.max() - field.min()))
    return PIL.Image.fromarray((np.stack(channels, axis=-1) * 255).round().astype(np.uint8))


def _encoded(image: PIL.Image.Image, format: str, **options) -> PIL.Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    buffer.seek(0)
    with PIL.Image.open(buffer) as decoded:
        return decoded.convert("RGB")


COPIES = {
    "stripped PNG": lambda image: _encoded(image, "PNG"),
    "resized 128": lambda image: image.resize((128, 128)),
    "resized 64": lambda image: image.resize((64, 64)),
    "JPEG 90": lambda image: _encoded(image, "JPEG", quality=90),
    "JPEG 70": lambda image: _encoded(image, "JPEG", quality=70),
    "JPEG 50": lambda image: _encoded(image, "JPEG", quality=50),
    "resized 64 + JPEG 70": lambda image: _encoded(image.resize((64, 64)), "JPEG", quality=70),
    "WebP 60": lambda image: _encoded(image, "WEBP", quality=60),
    "upscaled 512": lambda image: image.resize((512, 512)),
}

FINGERPRINTS = {
    "pHash 256 (find)": (fingerprint, similarity),
    "ISCC 64": (lambda image: iscc_image_code(image, bits=64), iscc_similarity),
    "ISCC 256 (soft binding)": (lambda image: iscc_image_code(image, bits=256), iscc_similarity),
}


def measure(count: int) -> dict:
    images = [natural_image(seed) for seed in range(count)]
    results = {}
    for name, (compute, compare) in FINGERPRINTS.items():
        originals = [compute(image) for image in images]
        copies = {
            kind: [compare(original, compute(make(image))) for original, image in zip(originals, images, strict=True)]
            for kind, make in COPIES.items()
        }
        unrelated = [compare(a, b) for a, b in itertools.combinations(originals, 2)]
        lowest_copy = min(min(values) for values in copies.values())
        results[name] = {
            "copies_min": {kind: min(values) for kind, values in copies.items()},
            "unrelated_mean": float(np.mean(unrelated)),
            "unrelated_std": float(np.std(unrelated)),
            "unrelated_max": max(unrelated),
            "margin": lowest_copy - max(unrelated),
            "missed_at_threshold": sum(value < MATCH_THRESHOLD for values in copies.values() for value in values),
            "false_at_threshold": sum(value >= MATCH_THRESHOLD for value in unrelated),
            "copies": sum(len(values) for values in copies.values()),
            "pairs": len(unrelated),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    results = measure(args.images)
    names = list(results)
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for kind in COPIES:
        print(
            f"| copy: {kind} (lowest) | " + " | ".join(f"{results[n]['copies_min'][kind]:.3f}" for n in names) + " |"
        )
    print(
        "| unrelated: mean +- std | "
        + " | ".join(f"{results[n]['unrelated_mean']:.3f} +- {results[n]['unrelated_std']:.3f}" for n in names)
        + " |"
    )
    print("| unrelated: highest | " + " | ".join(f"{results[n]['unrelated_max']:.3f}" for n in names) + " |")
    print(
        "| margin (lowest copy - highest unrelated) | "
        + " | ".join(f"{results[n]['margin']:.3f}" for n in names)
        + " |"
    )
    print(
        f"| errors at {MATCH_THRESHOLD} (missed copies / false matches) | "
        + " | ".join(f"{results[n]['missed_at_threshold']} / {results[n]['false_at_threshold']}" for n in names)
        + " |"
    )
    first = results[names[0]]
    print(f"({args.images} images, {first['copies']} copies, {first['pairs']} unrelated pairs)")
    out = Path(__file__).parent / "results" / "fingerprints.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"images": args.images, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
