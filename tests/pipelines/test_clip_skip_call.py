"""clip_skip in Repro pipeline calls: works where vanilla diffusers 0.42.1 + transformers 5 raises, bitwise equal to
vanilla given the skipped layer's embeddings, recorded as the call was made, replayed bitwise, thread-safe."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

import diffusers_repro.pipelines.clip_skip as clip_skip_module
from diffusers_repro import ReproDDIMPipeline, ReproStableDiffusionPipeline
from diffusers_repro.files.imagefile import read_image_file
from diffusers_repro.files.infotext import parse_infotext
from diffusers_repro.interop.clip_skip import a1111_prompt_embeds
from diffusers_repro.pipelines.clip_skip import has_text_model_layer_norm, reads_text_model_layer_norm
from diffusers_repro.verify.replay import reproduce
from tests.tiny_components import build_tiny_img2img, build_tiny_sdxl, generators, repro_of

CALL = {"num_inference_steps": 2, "output_type": "np"}
MISSING_TEXT_MODEL = "'CLIPTextModel' object has no attribute 'text_model'"


def vanilla(pipe):
    """The vanilla diffusers pipeline over the very same component objects."""
    plain = StableDiffusionPipeline(**pipe.components)
    plain.set_progress_bar_config(disable=True)
    return plain


def _token_ids(pipe, prompts):
    return pipe.tokenizer(
        prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def skipped_layer_embeds(pipe, prompts, clip_skip):
    """The prompt embeddings diffusers means by clip_skip, computed here from the encoder's own hidden states."""
    with torch.no_grad():
        hidden_states = pipe.text_encoder(_token_ids(pipe, prompts), output_hidden_states=True).hidden_states
        return pipe.text_encoder.final_layer_norm(hidden_states[-(clip_skip + 1)])


def last_layer_embeds(pipe, prompts):
    """What diffusers' encode_prompt makes of the negative prompt, clip_skip or not: the encoder's last layer."""
    with torch.no_grad():
        return pipe.text_encoder(_token_ids(pipe, prompts))[0]


# ------------------------------------------------------------------------------------------------ the vanilla bug


def test_vanilla_clip_skip_raises_on_the_same_components(sd):
    assert not has_text_model_layer_norm(sd.text_encoder)
    with pytest.raises(AttributeError, match=re.escape(MISSING_TEXT_MODEL)):
        vanilla(sd)("a fox", clip_skip=1, generator=generators(0), **CALL)


# ------------------------------------------------------------------------------------------------ bitwise


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_clip_skip_equals_vanilla_given_the_skipped_layer(sd, clip_skip):
    prompts = ["a fox in the snow", "a bear"]
    negatives = ["blurry", "dark"]
    ours = sd(prompts, negative_prompt=negatives, num_images_per_prompt=2, clip_skip=clip_skip, seed=7, **CALL)
    theirs = vanilla(sd)(
        prompt_embeds=skipped_layer_embeds(sd, prompts, clip_skip),
        negative_prompt_embeds=last_layer_embeds(sd, negatives),
        num_images_per_prompt=2,
        generator=generators(7, 8, 9, 10),
        **CALL,
    )
    np.testing.assert_array_equal(ours.images, theirs.images)
    # The skip is real: not the image of the last layer.
    plain = sd(prompts, negative_prompt=negatives, num_images_per_prompt=2, seed=7, **CALL)
    assert np.abs(ours.images - plain.images).max() > 1e-3


def test_clip_skip_without_negative_prompt_uses_diffusers_empty_negative(sd):
    ours = sd("a fox", clip_skip=1, seed=3, **CALL)
    theirs = vanilla(sd)(
        prompt_embeds=skipped_layer_embeds(sd, ["a fox"], 1),
        negative_prompt_embeds=last_layer_embeds(sd, [""]),
        generator=generators(3),
        **CALL,
    )
    np.testing.assert_array_equal(ours.images, theirs.images)


def test_clip_skip_none_is_vanilla(sd):
    ours = sd(["a fox", "a bear"], negative_prompt=["blurry", "dark"], clip_skip=None, seed=11, **CALL)
    theirs = vanilla(sd)(["a fox", "a bear"], negative_prompt=["blurry", "dark"], generator=generators(11, 12), **CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)


