"""Schema checking is cheap: the cost of checking a record against reading it alone.

Three figures per record, each the median of interleaved rounds over the same records:

- ``read``: the PNG opened, its text chunks read and the record JSON parsed (``json.loads``), no checks;
- ``checked read``: `diffusers_repro.files.save.read_provenance`, which adds the depth/size caps and the schema;
- ``schema``: `diffusers_repro.records.schema.check_record` alone on parsed data.

The records are real: a tiny SD pipeline makes a mixed batch of 4 images (so records carry batch ids and sibling
digests) and a LoRA operation log is added to one copy of them, as a larger record. Goal: schema checking adds
under 1 ms per record; the ratio checked read / read is printed.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_schema.py [--rounds 200]``; results go to
``benchmarks/results/schema.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import PIL.Image

RESULTS = Path(__file__).parent / "results" / "schema.json"
TARGET_MS = 1.0


def _records(folder: Path) -> list[Path]:
    from diffusers_repro import ReproStableDiffusionPipeline
    from diffusers_repro.files.save import save_image
    from diffusers_repro.records.provenance import Provenance
    from diffusers_repro.tiny import tiny_pipeline_path

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a fox", "a bear", "a cat", "an owl"], seed=0, num_inference_steps=2)
    pairs = enumerate(zip(out.images, out.provenance, strict=True))
    paths = [save_image(image, folder / f"{i}.png", record) for i, (image, record) in pairs]
    with_lora = copy.deepcopy(out.provenance[0].to_dict())
    source = {"type": "local", "path": "/models/style.safetensors", "file_digest": "sha256:" + "0" * 64}
    operations = [{"op": "load_lora_weights", "adapter_name": f"a{i}", "source": source} for i in range(8)]
    operations += [{"op": "set_adapters", "adapter_names": [f"a{i}" for i in range(8)], "adapter_weights": [0.5] * 8}]
    with_lora["recipe"]["model"]["lora"] = {"operations": operations}
    paths.append(save_image(out.images[0], folder / "lora.png", Provenance.from_dict(with_lora)))
    return paths


def _read_alone(path: Path) -> dict:
    with PIL.Image.open(path) as image:
        image.load()
        return json.loads(image.text["diffusers-repro"])


def _median_ms(function, items, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            function(item)
        times.append((time.perf_counter() - started) * 1000 / len(items))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    from diffusers_repro.files.imagefile import read_provenance
    from diffusers_repro.records.schema import check_record

    with tempfile.TemporaryDirectory() as folder:
        paths = _records(Path(folder))
        parsed = [_read_alone(path) for path in paths]
        sizes = [len(json.dumps(data)) for data in parsed]
        read, checked, schema = [], [], []
        for _ in range(args.rounds // 10):  # interleaved, so load on the machine hits all three alike
            read += _median_ms(_read_alone, paths, 10)
            checked += _median_ms(read_provenance, paths, 10)
            schema += _median_ms(check_record, parsed, 10)
    figures = {
        "records": len(paths),
        "record_chars": {"min": min(sizes), "max": max(sizes)},
        "read_ms": statistics.median(read),
        "checked_read_ms": statistics.median(checked),
        "schema_ms": statistics.median(schema),
    }
    figures["added_ms"] = figures["checked_read_ms"] - figures["read_ms"]
    figures["ratio"] = figures["checked_read_ms"] / figures["read_ms"]
    figures["target_ms"] = TARGET_MS
    figures["met"] = figures["schema_ms"] < TARGET_MS and figures["added_ms"] < TARGET_MS
    figures["machine"] = platform.platform()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"{len(paths)} records of {min(sizes)}-{max(sizes)} chars: read alone {figures['read_ms']:.3f} ms, checked "
        f"read {figures['checked_read_ms']:.3f} ms (ratio {figures['ratio']:.3f}, +{figures['added_ms']:.3f} ms), "
        f"schema alone {figures['schema_ms']:.3f} ms per record; target < {TARGET_MS} ms: "
        f"{'met' if figures['met'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
