"""Tiny vanilla pipelines for the any-pipeline tests: DDPM, SD img2img, SDXL and UnCLIP, built in code.

Sizes follow diffusers' own fast tests (``get_dummy_components``), shrunk further so that a 2-step call takes a
fraction of a second on 2 CPU cores. The tokenizer is the byte-level CLIP tokenizer of `diffusers_repro.tiny`, so
nothing is downloaded. Every builder draws its weights from fixed seeds inside a forked RNG (torch's global RNG is left
as found) and returns its modules in eval mode.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDPMPipeline,
    DDPMScheduler,
    EulerDiscreteScheduler,
    PriorTransformer,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UnCLIPPipeline,
    UnCLIPScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusers_repro.tiny import build_tiny_pipeline, build_tiny_tokenizer

__all__ = ["build_tiny_ddpm", "build_tiny_img2img", "build_tiny_sdxl", "build_tiny_unclip", "tiny_unet_lora"]


def _in_eval_mode(pipe):
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _text_config(tokenizer, hidden_size: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vae() -> AutoencoderKL:
    # Four blocks: SD's latent downscale of 8, so a 32x32 image has 4x4 latents.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )


def build_tiny_ddpm() -> DDPMPipeline:
    """`DDPMPipeline` with a tiny `UNet2DModel`: 8x8 RGB images."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
        )
    return _in_eval_mode(DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)))


def build_tiny_img2img() -> StableDiffusionImg2ImgPipeline:
    """`StableDiffusionImg2ImgPipeline` over the components of the tiny SD pipeline of `diffusers_repro.tiny`."""
    return _in_eval_mode(StableDiffusionImg2ImgPipeline(**build_tiny_pipeline("sd").components))


def build_tiny_sdxl() -> StableDiffusionXLPipeline:
    """`StableDiffusionXLPipeline` with two tiny CLIP text encoders; 64x64 images by default (8x8 latents)."""
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            # 6 size/crop numbers x addition_time_embed_dim + the pooled projection of text_encoder_2.
            projection_class_embeddings_input_dim=6 * 8 + 32,
            # SDXL concatenates the hidden states of both text encoders (32 + 32).
            cross_attention_dim=64,
            norm_num_groups=4,
        )
        torch.manual_seed(1)
        vae = _vae()
        torch.manual_seed(2)
        text_encoder = CLIPTextModel(_text_config(tokenizer))
        torch.manual_seed(3)
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    return _in_eval_mode(pipe)


def build_tiny_unclip() -> UnCLIPPipeline:
    """`UnCLIPPipeline` (prior, decoder, two super-resolution UNets): 8x8 decoder images, 16x16 outputs."""
    tokenizer = build_tiny_tokenizer()
    embedding_dim, decoder_channels, cross_attention_dim = 32, (8, 16), 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = CLIPTextModelWithProjection(_text_config(tokenizer, embedding_dim))
        torch.manual_seed(1)
        prior = PriorTransformer(
            num_attention_heads=2, attention_head_dim=12, embedding_dim=embedding_dim, num_layers=1
        )
        torch.manual_seed(2)
        text_proj = UnCLIPTextProjModel(
            clip_embeddings_dim=embedding_dim,
            # The decoder's time embedding width: 4 x its first block's channels.
            time_embed_dim=4 * decoder_channels[0],
            cross_attention_dim=cross_attention_dim,
        )
        torch.manual_seed(3)
        decoder = UNet2DConditionModel(
            sample_size=8,
            in_channels=3,
            # Mean and variance.
            out_channels=6,
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            block_out_channels=decoder_channels,
            layers_per_block=1,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=4,
            resnet_time_scale_shift="scale_shift",
            class_embed_type="identity",
            norm_num_groups=4,
        )
        super_res = {
            "sample_size": 16,
            "layers_per_block": 1,
            "down_block_types": ("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
            "up_block_types": ("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
            "block_out_channels": (8, 16),
            "in_channels": 6,
            "out_channels": 3,
            "norm_num_groups": 4,
        }
        torch.manual_seed(4)
        super_res_first = UNet2DModel(**super_res)
        torch.manual_seed(5)
        super_res_last = UNet2DModel(**super_res)
    pipe = UnCLIPPipeline(
        prior=prior,
        decoder=decoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_proj=text_proj,
        super_res_first=super_res_first,
        super_res_last=super_res_last,
        prior_scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000, clip_sample_range=5.0
        ),
        decoder_scheduler=UnCLIPScheduler(
            variance_type="learned_range", prediction_type="epsilon", num_train_timesteps=1000
        ),
        super_res_scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="epsilon", num_train_timesteps=1000
        ),
    )
    return _in_eval_mode(pipe)


def tiny_unet_lora(seed: int, rank: int = 2) -> dict[str, torch.Tensor]:
    """A LoRA for the UNet of the tiny SD pipeline, in the key format ``load_lora_weights`` reads (``unet.`` prefix).

    peft injects the adapter into a copy of the tiny UNet to get the real key layout; the weights are then redrawn
    from ``seed`` (peft initializes ``lora_B`` to zeros, which would make the adapter a no-op).
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    with torch.random.fork_rng(devices=[]):
        unet = build_tiny_pipeline("sd").unet
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        layout = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        generator = torch.Generator().manual_seed(seed)
        return {
            f"unet.{name}": 0.2 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            for name, tensor in sorted(layout.items())
        }


def generators(*seeds: int) -> list[torch.Generator]:
    """One CPU generator per seed, as a vanilla call is given them."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def repro_of(plain):
    """The Repro pipeline over the very same component objects as ``plain``."""
    from diffusers_repro.pipelines.factory import reproducible

    pipe = reproducible(type(plain))(**plain.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe
