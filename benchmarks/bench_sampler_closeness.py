"""How close each sampler mapping is: k-diffusion's own samplers (what A1111 and ComfyUI call) against the diffusers
scheduler that `diffusers_repro.generation.samplers.from_a1111` maps them to, on the tiny SD model, same noise.

For each A1111 sampler + schedule type with a diffusers mapping, the tiny SD pipeline's UNet runs twice from the same
starting noise (a CPU generator, drawn the way the diffusers pipeline draws it):

- **k-diffusion, as A1111 drives it**: k-diffusion's ``DiscreteEpsDDPMDenoiser`` (what its ``CompVisDenoiser`` is for
  a CompVis model: sigma <-> timestep by k-diffusion's own log-sigma interpolation, ``quantize=False`` as A1111's
  default) over the UNet and the scheduler's ``alphas_cumprod``; classifier-free guidance as A1111's ``CFGDenoiser``
  does it (cond and uncond in one batch, guidance on the denoised predictions); the sigmas A1111 builds for the
  schedule type (k-diffusion's ``get_sigmas``/``get_sigmas_karras``/``get_sigmas_exponential`` between the model's
  smallest and largest sigma), dropping the next-to-last sigma where A1111 does (DPM2, DPM2 a, DPM++ 3M SDE);
- **diffusers**: a vanilla ``StableDiffusionPipeline`` with the mapped scheduler class and config applied over the
  model's scheduler config, ``output_type="latent"``.

Later noise (ancestral and SDE samplers): k-diffusion's ``noise_sampler`` draws from the same CPU generator, after
the starting noise, one draw per step - the order in which diffusers' schedulers draw from the pipeline's generator
(and, for ``Euler a`` and ``DPM2 a``, what A1111 itself draws with ``RNG: CPU`` and no ENSD). ``DPM++ SDE`` uses a
Brownian tree on both sides, seeded alike (diffusers' ``noise_sampler_seed``, A1111's seed). The multistep SDE
samplers (``DPM++ 2M SDE``, ``DPM++ 3M SDE``) use a Brownian tree in A1111; diffusers draws plain Gaussian noise for
them and a vanilla call cannot be given a Brownian tree, so they are measured twice: with the diffusers draws fed to
k-diffusion (same method?) and with A1111's own Brownian noise (what a vanilla diffusers call gets).

A1111's DDIM is not a k-diffusion sampler: A1111 1.6+ runs its own DDIM loop (``sd_samplers_timesteps_impl.ddim``)
over integer timesteps. It is measured against ``_a1111_ddim`` here, a DDIM update written from the DDIM paper with
A1111's timesteps and loop bounds (read from its code, not copied). A1111's UniPC (its own port of the UniPC authors'
code) and PLMS are not in k-diffusion either and are not measured.

What else is printed per case: the UNet timesteps both sides evaluated (how many calls, and the largest difference
when the counts agree: a model-independent reason for a difference), the max |difference| of the final latents, that
over the standard deviation of k-diffusion's latents, and the max difference of the decoded 8-bit pixels. A
float-noise floor is measured in the same run: k-diffusion's Euler with guidance applied to the noise prediction (as
diffusers applies it) instead of the denoised prediction (as A1111 does): the same arithmetic, other rounding.
``torch.set_num_threads(1)``: one core (the runs are small; more threads only contend on a shared machine).

k-diffusion is a test dependency that is installed without its declared dependencies (``make kdiffusion``);
`load_kdiffusion` explains how its samplers are imported without running its package ``__init__``.

Run: ``python benchmarks/bench_sampler_closeness.py [--steps 10 20]``; results go to
``benchmarks/results/sampler_closeness.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers.utils.torch_utils import randn_tensor

from diffusers_repro.generation.samplers import SamplerMapping, from_a1111
from diffusers_repro.tiny import build_tiny_pipeline

RESULTS = Path(__file__).parent / "results" / "sampler_closeness.json"
PROMPT = "a red fox in the snow"
NEGATIVE_PROMPT = "blurry"
GUIDANCE_SCALE = 7.0
SEED = 1234
# Verdict bounds on max |latent difference| / std(latents): at or below the measured float-noise floor times
# FLOAT_NOISE_FACTOR is float noise; below CLOSE_RELATIVE is close (same method, slightly other numbers).
FLOAT_NOISE_FACTOR = 10.0
CLOSE_RELATIVE = 2e-2


# --------------------------------------------------------------------------------------------------------------------
# k-diffusion, its samplers only

_KDIFFUSION_PACKAGE = "_diffusers_repro_kdiffusion"


class KDiffusionMissing(ImportError):
    pass


def load_kdiffusion() -> types.SimpleNamespace:
    """k-diffusion's ``sampling`` and ``external`` modules, without running ``k_diffusion/__init__.py``.

    The package ``__init__`` imports every module of k-diffusion (training, evaluation, models): clean-fid, wandb,
    kornia, torchvision, scikit-image... and installing those from PyPI pulls a CUDA build of torch. The samplers need
    none of them: ``sampling.py`` imports scipy, torchsde, torchdiffeq, tqdm and ``utils``; ``external.py`` imports
    ``sampling`` and ``utils``. So the two files are loaded from the installed package folder as submodules of a
    private package object whose ``__path__`` is that folder (their relative imports resolve there), and
    ``utils.py``'s top-level ``from torchvision.transforms import functional as TF`` - used only by its PIL image
    converters, which no sampler calls - is answered, while loading and only when torchvision is absent, by a
    placeholder that raises if anything ever uses it. ``sys.modules`` is left as found, apart from the private
    package and its three modules.

    Raises:
        `KDiffusionMissing`: k-diffusion (or torchdiffeq, which ``sampling.py`` imports) is not installed.
    """
    if _KDIFFUSION_PACKAGE in sys.modules:
        package = sys.modules[_KDIFFUSION_PACKAGE]
        return types.SimpleNamespace(sampling=package.sampling, external=package.external, version=package.version)
    spec = importlib.util.find_spec("k_diffusion")  # finds the folder; does not import the package
    if spec is None or not spec.submodule_search_locations:
        raise KDiffusionMissing("k-diffusion is not installed (`make kdiffusion` installs it without its deps)")
    if importlib.util.find_spec("torchdiffeq") is None:
        raise KDiffusionMissing("torchdiffeq, which k-diffusion's samplers import, is missing (`make kdiffusion`)")
    from importlib import metadata

    package = types.ModuleType(_KDIFFUSION_PACKAGE)
    package.__path__ = list(spec.submodule_search_locations)
    package.version = metadata.version("k-diffusion")
    placeholders = {} if importlib.util.find_spec("torchvision") is not None else _torchvision_placeholders()
    added = [_KDIFFUSION_PACKAGE]
    sys.modules[_KDIFFUSION_PACKAGE] = package
    try:
        for name, module in placeholders.items():
            sys.modules[name] = module
        for name in ("utils", "sampling", "external"):
            full_name = f"{_KDIFFUSION_PACKAGE}.{name}"
            module_spec = importlib.util.spec_from_file_location(
                full_name, os.path.join(package.__path__[0], f"{name}.py")
            )
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[full_name] = module
            added.append(full_name)
            module_spec.loader.exec_module(module)
            setattr(package, name, module)
    except BaseException:
        for name in added:
            sys.modules.pop(name, None)
        raise
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return types.SimpleNamespace(sampling=package.sampling, external=package.external, version=package.version)


def _torchvision_placeholders() -> dict[str, types.ModuleType]:
    def unavailable(name: str):
        raise AttributeError(
            f"torchvision.transforms.functional.{name}: torchvision is not installed; k-diffusion's samplers were "
            "loaded without it"
        )

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.__getattr__ = unavailable
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms
    return {
        "torchvision": torchvision,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
    }


# --------------------------------------------------------------------------------------------------------------------
# The cases


@dataclasses.dataclass(frozen=True)
class Case:
    sampler: str  # A1111's label
    schedule: str  # A1111's schedule type
    function: str  # k-diffusion's sampling function ("" for A1111's own DDIM)
    schedule_key: str = ""  # the sigmas A1111 builds: "uniform", "karras", "exponential"
    discard_next_to_last_sigma: bool = False
    later_noise: str = "none"  # "none", "generator" (draws after the starting noise), "brownian"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.sampler} / {self.schedule}" + (" (A1111's Brownian noise)" if self.own_noise else "")

    @property
    def own_noise(self) -> bool:
        return self.later_noise == "brownian" and self.function == "sample_dpmpp_2m_sde"


CASES = (
    Case("Euler", "Automatic", "sample_euler", "uniform"),
    Case("Euler", "Karras", "sample_euler", "karras"),
    Case("Euler", "Exponential", "sample_euler", "exponential"),
    Case("Euler a", "Automatic", "sample_euler_ancestral", "uniform", later_noise="generator"),
    Case("Heun", "Automatic", "sample_heun", "uniform"),
    Case("Heun", "Karras", "sample_heun", "karras"),
    Case("LMS", "Automatic", "sample_lms", "uniform"),
    Case("LMS", "Karras", "sample_lms", "karras"),
    Case("DPM2", "Automatic", "sample_dpm_2", "karras", discard_next_to_last_sigma=True),
    Case("DPM2 a", "Automatic", "sample_dpm_2_ancestral", "karras", True, later_noise="generator"),
    Case("DPM++ 2M", "Uniform", "sample_dpmpp_2m", "uniform"),
    Case("DPM++ 2M", "Karras", "sample_dpmpp_2m", "karras"),
    Case("DPM++ 2M", "Exponential", "sample_dpmpp_2m", "exponential"),
    Case("DPM++ SDE", "Automatic", "sample_dpmpp_sde", "karras", later_noise="brownian"),
    Case("DPM++ 2M SDE", "Automatic", "sample_dpmpp_2m_sde", "exponential", later_noise="generator"),
    Case("DPM++ 2M SDE", "Automatic", "sample_dpmpp_2m_sde", "exponential", later_noise="brownian"),
    Case("DPM++ 2M SDE", "Karras", "sample_dpmpp_2m_sde", "karras", later_noise="generator"),
    Case(
        "DPM++ 2M SDE Heun",
        "Automatic",
        "sample_dpmpp_2m_sde",
        "exponential",
        later_noise="generator",
        options={"solver_type": "heun"},
    ),
    Case("DPM++ 3M SDE", "Automatic", "sample_dpmpp_3m_sde", "exponential", True, later_noise="generator"),
    Case("DDIM", "Automatic", ""),
)


# --------------------------------------------------------------------------------------------------------------------
# Running one case


class _GuidedDenoiser(torch.nn.Module):
    """Classifier-free guidance as A1111's CFGDenoiser applies it: one batch (cond first, then uncond), guidance on
    the denoised predictions. ``guide_noise=True`` guides the noise prediction instead, as diffusers does (the same
    result in exact arithmetic): the float-noise floor."""

    def __init__(self, denoiser, cond: torch.Tensor, uncond: torch.Tensor, scale: float, guide_noise: bool = False):
        super().__init__()
        self.denoiser = denoiser
        self.scale = scale
        self.guide_noise = guide_noise
        self.context = torch.cat([cond, uncond])

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        if not self.guide_noise:
            cond, uncond = self.denoiser(x_in, sigma_in, cond=self.context).chunk(2)
            return uncond + (cond - uncond) * self.scale
        c_out, c_in = (value[:, None, None, None] for value in self.denoiser.get_scalings(sigma_in))
        eps = self.denoiser.get_eps(x_in * c_in, self.denoiser.sigma_to_t(sigma_in), cond=self.context)
        cond, uncond = eps.chunk(2)
        return x + (uncond + (cond - uncond) * self.scale) * c_out[:1]


class _UNetEps(torch.nn.Module):
    """The diffusers UNet as a CompVis ``apply_model(x, t, cond)``: the noise prediction."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]


