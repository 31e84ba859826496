"""Tiny diffusers pipelines built deterministically in code.

Tests, examples and demos need real pipeline objects (real classes, real configs, real `save_pretrained` folders) but
must never touch the network. The builders here make vanilla diffusers pipelines whose components are small enough to
run in milliseconds on CPU, with weights drawn from a fixed seed so that every build, in every process, is identical.

The weights are random: the images are noise-like, which is fine for checking plumbing, determinism and speed.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import (
    AutoencoderKL,
    DDIMPipeline,
    DDIMScheduler,
    DiffusionPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

__all__ = [
    "TINY_FORMAT_VERSION",
    "TINY_KINDS",
    "build_tiny_pipeline",
    "tiny_pipeline_path",
    "build_tiny_tokenizer",
    "sd_v1_scheduler",
]

# Bump whenever a builder changes (shapes, seeds, configs): the version is part of the cache folder name, so stale
# folders saved by an older version are never picked up.
TINY_FORMAT_VERSION = 1

_SEED = 0

_BOS_TOKEN = "<|startoftext|>"
_EOS_TOKEN = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable unicode map, the alphabet the ByteLevel pre-tokenizer emits. Kept local so
    # the vocabulary does not depend on a private helper of transformers that may move between releases.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1))
        + list(range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    shift = 0
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            code_points.append(256 + shift)
            shift += 1
    return dict(zip(byte_values, map(chr, code_points), strict=True))


def _byte_level_vocab() -> dict[str, int]:
    # Same layout as OpenAI's CLIP vocabulary minus the merges: bytes, bytes + "</w>", then the two special tokens.
    # With no merges every word splits into single bytes, so any text is encodable and ids stay below 514.
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab[_BOS_TOKEN] = len(vocab)
    vocab[_EOS_TOKEN] = len(vocab)
    return vocab


def build_tiny_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    r"""
    Build a byte-level CLIP tokenizer without downloading anything.

    The vocabulary holds the 256 byte-level characters, the same characters with the `"</w>"` end-of-word suffix and
    the `"<|startoftext|>"` / `"<|endoftext|>"` special tokens (514 entries); there are no merges, so every word is
    spelled out byte by byte. Padding uses `"<|endoftext|>"`, as in Stable Diffusion's tokenizer.

    Args:
        model_max_length (`int`, *optional*, defaults to 77):
            Sequence length the tokenizer pads and truncates to; must match the text encoder's
            `max_position_embeddings`.

    Returns:
        [`~transformers.CLIPTokenizer`]: the tokenizer.

    Example:

    ```py
    >>> from diffusers_repro.tiny import build_tiny_tokenizer

    >>> tokenizer = build_tiny_tokenizer()
    >>> ids = tokenizer("a fox").input_ids
    >>> tokenizer.decode(ids, skip_special_tokens=True)
    'a fox'
    ```
    """
    # transformers 5's CLIPTokenizer is backed by `tokenizers` and accepts the vocabulary and merges in memory, so no
    # vocab.json / merges.txt round trip through a temporary folder is needed.
    return CLIPTokenizer(
        vocab=_byte_level_vocab(),
        merges=[],
        unk_token=_EOS_TOKEN,
        bos_token=_BOS_TOKEN,
        eos_token=_EOS_TOKEN,
        pad_token=_EOS_TOKEN,
        model_max_length=model_max_length,
    )


def _build_text_encoder(tokenizer: CLIPTokenizer, hidden_size: int, num_layers: int, num_heads: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=hidden_size,
        # The pooled output is taken at the first eos position; the legacy eos id 2 would select argmax(ids) instead.
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def sd_v1_scheduler() -> DDIMScheduler:
    """DDIM with Stable Diffusion v1's training schedule, so steps and timesteps behave as the real model's."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


@dataclass(frozen=True)
class _SDSize:
    unet_channels: tuple[int, ...]
    unet_groups: int
    unet_heads: int
    unet_sample_size: int
    cross_attention_dim: int
    vae_channels: tuple[int, ...]
    vae_groups: int
    text_layers: int
    text_heads: int


