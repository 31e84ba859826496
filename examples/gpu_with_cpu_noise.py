"""GPU generation with noise drawn on the CPU (falls back to the CPU without a GPU).

The starting noise comes from one CPU ``torch.Generator`` per image and is moved to the GPU, so the noise digest is
the same as on a CPU-only machine: only the denoising arithmetic differs between devices.

    python examples/gpu_with_cpu_noise.py
"""

import torch

from diffusers_repro import ReproStableDiffusionPipeline
from diffusers_repro.tiny import tiny_pipeline_path


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd")).to(device)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a fox", "a bear"], seed=42, num_inference_steps=4, output_type="np")
    for record in out.provenance:
        print(f"{record.environment['device']:6s} seed {record.seed} noise {record.result['noise_digest'][:23]}")

    if device != "cpu":
        cpu = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
        cpu.set_progress_bar_config(disable=True)
        reference = cpu(["a fox", "a bear"], seed=42, num_inference_steps=4, output_type="np")
        same_noise = [
            a.result["noise_digest"] == b.result["noise_digest"]
            for a, b in zip(out.provenance, reference.provenance, strict=True)
        ]
        print(f"same starting noise as the CPU: {all(same_noise)}")
        print(f"max abs diff of the images vs the CPU: {abs(out.images - reference.images).max():.3g}")
    else:
        print("no GPU here: generated on the CPU; on a GPU the noise digests above stay the same")


if __name__ == "__main__":
    main()
