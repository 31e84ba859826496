"""Stray randomness: the per-thread seeded generators around every call (and the process-wide forked global RNG), their
seed, the global RNG left alone, and detection."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

from diffusers_repro.generation.randomness import (
    GlobalRandomness,
    draws_nothing_stray,
    forked_global_rng,
    global_rng_seed,
    seeded_stray_randomness,
)

SD_CALL = {"num_inference_steps": 2, "output_type": "np", "height": 32, "width": 32}


# ------------------------------------------------------------------------------------------------ global_rng_seed


def test_global_rng_seed_is_stable_and_depends_on_every_seed_in_order():
    assert global_rng_seed([1, 2]) == global_rng_seed([1, 2])
    assert len({global_rng_seed(seeds) for seeds in ([1, 2], [2, 1], [1], [1, 2, 3], [2**64 - 1])}) == 5
    # A value pinned here: a change of the derivation changes every recorded global_rng_seed.
    assert global_rng_seed([0]) == global_rng_seed([0]) and 0 <= global_rng_seed([0]) < 2**64


# ------------------------------------------------------------------------------------------------ forked_global_rng


def test_fork_seeds_the_global_rng_and_restores_it_exactly():
    torch.manual_seed(1234)
    torch.randn(3)  # a state in the middle of a stream, with the normal-sample cache in use
    before = torch.random.get_rng_state()
    with forked_global_rng(99) as randomness:
        inside = torch.randn(4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(inside, torch.randn(4, generator=torch.Generator().manual_seed(99)))
    assert isinstance(randomness, GlobalRandomness)
    assert randomness.used and randomness.used_on == ["cpu"] and randomness.devices == ["cpu"]


def test_fork_reports_no_use_when_nothing_drew():
    with forked_global_rng(5) as randomness:
        torch.randn(2, generator=torch.Generator().manual_seed(0))
    assert not randomness.used and randomness.used_on == []


def test_fork_restores_after_an_exception():
    before = torch.random.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"), forked_global_rng(5):
        torch.rand(3)
        raise RuntimeError("boom")
    assert torch.equal(torch.random.get_rng_state(), before)


def test_cpu_devices_fork_only_the_cpu_rng():
    with forked_global_rng(5, devices=[torch.device("cpu"), "cpu", None]) as randomness:
        pass
    assert randomness.devices == ["cpu"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_is_forked_seeded_and_restored():
    before = torch.cuda.get_rng_state(0)
    with forked_global_rng(11, devices=["cuda:0"]) as randomness:
        inside = torch.randn(4, device="cuda:0")
    assert torch.equal(torch.cuda.get_rng_state(0), before)
    assert torch.equal(inside, torch.randn(4, device="cuda:0", generator=torch.Generator("cuda").manual_seed(11)))
    assert randomness.used_on == ["cuda:0"]


# ------------------------------------------------------------------------------------------------ in a pipeline call


class GlobalNoiseEulerScheduler(EulerDiscreteScheduler):
    """An Euler scheduler that adds noise from torch's global RNG at every step, ignoring ``generator``."""

    def step(self, model_output, timestep, sample, *args, **kwargs):
        output = super().step(model_output, timestep, sample, *args, **kwargs)
        stray = torch.randn(sample.shape, dtype=sample.dtype)  # no generator: torch's global RNG
        if kwargs.get("return_dict", True):
            output.prev_sample = output.prev_sample + 0.1 * stray
            return output
        return (output[0] + 0.1 * stray, *output[1:])


@pytest.fixture
def stray_pipe(sd_pipe):
    sd_pipe.scheduler = GlobalNoiseEulerScheduler.from_config(sd_pipe.scheduler.config)
    return sd_pipe


def test_global_rng_draws_are_deterministic_recorded_and_restored(stray_pipe):
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    first = stray_pipe(["a fox", "a bear"], seed=[3, 4], **SD_CALL)
    assert torch.equal(torch.random.get_rng_state(), before)
    # Whatever state the global RNG is in before the call, the same seeds give the same bits.
    torch.manual_seed(777)
    torch.rand(5)
    second = stray_pipe(["a fox", "a bear"], seed=[3, 4], **SD_CALL)
    np.testing.assert_array_equal(first.images, second.images)

    batch = first.provenance[1].batch
    assert batch["global_rng_used"] is True and batch["global_rng_used_on"] == ["cpu"]
    assert batch["global_rng_seed"] == global_rng_seed([3, 4])
    assert "depends on its whole batch" in batch["note"]