def _build_sd(size: _SDSize) -> StableDiffusionPipeline:
    n_blocks = len(size.unet_channels)
    # Real SD v1 puts cross-attention in every down/up block but the innermost; mirror that at any depth.
    down = ("CrossAttnDownBlock2D",) * (n_blocks - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n_blocks - 1)
    # Each component gets its own seed so that resizing one never changes the weights of the others.
    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(
        sample_size=size.unet_sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=size.unet_channels,
        layers_per_block=1,
        norm_num_groups=size.unet_groups,
        cross_attention_dim=size.cross_attention_dim,
        # diffusers' legacy name: for this UNet `attention_head_dim` is the number of heads.
        attention_head_dim=size.unet_heads,
    )
    torch.manual_seed(_SEED + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(size.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(size.vae_channels),
        block_out_channels=size.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=size.vae_groups,
        sample_size=size.unet_sample_size * 2 ** (len(size.vae_channels) - 1),
    )
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(_SEED + 2)
    text_encoder = _build_text_encoder(
        tokenizer, hidden_size=size.cross_attention_dim, num_layers=size.text_layers, num_heads=size.text_heads
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sd_v1_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_tiny_sd() -> StableDiffusionPipeline:
    # Four VAE blocks give SD's real latent downscale of 8, so 8x8 latents decode to 64x64 images.
    return _build_sd(
        _SDSize(
            unet_channels=(16, 32),
            unet_groups=8,
            unet_heads=2,
            unet_sample_size=8,
            cross_attention_dim=32,
            vae_channels=(8, 8, 16, 16),
            vae_groups=4,
            text_layers=2,
            text_heads=4,
        )
    )


def _build_small_sd() -> StableDiffusionPipeline:
    # Sized so that 2 prompts with CFG, 10 steps at the default 256x256 take about 1 s on 2 CPU cores: enough work
    # for benchmarks to measure the pipeline rather than Python overhead.
    return _build_sd(
        _SDSize(
            unet_channels=(32, 64, 64),
            unet_groups=16,
            unet_heads=4,
            unet_sample_size=32,
            cross_attention_dim=64,
            vae_channels=(16, 16, 32, 32),
            vae_groups=8,
            text_layers=2,
            text_heads=4,
        )
    )


def _build_ddim() -> DDIMPipeline:
    torch.manual_seed(_SEED)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    return DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000))


# To add a kind, write a zero-argument builder returning a pipeline and register it here (and bump
# TINY_FORMAT_VERSION only if an existing builder changed).
_BUILDERS: dict[str, Callable[[], DiffusionPipeline]] = {
    "ddim": _build_ddim,
    "sd": _build_tiny_sd,
    "sd-small": _build_small_sd,
}

TINY_KINDS: tuple[str, ...] = tuple(_BUILDERS)


def _check_kind(kind: str) -> Callable[[], DiffusionPipeline]:
    try:
        return _BUILDERS[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown tiny pipeline `kind`={kind!r}; valid choices are {', '.join(TINY_KINDS)}."
        ) from None


def build_tiny_pipeline(kind: str) -> DiffusionPipeline:
    r"""
    Build a tiny, deterministic, vanilla diffusers pipeline in code.

    The weights are drawn from a fixed seed inside `torch.random.fork_rng()`, so torch's global RNG is left as found
    and every build (in any process) has bitwise-identical weights. Every `torch.nn.Module` component is in eval mode.

    Kinds:

    - `"ddim"`: [`~diffusers.DDIMPipeline`] with a tiny [`~diffusers.UNet2DModel`]; 16x16 RGB images.
    - `"sd"`: [`~diffusers.StableDiffusionPipeline`] with tiny UNet, VAE (latent scale 8) and CLIP text encoder, a
      byte-level CLIP tokenizer (see [`build_tiny_tokenizer`]) and SD v1's DDIM schedule; 64x64 images by default.
      For tests: a 2-step call takes tens of milliseconds on CPU.
    - `"sd-small"`: same structure, wider and one level deeper, 256x256 images by default; for benchmarks (2
      prompts with classifier-free guidance and 10 steps take about 1 s on 2 CPU cores).

    Args:
        kind (`str`):
            Which pipeline to build; one of [`TINY_KINDS`].

    Returns:
        [`~diffusers.DiffusionPipeline`]: a fresh pipeline on CPU in float32.

    Raises:
        `ValueError`: if `kind` is not one of `TINY_KINDS`.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_repro.tiny import build_tiny_pipeline

    >>> pipe = build_tiny_pipeline("sd")
    >>> image = pipe(
    ...     "a fox", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ... ).images[0]
    >>> image.shape
    (64, 64, 3)
    ```
    """
    builder = _check_kind(kind)
    with torch.random.fork_rng(devices=[]):
        pipe = builder()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            # Freshly constructed modules start in train mode; `from_pretrained` returns them in eval mode, and the two
            # must behave the same.
            component.eval()
    return pipe