@contextlib.contextmanager
def _record_timesteps(unet, into: list[float]):
    def hook(module, args, kwargs):
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        into.append(float(torch.as_tensor(timestep).reshape(-1)[0]))

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _a1111_sigmas(kd, denoiser, case: Case, steps: int) -> torch.Tensor:
    """The sigmas A1111 1.10 hands a k-diffusion sampler for this schedule type."""
    n = steps + 1 if case.discard_next_to_last_sigma else steps
    sigma_min, sigma_max = float(denoiser.sigmas[0]), float(denoiser.sigmas[-1])
    if case.schedule_key == "uniform":
        sigmas = denoiser.get_sigmas(n)
    elif case.schedule_key == "karras":
        sigmas = kd.sampling.get_sigmas_karras(n, sigma_min, sigma_max)
    elif case.schedule_key == "exponential":
        sigmas = kd.sampling.get_sigmas_exponential(n, sigma_min, sigma_max)
    else:
        raise ValueError(f"no A1111 sigmas for schedule {case.schedule_key!r}")
    if case.discard_next_to_last_sigma:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def _a1111_ddim(model, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """DDIM (eta 0) the way A1111 1.6+ runs it: timesteps 1, 1 + k, ..., (k = 1000 // steps); the loop evaluates the
    model at every timestep but the first (steps - 1 calls) and ends at ``alphas_cumprod[1]``, each step going to the
    next lower timestep of the list. ``model(x, t)`` returns the guided noise prediction."""
    timesteps = torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)
    for index in range(len(timesteps) - 1, 0, -1):
        t = int(timesteps[index])
        alpha, alpha_prev = float(alphas_cumprod[t]), float(alphas_cumprod[int(timesteps[index - 1])])
        eps = model(x, torch.full((x.shape[0],), float(t)))
        predicted_x0 = (x - (1 - alpha) ** 0.5 * eps) / alpha**0.5
        x = alpha_prev**0.5 * predicted_x0 + (1 - alpha_prev) ** 0.5 * eps
    return x


