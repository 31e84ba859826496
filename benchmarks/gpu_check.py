"""One command that checks, on a CUDA machine, what this project promises about GPUs, and measures it.

1. `PhiloxGenerator` against torch's CUDA ``randn`` on this GPU, for shapes below and above the GPU's threshold
   (multiprocessors x max threads per multiprocessor values) in float32, float16 and bfloat16: the share of values
   that are bitwise equal, the max abs diff, the max distance in ulp, and whether the offsets agree after two
   consecutive draws. Also the known seed-0 vector.
2. A Stable-Diffusion-1.5-sized pipeline built in code (random weights, float16) with CPU noise (``seed=``):
   two ``deterministic=True`` runs (bitwise?), two plain runs (max diff), ``rng="cuda"`` against vanilla diffusers
   with ``torch.Generator("cuda")`` (bitwise?), the image difference between emulated and real CUDA noise, the
   per-call cost of CPU noise against CUDA noise at 512x512 batch 8, the cost of ``batch_invariant=True`` at
   batch 8, and the per-call overhead: the Repro call with ``seed=`` against vanilla diffusers with the same CPU
   generators (2 images, guidance, paired median ratio) and the operations that passed through our function mode.

Everything is printed and written to ``benchmarks/results/gpu_check.json``. On a machine without CUDA it says so and
exits 0. ``--smoke`` runs every step on the CPU with the tiny pipeline and the emulation as its own reference: it
checks the script, its figures mean nothing.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/gpu_check.py [--steps 20] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# cuBLAS picks its workspace when CUDA starts: the deterministic runs need the variable set before that.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":16:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffusers_repro.generation.cuda_rng import CudaGeometry, PhiloxGenerator  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "gpu_check.json"
NO_CUDA = "gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to measure here"
KNOWN_VECTOR = [
    [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
    [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
    [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
]
PROMPT = "a photograph of an astronaut riding a horse"
SEED = 1234
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------------------------
# Comparing draws


def _ordered_bits(values: torch.Tensor) -> torch.Tensor:
    """Integers in the order of the floats they encode, one apart for neighbouring floats (for ulp distances)."""
    if values.dtype == torch.float32:
        bits, magnitude = values.view(torch.int32).to(torch.int64), 0x7FFFFFFF
    else:
        bits, magnitude = values.view(torch.int16).to(torch.int64), 0x7FFF
    return torch.where(bits < 0, -(bits & magnitude), bits)


def compare_draws(reference: torch.Tensor, emulated: torch.Tensor) -> dict[str, Any]:
    """Share of bitwise-equal values, max abs diff and max ulp distance of two draws of one shape and dtype."""
    reference, emulated = reference.cpu().flatten(), emulated.cpu().flatten()
    ordered_reference, ordered_emulated = _ordered_bits(reference), _ordered_bits(emulated)
    equal = ordered_reference == ordered_emulated
    return {
        "numel": reference.numel(),
        "share_bitwise": float(equal.double().mean()),
        "max_abs_diff": float((reference.float() - emulated.float()).abs().max()),
        "max_ulp": int((ordered_reference - ordered_emulated).abs().max()),
    }


def _draw_pairs(seed: int, shape: tuple[int, ...], dtype: torch.dtype, device: str, geometry: CudaGeometry):
    """Two consecutive draws from torch's generator on ``device`` and from the emulation, with both offsets."""
    emulation = PhiloxGenerator.with_geometry(seed, geometry)
    emulated = [emulation.randn(shape, dtype=dtype) for _ in range(2)]
    if device == "cpu":  # --smoke: the emulation is its own reference
        reference_generator = PhiloxGenerator.with_geometry(seed, geometry)
        reference = [reference_generator.randn(shape, dtype=dtype) for _ in range(2)]
    else:
        reference_generator = torch.Generator(device).manual_seed(seed)
        reference = [torch.randn(shape, generator=reference_generator, device=device, dtype=dtype) for _ in range(2)]
    return reference, emulated, reference_generator.get_offset(), emulation.get_offset()


