"""Other tools' noise: each tool's algorithm is rebuilt here from its own source, independently of the module.

References, as read (not copied):
- AUTOMATIC1111 v1.10.1 ``modules/rng.py`` (``ImageRNG.first``/``next``, ``slerp``), ``modules/rng_philox.py`` (NV),
  ``modules/processing.py`` (``all_seeds``/``all_subseeds``), ``modules/sd_samplers_common.py`` (``TorchHijack``).
- ComfyUI ``comfy/sample.py`` (``prepare_noise``), ``comfy/k_diffusion/sampling.py`` (``default_noise_sampler``).
- InvokeAI ``invokeai/app/invocations/noise.py`` (``get_noise``), its denoise's ``seed ^ 0xFFFFFFFF`` generator and
  ``latents_from_embeddings``' start (``scheduler.add_noise(zeros, noise, first timestep)``).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, StableDiffusionPipeline
from diffusers.schedulers import scheduling_euler_ancestral_discrete as euler_a_module

from diffusers_repro.generation.cuda_rng import CudaGeometry, PhiloxGenerator
from diffusers_repro.interop.noise import (
    A1111NvGenerator,
    a1111_noise,
    a1111_nv_randn,
    comfyui_noise,
    invokeai_noise,
    invokeai_start,
)

SHAPE = (4, 8, 8)  # one image's latents (C, H/8, W/8)
NV_VS_CUDA = 4e-6
"""A1111's NV values against torch's CUDA generator (our emulation), below the geometry threshold: measured at most
3.6e-6 over 5 seeds x 16K and 37K values, with about 73% of the values differing in some bit."""


# ----------------------------------------------------------------------------------------------------------------
# Independent references


def _philox_scalar_rounds(ctr: np.ndarray, key0: int, key1: int) -> np.ndarray:
    """Philox4x32-10 over columns of a (4, N) uint32 counter, written from the Philox paper's round."""
    ctr = ctr.astype(np.uint64)
    k0, k1 = np.uint64(key0), np.uint64(key1)
    mask = np.uint64(0xFFFFFFFF)
    for _ in range(10):
        p0 = ctr[0] * np.uint64(0xD2511F53)
        p1 = ctr[2] * np.uint64(0xCD9E8D57)
        new = np.empty_like(ctr)
        new[0] = ((p1 >> np.uint64(32)) ^ ctr[1] ^ k0) & mask
        new[1] = p1 & mask
        new[2] = ((p0 >> np.uint64(32)) ^ ctr[3] ^ k1) & mask
        new[3] = p0 & mask
        ctr = new
        k0 = (k0 + np.uint64(0x9E3779B9)) & mask
        k1 = (k1 + np.uint64(0xBB67AE85)) & mask
    return ctr.astype(np.uint32)


class ReferenceNv:
    """A1111's rng_philox.Generator as its source reads: counter (offset, 0, i, 0), offset + 1 per draw."""

    def __init__(self, seed: int):
        self.seed, self.offset = seed, 0

    def randn(self, shape) -> torch.Tensor:
        n = int(np.prod(shape))
        ctr = np.zeros((4, n), dtype=np.uint32)
        ctr[0] = self.offset
        ctr[2] = np.arange(n, dtype=np.uint32)
        self.offset += 1
        out = _philox_scalar_rounds(ctr, self.seed & 0xFFFFFFFF, self.seed >> 32)
        c1 = np.array([2.3283064e-10], dtype=np.float32)
        c2 = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)
        u = out[0] * c1 + c1 / 2  # uint32 x float32 arrays: numpy computes in float64, as in A1111
        v = out[1] * c2 + c2 / 2
        assert u.dtype == np.float64
        return torch.from_numpy((np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32).reshape(shape))


