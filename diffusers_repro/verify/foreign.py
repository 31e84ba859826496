"""Regenerate an image another tool made (AUTOMATIC1111/Forge/SD.Next, ComfyUI, InvokeAI) from its recipe, with that
tool's own noise, and compare the pixels.

`reproduce_recipe` takes the file (read once), its `Recipe` and a pipeline, and runs the named steps of `reproduce`
for a file without a record of ours:

1. **check limits** (`check_recipe_limits`): pixels, steps and the images of one call, before any model runs;
2. **what blocks** (`regeneration_blockers`): the recipe's blockers that no diffusers call can get past (a sampler
   without a diffusers scheduler, hires fix, a refiner, a ComfyUI node the reader does not follow, ...) make the
   verdict ``unsupported`` without running anything; the others (prompt weighting read as plain text, a LoRA) are
   run anyway and named among the differences; those the tool's noise covers (variation seed, seed resize, ENSD) are
   made;
3. **build the call**: the mapped scheduler (`tool_scheduler_config`: the model's betas, the sampler's own spacing;
   InvokeAI's: its keys over the model's whole config, as it builds them), the tool's noise
   (`diffusers_repro.interop.noise`, InvokeAI's in the pipeline's dtype and started at its ``add_noise`` start:
   `invokeai_start`) shaped by the pipeline (latent channels, VAE scale factor), the
   prompts (through A1111's clip skip, which skips the layer for the negative prompt too, when the recipe skips one);
4. **regenerate** the batch the tool made (A1111's ``Batch size``, ComfyUI's latent batch) in one call, as the tool
   did: kernels block differently for other batch sizes;
5. **compare** the file's pixels with the image of the batch it is (ComfyUI does not say which: every image is tried
   and the one that matched is named);
6. **explain**: the model hash, the blockers and notes of the recipe and the noise, the sampler implementation.

The pipeline may be a Repro pipeline or a vanilla one: both are called with ``latents=`` and ``generator=`` (never
without a generator, so a Repro pipeline's own seeding never replaces the tool's noise: it then behaves as vanilla
diffusers, and its record of the regeneration is kept).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import re
import stat
from typing import Any

import torch

from ..files import ImageFile
from ..interop import Recipe, a1111_noise, a1111_prompt_embeds, comfyui_noise, invokeai_noise, invokeai_start
from .limits import DEFAULT_LIMITS, LimitExceededError, ReplayLimits
from .reproduction import Difference, Reproduction, compare_pixels

__all__ = [
    "CHECKPOINT_HASH_KINDS",
    "check_recipe_limits",
    "checkpoint_hashes",
    "recipe_images",
    "regeneration_blockers",
    "reproduce_recipe",
]

CHECKPOINT_HASH_KINDS = ("a1111-sha256-prefix-10", "a1111-legacy-8", "sha256")
"""The hashes `checkpoint_hashes` gives for a checkpoint file."""

_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------------------------------
# What a recipe asks for


def recipe_images(recipe: Recipe) -> int:
    """How many images regenerating ``recipe`` makes in one call: the tool's whole batch when the file says which
    image of it this is (A1111's ``Batch size``/``Batch pos``) or cannot say (ComfyUI's latent batch); else one."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a diffusers_repro Recipe, got {type(recipe).__name__}")
    size = recipe.batch_size or 1
    if size > 1 and (recipe.batch_index is not None or recipe.source == "comfyui"):
        return size
    return 1


