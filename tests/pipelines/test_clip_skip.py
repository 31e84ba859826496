"""clip_skip with diffusers 0.42.1 and transformers 5: vanilla raises, `clip_skip_prompt_embeds` computes it."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from diffusers_repro.pipelines.clip_skip import clip_skip_prompt_embeds, final_layer_norm
from diffusers_repro.tiny import build_tiny_tokenizer

PROMPTS = ["a fox in the snow", "a cat"]


@pytest.fixture(scope="module")
def vanilla(tiny_sd_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _hidden_states(pipe, prompts):
    ids = pipe.tokenizer(
        prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids, output_hidden_states=True)


def test_vanilla_clip_skip_raises_with_transformers_5(vanilla):
    message = "'CLIPTextModel' object has no attribute 'text_model'"
    with pytest.raises(AttributeError, match=re.escape(message)):
        vanilla("a fox", clip_skip=1, num_inference_steps=1, height=32, width=32, output_type="latent")
    with pytest.raises(AttributeError, match=re.escape(message)):
        vanilla.encode_prompt("a fox", "cpu", 1, False, clip_skip=1)


def test_none_is_exactly_vanillas_prompt_embeds(vanilla):
    expected, _ = vanilla.encode_prompt(PROMPTS, "cpu", 1, False)
    assert torch.equal(clip_skip_prompt_embeds(vanilla, PROMPTS, None), expected)
    assert torch.equal(clip_skip_prompt_embeds((vanilla.tokenizer, vanilla.text_encoder), PROMPTS, None), expected)


@pytest.mark.parametrize("clip_skip", [0, 1, 2])
def test_skipped_layer_through_the_final_layer_norm(vanilla, clip_skip):
    outputs = _hidden_states(vanilla, PROMPTS)
    assert len(outputs.hidden_states) == vanilla.text_encoder.config.num_hidden_layers + 1
    with torch.no_grad():
        expected = vanilla.text_encoder.final_layer_norm(outputs.hidden_states[-(clip_skip + 1)])
    embeds = clip_skip_prompt_embeds(vanilla, PROMPTS, clip_skip)
    assert torch.equal(embeds, expected)
    if clip_skip == 0:
        # Skipping nothing is the encoder's own output.
        assert torch.equal(embeds, outputs.last_hidden_state)
    else:
        assert not torch.equal(embeds, outputs.last_hidden_state)


def test_text_encoder_is_left_unchanged(vanilla):
    encoder = vanilla.text_encoder
    before = {name: tensor.clone() for name, tensor in encoder.state_dict().items()}
    attributes = set(vars(encoder))
    clip_skip_prompt_embeds(vanilla, PROMPTS, 1)
    assert set(vars(encoder)) == attributes and not hasattr(encoder, "text_model")
    assert all(torch.equal(before[name], tensor) for name, tensor in encoder.state_dict().items())


def test_vanilla_pipeline_takes_the_embeddings(vanilla):
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(num_inference_steps=2, height=32, width=32, output_type="latent")
    plain = vanilla(PROMPTS, generator=[torch.Generator().manual_seed(s) for s in (0, 1)], **kwargs).images
    embeds = clip_skip_prompt_embeds(vanilla, PROMPTS, None)
    negative = clip_skip_prompt_embeds(vanilla, ["", ""], None)
    again = vanilla(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        **kwargs,
    ).images
    assert torch.equal(plain, again)
    skipped = vanilla(prompt_embeds=clip_skip_prompt_embeds(vanilla, PROMPTS, 1), generator=generator, **kwargs).images
    assert skipped.shape == plain.shape


def test_encoder_with_projection_keeps_its_norm_in_text_model():
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=20,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    encoder = CLIPTextModelWithProjection(config).eval()
    assert final_layer_norm(encoder) is encoder.text_model.final_layer_norm
    ids = tokenizer(["a"], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = encoder.text_model.final_layer_norm(encoder(ids, output_hidden_states=True).hidden_states[-3])
    assert torch.equal(clip_skip_prompt_embeds((tokenizer, encoder), "a", 2), expected)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((PROMPTS, 3), ValueError, "clip_skip must be between 0 and 2 (the text encoder's layers"),
        ((PROMPTS, -1), ValueError, "clip_skip must be between 0 and 2"),
        ((PROMPTS, 1.0), TypeError, "clip_skip must be an int or None, got 1.0"),
        ((PROMPTS, True), TypeError, "clip_skip must be an int or None, got True"),
        (([], 1), ValueError, "prompt must hold between 1 and 4096 strings, got 0"),
        ((["a", 3], 1), TypeError, "prompt[1] must be a string, got int"),
        ((b"a", 1), TypeError, "prompt must be a string or a list of strings, got bytes"),
    ],
)
def test_bad_arguments_are_named(vanilla, args, error, message):
    with pytest.raises(error, match=re.escape(message)):
        clip_skip_prompt_embeds(vanilla, *args)


def test_not_a_pipeline():
    with pytest.raises(TypeError, match="pipe_or_pair must be a pipeline with a tokenizer and a text_encoder"):
        clip_skip_prompt_embeds(object(), "a", 1)
    with pytest.raises(TypeError, match=re.escape("text_encoder Linear has no final_layer_norm")):
        final_layer_norm(torch.nn.Linear(2, 2))
