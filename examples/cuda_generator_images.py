"""Images made with ``torch.Generator("cuda")``, made again on any device with ``rng="cuda"``.

``rng="cuda"`` gives each image the noise its own ``torch.Generator("cuda").manual_seed(seed)`` would draw: on a GPU
with real CUDA generators, elsewhere emulated by ``PhiloxGenerator``. The first lines compare the emulation with
torch's CUDA ``randn`` for seed 0 (a known vector, and the GPU itself when there is one).

    python examples/cuda_generator_images.py
"""

import torch

from diffusers_repro import PhiloxGenerator, ReproStableDiffusionPipeline
from diffusers_repro.tiny import tiny_pipeline_path
from diffusers_repro.verify.replay import reproduce

# torch.randn((3, 4), generator=torch.Generator("cuda").manual_seed(0), device="cuda")
CUDA_SEED_0 = torch.tensor(
    [
        [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
        [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
        [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
    ]
)


def main() -> None:
    emulated = PhiloxGenerator(0).randn((3, 4))
    print(f"emulated vs the GPU's seed-0 vector: max abs diff {(emulated - CUDA_SEED_0).abs().max():.2g}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        drawn = torch.randn((3, 4), generator=torch.Generator("cuda").manual_seed(0), device="cuda").cpu()
        print(f"emulated vs this GPU: max abs diff {(emulated - drawn).abs().max():.2g}")

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd")).to(device)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a fox", "a bear"], seed=42, rng="cuda", num_inference_steps=4)
    for record in out.provenance:
        rng = record.recipe["rng"]
        how = "emulated" if rng["emulated"] else "torch.Generator('cuda')"
        print(f"seed {record.seed}: CUDA noise ({how}), noise {record.result['noise_digest'][:23]}")
    # A mixed batch: its records name each other by digest, so the siblings are passed to replay the whole batch.
    again = reproduce(out.provenance[1], pipe=pipe, batch_from=out.provenance)
    print(f"reproduced image 1 from its record: {again.verdict}")


if __name__ == "__main__":
    main()