def check_recipe_limits(
    recipe: Recipe, limits: ReplayLimits | None = None, image_size: tuple[int, int] | None = None
) -> None:
    """Refuses a recipe that asks for more than ``limits`` allow (pixels, steps, images in one call), naming the field;
    checked before any model loads.

    Args:
        recipe (`Recipe`): Another tool's recipe.
        limits (`ReplayLimits`, *optional*, defaults to `DEFAULT_LIMITS`): The limits.
        image_size (`tuple[int, int]`, *optional*): The file's ``(width, height)``, used when the recipe gives no size.

    Raises:
        `LimitExceededError`: naming the field, the value asked for and the limit.

    Example:

    ```py
    >>> from diffusers_repro.interop import Recipe
    >>> from diffusers_repro.verify.foreign import check_recipe_limits
    >>> check_recipe_limits(Recipe("a1111", steps=10**9, width=64, height=64))  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    LimitExceededError: the a1111 recipe asks for steps = 1000000000, above the replay limit max_steps=1000; ...
    ```
    """
    limits = DEFAULT_LIMITS if limits is None else limits
    if not isinstance(limits, ReplayLimits):
        raise TypeError(f"limits must be a diffusers_repro.ReplayLimits, got {type(limits).__name__}")
    width, height = _size(recipe, image_size)
    tool = recipe.source
    if width is not None and height is not None and width * height > limits.max_pixels:
        _refuse(tool, "width x height", f"{width}x{height} ({width * height} pixels)", "max_pixels", limits)
    if recipe.steps is not None and recipe.steps > limits.max_steps:
        _refuse(tool, "steps", str(recipe.steps), "max_steps", limits)
    images = recipe_images(recipe)
    if images > limits.max_batch_images:
        _refuse(tool, "batch_size", f"{images} images in one call", "max_batch_images", limits)


def _refuse(tool: str, field: str, asked: str, limit_name: str, limits: ReplayLimits) -> None:
    flag = "--" + limit_name.replace("_", "-")
    raise LimitExceededError(
        f"the {tool} recipe asks for {field} = {asked}, above the replay limit {limit_name}="
        f"{getattr(limits, limit_name)}; pass limits=ReplayLimits({limit_name}=...) or {flag} to allow it"
    )


def _size(recipe: Recipe, image_size: tuple[int, int] | None) -> tuple[int | None, int | None]:
    if recipe.width is not None and recipe.height is not None:
        return recipe.width, recipe.height
    if image_size is not None:
        return int(image_size[0]), int(image_size[1])
    return None, None


def regeneration_blockers(recipe: Recipe) -> tuple[str, ...]:
    """What stands between ``recipe`` and any diffusers call that could make its image: when not empty, the image is
    not regenerated and the verdict is ``unsupported``.

    A recipe's blockers name everything between it and an exact rerun with diffusers (the tools' noise - variation
    seed, seed resize, ENSD - is made here, so the readers name it among the notes). Of the blockers, the ones that
    leave a call to run (prompt weighting read as plain text, a LoRA the pipeline may hold, an eta diffusers has no
    use for, a resized file) are run and named among the differences; every other one blocks.

    Example:

    ```py
    >>> from diffusers_repro.interop import Recipe
    >>> from diffusers_repro.verify.foreign import regeneration_blockers
    >>> regeneration_blockers(Recipe("a1111", seed=1, steps=2, scheduler="EulerDiscreteScheduler"))
    ()
    ```
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a diffusers_repro Recipe, got {type(recipe).__name__}")
    # The reader says which blockers leave a call to run (Recipe.runs_anyway): never a pattern over their text, which
    # holds names from the file.
    blockers = [text for text in recipe.blockers if text not in recipe.runs_anyway]
    if recipe.scheduler is None and not blockers:
        blockers.append(f"the {recipe.source} recipe names no sampler with a diffusers scheduler")
    if recipe.seed is None:
        blockers.append(f"the {recipe.source} recipe gives no seed, so its starting noise cannot be drawn again")
    if recipe.steps is None:
        blockers.append(f"the {recipe.source} recipe gives no number of steps")
    if recipe.source == "a1111" and recipe.batch_index is not None and recipe.seed is not None:
        strength = _number(recipe.extras.get("variation_seed_strength")) or 0.0
        if strength == 0 and recipe.seed < recipe.batch_index:
            blockers.append(
                f"the A1111 infotext says Seed {recipe.seed} for image {recipe.batch_index} of its batch; the batch's "
                "first seed would be negative"
            )
    return tuple(blockers)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------------------
# Checkpoint files


def checkpoint_hashes(path: str | os.PathLike, *, blake3: bool = False) -> dict[str, str]:
    """A checkpoint file's hashes as A1111 writes them: ``a1111-sha256-prefix-10`` (the first 10 hex digits of the
    whole file's sha256, A1111's ``Model hash`` since 1.0), ``a1111-legacy-8`` (the first 8 hex digits of the sha256 of
    the 64 KiB at offset 1 MiB, its older hash) and the whole ``sha256``; with ``blake3=True`` (and the blake3 package)
    also ``invokeai-blake3``, InvokeAI's ``blake3:<hex>`` of a single-file model.

    Example:

    ```py
    >>> from diffusers_repro.verify.foreign import checkpoint_hashes
    >>> checkpoint_hashes("v1-5-pruned-emaonly.safetensors")["a1111-sha256-prefix-10"]  # doctest: +SKIP
    '6ce0161689'
    ```
    """
    whole = hashlib.sha256()
    legacy = hashlib.sha256()
    with _open_regular(path) as file:
        file.seek(0x100000)
        legacy.update(file.read(0x10000))
        file.seek(0)
        while chunk := file.read(_CHUNK):
            whole.update(chunk)
    digest = whole.hexdigest()
    hashes = {"a1111-sha256-prefix-10": digest[:10], "a1111-legacy-8": legacy.hexdigest()[:8], "sha256": digest}
    blake3_digest = _blake3(path) if blake3 else None
    if blake3_digest is not None:
        hashes["invokeai-blake3"] = f"blake3:{blake3_digest}"
    return hashes


def _model_differences(recipe: Recipe, checkpoint: str | os.PathLike | None) -> list[Difference]:
    model = recipe.model or {}
    wanted, kind = model.get("hash"), model.get("hash_kind")
    named = f" ({model['name']})" if model.get("name") else ""
    if not wanted:
        return []
    recorded = f"{wanted}{named}, {kind}"
    if checkpoint is None:
        return [Difference("model.hash", recorded, "not checked: the given model was not loaded from one checkpoint")]
    hashes = checkpoint_hashes(checkpoint, blake3=kind == "invokeai-blake3")
    name = os.path.basename(os.fspath(checkpoint))
    if kind in hashes:
        if hashes[kind] == str(wanted).lower():
            return []
        return [Difference("model.hash", recorded, f"{hashes[kind]} ({name}): another model")]
    return [Difference("model.hash", recorded, f"not checked ({name}): no {kind} hash is computed here")]


def _open_regular(path: str | os.PathLike) -> Any:
    """``path`` opened for reading once it is known to be a regular file: a named pipe or device swapped in after the
    folder was listed is refused, never waited on or read forever (the check is of the opened file itself)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"checkpoint {os.fspath(path)!r} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _blake3(path: str | os.PathLike) -> str | None:
    try:
        import blake3
    except ImportError:
        return None
    hasher = blake3.blake3()
    with _open_regular(path) as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# The call


