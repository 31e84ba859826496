"""``diffusers-repro demo``: generate twice with the embedded tiny model, compare the bits, verify the images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import PROG, load_model, positive_int, short_digest
from .inspect import inspect_lines
from .verify import write_report_file

DEMO_PROMPTS = ("a red fox in fresh snow", "a lighthouse at dusk")
DEMO_SEEDS = (0, 1)


# --------------------------------------------------------------------------------------------------------------------
# demo


def demo_command(args: argparse.Namespace) -> int:
    import time

    import torch

    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    # CPU bits depend on the thread count: both runs and the verification use the same, pinned one.
    torch.set_num_threads(args.threads)
    try:
        return _run_demo(args, started)
    finally:
        torch.set_num_threads(previous_threads)


def _run_demo(args: argparse.Namespace, started: float) -> int:
    import time

    from ..files import read_image_file
    from ..runs import generate
    from ..tiny import tiny_pipeline_path
    from ..verify import report_entry, reproduce

    model = tiny_pipeline_path("sd")
    print(f"diffusers-repro demo: the embedded tiny Stable Diffusion model in {model} (built in code, no download)")
    pipe = load_model(str(model))
    prompts, seeds = list(DEMO_PROMPTS), list(DEMO_SEEDS)
    runs = [args.out / "run-1", args.out / "run-2"]
    results = []
    for number, folder in enumerate(runs, start=1):
        again = " again" if number > 1 else ""
        print(
            f"{number}. generate{again} {len(prompts)} prompts x {len(seeds)} seeds ({args.steps} steps) -> {folder}"
        )
        results.append(
            generate(
                pipe,
                prompts,
                seeds,
                folder,
                overwrite=True,
                progress=False,
                threads=args.threads,
                num_inference_steps=args.steps,
            )
        )
    print("3. compare the two runs, image by image (pixel digests read back from the files):")
    print(f"   {'file':<22} {'prompt':<26} {'run 1':<24} {'run 2':<24} same")
    identical = 0
    for first, second in zip(results[0].paths, results[1].paths, strict=True):
        a, b = read_image_file(first), read_image_file(second)
        same = a.pixel_digest == b.pixel_digest
        identical += same
        prompt = a.provenance.call_arguments.get("prompt")
        print(
            f"   {first.name:<22} {prompt:<26.26} {short_digest(a.pixel_digest):<24} "
            f"{short_digest(b.pixel_digest):<24} {'yes' if same else 'NO'}"
        )
    total = len(results[0].paths)
    print(f"   {identical}/{total} images bitwise identical across the two runs")
    print(f"4. verify {runs[0]}: regenerate every image from the record embedded in its PNG")
    bitwise = 0
    report = []
    for path in results[0].paths:
        result = reproduce(path, pipe=pipe)
        bitwise += result.bitwise_equal
        report.append(report_entry(result))
        print(f"   {path.name}: {result.summary}")
    print(f"   {bitwise}/{total} images reproduce bitwise")
    signed = _demo_inspect(results[0].paths[0])
    write_report_file(report, args.out / "report.html", quiet=True)
    print(f"   the report, each file beside its regeneration: {args.out / 'report.html'}")
    ok = identical == total and bitwise == total and signed
    print(
        f"{'OK' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s. Next: "
        f"`{PROG} inspect {results[0].paths[0]}`, `{PROG} verify {runs[0]}`, "
        f"`{PROG} diff {results[0].paths[0]} {results[0].paths[1]}`, "
        f"`{PROG} verify {runs[0]} --report report.html`"
    )
    return 0 if ok else 1


def _demo_inspect(path: Path) -> bool:
    from ..files import file_credentials, read_image_file

    print(f"5. inspect {path}: its record and its Content Credentials (signed C2PA manifest)")
    image_file = read_image_file(path)
    credentials = file_credentials(image_file)
    for line in inspect_lines(image_file):
        print(f"   {line}")
    print(f"   credentials:     {credentials.summary}")
    print(f"   made by:         {credentials.generator} (c2pa.created, trainedAlgorithmicMedia)")
    return credentials.intact


def add_demo_parser(commands: Any) -> None:
    """``diffusers-repro demo``: its options."""
    demo = commands.add_parser(
        "demo",
        help="generate with the embedded tiny model twice, show the bits are identical, verify the images",
        description=(
            f"Generates {len(DEMO_PROMPTS)} prompts x {len(DEMO_SEEDS)} seeds with the embedded tiny Stable "
            "Diffusion model (built on first use, no download), generates them again, shows that both runs are "
            "bitwise identical, saves the images with their provenance and verifies them."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: outputs/demo)")
    demo.add_argument("--steps", type=positive_int, default=10, help="denoising steps (default: 10)")
    demo.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads, pinned for both runs (default: 1)"
    )
    demo.set_defaults(handler=demo_command, loads_models=True)
