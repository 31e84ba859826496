"""CPU generation that prints the same value on every run.

One seed per image and one CPU generator per image: run this script twice, on any machine with the same library
versions and thread count, and it prints the same digest and the same first pixel values.

    python examples/cpu_generation.py
"""

import torch

from diffusers_repro import ReproStableDiffusionPipeline
from diffusers_repro.tiny import tiny_pipeline_path


def main() -> None:
    # CPU results depend on the intra-op thread count; pin it where bits must match run to run.
    torch.set_num_threads(1)
    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a photo of a fox in the snow", seed=0, num_inference_steps=4, output_type="np")
    record = out.provenance[0]
    print(f"seed {record.seed}: first pixel {out.images[0][0, 0].tolist()}")
    print(f"output digest {record.result['output_digest']}")


if __name__ == "__main__":
    main()