def _default_cache_dir() -> pathlib.Path:
    env = os.environ.get("DIFFUSERS_REPRO_CACHE")
    if env:
        return pathlib.Path(env)
    return pathlib.Path("~/.cache/diffusers_repro").expanduser()


_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

# torch's CPU allocator aligns tensors to 64 bytes; MKL picks different (equally valid) kernels for unaligned data.
_ALIGNMENT = 64


def _align_safetensors(path: pathlib.Path) -> None:
    # diffusers and transformers load safetensors by mmap and use the tensors in place, so a weight sits wherever the
    # file puts it, often at a 4-byte offset. MKL's gemv (e.g. a batch-1 Linear on the timestep embedding) then sums in
    # a different order than for the 64-byte-aligned tensors of a freshly built model, and images differ in the last
    # bits. Rewriting the file with the header padded and every tensor whose size is a multiple of 64 bytes placed
    # first makes those weights load 64-byte aligned, so a loaded pipeline matches the in-code one bitwise.
    # Only the layout changes: names, dtypes, shapes, bytes and metadata are kept, and any safetensors reader accepts
    # tensors in any order as long as they are contiguous.
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name).contiguous() for name in f.keys()}
    names = sorted(tensors, key=lambda name: (tensors[name].nbytes % _ALIGNMENT != 0, name))
    header: dict[str, dict] = {}
    offset = 0
    for name in names:
        tensor = tensors[name]
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    if metadata:
        header["__metadata__"] = metadata
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # The format allows trailing spaces in the header; they put the data buffer on an aligned file offset (mmap
    # itself starts page aligned).
    header_bytes += b" " * (-(8 + len(header_bytes)) % _ALIGNMENT)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name in names:
            f.write(tensors[name].reshape(-1).view(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)


def tiny_pipeline_path(kind: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    r"""
    Save a tiny pipeline to disk once and return its folder.

    The folder is `<cache_dir>/tiny-<kind>-v<TINY_FORMAT_VERSION>` and is written with
    `save_pretrained(..., safe_serialization=True)`, so `DiffusionPipeline.from_pretrained(folder)` loads it offline
    and produces the same images as [`build_tiny_pipeline`]. Later calls return the existing folder without
    rebuilding. The pipeline is saved into a temporary sibling folder and renamed into place, so the folder (and its
    `model_index.json`) only ever exists complete; if another process finishes first, its folder is kept.

    Args:
        kind (`str`):
            Which pipeline to save; one of [`TINY_KINDS`].
        cache_dir (`str` or `os.PathLike`, *optional*):
            Parent folder for the cache. Defaults to the `DIFFUSERS_REPRO_CACHE` environment variable if set, else
            `~/.cache/diffusers_repro`.

    Returns:
        `pathlib.Path`: the pipeline folder.

    Raises:
        `ValueError`: if `kind` is not one of `TINY_KINDS`.

    Example:

    ```py
    >>> from diffusers import DiffusionPipeline
    >>> from diffusers_repro.tiny import tiny_pipeline_path

    >>> path = tiny_pipeline_path("ddim")
    >>> pipe = DiffusionPipeline.from_pretrained(path)
    >>> type(pipe).__name__
    'DDIMPipeline'
    ```
    """
    _check_kind(kind)
    root = pathlib.Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = root / f"tiny-{kind}-v{TINY_FORMAT_VERSION}"
    if (target / "model_index.json").is_file():
        return target

    root.mkdir(parents=True, exist_ok=True)
    # A sibling of the target, so the final rename stays on one filesystem and is atomic.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        # mkdtemp makes the folder owner-only; the cache should be as readable as the files save_pretrained writes.
        tmp.chmod(0o755)
        build_tiny_pipeline(kind).save_pretrained(tmp, safe_serialization=True)
        for weights in sorted(tmp.rglob("*.safetensors")):
            _align_safetensors(weights)
        for _ in range(2):
            try:
                os.replace(tmp, target)
                return target
            except OSError:
                if (target / "model_index.json").is_file():
                    # Another process won the race; its folder is just as good as ours.
                    return target
                if not target.exists():
                    raise
                # Only a complete folder is ever renamed into place, so an incomplete `target` was not made by this
                # function (e.g. a hand-made or half-deleted folder): move it aside and retry once.
                stale = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=root))
                os.replace(target, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
        raise OSError(f"Could not move the tiny pipeline into {target}.")
    finally:
        # After a successful rename `tmp` no longer exists; otherwise it is our own half-used build folder.
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