def test_encode_prompt_called_directly(sd):
    embeds, negative = sd.encode_prompt(["a fox"], "cpu", 2, True, ["blurry"], clip_skip=1)
    assert torch.equal(embeds, skipped_layer_embeds(sd, ["a fox"], 1).repeat(2, 1, 1))
    assert torch.equal(negative, last_layer_embeds(sd, ["blurry"]).repeat(2, 1, 1))
    # Diffusers' own checks on the negative prompt still apply.
    with pytest.raises(TypeError, match="`negative_prompt` should be the same type to `prompt`"):
        sd.encode_prompt(["a fox"], "cpu", 1, True, "blurry", clip_skip=1)


def test_diffusers_own_path_where_the_encoder_has_text_model(sd, monkeypatch):
    """A text encoder with ``text_model.final_layer_norm`` takes diffusers' own path: vanilla works, ours equals it,
    and our embeddings are never computed. The same call without it (our path) gives the same bits."""
    with_text_model = ReproStableDiffusionPipeline(**sd.components)
    with_text_model.set_progress_bar_config(disable=True)
    encoder = type(sd.text_encoder)(sd.text_encoder.config).eval()
    encoder.load_state_dict(sd.text_encoder.state_dict())
    encoder.text_model = torch.nn.Module()
    encoder.text_model.final_layer_norm = encoder.final_layer_norm  # what transformers 4 had
    with_text_model.register_modules(text_encoder=encoder)
    assert has_text_model_layer_norm(with_text_model.text_encoder)

    ours_path = sd("a fox", negative_prompt="blurry", clip_skip=1, seed=5, **CALL).images

    def refuse(*args, **kwargs):
        raise AssertionError("clip_skip_prompt_embeds ran where diffusers' own path works")

    monkeypatch.setattr(clip_skip_module, "clip_skip_prompt_embeds", refuse)
    theirs = vanilla(with_text_model)("a fox", negative_prompt="blurry", clip_skip=1, generator=generators(5), **CALL)
    ours = with_text_model("a fox", negative_prompt="blurry", clip_skip=1, seed=5, **CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)
    np.testing.assert_array_equal(ours_path, theirs.images)


def test_img2img_clip_skip_equals_vanilla_given_the_skipped_layer():
    plain = build_tiny_img2img()
    pipe = repro_of(plain)
    image = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    ours = pipe("a fox", image=image, strength=0.5, clip_skip=1, seed=2, **CALL)
    theirs = plain(
        prompt_embeds=skipped_layer_embeds(pipe, ["a fox"], 1),
        negative_prompt_embeds=last_layer_embeds(pipe, [""]),
        image=image,
        strength=0.5,
        generator=generators(2),
        **CALL,
    )
    np.testing.assert_array_equal(ours.images, theirs.images)


def test_batch_invariant_clip_skip_equals_one_image_alone(sd):
    batch = sd(["a fox", "a bear"], clip_skip=1, seed=[20, 21], batch_invariant=True, **CALL)
    alone = sd("a bear", clip_skip=1, seed=21, **CALL)
    np.testing.assert_array_equal(batch.images[1], alone.images[0])


# ------------------------------------------------------------------------------------------------ the record


def test_record_says_prompt_and_clip_skip(sd):
    out = sd(["a fox", "a bear"], negative_prompt=["blurry", "dark"], clip_skip=1, seed=1, **CALL)
    for record, prompt, negative in zip(out.provenance, ["a fox", "a bear"], ["blurry", "dark"], strict=True):
        call = record.call_arguments
        assert (call["prompt"], call["negative_prompt"], call["clip_skip"]) == (prompt, negative, 1)
        assert call.get("prompt_embeds") is None and call.get("negative_prompt_embeds") is None
        assert record.recipe["requires_inputs"] == []


def test_saved_image_reproduces_bitwise_and_says_clip_skip_2(sd, tmp_path):
    out = sd(
        ["a fox", "a bear"],
        negative_prompt=["blurry", "dark"],
        clip_skip=1,
        seed=30,
        output_type="pil",
        **{"num_inference_steps": 2},
    )
    paths = out.save(tmp_path, sign=False)
    for path, image in zip(paths, out.images, strict=True):
        result = reproduce(path, pipe=sd)
        assert result.verdict == "bitwise" and result.max_abs_diff == 0.0
        assert np.array_equal(np.asarray(result.image), np.asarray(image))
    fields = parse_infotext(read_image_file(paths[1]).infotext)
    assert (fields["prompt"], fields["clip_skip"], fields["seed"]) == ("a bear", "2", 31)


# ------------------------------------------------------------------------------------------------ no side effects