def test_global_rng_seed_follows_the_call_seeds(stray_pipe):
    first = stray_pipe("a fox", seed=3, **SD_CALL)
    other = stray_pipe("a fox", seed=4, **SD_CALL)
    assert np.abs(first.images - other.images).max() > 1e-3
    assert first.provenance[0].batch["global_rng_seed"] != other.provenance[0].batch["global_rng_seed"]


def test_generator_calls_fork_from_the_generator_seeds(stray_pipe, cpu_generators):
    by_seed = stray_pipe("a fox", seed=3, **SD_CALL)
    by_generator = stray_pipe("a fox", generator=cpu_generators([3]), **SD_CALL)
    np.testing.assert_array_equal(by_seed.images, by_generator.images)
    assert by_generator.provenance[0].batch["global_rng_used"] is True


def test_calls_that_ignore_the_global_rng_say_so(sd_pipe):
    before = torch.random.get_rng_state()
    batch = sd_pipe("a fox", seed=3, **SD_CALL).provenance[0].batch
    assert batch["global_rng_used"] is False and "note" not in batch and "global_rng_used_on" not in batch
    assert torch.equal(torch.random.get_rng_state(), before)


# -------------------------------------------------------------------------------------------- seeded_stray_randomness

DRAWS = {
    "randn": lambda: torch.randn(3, 2),
    "rand": lambda: torch.rand(5),
    "randint": lambda: torch.randint(0, 100, (6,)),
    "randperm": lambda: torch.randperm(7),
    "randn_like": lambda: torch.randn_like(torch.zeros(4)),
    "normal_": lambda: torch.empty(4).normal_(),
    "uniform_": lambda: torch.empty(4).uniform_(),
    "bernoulli": lambda: torch.bernoulli(torch.full((8,), 0.5)),
    "multinomial": lambda: torch.multinomial(torch.ones(5), 3),
    "dropout": lambda: torch.nn.functional.dropout(torch.ones(4, 6), 0.5, training=True),
    "dropout2d": lambda: torch.nn.functional.dropout2d(torch.ones(2, 3, 2, 2), 0.5, training=True),
    "Dropout module": lambda: torch.nn.Dropout(0.3).train()(torch.ones(10)),
}


@pytest.mark.parametrize("name", list(DRAWS))
def test_stray_draws_get_the_bits_of_the_global_rng_seeded_alike_and_leave_it_alone(name):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    with seeded_stray_randomness(77) as randomness:
        inside = DRAWS[name]()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert randomness.used_on == ["cpu"] and randomness.devices == ["cpu"] and randomness.seed == 77
    with forked_global_rng(77):
        expected = DRAWS[name]()
    assert torch.equal(inside, expected)