def check_philox(device: str, geometry: CudaGeometry) -> dict[str, Any]:
    threshold = geometry.threshold
    shapes = [
        ("SD 1.5 latent", (1, 4, 64, 64)),
        ("SDXL latent", (1, 4, 128, 128)),
        ("Flux latent", (1, 16, 128, 128)),
        ("8 SD 1.5 latents in one draw", (8, 4, 64, 64)),
        ("threshold", (threshold,)),
        ("threshold + 1", (threshold + 1,)),
        ("2 x threshold + 5", (2 * threshold + 5,)),
    ]
    rows = []
    for dtype_name, dtype in DTYPES.items():
        for name, shape in shapes:
            reference, emulated, reference_offset, emulated_offset = _draw_pairs(SEED, shape, dtype, device, geometry)
            numel = int(np.prod(shape))
            for draw in (0, 1):
                row = {
                    "shape_name": name,
                    "shape": list(shape),
                    "dtype": dtype_name,
                    "draw": draw + 1,
                    "above_threshold": numel > threshold,
                    **compare_draws(reference[draw], emulated[draw]),
                }
                rows.append(row)
                print(
                    f"  {dtype_name:8s} {name:30s} draw {draw + 1} {'above' if row['above_threshold'] else 'below'}: "
                    f"{row['share_bitwise']:.6f} bitwise, max abs diff {row['max_abs_diff']:.3g}, "
                    f"max {row['max_ulp']} ulp"
                )
            rows[-1]["offsets_equal"] = rows[-2]["offsets_equal"] = reference_offset == emulated_offset
            if reference_offset != emulated_offset:
                print(f"  OFFSETS DIFFER: torch {reference_offset}, emulation {emulated_offset}")
    return {"seed": SEED, "rows": rows}


def check_known_vector(device: str) -> dict[str, Any]:
    known = torch.tensor(KNOWN_VECTOR)
    emulated = PhiloxGenerator(0).randn((3, 4))
    result = {"emulated_vs_known": compare_draws(known, emulated)}
    if device != "cpu":
        drawn = torch.randn((3, 4), generator=torch.Generator(device).manual_seed(0), device=device)
        result["device_vs_known"] = compare_draws(known, drawn)
        result["device_vs_emulated"] = compare_draws(drawn, emulated)
    return result


# ----------------------------------------------------------------------------------------------------------------
# The pipeline