@dataclasses.dataclass
class _Call:
    arguments: dict[str, Any]
    scheduler: Any
    noise: Any
    images: int
    index: int | None  # the image of the batch the file is; None: unknown, every image is tried
    long_prompts: tuple[str, ...] = ()  # prompts past the text encoder's window, which the tools encode in chunks
    latents: torch.Tensor | None = None  # the starting latents when they are not the noise (InvokeAI's start)
    notes: tuple[str, ...] = ()  # how the call's start differs from the tool's, measured


def _denoiser_channels(pipe: Any) -> int:
    for name in ("unet", "transformer"):
        model = getattr(pipe, name, None)
        channels = getattr(getattr(model, "config", None), "in_channels", None)
        if isinstance(channels, int):
            return channels
    raise TypeError(f"pipe must be a diffusers pipeline with a unet (or transformer), got {type(pipe).__name__}")


def _scheduler(pipe: Any, recipe: Recipe) -> Any:
    import diffusers

    from ..generation import tool_scheduler_config

    cls = getattr(diffusers, recipe.scheduler, None)
    # Only diffusers' own scheduler classes, whatever the file names.
    if not (
        isinstance(cls, type)
        and issubclass(cls, diffusers.SchedulerMixin)
        and cls.__module__.startswith("diffusers.")
        and cls.__name__ == recipe.scheduler
    ):
        raise ValueError(f"{recipe.scheduler!r} is not a scheduler class of diffusers {diffusers.__version__}")
    if recipe.source == "invokeai":
        # InvokeAI's get_scheduler: from_config of its own keys over the model's whole scheduler config (spacing and
        # offset kept), where from_config drops the keys the model's config took from its class defaults.
        config = {**pipe.scheduler.config, **recipe.scheduler_config}
        defaults = set(config.get("_use_default_values") or ())
        config = {key: value for key, value in config.items() if key not in defaults}
    else:
        config = tool_scheduler_config(recipe.scheduler, recipe.scheduler_config, pipe.scheduler.config)
    accepted = inspect.signature(cls.__init__).parameters
    return cls.from_config({key: value for key, value in config.items() if key in accepted})


