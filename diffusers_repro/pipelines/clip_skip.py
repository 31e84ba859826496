"""``clip_skip`` without diffusers' ``text_encoder.text_model``: the prompt embeddings of a skipped CLIP layer.

With transformers 5, ``CLIPTextModel`` is the text transformer itself (its ``final_layer_norm`` is its own attribute),
and diffusers 0.42.1's ``encode_prompt`` still reads ``text_encoder.text_model.final_layer_norm``, so any
``clip_skip`` raises ``AttributeError: 'CLIPTextModel' object has no attribute 'text_model'``. A1111's "Clip skip: 2"
is diffusers' ``clip_skip=1``, and it is in a large share of A1111 recipes.

`clip_skip_prompt_embeds` computes what ``encode_prompt`` computes for the prompt - the hidden states
``clip_skip + 1`` from the end, through the encoder's final layer norm - wherever that layer norm lives, without
changing the text encoder.

`clip_skip_encode_prompt` wraps a vanilla Stable Diffusion ``encode_prompt`` (the one diffusers copies into some
forty SD-family pipelines) for the Repro classes: when a call asks for ``clip_skip`` and the text encoder has no
``text_model.final_layer_norm``, the prompt embeddings come from `clip_skip_prompt_embeds` and the vanilla
``encode_prompt`` does the rest (negative prompt, its checks, ``num_images_per_prompt``) as it always does. Where the
text encoder has what diffusers reads, diffusers' own path runs untouched.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "MAX_PROMPTS",
    "clip_skip_encode_prompt",
    "clip_skip_prompt_embeds",
    "final_layer_norm",
    "has_text_model_layer_norm",
    "reads_text_model_layer_norm",
]

MAX_PROMPTS = 4096
"""Most prompts one call encodes (the schema's limit on a list)."""


def final_layer_norm(text_encoder: torch.nn.Module) -> torch.nn.Module:
    """The final layer norm of a CLIP text encoder: its own (transformers 5) or its ``text_model``'s (4 and
    ``CLIPTextModelWithProjection``).

    Example:

    ```py
    >>> from diffusers_repro.tiny import build_tiny_pipeline
    >>> from diffusers_repro.pipelines.clip_skip import final_layer_norm
    >>> type(final_layer_norm(build_tiny_pipeline("sd").text_encoder)).__name__
    'LayerNorm'
    ```
    """
    for owner in (text_encoder, getattr(text_encoder, "text_model", None)):
        norm = getattr(owner, "final_layer_norm", None) if owner is not None else None
        if isinstance(norm, torch.nn.Module):
            return norm
    raise TypeError(
        f"text_encoder {type(text_encoder).__name__} has no final_layer_norm (nor text_model.final_layer_norm): "
        "clip_skip needs a CLIP text encoder"
    )


def _components(pipe_or_pair: Any) -> tuple[Any, torch.nn.Module]:
    if isinstance(pipe_or_pair, tuple) and len(pipe_or_pair) == 2:
        tokenizer, text_encoder = pipe_or_pair
    else:
        tokenizer = getattr(pipe_or_pair, "tokenizer", None)
        text_encoder = getattr(pipe_or_pair, "text_encoder", None)
    if tokenizer is None or not isinstance(text_encoder, torch.nn.Module):
        raise TypeError(
            "pipe_or_pair must be a pipeline with a tokenizer and a text_encoder, or a (tokenizer, text_encoder) "
            f"tuple; got {type(pipe_or_pair).__name__}"
        )
    return tokenizer, text_encoder


def _check_prompts(prompt: Any) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, Sequence) or isinstance(prompts, bytes):
        raise TypeError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
    if not 1 <= len(prompts) <= MAX_PROMPTS:
        raise ValueError(f"prompt must hold between 1 and {MAX_PROMPTS} strings, got {len(prompts)}")
    for index, text in enumerate(prompts):
        if not isinstance(text, str):
            raise TypeError(f"prompt[{index}] must be a string, got {type(text).__name__}")
    return list(prompts)


def _check_clip_skip(clip_skip: Any, layers: int) -> int | None:
    if clip_skip is None:
        return None
    if isinstance(clip_skip, (bool, np.bool_)) or not isinstance(clip_skip, numbers.Integral):
        raise TypeError(f"clip_skip must be an int or None, got {clip_skip!r}")
    # hidden_states holds the embeddings and one entry per layer: clip_skip + 1 <= layers + 1.
    if not 0 <= int(clip_skip) <= layers:
        raise ValueError(
            f"clip_skip must be between 0 and {layers} (the text encoder's layers; diffusers counts A1111's "
            f"'Clip skip: 2' as 1), got {int(clip_skip)}"
        )
    return int(clip_skip)


