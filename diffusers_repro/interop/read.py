"""`read_recipe`: the one recipe of any image file, ours or another tool's.

The file is read once through the reading edge (`diffusers_repro.files.read_image`); which reader makes the recipe
is decided by a fixed order of checks on the metadata the file carries, never by a name the file gives:

1. a ``diffusers-repro`` record: our own file; its recipe is the record's (`recipe_from_record`);
2. an ``invokeai_metadata`` PNG chunk: InvokeAI;
3. a ``prompt`` PNG chunk (or only a ``workflow`` one): ComfyUI;
4. a ``parameters`` infotext (PNG chunk, or JPEG/WebP EXIF ``UserComment``): A1111/Forge/SD.Next.
"""

from __future__ import annotations

import os
from typing import Any

from ..files import ImageFile, read_image
from ..generation import config_without_defaults
from ..records import Provenance
from . import a1111, comfyui, invokeai
from .recipe import ForeignMetadataError, Recipe

__all__ = ["foreign_source", "metadata_source", "read_recipe", "recipe_from_image_file", "recipe_from_record"]

# The components the mixin takes for the denoiser, in its order: the first one recorded names the model's weights.
_DENOISERS = ("unet", "transformer", "prior", "decoder")


def read_recipe(path: str | os.PathLike | ImageFile, *, max_bytes: int | None = None) -> Recipe:
    """How the image in ``path`` was made, as its file says: our record, or A1111's, ComfyUI's or InvokeAI's metadata.

    Args:
        path (`str`, `os.PathLike` or `ImageFile`): A PNG, JPEG or WebP file (read once, bounded), or one already
            read (`diffusers_repro.files.read_image`).
        max_bytes (`int`, *optional*, defaults to `diffusers_repro.files.MAX_FILE_BYTES`): Largest file read.

    Returns:
        `Recipe`: ``source`` says which tool's metadata it came from; ``blockers`` name what stands between it and
        an exact rerun with diffusers.

    Raises:
        `ImageProvenanceError` (a `ValueError`): the file is not a readable image, or carries a record of ours that
            the schema refuses.
        `ForeignMetadataError` (a `ValueError`): the file carries no metadata we read, or another tool's metadata
            is malformed, partial or contradictory; the message names the file and the field.

    Example:

    ```py
    >>> from diffusers_repro import read_recipe
    >>> recipe = read_recipe("00001-1234.png")  # doctest: +SKIP
    >>> recipe.source, recipe.sampler, recipe.scheduler  # doctest: +SKIP
    ('a1111', 'DPM++ 2M', 'DPMSolverMultistepScheduler')
    ```
    """
    image_file = path if isinstance(path, ImageFile) else read_image(path, max_bytes)
    return recipe_from_image_file(image_file)


def _describe(image_file: ImageFile) -> str:
    return str(image_file.path) if image_file.path is not None else "<bytes>"


def _own_record(image_file: ImageFile) -> bool:
    return (
        image_file.provenance is not None
        or "diffusers-repro" in image_file.metadata
        or "record" in (image_file.metadata if image_file.format != "png" else {})
    )


def metadata_source(image_file: ImageFile) -> str | None:
    """Whose metadata `recipe_from_image_file` reads from a file already read: ``"diffusers-repro"`` (a record of
    ours, refused by the schema or not), ``"invokeai"``, ``"comfyui"``, ``"a1111"``, or `None` when it carries none
    of them. The order of checks is `read_recipe`'s; nothing is parsed beyond finding the metadata.

    Example:

    ```py
    >>> from diffusers_repro.files import read_image
    >>> from diffusers_repro.interop import metadata_source
    >>> metadata_source(read_image("00001-1234.png"))  # doctest: +SKIP
    'a1111'
    ```
    """
    if not isinstance(image_file, ImageFile):
        raise TypeError(f"image_file must be a diffusers_repro ImageFile, got {type(image_file).__name__}")
    if _own_record(image_file):
        return "diffusers-repro"
    metadata = image_file.metadata if image_file.format == "png" else {}
    if invokeai.METADATA_KEY in metadata:
        return "invokeai"
    if comfyui.PROMPT_KEY in metadata or comfyui.WORKFLOW_KEY in metadata:
        return "comfyui"
    if a1111.infotext_of(image_file) is not None:
        return "a1111"
    return None


