"""Pieces of an image's recipe that a call's record is built from: its rows of batched inputs, its batch, its
schedulers (with how an SDE noise sampler was seeded), and the noise of latents the caller passed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .provenance import jsonable, tensor_digest

__all__: list[str] = []


def _input_image_row(value: Any, index: int, num_images: int) -> Any:
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


def _required_inputs(call: dict[str, Any]) -> list[str]:
    """Call arguments recorded as digests (tensors, arrays, images): a replay needs the data itself."""
    return sorted(name for name, value in call.items() if _holds_data(value))


def _with_noise_sampler(
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


def _is_scheduler(component: Any) -> bool:
    return hasattr(component, "set_timesteps") and hasattr(component, "step")


def _scheduler_record(scheduler: Any) -> dict[str, Any] | None:
    if scheduler is None:
        return None
    # Keys with a leading underscore are diffusers' bookkeeping (which values were defaults), not settings.
    config = {key: value for key, value in scheduler.config.items() if not key.startswith("_")}
    return {"class": type(scheduler).__name__, "config": jsonable(config)}


def _batch_record(
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


def _caller_latents_noise(user_latents: torch.Tensor, index: int, num_images: int) -> tuple[str, dict[str, Any]]:
    """The noise digest and description of image ``index`` when the caller passed ``latents``."""
    rows = user_latents[index : index + 1] if user_latents.shape[0] == num_images else user_latents
    noise_digest = tensor_digest(rows)
    noise_description = {
        "shape": list(rows.shape[1:]),
        "dtype": str(rows.dtype),
        "draw": "latents passed by the caller (recipe.call.latents)",
    }
    return noise_digest, noise_description