class _GuidedEps(torch.nn.Module):
    """Guidance on the noise prediction at integer timesteps (A1111's DDIM denoiser), cond first."""

    def __init__(self, unet_eps: _UNetEps, cond: torch.Tensor, uncond: torch.Tensor, scale: float):
        super().__init__()
        self.unet_eps = unet_eps
        self.scale = scale
        self.context = torch.cat([cond, uncond])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond, uncond = self.unet_eps(torch.cat([x, x]), torch.cat([t, t]), self.context).chunk(2)
        return uncond + (cond - uncond) * self.scale


def run_kdiffusion(kd, pipe, case: Case, steps: int, seed: int = SEED, guide_noise: bool = False):
    """The final latents k-diffusion's sampler makes on ``pipe``'s UNet, and the UNet timesteps it evaluated."""
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=NEGATIVE_PROMPT)
    generator = torch.Generator().manual_seed(seed)
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noise = randn_tensor(shape, generator=generator, dtype=torch.float32)
    alphas_cumprod = pipe.scheduler.alphas_cumprod.to(torch.float32)
    unet_eps = _UNetEps(pipe.unet)
    timesteps: list[float] = []
    with torch.no_grad(), _record_timesteps(pipe.unet, timesteps):
        if not case.function:
            latents = _a1111_ddim(_GuidedEps(unet_eps, cond, uncond, GUIDANCE_SCALE), noise, alphas_cumprod, steps)
            return latents, timesteps
        denoiser = kd.external.DiscreteEpsDDPMDenoiser(unet_eps, alphas_cumprod, quantize=False)
        model = _GuidedDenoiser(denoiser, cond, uncond, GUIDANCE_SCALE, guide_noise)
        sigmas = _a1111_sigmas(kd, denoiser, case, steps)
        x = noise * sigmas[0]
        kwargs = dict(case.options)
        if case.later_noise == "generator":
            kwargs["noise_sampler"] = lambda sigma, sigma_next: randn_tensor(
                x.shape, generator=generator, dtype=torch.float32
            )
        elif case.later_noise == "brownian":
            # A1111 passes the batch's seeds as a list (one Brownian tree per image).
            sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
            kwargs["noise_sampler"] = kd.sampling.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=[seed])
        latents = getattr(kd.sampling, case.function)(model, x, sigmas, disable=True, **kwargs)
    return latents, timesteps