def recipe_from_image_file(image_file: ImageFile) -> Recipe:
    """The recipe of a file already read (see `read_recipe` for the order of checks and the errors)."""
    if not isinstance(image_file, ImageFile):
        raise TypeError(f"image_file must be a diffusers_repro ImageFile, got {type(image_file).__name__}")
    where = _describe(image_file)
    source = metadata_source(image_file)
    if source == "diffusers-repro":
        if image_file.record_error is not None:
            raise image_file.record_error
        return recipe_from_record(image_file.provenance, image_size=image_file.image.size)
    metadata = image_file.metadata if image_file.format == "png" else {}
    if source == "invokeai":
        return invokeai.recipe_from_invokeai(metadata, where, image_size=image_file.image.size)
    if source == "comfyui":
        return comfyui.recipe_from_comfyui(metadata, where, image_size=image_file.image.size)
    if source == "a1111":
        infotext = a1111.infotext_of(image_file)
        return a1111.recipe_from_infotext(infotext, where, image_size=image_file.image.size)
    raise ForeignMetadataError(
        f"{where} carries no generation metadata diffusers-repro reads: no 'diffusers-repro' record, no InvokeAI "
        "'invokeai_metadata' chunk, no ComfyUI 'prompt' chunk and no A1111 'parameters' infotext (PNG text chunk or "
        "EXIF UserComment)"
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _model(recipe: dict[str, Any]) -> dict[str, Any] | None:
    model = recipe.get("model") or {}
    components = model.get("components") or {}
    denoiser = next((components[name] for name in _DENOISERS if isinstance(components.get(name), dict)), None)
    name = model.get("repo_id") or model.get("name_or_path") or model.get("path")
    if name is None and denoiser is None:
        return None
    return {
        "name": name,
        "hash": denoiser.get("weights_digest") if denoiser else None,
        "hash_kind": "diffusers-repro-weights-sha256" if denoiser else None,
        "revision": model.get("revision"),
    }


def recipe_from_record(record: Provenance, image_size: tuple[int, int] | None = None) -> Recipe:
    """Our own record as a `Recipe` (``source="diffusers-repro"``): `reproduce` replays the record itself, which holds
    far more (components' digests, environment, batch); this is the same summary other tools' files give."""
    call = record.call_arguments
    recipe = record.recipe
    scheduler = recipe.get("scheduler") or {}
    class_name = _text(scheduler.get("class"))
    config = scheduler.get("config") if isinstance(scheduler.get("config"), dict) else {}
    batch = record.batch
    width, height = call.get("width"), call.get("height")
    if image_size is not None and (width is None or height is None):
        width, height = image_size
    rng = recipe.get("rng")
    blockers = tuple(
        f"the call's {name} is recorded as a digest only: pass the data itself to reproduce it"
        for name in recipe.get("requires_inputs") or ()
    )
    extras = {
        name: call[name]
        for name in ("eta", "guidance_rescale", "strength", "output_type")
        if call.get(name) not in (None, 0.0) or name == "output_type"
    }
    return Recipe(
        source="diffusers-repro",
        source_version=_text((record.environment.get("versions") or {}).get("diffusers-repro")),
        prompt=_text(call.get("prompt")),
        negative_prompt=_text(call.get("negative_prompt")),
        seed=record.seed,
        steps=call.get("num_inference_steps"),
        guidance_scale=call.get("guidance_scale"),
        width=width,
        height=height,
        sampler=class_name,
        scheduler=class_name,
        scheduler_config=config_without_defaults(class_name, config) if class_name else {},
        model=_model(recipe),
        clip_skip=call.get("clip_skip"),
        batch_index=batch.get("index"),
        batch_size=batch.get("size"),
        rng="cuda" if isinstance(rng, dict) else "cpu",
        extras=extras,
        blockers=blockers,
    )


def foreign_source(image_file: ImageFile) -> str | None:
    """Which other tool's metadata makes the recipe of a file: ``"invokeai"``, ``"comfyui"`` or ``"a1111"``; `None`
    for a file of ours (a record, even a refused one) or a file with no metadata we read (see `metadata_source`)."""
    source = metadata_source(image_file)
    return None if source == "diffusers-repro" else source