def _resize_from(value: Any) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(-?\d{1,6})\s*x\s*(-?\d{1,6})\s*", value) if isinstance(value, str) else None
    if match is None:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    return (width, height) if width > 0 and height > 0 else None


def _noise(recipe: Recipe, shape: tuple[int, int, int, int], dtype: torch.dtype) -> tuple[Any, int | None]:
    """The tool's noise for the batch the call makes, and the index of the file's image in it (None: unknown)."""
    images = shape[0]
    if recipe.source == "a1111":
        index = recipe.batch_index if images > 1 else 0
        extras = recipe.extras
        strength = _number(extras.get("variation_seed_strength")) or 0.0
        # Image i of an A1111 batch has seed + i (the same seed for all when a variation seed is mixed in).
        first_seed = recipe.seed - (index if strength == 0 else 0)
        subseeds = None
        if strength != 0 and extras.get("variation_seed") is not None:
            subseeds = int(extras["variation_seed"]) - index
        ensd = extras.get("ensd", extras.get("eta_noise_seed_delta"))
        noise = a1111_noise(
            shape,
            first_seed if images > 1 or strength != 0 else [recipe.seed],
            subseeds=subseeds,
            subseed_strength=strength,
            seed_resize_from=_resize_from(extras.get("seed_resize_from")),
            rng=recipe.rng or "gpu",
            ensd=int(ensd) if ensd is not None else 0,
            sampler=recipe.sampler,
        )
        return noise, index
    if recipe.source == "comfyui":
        noise = comfyui_noise(shape, recipe.seed, sampler=recipe.sampler)
        return noise, (recipe.batch_index if images > 1 else 0)
    if recipe.source == "invokeai":
        # InvokeAI draws in the dtype it runs its model in: here, the pipeline's.
        noise_dtype = dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32
        return invokeai_noise(shape, recipe.seed, dtype=noise_dtype, rand_device=recipe.rng or "cpu"), 0
    raise ValueError(f"recipe.source must be 'a1111', 'comfyui' or 'invokeai', got {recipe.source!r}")


