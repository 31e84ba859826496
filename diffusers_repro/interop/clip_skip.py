"""A1111's "Clip skip" for regenerating its images: the skipped CLIP layer for the prompt *and* the negative prompt.

diffusers' ``clip_skip`` (which the Repro pipelines make work without ``text_encoder.text_model``, see
`diffusers_repro.pipelines.clip_skip`) skips layers for the prompt only; the negative prompt is encoded from the last
layer. A1111 encodes the prompt and the negative prompt through the same CLIP embedder, so its "Clip skip: N" skips
``N - 1`` layers for both. `a1111_prompt_embeds` makes both embeddings that way, for the A1111 regeneration path to
pass as ``prompt_embeds`` and ``negative_prompt_embeds`` (A1111's 75-token chunking and ``(word:1.2)`` weighting are
not reproduced here: the recipe names those as blockers).

`clip_skip_prompt_embeds` itself lives in `diffusers_repro.pipelines.clip_skip`: the pipelines use it, and they sit
below this layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..pipelines import clip_skip_prompt_embeds

__all__ = ["a1111_prompt_embeds"]


def a1111_prompt_embeds(
    pipe_or_pair: Any,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None,
    clip_skip: int | None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, negative_prompt_embeds)`` with ``clip_skip`` applied to both, as A1111 applies "Clip skip".

    Args:
        pipe_or_pair (pipeline or `tuple`):
            A pipeline with ``tokenizer`` and ``text_encoder`` (SD 1.x/2.x), or ``(tokenizer, text_encoder)``.
        prompt (`str` or `list[str]`):
            The prompts, one row each.
        negative_prompt (`str`, `list[str]` or `None`):
            One per prompt, or one string for all of them; `None` is the empty negative prompt.
        clip_skip (`int` or `None`):
            In diffusers' numbering: A1111's "Clip skip: 2" is ``clip_skip=1``.
        device (`torch.device` or `str`, *optional*):
            Where the embeddings go; defaults to the text encoder's device.

    Example:

    ```py
    >>> from diffusers_repro.tiny import build_tiny_pipeline
    >>> from diffusers_repro.interop.clip_skip import a1111_prompt_embeds
    >>> pipe = build_tiny_pipeline("sd")
    >>> embeds, negative = a1111_prompt_embeds(pipe, "a fox", "blurry", clip_skip=1)
    >>> image = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=2).images
    ```
    """
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if negative_prompt is None:
        negatives: Any = [""] * len(prompts)
    elif isinstance(negative_prompt, str):
        negatives = [negative_prompt] * len(prompts)
    else:
        negatives = negative_prompt
        if isinstance(negatives, Sequence) and len(negatives) != len(prompts):
            raise ValueError(
                f"negative_prompt has {len(negatives)} strings but prompt has {len(prompts)}: pass one per prompt, "
                "or one string for all"
            )
    embeds = clip_skip_prompt_embeds(pipe_or_pair, prompts, clip_skip, device)
    negative_embeds = clip_skip_prompt_embeds(pipe_or_pair, negatives, clip_skip, device)
    return embeds, negative_embeds