def test_draws_with_a_generator_and_eval_dropout_are_left_alone():
    with seeded_stray_randomness(5) as randomness:
        drawn = torch.randn(3, generator=torch.Generator().manual_seed(1))
        kept = torch.nn.functional.dropout(torch.ones(3), 0.5, training=False)
    assert torch.equal(drawn, torch.randn(3, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(kept, torch.ones(3)) and randomness.used_on == []


def test_one_stream_per_block_and_nothing_after_it():
    with seeded_stray_randomness(5):
        first, second = torch.randn(2), torch.randn(2)
    reference = torch.Generator().manual_seed(5)
    assert torch.equal(first, torch.randn(2, generator=reference))
    assert torch.equal(second, torch.randn(2, generator=reference))
    torch.manual_seed(0)
    assert torch.equal(torch.randn(2), torch.randn(2, generator=torch.Generator().manual_seed(0)))


def test_nests_inside_another_function_mode():
    seen = []

    class Recording(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", ""))
            return func(*args, **(kwargs or {}))

    with Recording(), seeded_stray_randomness(5):
        inside = torch.randn(2)
    assert torch.equal(inside, torch.randn(2, generator=torch.Generator().manual_seed(5)))
    assert "randn" in seen  # the outer mode still sees the draw, now with its generator


def test_leaves_the_mode_on_exceptions():
    with pytest.raises(RuntimeError, match="boom"), seeded_stray_randomness(5):
        raise RuntimeError("boom")
    assert not torch.overrides._get_current_function_mode_stack()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_get_a_cuda_generator_and_leave_the_cuda_rng_alone():
    before = torch.cuda.get_rng_state(0)
    with seeded_stray_randomness(11, devices=["cuda:0"]) as randomness:
        inside = torch.randn(4, device="cuda:0")
    assert torch.equal(torch.cuda.get_rng_state(0), before)
    assert torch.equal(inside, torch.randn(4, device="cuda:0", generator=torch.Generator("cuda").manual_seed(11)))
    assert randomness.devices == ["cpu", "cuda:0"] and randomness.used_on == ["cuda:0"]


def test_global_rng_state_of_other_threads_draws_is_untouched_by_a_call(stray_pipe):
    import threading

    torch.manual_seed(0)
    expected = [torch.randn(4) for _ in range(100)]
    torch.manual_seed(0)
    drawn = []
    thread = threading.Thread(target=lambda: drawn.extend(torch.randn(4) for _ in range(100)))
    thread.start()
    stray_pipe("a fox", seed=3, **SD_CALL)
    thread.join(30)
    assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True))


# ------------------------------------------------------------------------------------------------ clean modules


def test_models_of_the_libraries_in_eval_mode_draw_nothing_stray(sd_pipe):
    assert [draws_nothing_stray(m) for m in (sd_pipe.unet, sd_pipe.vae, sd_pipe.text_encoder)] == [True] * 3
    sd_pipe.text_encoder.train()
    assert draws_nothing_stray(sd_pipe.text_encoder) is False  # dropout is on in train mode


def test_a_custom_submodule_or_attention_processor_makes_a_model_suspect(sd_pipe):
    from diffusers.models.attention_processor import AttnProcessor

    class MyProcessor(AttnProcessor):
        pass

    block = sd_pipe.unet.down_blocks[0]
    block.add_module("extra", torch.nn.Sequential(type("Noisy", (torch.nn.Module,), {})()))
    assert draws_nothing_stray(sd_pipe.unet) is False
    del block.extra
    assert draws_nothing_stray(sd_pipe.unet) is True
    sd_pipe.unet.set_attn_processor(MyProcessor())
    assert draws_nothing_stray(sd_pipe.unet) is False


def test_the_mode_steps_aside_in_clean_modules_and_comes_back_after_an_exception():
    modes_inside = []

    class Probe(torch.nn.Linear):
        def forward(self, tensor):
            modes_inside.append(torch.overrides._get_current_function_mode())
            return super().forward(tensor)

    linear = Probe(2, 2).eval()
    with seeded_stray_randomness(5, clean_modules=[linear]) as randomness:
        linear(torch.ones(1, 2))
        with pytest.raises(RuntimeError):
            linear(torch.ones(1, 3))
        drawn = torch.randn(2)
    assert modes_inside == [None, None]
    assert torch.equal(drawn, torch.randn(2, generator=torch.Generator().manual_seed(5)))
    assert randomness.used_on == ["cpu"]
    assert linear._forward_pre_hooks == {} and linear._forward_hooks == {} and "forward" not in vars(linear)


def test_the_mode_steps_aside_in_every_entry_point_of_a_clean_model():
    modes_inside = {}

    class Autoencoder(torch.nn.Linear):
        def encode(self, tensor):
            modes_inside["encode"] = torch.overrides._get_current_function_mode()
            return self(tensor)

        def decode(self, tensor):
            modes_inside["decode"] = torch.overrides._get_current_function_mode()
            return self(tensor)

        def tiled_decode(self, tensor):
            modes_inside["tiled_decode"] = torch.overrides._get_current_function_mode()
            return self.decode(tensor)

    model = Autoencoder(2, 2).eval()
    with seeded_stray_randomness(5, clean_modules=[model]):
        model.encode(torch.ones(1, 2))
        model.tiled_decode(torch.ones(1, 2))
        outside = torch.overrides._get_current_function_mode()
    assert modes_inside == {"encode": None, "decode": None, "tiled_decode": None}
    assert type(outside).__name__ == "_SeededStrayRandomness"
    assert not {"forward", "encode", "decode", "tiled_decode"} & set(vars(model))


class NoisyUNet(UNet2DConditionModel):
    """A custom denoiser that adds noise from torch's global RNG, ignoring ``generator``."""

    def forward(self, sample, *args, **kwargs):
        output = super().forward(sample, *args, **kwargs)
        noise = 0.1 * torch.randn(sample.shape)  # no generator: torch's global RNG
        if isinstance(output, tuple):
            return (output[0] + noise, *output[1:])
        output.sample = output.sample + noise
        return output


def test_a_custom_model_drawing_stray_randomness_is_seeded_per_call(sd_pipe):
    noisy = NoisyUNet.from_config(sd_pipe.unet.config)
    noisy.load_state_dict(sd_pipe.unet.state_dict())
    sd_pipe.unet = noisy.eval()
    before = torch.random.get_rng_state()
    first = sd_pipe("a fox", seed=3, **SD_CALL)
    torch.manual_seed(99)
    second = sd_pipe("a fox", seed=3, **SD_CALL)
    torch.random.set_rng_state(before)
    third = sd_pipe("a fox", seed=4, **SD_CALL)
    assert torch.equal(torch.random.get_rng_state(), before)
    np.testing.assert_array_equal(first.images, second.images)
    assert np.abs(first.images - third.images).max() > 1e-3
    assert first.provenance[0].batch["global_rng_used"] is True


# ------------------------------------------------------------------------------------------------ operations seen


def _operations_seen(monkeypatch, pipe, **call) -> dict[str, int]:
    """Torch operations that reached the stray-randomness mode during one call: inside a model's layers, elsewhere."""
    from diffusers_repro.generation.randomness import _SeededStrayRandomness

    counts = {"in layers": 0, "elsewhere": 0}
    depth = [0]
    original = _SeededStrayRandomness.__torch_function__

    def counting(self, func, types, args=(), kwargs=None):
        counts["in layers" if depth[0] else "elsewhere"] += 1
        return original(self, func, types, args, kwargs)

    def enter(module, args):
        depth[0] += 1

    def leave(module, args, output):
        depth[0] -= 1

    handles = [
        torch.nn.modules.module.register_module_forward_pre_hook(enter),
        torch.nn.modules.module.register_module_forward_hook(leave, always_call=True),
    ]
    try:
        with monkeypatch.context() as patch:
            patch.setattr(_SeededStrayRandomness, "__torch_function__", counting)
            pipe(**call)
    finally:
        for handle in handles:
            handle.remove()
    return counts


def _repro_of(plain):
    from diffusers_repro import reproducible

    pipe = reproducible(type(plain))(**plain.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    ("kind", "per_step", "fixed"),
    [("sd", 37, 53), ("sdxl", 31, 92), ("img2img", 37, 133)],
)
def test_no_layer_of_a_clean_model_reaches_the_mode(monkeypatch, sd_pipe, kind, per_step, fixed):
    from tiny_components import build_tiny_img2img, build_tiny_sdxl

    call = {"prompt": ["a fox", "a bear"], "seed": 3, "output_type": "np"}
    if kind == "sd":
        pipe = sd_pipe
    elif kind == "sdxl":
        pipe = _repro_of(build_tiny_sdxl())
    else:
        pipe = _repro_of(build_tiny_img2img())
        call.update(image=torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)), strength=1.0)
    seen = {steps: _operations_seen(monkeypatch, pipe, num_inference_steps=steps, **call) for steps in (2, 3)}
    # The pipeline's and the scheduler's own operations outside the models pass (they may draw); a layer never does.
    assert seen == {steps: {"in layers": 0, "elsewhere": fixed + per_step * steps} for steps in (2, 3)}