class ReferenceA1111:
    """A1111's ImageRNG for one RNG setting, drawing exactly where A1111 draws."""

    def __init__(self, rng: str, geometry=None):
        self.rng, self.geometry = rng, geometry

    def generator(self, seed):
        if self.rng == "cpu":
            return torch.Generator("cpu").manual_seed(seed)
        if self.rng == "gpu":
            return PhiloxGenerator.with_geometry(seed, self.geometry)
        return ReferenceNv(seed)

    def draw(self, generator, shape):
        if self.rng == "cpu":
            return torch.randn(shape, generator=generator)
        return generator.randn(shape)

    def randn_global(self, seed, shape):
        # A1111's randn(seed, shape) without a generator: torch.manual_seed on the global RNG (forked here).
        if self.rng == "cpu":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return torch.randn(shape)
        return self.draw(self.generator(seed), shape)

    @staticmethod
    def slerp(val, low, high):
        low_norm = low / torch.norm(low, dim=1, keepdim=True)
        high_norm = high / torch.norm(high, dim=1, keepdim=True)
        dot = (low_norm * high_norm).sum(1)
        if dot.mean() > 0.9995:
            return low * val + high * (1 - val)
        omega = torch.acos(dot)
        so = torch.sin(omega)
        return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(
            1
        ) * high

    def run(self, shape, seeds, subseeds=None, strength=0.0, resize_hw=(0, 0), ensd=0, later_draws=0):
        generators = [self.generator(seed) for seed in seeds]
        if resize_hw[0] <= 0 or resize_hw[1] <= 0:
            noise_shape = shape
        else:
            noise_shape = (shape[0], resize_hw[0] // 8, resize_hw[1] // 8)
        xs = []
        for i, (seed, generator) in enumerate(zip(seeds, generators, strict=True)):
            subnoise = None
            if subseeds is not None and strength != 0:
                subnoise = self.randn_global(subseeds[i], noise_shape)
            if noise_shape != shape:
                noise = self.randn_global(seed, noise_shape)
            else:
                noise = self.draw(generator, shape)
            if subnoise is not None:
                noise = self.slerp(strength, noise, subnoise)
            if noise_shape != shape:
                x = self.draw(generator, shape)
                dx = (shape[2] - noise_shape[2]) // 2
                dy = (shape[1] - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx, ty = max(dx, 0), max(dy, 0)
                dx, dy = max(-dx, 0), max(-dy, 0)
                x[:, ty : ty + h, tx : tx + w] = noise[:, dy : dy + h, dx : dx + w]
                noise = x
            xs.append(noise)
        if ensd:
            generators = [self.generator(seed + ensd) for seed in seeds]
        later = [torch.stack([self.draw(g, shape) for g in generators]) for _ in range(later_draws)]
        return torch.stack(xs), later


def a1111_all_seeds(seed, subseed, strength, count):
    """processing.py: all_seeds and all_subseeds of a batch."""
    return [seed + (x if strength == 0 else 0) for x in range(count)], [subseed + x for x in range(count)]


def comfyui_prepare_noise(shape, seed, noise_inds=None):
    """comfy/sample.py prepare_noise, with torch.manual_seed on a forked global RNG."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.manual_seed(seed)
        if noise_inds is None:
            return torch.randn(shape, dtype=torch.float32, generator=generator, device="cpu")
        unique, inverse = np.unique(noise_inds, return_inverse=True)
        noises = []
        for i in range(unique[-1] + 1):
            noise = torch.randn([1, *shape[1:]], dtype=torch.float32, generator=generator, device="cpu")
            if i in unique:
                noises.append(noise)
        return torch.cat([noises[i] for i in inverse], dim=0)


def euler_a_draws(generator, batch, steps=4, context=None, monkeypatch=None):
    """Runs diffusers' EulerAncestralDiscreteScheduler for ``steps`` steps and records every noise it draws."""
    recorded = []
    original = euler_a_module.randn_tensor

    def recording(*args, **kwargs):
        noise = original(*args, **kwargs)
        recorded.append(noise.clone())
        return noise

    monkeypatch.setattr(euler_a_module, "randn_tensor", recording)
    scheduler = EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    scheduler.set_timesteps(steps)
    sample = torch.zeros((batch, *SHAPE))
    with context if context is not None else torch.no_grad():
        for t in scheduler.timesteps:
            model_output = torch.full_like(sample, 0.1)
            sample = scheduler.step(model_output, t, sample, generator=generator).prev_sample
    return recorded


# ----------------------------------------------------------------------------------------------------------------
# A1111


def test_reference_nv_matches_a1111s_documented_output():
    # rng_philox.py's docstring lists these values for Generator(seed=0).randn(shape=(3, 4)), 8 digits of what
    # torch's CUDA randn gives; A1111's own float64 Box-Muller is within 2.7e-7 of them (measured 2.64e-7).
    expected = np.array(
        [
            [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
            [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
            [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
        ]
    )
    np.testing.assert_allclose(ReferenceNv(0).randn((3, 4)).numpy(), expected, rtol=0, atol=3e-7)
    assert torch.equal(a1111_nv_randn(0, 0, (3, 4)), ReferenceNv(0).randn((3, 4)))


@pytest.mark.parametrize("rng", ["cpu", "gpu", "nv"])
def test_a1111_batch_seeds_and_image_two_alone(rng):
    seeds, _ = a1111_all_seeds(1000, 0, 0.0, 3)
    expected, _ = ReferenceA1111(rng).run(SHAPE, seeds)
    batch = a1111_noise((3, *SHAPE), 1000, rng=rng)
    assert torch.equal(batch.latents, expected)
    image_two = a1111_noise((1, *SHAPE), [1002], rng=rng)
    assert torch.equal(image_two.latents[0], expected[2])


@pytest.mark.parametrize("rng", ["cpu", "gpu", "nv"])
def test_a1111_variation_seed_strength_0_3(rng):
    seeds, subseeds = a1111_all_seeds(77, 500, 0.3, 2)
    assert seeds == [77, 77] and subseeds == [500, 501]
    expected, _ = ReferenceA1111(rng).run(SHAPE, seeds, subseeds, 0.3)
    noise = a1111_noise((2, *SHAPE), 77, subseeds=500, subseed_strength=0.3, rng=rng)
    assert torch.equal(noise.latents, expected)
    assert not torch.equal(expected[0], expected[1])
    assert any("slerp" in note for note in noise.notes)


@pytest.mark.parametrize("rng", ["cpu", "nv"])
@pytest.mark.parametrize("resize_wh", [(48, 32), (96, 112), (40, 88)])
def test_a1111_seed_resize_from(rng, resize_wh):
    width, height = resize_wh
    expected, _ = ReferenceA1111(rng).run(SHAPE, [9, 10], resize_hw=(height, width))
    noise = a1111_noise((2, *SHAPE), 9, seed_resize_from=(width, height), rng=rng)
    assert torch.equal(noise.latents, expected)


def test_a1111_seed_resize_with_variation_seed():
    expected, _ = ReferenceA1111("cpu").run(SHAPE, [5], [6], 0.5, resize_hw=(48, 48))
    noise = a1111_noise((1, *SHAPE), [5], subseeds=[6], subseed_strength=0.5, seed_resize_from=(48, 48), rng="cpu")
    assert torch.equal(noise.latents, expected)


def test_a1111_cpu_noise_is_a_diffusers_cpu_generators_first_draw():
    noise = a1111_noise((2, *SHAPE), 31, rng="cpu")
    for index, seed in enumerate((31, 32)):
        assert torch.equal(
            noise.latents[index : index + 1], torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(seed))
        )


def test_a1111_nv_differs_from_cpu_and_is_close_to_torch_cuda_below_the_threshold():
    cpu = a1111_noise((1, *SHAPE), 3, rng="cpu").latents
    nv = a1111_noise((1, *SHAPE), 3, rng="nv").latents
    gpu = a1111_noise((1, *SHAPE), 3, rng="gpu").latents
    assert (cpu - nv).abs().max() > 1.0
    assert 0 < (nv - gpu).abs().max() <= NV_VS_CUDA


def test_a1111_nv_ignores_the_cuda_grid_clamp_above_the_threshold():
    # A T4 (40 x 1024) lays out draws above 40,960 values grid-stride; SDXL at 1024 x 1024 draws 65,536 per image.
    shape = (4, 128, 128)
    geometry = CudaGeometry(40, 1024)
    nv = a1111_nv_randn(8, 0, shape).flatten()
    cuda = PhiloxGenerator.with_geometry(8, geometry).randn(shape).flatten()
    threshold = geometry.threshold
    assert (nv[:threshold] - cuda[:threshold]).abs().max() <= NV_VS_CUDA
    assert (nv[threshold:] - cuda[threshold:]).abs().max() > 1.0
    # Without a geometry, GPU noise that large is refused with the parameter to give.
    with pytest.raises(ValueError, match="pass geometry="):
        a1111_noise((1, *shape), 8, rng="gpu")
    assert torch.equal(a1111_noise((1, *shape), 8, rng="gpu", geometry=geometry).latents.flatten(), cuda)


@pytest.mark.parametrize("rng", ["cpu", "gpu", "nv"])
@pytest.mark.parametrize("ensd", [31337, 0])
def test_a1111_euler_a_later_noise_with_ensd(rng, ensd, monkeypatch):
    seeds = [40, 41, 42]
    _, later = ReferenceA1111(rng).run(SHAPE, seeds, ensd=ensd, later_draws=4)
    noise = a1111_noise((3, *SHAPE), 40, rng=rng, ensd=ensd, sampler="Euler a")
    draws = euler_a_draws(noise.generator, 3, steps=4, context=noise.context(), monkeypatch=monkeypatch)
    # k-diffusion's Euler a draws after every step but the last; diffusers draws after every step.
    assert len(draws) == 4
    for step in range(3):
        assert torch.equal(draws[step], later[step]), step
    assert noise.blockers == ()


def test_a1111_later_noise_with_a_single_image_batch(monkeypatch):
    _, later = ReferenceA1111("cpu").run(SHAPE, [44], ensd=31337, later_draws=2)
    noise = a1111_noise((1, *SHAPE), [44], rng="cpu", ensd=31337)
    draws = euler_a_draws(noise.generator, 1, steps=2, monkeypatch=monkeypatch)
    assert torch.equal(draws[0], later[0]) and torch.equal(draws[1], later[1])


def test_a1111_sde_samplers_have_a_blocker():
    noise = a1111_noise((1, *SHAPE), 1, rng="cpu", sampler="DPM++ 2M SDE Karras")
    assert len(noise.blockers) == 1 and "Brownian tree" in noise.blockers[0]


def test_a1111_tiny_pipeline_euler_a_ensd_end_to_end(tiny_sd_path, monkeypatch):
    """Vanilla diffusers with A1111's noise: the starting latents and every later draw are A1111's."""
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    height = width = 32
    shape = (2, pipe.unet.config.in_channels, height // 8, width // 8)
    noise = a1111_noise(shape, 123, rng="cpu", ensd=31337)
    expected_first, later = ReferenceA1111("cpu").run(shape[1:], [123, 124], ensd=31337, later_draws=3)
    recorded = []
    original = euler_a_module.randn_tensor
    monkeypatch.setattr(
        euler_a_module, "randn_tensor", lambda *a, **k: recorded.append(original(*a, **k)) or recorded[-1]
    )
    pipe(
        ["a fox"] * 2,
        height=height,
        width=width,
        num_inference_steps=3,
        latents=noise.latents,
        generator=noise.generator,
        output_type="latent",
    )
    assert torch.equal(noise.latents, expected_first)
    assert len(recorded) == 3
    for step in range(2):
        assert torch.equal(recorded[step], later[step])


# ----------------------------------------------------------------------------------------------------------------
# ComfyUI


@pytest.mark.parametrize("index", [0, 1, 2])
def test_comfyui_batch_of_three_each_index(index):
    whole = comfyui_prepare_noise((3, *SHAPE), 2024)
    alone = comfyui_noise((1, *SHAPE), 2024, batch_size=3, batch_index=index)
    assert torch.equal(alone.latents, whole[index : index + 1])
    assert torch.equal(comfyui_noise((3, *SHAPE), 2024).latents, whole)
    # prepare_noise's own index path (a latent with batch_index) gives the same rows for these sizes.
    assert torch.equal(comfyui_prepare_noise((3, *SHAPE), 2024, [index]), whole[index : index + 1])
    if index:
        assert not torch.equal(
            alone.latents, torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(2024 + index))
        )
        assert alone.generator is None and "whole batch" in alone.blockers[0]


def test_comfyui_batch_rows_when_an_image_is_not_a_multiple_of_16_values():
    shape = (3, 4, 5, 5)  # 100 values per image: torch's CPU normal recomputes a tail, so rows are not per-image draws
    whole = comfyui_prepare_noise(shape, 11)
    assert torch.equal(comfyui_noise(shape, 11).latents, whole)
    generator = torch.Generator().manual_seed(11)
    consecutive = torch.cat([torch.randn((1, 4, 5, 5), generator=generator) for _ in range(3)])
    assert not torch.equal(consecutive, whole)


def test_comfyui_ancestral_noise_on_cpu_and_cuda(monkeypatch):
    seed = 5
    cpu = comfyui_noise((3, *SHAPE), seed, sampler_device="cpu")
    draws = euler_a_draws(cpu.generator, 3, steps=3, monkeypatch=monkeypatch)
    reference = torch.Generator(device="cpu").manual_seed(seed + 1)  # default_noise_sampler on the CPU
    for step in range(2):
        assert torch.equal(draws[step], torch.randn((3, *SHAPE), generator=reference))

    cuda = comfyui_noise((3, *SHAPE), seed, sampler_device="cuda")
    monkeypatch.undo()
    draws = euler_a_draws(cuda.generator, 3, steps=3, context=cuda.context(), monkeypatch=monkeypatch)
    reference = PhiloxGenerator(seed)  # torch.Generator("cuda").manual_seed(seed)
    for step in range(2):
        assert torch.equal(draws[step], reference.randn((3, *SHAPE)))


def test_comfyui_sde_sampler_blocker():
    noise = comfyui_noise((1, *SHAPE), 1, sampler="dpmpp_2m_sde_gpu")
    assert any("Brownian tree" in blocker for blocker in noise.blockers)


# ----------------------------------------------------------------------------------------------------------------
# InvokeAI


def invokeai_get_noise(seed, channels, height_px, width_px, dtype, use_cpu=True, geometry=None):
    """get_noise: a fresh generator of the seed on the CPU (use_cpu) or the device (here torch's CUDA generator, as
    PhiloxGenerator computes it), one (1, C, H, W) draw in the model's dtype, moved to the CPU."""
    shape = [1, channels, height_px // 8, width_px // 8]
    if use_cpu:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn(shape, dtype=dtype, device="cpu", generator=generator)
    # torch's CUDA randn draws float32 normals for float16 and bfloat16 too, and rounds them.
    return PhiloxGenerator.with_geometry(seed, geometry).randn(shape).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_invokeai_cpu_noise(dtype):
    noise = invokeai_noise((2, *SHAPE), [3, 4000000000], dtype=dtype, denoise_device="cpu")
    expected = torch.cat([invokeai_get_noise(seed, 4, 64, 64, dtype) for seed in (3, 4000000000)])
    assert noise.latents.dtype == dtype
    assert torch.equal(noise.latents, expected)
    if dtype == torch.float16:
        # A half-precision CPU draw, not float32 values rounded.
        assert not torch.equal(expected, invokeai_get_noise(3, 4, 64, 64, torch.float32).to(dtype).repeat(2, 1, 1, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_invokeai_gpu_noise(dtype):
    noise = invokeai_noise((2, *SHAPE), [3, 4000000000], dtype=dtype, rand_device="cuda")
    expected = torch.cat([invokeai_get_noise(seed, 4, 64, 64, dtype, use_cpu=False) for seed in (3, 4000000000)])
    assert noise.latents.dtype == dtype and noise.rng == "cuda"
    assert torch.equal(noise.latents, expected)
    assert not torch.equal(noise.latents, invokeai_noise((2, *SHAPE), [3, 4000000000], dtype=dtype).latents)
    assert any("rand_device: cuda is torch's CUDA generator" in note for note in noise.notes)


def test_invokeai_gpu_noise_past_the_geometry_threshold_needs_the_geometry():
    shape = (1, 4, 104, 104)  # 43,264 values per image (832 x 832 pixels): above the 40,960 every GPU lays out alike
    with pytest.raises(ValueError, match=re.escape("InvokeAI's GPU noise (rand_device: cuda) draws 43264 values")):
        invokeai_noise(shape, 9, rand_device="cuda")
    geometry = CudaGeometry(40, 1024)
    noise = invokeai_noise(shape, 9, rand_device="cuda", geometry="40x1024")
    assert torch.equal(noise.latents, invokeai_get_noise(9, 4, 832, 832, torch.float32, False, geometry))
    assert noise.geometry == geometry
    other = invokeai_noise(shape, 9, rand_device="cuda", geometry="108x2048").latents
    assert not torch.equal(noise.latents, other)  # the layout past the threshold is the GPU's


def test_invokeai_cpu_noise_past_the_geometry_threshold_needs_the_geometry_only_to_draw_later_noise():
    # The schedulers' generator is a CUDA one on a GPU; only the ancestral ones draw from it.
    noise = invokeai_noise((1, 4, 104, 104), 9)
    assert torch.equal(noise.latents, invokeai_get_noise(9, 4, 832, 832, torch.float32))
    with noise.context(), pytest.raises(ValueError, match="a CUDA randn of 43264 values is laid out by the GPU"):
        torch.randn((1, 4, 104, 104), generator=noise.generator[0])
    with_geometry = invokeai_noise((1, 4, 104, 104), 9, geometry="40x1024")
    with with_geometry.context():
        drawn = torch.randn((1, 4, 104, 104), generator=with_geometry.generator[0])
    assert torch.equal(drawn, PhiloxGenerator(9 ^ 0xFFFFFFFF, 40, 1024).randn((1, 4, 104, 104)))


def _invokeai_start_by_hand(scheduler_class, noise, steps, **config):
    """latents_from_embeddings: add_noise(zeros, noise, first timestep), written out for two schedulers' formulas."""
    scheduler = scheduler_class(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **config)
    scheduler.set_timesteps(steps)
    first = int(scheduler.timesteps[0])
    if scheduler_class is DDIMScheduler:  # sqrt(alpha_bar) * 0 + sqrt(1 - alpha_bar) * noise
        return (1 - scheduler.alphas_cumprod[first]) ** 0.5 * noise, scheduler
    return noise * scheduler.sigmas[0], scheduler  # Euler: x + noise * sigma


@pytest.mark.parametrize(
    ("scheduler_class", "config", "exact"),
    [
        (DDIMScheduler, {"steps_offset": 1}, True),  # init_noise_sigma 1
        (EulerDiscreteScheduler, {}, True),  # linspace: init_noise_sigma is the first sigma
        (EulerDiscreteScheduler, {"timestep_spacing": "leading", "steps_offset": 1}, False),  # sqrt(sigma_max^2 + 1)
    ],
)
def test_invokeai_start(scheduler_class, config, exact):
    noise = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(4))
    start, scheduler = _invokeai_start_by_hand(scheduler_class, noise, 7, **config)
    latents, inexact = invokeai_start(noise, scheduler, 7)
    made = latents * scheduler.init_noise_sigma  # what the pipeline's prepare_latents starts from
    assert scheduler.timesteps is not None and len(scheduler.timesteps) == 7  # the scheduler given is left as it was
    assert int((made != start).sum()) == inexact
    if exact:
        assert inexact == 0 and torch.equal(made, start)
    else:
        # Measured: 404 of 4,096 values (9.9%) have no float that init_noise_sigma (6.646) times gives them; each is
        # the nearest product, one unit in the last place off (relative 7.2e-8 at most).
        assert inexact == 404
        assert float(((made - start).abs() / start.abs()).max()) < 1.2e-7
        assert scheduler.init_noise_sigma > scheduler.sigmas[0]


def test_invokeai_later_noise(monkeypatch):
    noise = invokeai_noise((1, *SHAPE), 3, denoise_device="cpu")
    draws = euler_a_draws(noise.generator, 1, steps=3, monkeypatch=monkeypatch)
    reference = torch.Generator(device="cpu").manual_seed(3 ^ 0xFFFFFFFF)
    for step in range(3):
        assert torch.equal(draws[step], torch.randn((1, *SHAPE), generator=reference))

    cuda = invokeai_noise((1, *SHAPE), 3)
    monkeypatch.undo()
    draws = euler_a_draws(cuda.generator, 1, steps=2, context=cuda.context(), monkeypatch=monkeypatch)
    reference = PhiloxGenerator(3 ^ 0xFFFFFFFF)
    assert torch.equal(draws[0], reference.randn((1, *SHAPE))) and torch.equal(draws[1], reference.randn((1, *SHAPE)))


# ----------------------------------------------------------------------------------------------------------------
# Hostile values


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: a1111_noise((1, 4, 8), 1),
            ValueError,
            "shape must be (batch, channels, latent height, latent width)",
        ),
        (lambda: a1111_noise((65, 4, 8, 8), 1), ValueError, "shape[0] (batch) must be between 1 and 64, got 65"),
        (lambda: a1111_noise((1, 4, 8, 100000), 1), ValueError, "shape[3] (latent width) must be between 1 and 512"),
        (lambda: a1111_noise((1, 4.0, 8, 8), 1), TypeError, "shape[1] (channels) must be an int"),
        (lambda: a1111_noise((2, 4, 8, 8), [1]), ValueError, "seeds has 1 values but the batch (shape[0]) has 2"),
        (lambda: a1111_noise((1, 4, 8, 8), [-1]), ValueError, "seeds[0] must be between 0 and"),
        (lambda: a1111_noise((1, 4, 8, 8), True), TypeError, "seeds must be an int or a list of 1 ints"),
        (lambda: a1111_noise((1, 4, 8, 8), 1, rng="cuda"), ValueError, "rng must be one of 'cpu', 'gpu', 'nv'"),
        (lambda: a1111_noise((1, 4, 8, 8), 1, subseed_strength=1.5), ValueError, "subseed_strength must be between"),
        (lambda: a1111_noise((1, 4, 8, 8), 1, ensd=-3), ValueError, "ensd must be between 0 and 4294967295, got -3"),
        (lambda: a1111_noise((1, 4, 8, 8), 1, seed_resize_from=(10**9, 8)), ValueError, "seed_resize_from[0] (width)"),
        (lambda: a1111_noise((1, 4, 8, 8), 2**64 - 1, ensd=5), ValueError, "+ ensd 5 is past the largest seed"),
        (lambda: comfyui_noise((1, 4, 8, 8), 1, batch_size=3), ValueError, "batch_index is needed"),
        (
            lambda: comfyui_noise((1, 4, 8, 8), 1, batch_size=3, batch_index=3),
            ValueError,
            "batch_index must be between 0 and 2, got 3",
        ),
        (
            lambda: comfyui_noise((1, 4, 8, 8), 1, batch_size=1000, batch_index=0),
            ValueError,
            "batch_size must be between 1 and 64",
        ),
        (
            lambda: comfyui_noise((1, 4, 8, 8), 1, sampler_device="mps"),
            ValueError,
            "sampler_device must be 'cuda' or 'cpu'",
        ),
        (
            lambda: invokeai_noise((1, 4, 8, 8), 2**32),
            ValueError,
            "seeds must be between 0 and 4294967295, got 4294967296",
        ),
        (lambda: invokeai_noise((1, 4, 8, 8), 1, dtype=torch.int64), ValueError, "dtype must be torch.float32"),
        (
            lambda: invokeai_noise((1, 4, 8, 8), 1, rand_device="mps"),
            ValueError,
            "rand_device must be 'cpu' or 'cuda' (InvokeAI's rand_device), got 'mps'",
        ),
        (
            lambda: invokeai_noise((1, 4, 8, 8), 1, rand_device="cuda", denoise_device="cpu"),
            ValueError,
            "denoise_device must be 'cuda' when rand_device is 'cuda'",
        ),
        (
            lambda: invokeai_start(torch.zeros(1, 4, 8, 8, dtype=torch.int32), DDIMScheduler(), 2),
            TypeError,
            "noise must be a float32, float16 or bfloat16 tensor",
        ),
        (
            lambda: invokeai_start(torch.zeros(1, 4, 8, 8), DDIMScheduler(), 0),
            ValueError,
            "num_inference_steps must be between 1 and 10000, got 0",
        ),
    ],
)
def test_bad_values_are_named(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_nv_generator_outside_its_mode_draws_from_its_cpu_state_and_refuses_other_random_functions():
    generator = A1111NvGenerator(3, counter=1)
    assert generator.initial_seed() == 3
    with a1111_noise((1, *SHAPE), 3, rng="nv").context(), pytest.raises(NotImplementedError, match="torch.randn only"):
        torch.rand((2,), generator=generator)
