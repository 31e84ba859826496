"""Batch-invariant mode: every image of a batch is bitwise equal to generating it alone; a plain batch is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers_repro.generation.batching import one_image_at_a_time

PROMPTS = ["a fox", "a bear", "a cat"]
NEGATIVE = ["blurry", "dark", "grainy"]
STEPS = 2
SEED = 10


def _sd_call(pipe, prompt, negative, seed, **kwargs):
    return pipe(
        prompt, negative_prompt=negative, num_inference_steps=STEPS, seed=seed, output_type="np", **kwargs
    ).images


@pytest.fixture(scope="module")
def sd_alone(sd):
    """Each prompt of PROMPTS generated alone, with its seed in the batch (SEED + index), with guidance 7.5."""
    return np.stack(
        [
            _sd_call(sd, prompt, negative, SEED + index)[0]
            for index, (prompt, negative) in enumerate(zip(PROMPTS, NEGATIVE, strict=True))
        ]
    )


@pytest.fixture(scope="module")
def ddim_alone(ddim):
    return np.stack(
        [ddim(num_inference_steps=STEPS, seed=SEED + index, output_type="np").images[0] for index in range(3)]
    )


def _patched_methods(pipe):
    """The instance attributes named forward/encode/decode on the pipeline's modules (none when nothing is patched)."""
    return {
        (name, method): component.__dict__[method]
        for name, component in pipe.components.items()
        if isinstance(component, torch.nn.Module)
        for method in ("forward", "encode", "decode")
        if method in component.__dict__
    }


# -------------------------------------------------------------------------------------------------------- DDIM


def test_ddim_batch_invariant_images_equal_generating_each_alone(ddim, ddim_alone):
    batch = ddim(batch_size=3, num_inference_steps=STEPS, seed=SEED, output_type="np", batch_invariant=True)
    for index in range(3):
        assert np.array_equal(batch.images[index], ddim_alone[index]), f"image {index}"
    assert [record.batch["batch_invariant"] for record in batch.provenance] == [True] * 3


def test_ddim_plain_batch_is_not_bitwise_equal_to_alone(ddim, ddim_alone):
    batch = ddim(batch_size=3, num_inference_steps=STEPS, seed=SEED, output_type="np")
    difference = float(np.abs(batch.images - ddim_alone).max())
    # Measured 1.2e-6 to 6e-6 on 1 and 2 CPU threads: the kernels block a batch of 3 differently from a batch of 1.
    assert 0 < difference < 1e-3
    assert [record.batch["batch_invariant"] for record in batch.provenance] == [False] * 3


# -------------------------------------------------------------------------------------------------------- SD + CFG


def test_sd_cfg_batch_invariant_images_equal_generating_each_alone(sd, sd_alone):
    batch = _sd_call(sd, PROMPTS, NEGATIVE, SEED, batch_invariant=True)
    for index in range(3):
        assert np.array_equal(batch[index], sd_alone[index]), f"image {index}"


def test_sd_cfg_plain_batch_is_not_bitwise_equal_to_alone(sd, sd_alone):
    batch = _sd_call(sd, PROMPTS, NEGATIVE, SEED)
    difference = float(np.abs(batch - sd_alone).max())
    # Measured 1.2e-6 to 2.6e-6 on 1 and 2 CPU threads, for every image of the batch.
    assert 0 < difference < 1e-3


def test_sd_batch_invariant_with_num_images_per_prompt(sd, sd_alone):
    # One prompt x 3 images: image i has seed SEED + i; the reference for image 0 is PROMPTS[0] alone with SEED.
    batch = sd(
        PROMPTS[0],
        negative_prompt=NEGATIVE[0],
        num_images_per_prompt=3,
        num_inference_steps=STEPS,
        seed=SEED,
        output_type="np",
        batch_invariant=True,
    ).images
    assert np.array_equal(batch[0], sd_alone[0])
    assert np.array_equal(batch[1], _sd_call(sd, PROMPTS[0], NEGATIVE[0], SEED + 1)[0])


def test_sd_batch_invariant_without_guidance(sd):
    # guidance_scale=1 turns classifier-free guidance off: the denoiser sees one row per image, not pairs.
    batch = _sd_call(sd, PROMPTS, None, SEED, guidance_scale=1.0, batch_invariant=True)
    alone = _sd_call(sd, PROMPTS[2], None, SEED + 2, guidance_scale=1.0)
    assert np.array_equal(batch[2], alone[0])