# ------------------------------------------------------------------------------------------------ cached cleanliness


class NoisyAttnProcessor:
    """An attention processor of our own that adds noise from torch's global RNG, ignoring ``generator``."""

    def __call__(self, attn, hidden_states, *args, **kwargs):
        from diffusers.models.attention_processor import AttnProcessor

        output = AttnProcessor()(attn, hidden_states, *args, **kwargs)
        return output + 0.01 * torch.randn(output.shape)  # no generator: torch's global RNG


def _stray_draws_are_seeded(pipe) -> bool:
    """Two calls with one seed, torch's global RNG reseeded between them: same images, RNG untouched, recorded."""
    before = torch.random.get_rng_state()
    first = pipe("a fox", seed=3, **SD_CALL)
    torch.manual_seed(99)
    second = pipe("a fox", seed=3, **SD_CALL)
    torch.random.set_rng_state(before)
    same = np.array_equal(first.images, second.images)
    return same and first.provenance[0].batch["global_rng_used"] and second.provenance[0].batch["global_rng_used"]


def test_a_custom_attention_processor_set_after_a_call_is_seen_by_the_next_call(sd_pipe):
    assert sd_pipe("a fox", seed=3, **SD_CALL).provenance[0].batch["global_rng_used"] is False
    sd_pipe.unet.set_attn_processor(NoisyAttnProcessor())
    assert _stray_draws_are_seeded(sd_pipe)


