"""Pieces of an image's recipe that a call's record is built from: its rows of batched inputs, its batch, its
schedulers (with how an SDE noise sampler was seeded), and the noise of latents the caller passed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ..records import jsonable, tensor_digest

__all__: list[str] = []


def input_image_row(value: Any, index: int, num_images: int) -> Any:
    """The input image that image ``index`` of the call starts from.

    diffusers tiles ``r`` input images to the ``n`` images of the call (``torch.cat([image] * (n // r))``), so image
    ``i`` starts from input ``i % r``; a single image (PIL, or a 3-dimensional array or tensor) serves every image.
    """
    if isinstance(value, (list, tuple)) and value and num_images % len(value) == 0:
        return [value[index % len(value)]]
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 4 and num_images % value.shape[0] == 0:
        row = index % value.shape[0]
        return value[row : row + 1]
    return value


def _holds_data(value: Any) -> bool:
    if isinstance(value, dict):
        return bool({"tensor_digest", "array_digest", "image_digest"} & set(value)) or any(
            _holds_data(item) for item in value.values()
        )
    if isinstance(value, list):
        return any(_holds_data(item) for item in value)
    return False


def required_inputs(call: dict[str, Any]) -> list[str]:
    """Call arguments recorded as digests (tensors, arrays, images): a replay needs the data itself."""
    return sorted(name for name, value in call.items() if _holds_data(value))


def with_noise_sampler(
    record: dict[str, Any] | None, plan: dict[str, Any] | None, index: int, num_images: int
) -> dict[str, Any] | None:
    """This image's copy of a scheduler record, with how its SDE noise sampler was seeded."""
    if record is None or plan is None:
        return record
    if plan["seeded_by"] == "diffusers-repro":
        sampler = {
            "seed": plan["seeds"][index],
            "seeded_by": "diffusers-repro",
            "note": "noise_sampler_seed was unset (vanilla diffusers would draw it from torch's global RNG): each "
            "image got its own Brownian tree with the image's seed as entropy",
        }
    elif plan["seeded_by"] == "global RNG":
        sampler = {
            "seed": None,
            "seeded_by": "global RNG",
            "note": "noise_sampler_seed was unset and one generator served the whole batch: the Brownian tree's seed "
            "came from the call's substitute for the global RNG (recipe.batch.global_rng_seed), so this image "
            "depends on its batch",
        }
    else:
        configured = plan["configured"]
        per_row = isinstance(configured, (list, tuple)) and len(configured) == num_images
        sampler = {
            "seed": jsonable(configured[index] if per_row else configured),
            "seeded_by": "scheduler",
            "note": "noise_sampler_seed set on the scheduler"
            + (
                ""
                if per_row or num_images == 1
                else ": one Brownian tree for the whole batch, so this image depends on its batch"
            ),
        }
    return {**record, "noise_sampler": sampler}


def is_scheduler(component: Any) -> bool:
    return hasattr(component, "set_timesteps") and hasattr(component, "step")


def scheduler_record(scheduler: Any) -> dict[str, Any] | None:
    if scheduler is None:
        return None
    # Keys with a leading underscore are diffusers' bookkeeping (which values were defaults), not settings.
    config = {key: value for key, value in scheduler.config.items() if not key.startswith("_")}
    return {"class": type(scheduler).__name__, "config": jsonable(config)}


def batch_record(
    index: int,
    num_images: int,
    seeds: list[int | None],
    how: str,
    batch_invariant: bool,
    randomness: Any,
    same_prompts: bool,
    batch_prompt_lists: dict[str, list[str]],
) -> dict[str, Any]:
    """``recipe.batch`` of image ``index``: its place in the call, the call's seeds and its stray randomness."""
    batch = {
        "size": num_images,
        "index": index,
        "seeds": list(seeds),
        "description": how,
        "batch_invariant": batch_invariant,
        "global_rng_seed": randomness.seed,
        "global_rng_used": randomness.used,
    }
    if num_images > 1:
        # Never another image's text: the record says how long each prompt list was and whether every image
        # had the same prompts (then this record alone regenerates the batch); a mixed batch is replayed
        # from its siblings' own records, known by their digests (link_batch_records adds them).
        batch["same_prompts"] = same_prompts
        batch["prompt_list_lengths"] = {name: len(values) for name, values in batch_prompt_lists.items()}
    if randomness.used:
        batch["global_rng_used_on"] = list(randomness.used_on)
        batch["note"] = (
            "the call drew random numbers without a generator (code that ignores `generator`); they came "
            "from a generator seeded from all the call's seeds, so this image depends on its whole batch: "
            "regenerate it with the same seeds, in the same order"
        )
    return batch


def caller_latents_noise(user_latents: torch.Tensor, index: int, num_images: int) -> tuple[str, dict[str, Any]]:
    """The noise digest and description of image ``index`` when the caller passed ``latents``."""
    rows = user_latents[index : index + 1] if user_latents.shape[0] == num_images else user_latents
    noise_digest = tensor_digest(rows)
    noise_description = {
        "shape": list(rows.shape[1:]),
        "dtype": str(rows.dtype),
        "draw": "latents passed by the caller (recipe.call.latents)",
    }
    return noise_digest, noise_description


# --------------------------------------------------------------------------------------------------------------------
# Values the pipeline used where the caller left them unset or the pipeline overrides them

_SIZE_CONDITIONING = ("original_size", "target_size")


@dataclasses.dataclass
class UsedValues:
    """What a call used where vanilla diffusers resolved or overrode what the caller asked for.

    Args:
        call (`dict`): ``recipe.call`` fields to record as used (a replay passes them and gets the same pixels).
        requested (`dict`): The caller's own value of each of those fields (``None`` when left unset).
        denoising_steps (`int` or `None`): The denoising steps the scheduler ran when fewer than
            ``num_inference_steps`` (img2img ``strength``); `None` otherwise.
    """

    call: dict[str, Any]
    requested: dict[str, Any]
    denoising_steps: int | None = None

    @property
    def names(self) -> list[str]:
        """``recipe.defaults_resolved``: the fields the pipeline chose rather than the caller."""
        return sorted(self.call) + (["denoising_steps"] if self.denoising_steps is not None else [])

    def recipe_fields(self) -> dict[str, Any]:
        """The recipe fields beside ``call``: ``requested`` and ``denoising_steps``, where there is something."""
        fields: dict[str, Any] = {}
        if self.requested:
            fields["requested"] = self.requested
        if self.denoising_steps is not None:
            fields["denoising_steps"] = self.denoising_steps
        return fields


def _output_size(image: Any, output_type: Any) -> tuple[int, int] | None:
    """``(height, width)`` of one output image of the call, `None` for latents or what is not an image."""
    if output_type == "latent":
        return None
    if hasattr(image, "size") and hasattr(image, "mode") and not isinstance(image, (np.ndarray, torch.Tensor)):
        width, height = image.size
        return int(height), int(width)
    if isinstance(image, np.ndarray) and image.ndim == 3:
        return int(image.shape[0]), int(image.shape[1])  # (H, W, C), diffusers' "np" output
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        return int(image.shape[1]), int(image.shape[2])  # (C, H, W), diffusers' "pt" output
    return None


def _used_size(
    parameters: Any, arguments: dict[str, Any], image: Any, default_size: tuple[int, int] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Height and width as made (the output's size; the model's default size for latents with neither set), and
    SDXL's size conditioning, which defaults to them."""
    used: dict[str, Any] = {}
    requested: dict[str, Any] = {}
    if "height" not in parameters or "width" not in parameters:
        return used, requested
    asked = {"height": arguments.get("height"), "width": arguments.get("width")}
    size = _output_size(image, arguments.get("output_type"))
    if size is None and asked["height"] is None and asked["width"] is None:
        size = default_size
    if size is None:
        return used, requested
    for name, value in zip(("height", "width"), size, strict=True):
        # SD replaces both when either is missing; Flux rounds to its latent grid: the output says what was made.
        if asked[name] != value:
            used[name], requested[name] = value, asked[name]
    for name in _SIZE_CONDITIONING:
        if name in parameters and arguments.get(name) is None:
            used[name], requested[name] = list(size), None
    return used, requested


def used_call_values(
    parameters: Any,
    arguments: dict[str, Any],
    image: Any,
    default_size: tuple[int, int] | None,
    scheduler: Any,
) -> UsedValues:
    """The values a finished call used where vanilla diffusers resolved or overrode the caller's.

    - ``height``/``width``: the output's size (SD replaces both from the model's sample size when either is
      missing; SDXL each one on its own), with SDXL's ``original_size``/``target_size`` that default to it;
    - ``num_inference_steps``: with ``timesteps`` or ``sigmas``, diffusers' ``retrieve_timesteps`` sets it to the
      length of the scheduler's timesteps (the value passed is ignored, so recording the used one replays the same);
    - ``strength`` (img2img): ``get_timesteps`` runs ``min(int(num_inference_steps * strength), num_inference_steps)``
      steps; ``num_inference_steps`` stays as asked (a replay passes it with the same ``strength``) and the steps run
      are recorded as ``denoising_steps``.

    Args:
        parameters: The parameters of the vanilla ``__call__``.
        arguments (`dict`): The call's bound arguments.
        image: The first output image (PIL, ``(H, W, C)`` array or ``(C, H, W)`` tensor; latents are not sized).
        default_size (`tuple[int, int]` or `None`): The model's default ``(height, width)``.
        scheduler: The pipeline's scheduler after the call (its ``timesteps`` are those the call set).
    """
    used, requested = _used_size(parameters, arguments, image, default_size)
    steps = arguments.get("num_inference_steps")
    custom = arguments.get("timesteps") if arguments.get("timesteps") is not None else arguments.get("sigmas")
    if "num_inference_steps" in parameters and custom is not None:
        timesteps = getattr(scheduler, "timesteps", None)
        count = len(timesteps) if timesteps is not None else len(custom)
        if count != steps:
            used["num_inference_steps"], requested["num_inference_steps"] = count, steps
            steps = count
    denoising_steps = None
    strength = arguments.get("strength")
    if (
        "strength" in parameters
        and isinstance(strength, (int, float))
        and isinstance(steps, int)
        and arguments.get("denoising_start") is None
    ):
        run = min(int(steps * strength), steps)
        denoising_steps = run if run != steps else None
    return UsedValues(call=jsonable(used), requested=jsonable(requested), denoising_steps=denoising_steps)