def test_sd_batch_invariant_single_image_equals_plain_call(sd, sd_alone):
    # A single image keeps its (unconditional, conditional) pair in one model call, as a plain call does.
    invariant = _sd_call(sd, PROMPTS[0], NEGATIVE[0], SEED, batch_invariant=True)
    assert np.array_equal(invariant[0], sd_alone[0])


# -------------------------------------------------------------------------------------------------------- records


@pytest.mark.parametrize("batch_invariant", [True, False])
def test_mode_is_recorded(sd, batch_invariant):
    out = sd(PROMPTS, num_inference_steps=1, seed=0, batch_invariant=batch_invariant, output_type="latent")
    assert [record.batch["batch_invariant"] for record in out.provenance] == [batch_invariant] * 3
    assert [record.batch["size"] for record in out.provenance] == [3] * 3


# -------------------------------------------------------------------------------------------------------- restoring


def test_methods_restored_after_the_call(sd):
    unet_forward = sd.unet.forward
    sd(PROMPTS, num_inference_steps=STEPS, seed=0, batch_invariant=True)
    assert _patched_methods(sd) == {}
    assert sd.unet.forward == unet_forward
    assert sd.vae.decode.__func__ is type(sd.vae).decode


def test_methods_restored_after_an_exception(sd):
    def fail(pipe, step, timestep, callback_kwargs):
        raise RuntimeError("stop at step 0")

    with pytest.raises(RuntimeError, match="stop at step 0"):
        sd(PROMPTS, num_inference_steps=STEPS, seed=0, batch_invariant=True, callback_on_step_end=fail)
    assert _patched_methods(sd) == {}


def test_instance_attribute_put_back(ddim_pipe):
    # A method the user patched on the instance (a hook, a compiled forward) is the one in place afterwards.
    original = ddim_pipe.unet.forward
    calls = []

    def counting_forward(*args, **kwargs):
        calls.append(args[0].shape[0] if args else kwargs["sample"].shape[0])
        return original(*args, **kwargs)

    ddim_pipe.unet.forward = counting_forward
    ddim_pipe(batch_size=3, num_inference_steps=STEPS, seed=0, batch_invariant=True)
    assert ddim_pipe.unet.__dict__["forward"] is counting_forward
    # One image per model call inside the call.
    assert set(calls) == {1}


def test_context_manager_restores_on_exception(ddim_pipe):
    with pytest.raises(ValueError, match="inside"):
        with one_image_at_a_time(ddim_pipe, num_images=3):
            assert "forward" in ddim_pipe.unet.__dict__
            raise ValueError("inside")
    assert _patched_methods(ddim_pipe) == {}


# -------------------------------------------------------------------------------------------------------- threads


def _counting_unet(pipe):
    original = pipe.unet.forward
    calls = []

    def counting_forward(sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return original(sample, *args, **kwargs)

    pipe.unet.forward = counting_forward
    return calls


def test_splitting_acts_in_the_calling_thread_only(ddim_pipe):
    import threading

    calls = _counting_unet(ddim_pipe)
    size = ddim_pipe.unet.config.sample_size
    sample, timestep = torch.zeros(3, ddim_pipe.unet.config.in_channels, size, size), torch.tensor(1)
    with one_image_at_a_time(ddim_pipe, num_images=3):
        other = threading.Thread(target=lambda: ddim_pipe.unet(sample, timestep))
        other.start()
        other.join(30)
        assert calls == [3]  # the other thread's call went through whole
        ddim_pipe.unet(sample, timestep)
        assert calls == [3, 1, 1, 1]


def test_the_last_block_to_leave_puts_the_methods_back(ddim_pipe):
    import threading

    calls = _counting_unet(ddim_pipe)
    counting = ddim_pipe.unet.__dict__["forward"]
    entered, leave = threading.Event(), threading.Event()

    def other_block():
        with one_image_at_a_time(ddim_pipe, num_images=2):
            entered.set()
            leave.wait(30)

    other = threading.Thread(target=other_block)
    other.start()
    entered.wait(30)
    with one_image_at_a_time(ddim_pipe, num_images=2):
        pass
    assert ddim_pipe.unet.__dict__["forward"] is not counting  # still in use by the other thread's block
    leave.set()
    other.join(30)
    assert ddim_pipe.unet.__dict__["forward"] is counting and calls == []