def build_sd15_sized(device: str, dtype: torch.dtype):
    """A pipeline with Stable Diffusion 1.5's UNet, VAE and text encoder sizes and random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffusers_repro import ReproStableDiffusionPipeline
    from diffusers_repro.tiny import build_tiny_tokenizer, sd_v1_scheduler

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        tokenizer = build_tiny_tokenizer()
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = sd_v1_scheduler()
    pipe = ReproStableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def _timed(device: str, function) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    result = function()
    _sync(device)
    return time.perf_counter() - start, result


def _bitwise(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _paired_medians(device: str, first, second, rounds: int) -> dict[str, float]:
    first(), second()  # warm-up: kernels, allocator, cuDNN plans
    times: dict[str, list[float]] = {"first": [], "second": []}
    for _ in range(rounds):
        times["first"].append(_timed(device, first)[0])
        times["second"].append(_timed(device, second)[0])
    return {name: statistics.median(values) for name, values in times.items()}


def call_overhead(device: str, pipe, vanilla, call: dict[str, Any], rounds: int) -> dict[str, Any]:
    """The Repro call with ``seed=`` against vanilla with the same CPU generators, 2 images with guidance, paired.

    On a GPU an SD 1.5 call is thousands of fast kernels: any Python of ours per torch operation would show here.
    """
    from bench_call_overhead import operations_through_mode

    prompts = [PROMPT, "a red bicycle"]

    def ours():
        return pipe(prompts, seed=SEED, **call)

    def theirs():
        return vanilla(prompts, generator=[torch.Generator("cpu").manual_seed(SEED + i) for i in range(2)], **call)

    ours(), theirs()  # warm-up
    ratios, added = [], []
    for index in range(rounds):
        # Alternate the order so that drift (clocks, other work) hits both sides alike.
        if index % 2:
            theirs_s = _timed(device, theirs)[0]
            ours_s = _timed(device, ours)[0]
        else:
            ours_s = _timed(device, ours)[0]
            theirs_s = _timed(device, theirs)[0]
        ratios.append(ours_s / theirs_s)
        added.append(ours_s - theirs_s)
    result = {
        "call_overhead_paired_median_ratio": statistics.median(ratios),
        "call_overhead_added_ms": 1000 * statistics.median(added),
        "call_overhead_operations_through_mode": operations_through_mode(pipe, prompt=prompts, seed=SEED, **call),
    }
    print(
        f"  2 images, {call['num_inference_steps']} steps: Repro/vanilla paired median "
        f"{result['call_overhead_paired_median_ratio']:.4f} ({result['call_overhead_added_ms']:+.2f} ms/call); "
        f"{result['call_overhead_operations_through_mode']} operations through the stray-randomness mode per call"
    )
    return result


def check_pipeline(device: str, smoke: bool, steps: int, rounds: int) -> dict[str, Any]:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.torch_utils import randn_tensor

    if smoke:
        from diffusers_repro import ReproStableDiffusionPipeline
        from diffusers_repro.tiny import build_tiny_pipeline

        pipe = ReproStableDiffusionPipeline(**build_tiny_pipeline("sd").components)
        pipe.set_progress_bar_config(disable=True)
        size = {}
    else:
        pipe = build_sd15_sized(device, torch.float16)
        size = {"height": 512, "width": 512}
    call = {"num_inference_steps": steps, "output_type": "np", **size}
    result: dict[str, Any] = {"steps": steps, "dtype": str(pipe.unet.dtype), "size": size or "default"}

    deterministic = [pipe(PROMPT, seed=SEED, deterministic=True, **call).images for _ in range(2)]
    plain = [pipe(PROMPT, seed=SEED, **call).images for _ in range(2)]
    result["deterministic_runs_bitwise"] = _bitwise(*deterministic)
    result["deterministic_runs_max_diff"] = _max_diff(*deterministic)
    result["plain_runs_bitwise"] = _bitwise(*plain)
    result["plain_runs_max_diff"] = _max_diff(*plain)
    result["nan_share"] = float(np.isnan(plain[0]).mean())
    print(
        f"  deterministic=True twice: bitwise {result['deterministic_runs_bitwise']}; plain twice: bitwise "
        f"{result['plain_runs_bitwise']}, max diff {result['plain_runs_max_diff']:.3g}"
    )

    # rng="cuda" on the GPU is torch.Generator("cuda"): the same images as vanilla diffusers with it.
    vanilla = StableDiffusionPipeline(**pipe.components)
    vanilla.set_progress_bar_config(disable=True)
    ours = pipe(PROMPT, seed=SEED, rng="cuda", deterministic=True, **call)
    if device != "cpu":
        from diffusers_repro import full_determinism

        with full_determinism():
            theirs = vanilla(PROMPT, generator=[torch.Generator(device).manual_seed(SEED)], **call).images
        result["rng_cuda_equals_vanilla_cuda_generator"] = _bitwise(ours.images, theirs)
        result["rng_cuda_record"] = ours.provenance[0].recipe["rng"]
        # Emulated noise against the GPU's: how far apart the images end up.
        shape = (1, 4, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        geometry = CudaGeometry.from_device(device)
        latents = PhiloxGenerator.with_geometry(SEED, geometry).randn(shape, dtype=pipe.unet.dtype).to(device)
        emulated = pipe(PROMPT, latents=latents, deterministic=True, seed=SEED, **call).images
        result["emulated_noise_image_max_diff"] = _max_diff(emulated, ours.images)
        # A user's CUDA generator: its record holds the seed, the offset and the GPU's geometry.
        user = pipe(PROMPT, generator=torch.Generator(device).manual_seed(SEED), **call)
        result["cuda_generator_record"] = user.provenance[0].recipe["generator"]
        print(
            f"  rng='cuda' equals vanilla with torch.Generator('cuda'): "
            f"{result['rng_cuda_equals_vanilla_cuda_generator']}; emulated vs real noise, image max diff "
            f"{result['emulated_noise_image_max_diff']:.3g}"
        )

    result.update(_section(call_overhead, device, pipe, vanilla, call, max(rounds, 7)))

    # CPU noise against CUDA noise at batch 8: the noise alone, and whole calls.
    batch = [PROMPT] * 8
    shape = (8, 4, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noise_device = torch.device(device)

    def cpu_noise():
        generators = [torch.Generator("cpu").manual_seed(SEED + i) for i in range(8)]
        return randn_tensor(shape, generator=generators, device=noise_device, dtype=pipe.unet.dtype)

    def cuda_noise():
        generators = [torch.Generator(device).manual_seed(SEED + i) for i in range(8)]
        return randn_tensor(shape, generator=generators, device=noise_device, dtype=pipe.unet.dtype)

    noise = _paired_medians(device, cpu_noise, cuda_noise, max(rounds, 20))
    calls = _paired_medians(
        device,
        lambda: pipe(batch, seed=SEED, **call),
        lambda: pipe(batch, seed=SEED, rng="cuda", **call),
        rounds,
    )
    result["noise_batch8_cpu_s"], result["noise_batch8_cuda_s"] = noise["first"], noise["second"]
    result["call_batch8_cpu_noise_s"], result["call_batch8_cuda_noise_s"] = calls["first"], calls["second"]
    print(
        f"  batch 8 noise: CPU generators {noise['first'] * 1e3:.2f} ms, CUDA generators {noise['second'] * 1e3:.2f} "
        f"ms; whole call: CPU noise {calls['first']:.3f} s, CUDA noise {calls['second']:.3f} s"
    )

    invariant = _paired_medians(
        device,
        lambda: pipe(batch, seed=SEED, **call),
        lambda: pipe(batch, seed=SEED, batch_invariant=True, **call),
        rounds,
    )
    result["call_batch8_s"], result["call_batch8_batch_invariant_s"] = invariant["first"], invariant["second"]
    result["batch_invariant_ratio"] = invariant["second"] / invariant["first"]
    print(
        f"  batch 8: normal {invariant['first']:.3f} s, batch_invariant=True {invariant['second']:.3f} s "
        f"({result['batch_invariant_ratio']:.2f}x)"
    )
    return result


# ----------------------------------------------------------------------------------------------------------------


def _section(check, *args) -> dict[str, Any]:
    # One failing check (an op without a deterministic kernel, out of memory) must not cost the others' figures.
    try:
        return check(*args)
    except Exception as error:  # noqa: BLE001 - reported in the results and on the screen
        print(f"  FAILED: {type(error).__name__}: {error}")
        return {"error": f"{type(error).__name__}: {error}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the pipeline calls (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per comparison (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument("--smoke", action="store_true", help="check the script on the CPU (meaningless figures)")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        geometry, gpu = CudaGeometry(2, 256), "none (--smoke: emulation against itself, tiny pipeline on the CPU)"
        args.steps = min(args.steps, 2)
    else:
        geometry, gpu = CudaGeometry.from_device(), torch.cuda.get_device_name()
    print(
        f"gpu_check on {gpu}: geometry {geometry} (threshold {geometry.threshold} values), torch {torch.__version__}"
    )
    results: dict[str, Any] = {
        "gpu": gpu,
        "geometry": geometry.to_dict(),
        "threshold": geometry.threshold,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    print("known seed-0 vector:")
    results["known_vector"] = _section(check_known_vector, device)
    for name, row in results["known_vector"].items():
        if isinstance(row, dict):
            print(f"  {name}: max abs diff {row['max_abs_diff']:.3g}, max {row['max_ulp']} ulp")
    print("PhiloxGenerator against torch's randn on the device:")
    results["philox"] = _section(check_philox, device, geometry)
    print("SD-1.5-sized pipeline:" if not args.smoke else "tiny pipeline (--smoke):")
    results["pipeline"] = _section(check_pipeline, device, args.smoke, args.steps, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(args.out.name + ".tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(temporary, args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