def mapped_scheduler(pipe, case: Case, seed: int = SEED):
    mapping: SamplerMapping = from_a1111(case.sampler, case.schedule)
    if mapping.scheduler is None:
        raise ValueError(f"{case.name}: no diffusers mapping ({'; '.join(mapping.blockers)})")
    config = mapping.scheduler_config(pipe.scheduler.config)
    if mapping.scheduler == "DPMSolverSDEScheduler":
        config["noise_sampler_seed"] = seed
    return mapping, getattr(diffusers, mapping.scheduler).from_config(config)


def run_diffusers(pipe, scheduler, steps: int, seed: int = SEED):
    """The final latents a vanilla StableDiffusionPipeline makes with ``scheduler``, and its UNet timesteps."""
    vanilla = diffusers.StableDiffusionPipeline(
        **{**pipe.components, "scheduler": scheduler}, requires_safety_checker=False
    )
    vanilla.set_progress_bar_config(disable=True)
    timesteps: list[float] = []
    with _record_timesteps(pipe.unet, timesteps):
        latents = vanilla(
            PROMPT,
            negative_prompt=NEGATIVE_PROMPT,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE_SCALE,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
        ).images
    return latents, timesteps


def decoded_pixels(pipe, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return (image / 2 + 0.5).clamp(0, 1).mul(255).round()


def compare(pipe, kd_latents, kd_timesteps, df_latents, df_timesteps) -> dict[str, Any]:
    difference = float((kd_latents - df_latents).abs().max())
    scale = float(kd_latents.std())
    same_count = len(kd_timesteps) == len(df_timesteps)
    return {
        "max_abs_latent_diff": difference,
        "latent_std": scale,
        "relative": difference / scale,
        "max_pixel_diff_0_255": int((decoded_pixels(pipe, kd_latents) - decoded_pixels(pipe, df_latents)).abs().max()),
        "unet_calls_kdiffusion": len(kd_timesteps),
        "unet_calls_diffusers": len(df_timesteps),
        "max_timestep_diff": (
            max(abs(a - b) for a, b in zip(kd_timesteps, df_timesteps, strict=True)) if same_count else None
        ),
    }


def verdict(relative: float, floor: float) -> str:
    if relative <= max(floor, 1e-7) * FLOAT_NOISE_FACTOR:
        return "exact to float noise"
    if relative <= CLOSE_RELATIVE:
        return "close"
    return "differs"


def measure(kd, pipe, case: Case, steps: int, floor: float) -> dict[str, Any]:
    mapping, scheduler = mapped_scheduler(pipe, case)
    kd_latents, kd_timesteps = run_kdiffusion(kd, pipe, case, steps)
    df_latents, df_timesteps = run_diffusers(pipe, scheduler, steps)
    row = {
        "sampler": case.sampler,
        "schedule_type": case.schedule,
        "kdiffusion_function": case.function or "A1111's own DDIM loop",
        "later_noise": case.later_noise,
        "scheduler": mapping.scheduler,
        "config": mapping.config,
        "steps": steps,
        **compare(pipe, kd_latents, kd_timesteps, df_latents, df_timesteps),
    }
    row["verdict"] = verdict(row["relative"], floor)
    return row


def float_noise_floor(kd, pipe, steps: int) -> float:
    """k-diffusion's Euler guided on the denoised prediction (A1111) against on the noise prediction (diffusers)."""
    case = CASES[0]
    on_denoised, _ = run_kdiffusion(kd, pipe, case, steps)
    on_noise, _ = run_kdiffusion(kd, pipe, case, steps, guide_noise=True)
    return float((on_denoised - on_noise).abs().max() / on_denoised.std())


def tiny_pipeline():
    pipe = build_tiny_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _format(row: dict[str, Any]) -> str:
    config = ", ".join(f"{key}={value!r}" for key, value in row["config"].items()) or "-"
    calls = f"{row['unet_calls_kdiffusion']}/{row['unet_calls_diffusers']}"
    timestep = "-" if row["max_timestep_diff"] is None else f"{row['max_timestep_diff']:.3g}"
    return (
        f"{row['sampler'] + ' / ' + row['schedule_type'] + ('*' if row['later_noise'] == 'brownian' else ''):28s} "
        f"{row['steps']:>3d} {row['scheduler'] + ' ' + config:<80s} "
        f"{row['max_abs_latent_diff']:9.2e} {row['relative']:9.2e} {row['max_pixel_diff_0_255']:>4d} "
        f"{calls:>7s} {timestep:>7s}  {row['verdict']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    # torchsde warns when k-diffusion asks its Brownian tree for the float32 end points of a float64 interval.
    warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
    kd = load_kdiffusion()
    pipe = tiny_pipeline()
    start = time.perf_counter()
    floors = {steps: float_noise_floor(kd, pipe, steps) for steps in args.steps}
    for steps, floor in floors.items():
        print(f"float-noise floor (Euler guided on noise vs on denoised), {steps} steps: {floor:.2e} x latent std")
    print(
        f"{'sampler / schedule type':28s} {'N':>3s} {'diffusers scheduler + config':<80s} "
        f"{'max|dlat|':>9s} {'/std':>9s} {'dpix':>4s} {'calls':>7s} {'max dt':>7s}  verdict"
    )
    rows = []
    for case in CASES:
        for steps in args.steps:
            row = measure(kd, pipe, case, steps, floors[steps])
            rows.append(row)
            print(_format(row))
    print("* k-diffusion given A1111's Brownian-tree noise (seeded with the image seed); diffusers its own draws")
    elapsed = time.perf_counter() - start
    print(f"{len(rows)} runs in {elapsed:.1f} s, torch threads {torch.get_num_threads()}")
    payload = {
        "kdiffusion": kd.version,
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "model": "diffusers_repro.tiny build_tiny_pipeline('sd') (random weights, 8x8 latents)",
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "guidance_scale": GUIDANCE_SCALE,
        "seed": SEED,
        "float_noise_floor": {str(steps): floor for steps, floor in floors.items()},
        "seconds": elapsed,
        "cases": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(temporary, args.out)


if __name__ == "__main__":
    main()