def test_text_encoder_is_not_changed(sd):
    encoder = sd.text_encoder
    attributes = dict(vars(encoder))
    modules = dict(encoder.named_modules())
    weights = {name: tensor.clone() for name, tensor in encoder.state_dict().items()}
    sd("a fox", clip_skip=1, seed=0, **CALL)
    assert vars(encoder).keys() == attributes.keys()
    assert all(vars(encoder)[name] is value for name, value in attributes.items() if name != "_modules")
    assert dict(encoder.named_modules()) == modules and not hasattr(encoder, "text_model")
    assert all(torch.equal(weights[name], tensor) for name, tensor in encoder.state_dict().items())
    assert encoder.config.output_hidden_states is False


def test_threads_with_and_without_clip_skip_get_their_own_results(sd):
    skipped = sd("a fox", clip_skip=1, seed=4, **CALL).images
    plain = sd("a fox", seed=4, **CALL).images
    shared = ReproStableDiffusionPipeline.from_pipe(sd)  # shares the text encoder; runs beside `sd`
    shared.set_progress_bar_config(disable=True)
    results: dict[tuple[str, int], np.ndarray] = {}
    errors = []
    barrier = threading.Barrier(4)

    def work(name, pipe, clip_skip):
        try:
            barrier.wait()
            for round_ in range(3):
                results[(name, round_)] = pipe("a fox", clip_skip=clip_skip, seed=4, **CALL).images
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=work, args=("same-skip", sd, 1)),
        threading.Thread(target=work, args=("same-plain", sd, None)),
        threading.Thread(target=work, args=("shared-skip", shared, 1)),
        threading.Thread(target=work, args=("shared-plain", shared, None)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 12
    for (name, _), images in results.items():
        np.testing.assert_array_equal(images, skipped if name.endswith("skip") else plain)


# ------------------------------------------------------------------------------------------------ other pipelines


def test_only_sd_encode_prompts_are_wrapped():
    from diffusers import StableDiffusionXLPipeline

    assert "encode_prompt" in ReproStableDiffusionPipeline.__dict__
    assert not hasattr(ReproDDIMPipeline, "encode_prompt")
    assert not reads_text_model_layer_norm(StableDiffusionXLPipeline.encode_prompt)


def test_sdxl_clip_skip_is_vanillas():
    """SDXL's own clip_skip (hidden_states[-(clip_skip + 2)], no layer norm) works with transformers 5: left as is."""
    plain = build_tiny_sdxl()
    pipe = repro_of(plain)
    assert "encode_prompt" not in type(pipe).__dict__
    ours = pipe("a fox", clip_skip=1, seed=6, **CALL)
    theirs = plain("a fox", clip_skip=1, generator=generators(6), **CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert ours.provenance[0].call_arguments["clip_skip"] == 1


# ------------------------------------------------------------------------------------------------ A1111's hook


def test_a1111_prompt_embeds_skip_the_negative_prompt_too(sd):
    embeds, negative = a1111_prompt_embeds(sd, ["a fox", "a bear"], "blurry", clip_skip=1)
    assert torch.equal(embeds, skipped_layer_embeds(sd, ["a fox", "a bear"], 1))
    assert torch.equal(negative, skipped_layer_embeds(sd, ["blurry", "blurry"], 1))
    _, empty = a1111_prompt_embeds(sd, "a fox", None, clip_skip=1)
    assert torch.equal(empty, skipped_layer_embeds(sd, [""], 1))
    with pytest.raises(ValueError, match=re.escape("negative_prompt has 1 strings but prompt has 2")):
        a1111_prompt_embeds(sd, ["a fox", "a bear"], ["blurry"], clip_skip=1)


def test_truncation_is_warned_as_diffusers_warns(sd):
    import logging

    long_prompt = " ".join(["fox"] * 200)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion")
    logger.addHandler(handler)
    try:
        sd.encode_prompt(long_prompt, "cpu", 1, False)
        vanilla_message = [r.getMessage() for r in records]
        records.clear()
        sd.encode_prompt(long_prompt, "cpu", 1, False, clip_skip=1)
        sd.encode_prompt("a fox", "cpu", 1, False, clip_skip=1)
    finally:
        logger.removeHandler(handler)
    assert len(vanilla_message) == 1 and vanilla_message[0].startswith(
        "The following part of your input was truncated"
    )
    assert [r.getMessage() for r in records] == vanilla_message