@torch.no_grad()
def clip_skip_prompt_embeds(
    pipe_or_pair: Any,
    prompt: str | Sequence[str],
    clip_skip: int | None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``prompt_embeds`` diffusers' ``StableDiffusionPipeline.encode_prompt`` computes with ``clip_skip``.

    The prompt is tokenized as ``encode_prompt`` does (padded to the tokenizer's ``model_max_length``, truncated), the
    text encoder runs with ``output_hidden_states=True``, and ``hidden_states[-(clip_skip + 1)]`` goes through the
    encoder's final layer norm. ``clip_skip=None`` gives the encoder's last hidden state, exactly as vanilla. The text
    encoder is only called, never changed. Textual-inversion tokens and LoRA text-encoder scales are the pipeline's
    to apply, as ``encode_prompt`` does before encoding.

    Args:
        pipe_or_pair (pipeline or `tuple`):
            A pipeline with ``tokenizer`` and ``text_encoder`` (SD 1.x/2.x), or ``(tokenizer, text_encoder)``.
        prompt (`str` or `list[str]`):
            The prompts, one row each.
        clip_skip (`int` or `None`):
            Layers to skip from the end, in diffusers' numbering (A1111's "Clip skip: N" is ``N - 1``).
        device (`torch.device` or `str`, *optional*):
            Where the token ids go (as ``encode_prompt`` sends them to its ``device``) and where the embeddings go;
            defaults to the text encoder's device.

    Returns:
        `torch.Tensor`: ``(len(prompt), model_max_length, hidden_size)`` in the text encoder's dtype.

    Example:

    ```py
    >>> from diffusers_repro.tiny import build_tiny_pipeline
    >>> from diffusers_repro.pipelines.clip_skip import clip_skip_prompt_embeds
    >>> pipe = build_tiny_pipeline("sd")
    >>> embeds = clip_skip_prompt_embeds(pipe, ["a fox"], clip_skip=1)
    >>> image = pipe(prompt_embeds=embeds, num_inference_steps=2, output_type="latent").images
    ```
    """
    tokenizer, text_encoder = _components(pipe_or_pair)
    prompts = _check_prompts(prompt)
    layers = int(getattr(text_encoder.config, "num_hidden_layers", 0))
    clip_skip = _check_clip_skip(clip_skip, layers)
    device = torch.device(device) if device is not None else text_encoder.device
    text_inputs = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    attention_mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        attention_mask = text_inputs.attention_mask.to(device)
    input_ids = text_inputs.input_ids.to(device)
    if clip_skip is None:
        embeds = text_encoder(input_ids, attention_mask=attention_mask)[0]
    else:
        outputs = text_encoder(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        embeds = final_layer_norm(text_encoder)(outputs.hidden_states[-(clip_skip + 1)])
    return embeds.to(dtype=text_encoder.dtype, device=device)


# ------------------------------------------------------------------------------------------------ Repro pipelines

# The parameters of StableDiffusionPipeline.encode_prompt, and of every copy diffusers makes of it.
_SD_ENCODE_PROMPT_PARAMETERS = (
    "self",
    "prompt",
    "device",
    "num_images_per_prompt",
    "do_classifier_free_guidance",
    "negative_prompt",
    "prompt_embeds",
    "negative_prompt_embeds",
    "lora_scale",
    "clip_skip",
)


@functools.cache
def reads_text_model_layer_norm(encode_prompt: Callable) -> bool:
    """Whether a vanilla ``encode_prompt`` is Stable Diffusion's: its parameters, ``self.tokenizer`` and
    ``self.text_encoder``, and ``self.text_encoder.text_model.final_layer_norm`` read for ``clip_skip``.

    Decided from the function's own signature and source, not from version numbers: SDXL's ``encode_prompt``
    (``hidden_states[-(clip_skip + 2)]``, no layer norm) and pipelines with other parameters are not SD's.

    Example:

    ```py
    >>> from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    >>> from diffusers_repro.pipelines.clip_skip import reads_text_model_layer_norm
    >>> reads_text_model_layer_norm(StableDiffusionPipeline.encode_prompt)
    True
    >>> reads_text_model_layer_norm(StableDiffusionXLPipeline.encode_prompt)
    False
    ```
    """
    function = inspect.unwrap(encode_prompt)
    try:
        parameters = tuple(inspect.signature(function).parameters)
        source = inspect.getsource(function)
    except (OSError, TypeError, ValueError):
        return False
    return (
        parameters == _SD_ENCODE_PROMPT_PARAMETERS
        and "self.text_encoder.text_model.final_layer_norm" in source
        and "self.tokenizer(" in source
    )


def has_text_model_layer_norm(text_encoder: Any) -> bool:
    """Whether ``text_encoder.text_model.final_layer_norm`` exists: what diffusers' SD ``encode_prompt`` reads for
    ``clip_skip`` (transformers 4's ``CLIPTextModel``, ``CLIPTextModelWithProjection``), so its own path works."""
    text_model = getattr(text_encoder, "text_model", None)
    return isinstance(getattr(text_model, "final_layer_norm", None), torch.nn.Module)


@contextlib.contextmanager
def _text_encoder_lora_scale(pipe: Any, lora_scale: float | None) -> Iterator[None]:
    """The LoRA scale ``encode_prompt`` puts on the text encoder around its encodings, and takes off after."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers

    if lora_scale is None or not isinstance(pipe, StableDiffusionLoraLoaderMixin):
        yield
        return
    pipe._lora_scale = lora_scale  # as encode_prompt sets it (on the pipeline, never on the text encoder)
    if not USE_PEFT_BACKEND:
        from diffusers.models.lora import adjust_lora_scale_text_encoder

        adjust_lora_scale_text_encoder(pipe.text_encoder, lora_scale)
        yield
        return
    scale_lora_layers(pipe.text_encoder, lora_scale)
    try:
        yield
    finally:
        unscale_lora_layers(pipe.text_encoder, lora_scale)


def _warn_if_truncated(tokenizer: Any, prompt: Any, logger_name: str) -> None:
    """The warning ``encode_prompt`` logs when CLIP's token limit cuts a prompt (long A1111 prompts often are)."""
    from diffusers.utils import logging

    if not prompt or not isinstance(prompt, (str, list)) or not all(isinstance(p, str) for p in prompt):
        return  # clip_skip_prompt_embeds names the bad prompt
    limit = tokenizer.model_max_length
    untruncated = tokenizer(prompt, padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] > limit:
        removed = tokenizer.batch_decode(untruncated[:, limit - 1 : -1])
        logging.get_logger(logger_name).warning(
            "The following part of your input was truncated because CLIP can only handle sequences up to"
            f" {limit} tokens: {removed}"
        )


def clip_skip_encode_prompt(vanilla_encode_prompt: Callable) -> Callable:
    """Wraps a vanilla SD ``encode_prompt`` (see `reads_text_model_layer_norm`) so that ``clip_skip`` works where the
    text encoder has no ``text_model.final_layer_norm``.

    With ``clip_skip`` set, ``prompt_embeds`` not given, and a text encoder without what diffusers reads, the prompt
    embeddings come from `clip_skip_prompt_embeds` (after textual-inversion tokens are expanded, under the LoRA
    scale, as ``encode_prompt`` does) and the vanilla ``encode_prompt`` gets them as ``prompt_embeds`` together with
    the caller's ``prompt``, so its negative-prompt checks, its negative embeddings (diffusers skips no layer for the
    negative prompt) and its ``num_images_per_prompt`` copies are its own. Every other call is the vanilla one,
    unchanged. Nothing is set on the text encoder (other threads may be using it).

    Example:

    ```py
    >>> from diffusers import StableDiffusionPipeline
    >>> from diffusers_repro.pipelines.clip_skip import clip_skip_encode_prompt
    >>> class MyPipeline(StableDiffusionPipeline):
    ...     encode_prompt = clip_skip_encode_prompt(StableDiffusionPipeline.encode_prompt)
    ```
    """

    @functools.wraps(vanilla_encode_prompt)
    def encode_prompt(
        self,
        prompt,
        device,
        num_images_per_prompt,
        do_classifier_free_guidance,
        negative_prompt=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        lora_scale=None,
        clip_skip=None,
    ):
        if clip_skip is None or prompt_embeds is not None or has_text_model_layer_norm(self.text_encoder):
            return vanilla_encode_prompt(
                self,
                prompt,
                device,
                num_images_per_prompt,
                do_classifier_free_guidance,
                negative_prompt,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                lora_scale=lora_scale,
                clip_skip=clip_skip,
            )
        from diffusers.loaders import TextualInversionLoaderMixin

        # One LoRA scale around both encodings, as in encode_prompt: the vanilla call below gets lora_scale=None so
        # that it neither scales nor unscales again.
        with _text_encoder_lora_scale(self, lora_scale):
            text = prompt
            if isinstance(self, TextualInversionLoaderMixin):
                text = self.maybe_convert_prompt(prompt, self.tokenizer)
            _warn_if_truncated(self.tokenizer, text, vanilla_encode_prompt.__module__)
            prompt_embeds = clip_skip_prompt_embeds((self.tokenizer, self.text_encoder), text, clip_skip, device)
            return vanilla_encode_prompt(
                self,
                prompt,
                device,
                num_images_per_prompt,
                do_classifier_free_guidance,
                negative_prompt,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                lora_scale=None,
                clip_skip=None,
            )

    return encode_prompt
