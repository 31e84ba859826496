"""Images from other Stable Diffusion tools: read an AUTOMATIC1111 image's recipe and make the image again, bitwise.

An A1111 PNG carries its recipe as a ``parameters`` text chunk. This script first makes such a file the way A1111
1.10 would with ``Sampler: Euler a``, ``RNG: CPU`` and ``ENSD: 31337`` (vanilla diffusers with the mapped scheduler and
A1111's noise: the embedded tiny model stands in for a real checkpoint), then does what a user does with a file
from anyone: reads its recipe (`read_recipe`), prints the diffusers code that makes it (`inspect --as-code`), and
regenerates it with `reproduce(path, pipe=...)`.

    python examples/other_tools.py [--out outputs/other-tools]
"""

import argparse
from pathlib import Path

import PIL.PngImagePlugin
import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging

from diffusers_repro import ReproStableDiffusionPipeline, read_recipe, reproduce
from diffusers_repro.cli import main as cli
from diffusers_repro.interop import a1111_noise
from diffusers_repro.tiny import tiny_pipeline_path

PROMPT, NEGATIVE, SEED, STEPS, SIZE = "a red fox in the snow", "blurry", 1234, 8, 64


def make_a1111_file(path: Path) -> Path:
    """A PNG as A1111 writes one: the image, and the infotext in a ``parameters`` tEXt chunk."""
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    # A1111's Euler a: the model's betas, k-diffusion's uniform schedule (diffusers' linspace spacing).
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.scheduler.register_to_config(steps_offset=0)
    channels, factor = pipe.unet.config.in_channels, pipe.vae_scale_factor
    noise = a1111_noise((1, channels, SIZE // factor, SIZE // factor), SEED, rng="cpu", ensd=31337, sampler="Euler a")
    with noise.context():
        image = pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=STEPS,
            guidance_scale=7.0,
            width=SIZE,
            height=SIZE,
            latents=noise.latents,
            generator=noise.generator,
        ).images[0]
    infotext = (
        f"{PROMPT}\nNegative prompt: {NEGATIVE}\nSteps: {STEPS}, Sampler: Euler a, Schedule type: Automatic, "
        f"CFG scale: 7, Seed: {SEED}, Size: {SIZE}x{SIZE}, Model hash: 0123456789, Model: tiny-sd, RNG: CPU, "
        "ENSD: 31337, Version: v1.10.1"
    )
    info = PIL.PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    image.save(path, pnginfo=info)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/other-tools"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    diffusers_logging.disable_progress_bar()
    torch.set_num_threads(1)  # CPU bits depend on the thread count: the same for making and regenerating

    path = make_a1111_file(args.out / "00000-1234.png")
    recipe = read_recipe(path)
    print(f"{path.name}: {recipe.source} recipe, sampler {recipe.sampler!r} -> {recipe.scheduler}")
    print(f"  seed {recipe.seed}, {recipe.steps} steps, rng {recipe.rng}, blockers: {list(recipe.blockers) or 'none'}")

    print("\n# diffusers-repro inspect --as-code (first lines):")
    cli(["inspect", "--as-code", str(path)])

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    pipe.set_progress_bar_config(disable=True)
    result = reproduce(path, pipe=pipe)
    print(f"\nreproduce: {result.summary}; max abs pixel difference {result.max_abs_diff}")


if __name__ == "__main__":
    main()