def _build_call(pipe: Any, recipe: Recipe, image_size: tuple[int, int] | None) -> _Call:
    width, height = _size(recipe, image_size)
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    images = recipe_images(recipe)
    shape = (images, _denoiser_channels(pipe), height // scale, width // scale)
    dtype = _denoiser_dtype(pipe)
    noise, index = _noise(recipe, shape, dtype)
    arguments: dict[str, Any] = {
        "num_inference_steps": recipe.steps,
        "width": width,
        "height": height,
        "num_images_per_prompt": images,
    }
    if recipe.guidance_scale is not None:
        arguments["guidance_scale"] = recipe.guidance_scale
    if recipe.clip_skip:
        # Every one of these tools skips the layer for the negative prompt too (one CLIP for both).
        embeds, negative = a1111_prompt_embeds(pipe, recipe.prompt or "", recipe.negative_prompt, recipe.clip_skip)
        arguments.update(prompt_embeds=embeds, negative_prompt_embeds=negative)
    else:
        arguments.update(prompt=recipe.prompt or "", negative_prompt=recipe.negative_prompt)
    eta = _number(recipe.extras.get("eta_ddim")) if recipe.scheduler == "DDIMScheduler" else None
    if eta:
        arguments["eta"] = eta
    rescale = _number(recipe.extras.get("cfg_rescale_multiplier"))
    if rescale:
        arguments["guidance_rescale"] = rescale
    scheduler = _scheduler(pipe, recipe)
    latents, notes = noise.latents.to(dtype), ()
    if recipe.source == "invokeai":
        latents, inexact = invokeai_start(latents, scheduler, recipe.steps)
        notes = (
            f"InvokeAI draws its noise in its model's dtype (float16 on a GPU unless set otherwise), which the file "
            f"does not say: drawn here in the pipeline's, {latents.dtype}",
        )
        if inexact:
            notes += (
                f"InvokeAI starts from scheduler.add_noise(zeros, noise, first timestep); {inexact} of "
                f"{latents.numel()} starting values are one unit in the last place from it here (the pipeline "
                f"multiplies by init_noise_sigma = {float(scheduler.init_noise_sigma):.6g}, which no float times "
                "them gives)",
            )
    return _Call(arguments, scheduler, noise, images, index, _long_prompts(pipe, recipe), latents=latents, notes=notes)


def _denoiser_dtype(pipe: Any) -> torch.dtype:
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    dtype = getattr(denoiser, "dtype", torch.float32)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _long_prompts(pipe: Any, recipe: Recipe) -> tuple[str, ...]:
    """A1111 and ComfyUI encode a prompt longer than CLIP's window in chunks of 75 tokens and join the embeddings;
    diffusers truncates it. Counted with the pipeline's own tokenizer (the texts are bounded by the readers)."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None or recipe.source not in ("a1111", "comfyui"):
        return ()
    window = int(getattr(tokenizer, "model_max_length", 77))
    found = []
    for field, text in (("prompt", recipe.prompt), ("negative prompt", recipe.negative_prompt)):
        if text and len(tokenizer(text, truncation=False).input_ids) > window:
            found.append(
                f"the {field} is longer than {window - 2} tokens: the tool encoded it in chunks of 75 and joined "
                "them; diffusers truncates it"
            )
    return tuple(found)


def _generator(call: _Call, recipe: Recipe) -> Any:
    # Never None: a Repro pipeline given no generator would seed its own, and a generator changes nothing for
    # samplers that draw no later noise.
    if call.noise.generator is not None:
        return call.noise.generator
    return [torch.Generator("cpu").manual_seed(recipe.seed) for _ in range(call.images)]


def _regenerate(pipe: Any, call: _Call, recipe: Recipe) -> tuple[list[Any], list[Any] | None]:
    """Runs the call with the tool's scheduler on the pipeline (its own is put back): the images and, for a Repro
    pipeline, their records."""
    latents = call.latents
    previous = pipe.scheduler
    pipe.scheduler = call.scheduler
    try:
        with call.noise.context():
            output = pipe(**call.arguments, latents=latents, generator=_generator(call, recipe))
    finally:
        pipe.scheduler = previous
    return list(output.images), getattr(output, "provenance", None)


# --------------------------------------------------------------------------------------------------------------------
# Explain


def _tool_name(recipe: Recipe) -> str:
    name = {"a1111": "A1111", "comfyui": "ComfyUI", "invokeai": "InvokeAI"}.get(recipe.source, recipe.source)
    return f"{name} {recipe.source_version}" if recipe.source_version else name


def _differences(
    recipe: Recipe,
    noise: Any,
    checkpoint: Any,
    matched: int | None,
    images: int,
    unknown_index: bool,
    long_prompts: tuple[str, ...] = (),
    call_notes: tuple[str, ...] = (),
) -> list[Difference]:
    differences = _model_differences(recipe, checkpoint)
    differences += [Difference("prompt", text, "truncated by diffusers") for text in long_prompts]
    if unknown_index and images > 1:
        found = f"image {matched} of {images} matched best" if matched is not None else "no image compared"
        differences.append(Difference("recipe.batch_index", f"unknown (batch of {images})", found))
    for text in recipe.blockers:
        if text in recipe.runs_anyway:
            differences.append(Difference("recipe.blocker", text, "regenerated without it"))
    for text in noise.blockers if noise is not None else ():
        differences.append(Difference("noise.blocker", text, "regenerated without it"))
    if recipe.scheduler is not None:
        sampler = " / ".join(str(part) for part in (recipe.sampler, recipe.schedule_type) if part)
        differences.append(
            Difference(
                "sampler",
                f"{_tool_name(recipe)}'s {sampler}",
                f"diffusers' {recipe.scheduler} {recipe.scheduler_config or ''}".rstrip(),
            )
        )
    for text in recipe.notes + (noise.notes if noise is not None else ()) + call_notes:
        differences.append(Difference("note", text, ""))
    return differences


def _unsupported(image_file: ImageFile | None, recipe: Recipe, blockers: tuple[str, ...], tolerance: float) -> Any:
    differences = [Difference("recipe.blocker", text, "cannot be regenerated") for text in blockers]
    return Reproduction(
        image=None,
        provenance=None,
        recorded=None,
        bitwise_equal=False,
        output_digest_equal=None,
        pixels_equal=None,
        max_abs_diff=None,
        psnr=None,
        verdict="unsupported",
        differences=differences,
        tolerance=float(tolerance),
        path=image_file.path if image_file is not None else None,
        file_format=image_file.format if image_file is not None else None,
        file=image_file,
        source=recipe.source,
        recipe=recipe,
    )


def reproduce_recipe(
    image_file: ImageFile,
    recipe: Recipe,
    pipe: Any | None,
    *,
    tolerance: float,
    limits: ReplayLimits | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> Reproduction:
    """Regenerates an image another tool made from its ``recipe`` on ``pipe`` with the tool's noise, and compares the
    pixels with the file's.

    Args:
        image_file (`ImageFile`): The file, read once.
        recipe (`Recipe`): Its recipe (`diffusers_repro.interop.recipe_from_image_file`).
        pipe (`DiffusionPipeline` or `None`): A Repro or vanilla pipeline of the recipe's model; `None` only tells
            whether the recipe is ``unsupported`` (raises `ValueError` otherwise).
        tolerance (`float`): The largest per-pixel difference for ``close``.
        limits (`ReplayLimits`, *optional*): Checked before any model runs.
        checkpoint (`str` or `os.PathLike`, *optional*): The checkpoint file ``pipe`` was loaded from: its hash is
            compared with the recipe's model hash.

    Returns:
        `Reproduction`: ``bitwise`` only when the pixels are equal, ``close`` within ``tolerance``, ``different``,
        or ``unsupported`` (nothing was run: ``differences`` name the blockers). ``source``, ``recipe`` and, for a
        batch whose file does not say which image it is, ``matched_batch_index``.

    Raises:
        `LimitExceededError`: the recipe asks for more than ``limits`` allow.

    Example:

    ```py
    >>> from diffusers_repro import reproduce
    >>> reproduce("00001-1234.png", pipe=pipe).verdict  # doctest: +SKIP
    'bitwise'
    ```
    """
    image_size = image_file.image.size if image_file is not None else None
    check_recipe_limits(recipe, limits, image_size)
    blockers = regeneration_blockers(recipe)
    if blockers:
        return _unsupported(image_file, recipe, blockers, tolerance)
    if pipe is None:
        raise ValueError(
            f"regenerating a {recipe.source} image needs the pipeline of its model: pass pipe= (or --model/--models)"
        )
    if image_size is not None and recipe.width is None:
        recipe = dataclasses.replace(recipe, width=image_size[0], height=image_size[1])
    call = _build_call(pipe, recipe, image_size)
    images, records = _regenerate(pipe, call, recipe)
    candidates = [call.index] if call.index is not None else list(range(len(images)))
    reference = image_file.pixels
    measured = {index: compare_pixels(images[index], reference) for index in candidates}
    equal = [index for index, (same, _, _) in measured.items() if same]
    if equal:
        chosen = equal[0]
    else:
        chosen = min(candidates, key=lambda i: (measured[i][1] is None, measured[i][1] or 0.0))
    pixels_equal, max_abs_diff, psnr = measured[chosen]
    if pixels_equal:
        verdict = "bitwise"
    elif max_abs_diff is not None and max_abs_diff <= tolerance:
        verdict = "close"
    else:
        verdict = "different"
    unknown_index = call.index is None
    return Reproduction(
        image=images[chosen],
        provenance=records[chosen] if records else None,
        recorded=None,
        bitwise_equal=pixels_equal,
        output_digest_equal=None,
        pixels_equal=pixels_equal,
        max_abs_diff=max_abs_diff,
        psnr=psnr,
        verdict=verdict,
        differences=_differences(
            recipe, call.noise, checkpoint, chosen, call.images, unknown_index, call.long_prompts, call.notes
        ),
        tolerance=float(tolerance),
        path=image_file.path,
        whole_batch=call.images > 1,
        file_format=image_file.format,
        file=image_file,
        source=recipe.source,
        recipe=recipe,
        matched_batch_index=chosen if call.images > 1 else None,
    )
