"""Deterministic batch generation saved as one image grid.

Row 1: one prompt with seeds 0-3 (``seed=0`` gives the 4 images seeds 0, 1, 2, 3).
Row 2: four prompt variants all on seed 0 (``seed=[0, 0, 0, 0]``), so only the prompt changes.

    python examples/batch_grid.py [--out grid.png]
"""

import argparse
from pathlib import Path

from diffusers.utils import make_image_grid

from diffusers_repro import ReproStableDiffusionPipeline
from diffusers_repro.tiny import tiny_pipeline_path


def main() -> None:
    parser = argparse.ArgumentParser(description="Seeds 0-3, then 4 prompt variants on seed 0, as one grid.")
    parser.add_argument("--out", type=Path, default=Path("outputs/examples/batch_grid.png"))
    args = parser.parse_args()

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    pipe.set_progress_bar_config(disable=True)
    seeds = pipe(["a fox in the snow"] * 4, seed=0, num_inference_steps=4)
    variants = [
        "a fox in the snow",
        "a red fox in the snow",
        "a fox in the snow at night",
        "a fox in the snow, watercolor",
    ]
    prompts = pipe(variants, seed=[0, 0, 0, 0], num_inference_steps=4)

    grid = make_image_grid(seeds.images + prompts.images, rows=2, cols=4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    for record in seeds.provenance + prompts.provenance:
        print(f"seed {record.seed}  prompt {record.call_arguments['prompt']!r}")
    print(f"saved {args.out} ({grid.size[0]}x{grid.size[1]})")


if __name__ == "__main__":
    main()