class NoisyVae(AutoencoderKL):
    """A custom VAE whose decode adds noise from torch's global RNG, ignoring ``generator``."""

    def decode(self, z, *args, **kwargs):
        output = super().decode(z, *args, **kwargs)
        noise = 0.01 * torch.randn(output[0].shape)  # no generator: torch's global RNG
        return (output[0] + noise, *output[1:])


def test_a_component_replaced_after_a_call_is_seen_by_the_next_call(sd_pipe):
    assert sd_pipe("a fox", seed=3, **SD_CALL).provenance[0].batch["global_rng_used"] is False
    noisy = NoisyVae.from_config(sd_pipe.vae.config)
    noisy.load_state_dict(sd_pipe.vae.state_dict())
    sd_pipe.vae = noisy.eval()
    assert _stray_draws_are_seeded(sd_pipe)


def test_cached_cleanliness_follows_train_mode_lora_adapters_and_register_modules(sd_pipe):
    from tiny_components import tiny_unet_lora

    from diffusers_repro.generation.randomness import _CLEANLINESS, draws_nothing_stray_cached

    unet = sd_pipe.unet
    sd_pipe("a fox", seed=3, **SD_CALL)
    assert draws_nothing_stray_cached(unet) is True
    unet.down_blocks[0].train()
    assert draws_nothing_stray_cached(unet) is False
    unet.eval()
    assert draws_nothing_stray_cached(unet) is True

    walked = _CLEANLINESS[unet]
    sd_pipe.load_lora_weights(tiny_unet_lora(1), adapter_name="style")
    assert unet not in _CLEANLINESS  # forgotten by the LoRA method
    unet.eval()  # peft injects the adapter layers in train mode
    sd_pipe("a fox", seed=3, **SD_CALL)
    lora_modules = [m for m in _CLEANLINESS[unet].submodules if type(m).__module__.startswith("peft")]
    assert len(lora_modules) == 32 and _CLEANLINESS[unet] is not walked
    assert draws_nothing_stray_cached(unet) is True
    lora_modules[0].train(False).lora_dropout.train()  # a mode seen only in the new adapter layers
    assert draws_nothing_stray_cached(unet) is False
    unet.eval()
    assert draws_nothing_stray_cached(unet) is True

    # A custom submodule put in by hand deep inside is seen once the component is registered again.
    unet.down_blocks[0].add_module("extra", type("Noisy", (torch.nn.Module,), {})().eval())
    assert draws_nothing_stray_cached(unet) is True
    sd_pipe.register_modules(unet=unet)
    assert draws_nothing_stray_cached(unet) is False
