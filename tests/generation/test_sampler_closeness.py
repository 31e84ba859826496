"""The sampler table against k-diffusion itself: the mapped diffusers scheduler and k-diffusion's sampler (driven as
A1111 drives it) make the same latents on the tiny SD model from the same noise, within tolerances measured by
benchmarks/bench_sampler_closeness.py (see docs/SAMPLERS.md) - and a wrong mapping lands far outside them.

k-diffusion is a test dependency installed without its declared dependencies (`make kdiffusion`); without it these
tests are skipped.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load_benchmark():
    # The benchmark script is the harness that measured the documented figures; the test runs the same code.
    name = "_bench_sampler_closeness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "bench_sampler_closeness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()
try:
    kd = bench.load_kdiffusion()
except bench.KDiffusionMissing as missing:
    pytest.skip(f"{missing}: the closeness to k-diffusion is not measured", allow_module_level=True)

STEPS = 10
# Max |latent difference| / std(latents), measured at 10 and 20 steps (docs/SAMPLERS.md) with a margin: Euler and
# Heun measured <= 9.4e-6 (float noise; the floor of the same run is 2.7e-6); DPM++ 2M Karras 7.6e-3 (diffusers
# rounds its UNet timesteps to integers, k-diffusion does not).
TOLERANCE = {
    ("Euler", "Automatic"): 1e-4,
    ("Heun", "Automatic"): 1e-4,
    ("DPM++ 2M", "Karras"): 2e-2,
}


@pytest.fixture(scope="module")
def pipe():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield bench.tiny_pipeline()
    finally:
        torch.set_num_threads(threads)


def _case(sampler: str, schedule: str):
    return next(case for case in bench.CASES if (case.sampler, case.schedule) == (sampler, schedule))


def _relative(pipe, case, scheduler):
    kd_latents, kd_timesteps = bench.run_kdiffusion(kd, pipe, case, STEPS)
    df_latents, df_timesteps = bench.run_diffusers(pipe, scheduler, STEPS)
    return float((kd_latents - df_latents).abs().max() / kd_latents.std()), kd_timesteps, df_timesteps


@pytest.mark.parametrize("sampler, schedule", list(TOLERANCE))
def test_mapped_scheduler_agrees_with_kdiffusion(pipe, sampler, schedule):
    case = _case(sampler, schedule)
    _, scheduler = bench.mapped_scheduler(pipe, case)
    relative, kd_timesteps, df_timesteps = _relative(pipe, case, scheduler)
    assert len(kd_timesteps) == len(df_timesteps)
    assert max(abs(a - b) for a, b in zip(kd_timesteps, df_timesteps, strict=True)) < 0.5
    assert relative < TOLERANCE[sampler, schedule], relative


def test_a_wrong_mapping_is_far_outside_the_tolerance(pipe):
    # A1111's Euler (uniform sigmas) run by diffusers with Karras sigmas: the table would be wrong to map it so.
    case = _case("Euler", "Automatic")
    _, scheduler = bench.mapped_scheduler(pipe, case)
    wrong = type(scheduler).from_config(
        {**bench.from_a1111("Euler", "Karras").scheduler_config(pipe.scheduler.config)}
    )
    assert wrong.config.use_karras_sigmas
    relative, _, _ = _relative(pipe, case, wrong)
    assert relative > 100 * TOLERANCE["Euler", "Automatic"], relative


def test_dropping_the_next_to_last_sigma_is_measured_as_a_difference(pipe):
    # A1111's DPM2 drops the next-to-last sigma; diffusers' KDPM2 cannot: the table's note, measured.
    case = _case("DPM2", "Automatic")
    _, scheduler = bench.mapped_scheduler(pipe, case)
    relative, _, _ = _relative(pipe, case, scheduler)
    assert relative > TOLERANCE["DPM++ 2M", "Karras"], relative


def test_kdiffusion_is_loaded_without_its_package_init_or_torchvision():
    assert "k_diffusion" not in sys.modules
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules
    assert callable(kd.sampling.sample_euler) and kd.version == "0.1.1.post1"
