"""Images from other Stable Diffusion tools: their metadata read as one `Recipe`, and the noise they made.

The sampler-name table they share with our own infotext is `diffusers_repro.generation.samplers`.

- ``a1111.py``: the A1111/Forge/SD.Next ``parameters`` infotext (PNG text chunk, JPEG/WebP EXIF UserComment) as a
  recipe.
- ``comfyui.py``: ComfyUI's ``prompt`` graph (API format) followed from the save node back, as a recipe; every node
  it does not know is named in a blocker.
- ``invokeai.py``: InvokeAI's ``invokeai_metadata`` (and ``invokeai_graph``) chunk as a recipe.
- ``noise.py``: the noise each tool would have made (A1111's seed + i, variation seed, seed resize, RNG CPU/GPU/NV,
  ENSD; ComfyUI's whole-batch noise; InvokeAI's per-image CPU or GPU noise and its start), as ``latents`` and
  generators a diffusers call takes.
- ``clip_skip.py``: A1111's "Clip skip": the skipped CLIP layer for the prompt and the negative prompt.
- ``recipe.py``: `Recipe`, the one recipe of any file, `ForeignMetadataError`, and the checks the readers share.
- ``code.py``: `recipe_code` and `record_code`: a runnable Python script that makes a file's image with diffusers
  (what ``inspect --as-code`` prints), every value from the file entering the code as a literal.
- ``read.py``: `read_recipe`: any file's recipe, ours (from its record) or another tool's; the reader is picked by
  a fixed order of checks on the file's metadata (never by a name the file gives).

Every reader treats the file as hostile: sizes and depths are bounded before parsing, nothing in a file selects code,
and malformed metadata is a `ForeignMetadataError` (a `ValueError`) naming the field. The readers import neither
torch nor diffusers.
"""

import typing as _typing

from ..lazy import lazy_exports

EXPORTS = {
    "a1111_prompt_embeds": "clip_skip",
    "recipe_code": "code",
    "record_code": "code",
    "a1111_noise": "noise",
    "comfyui_noise": "noise",
    "invokeai_noise": "noise",
    "invokeai_start": "noise",
    "ToolNoise": "noise",
    "foreign_source": "read",
    "metadata_source": "read",
    "read_recipe": "read",
    "recipe_from_image_file": "read",
    "recipe_from_record": "read",
    "ForeignMetadataError": "recipe",
    "Recipe": "recipe",
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, globals())

if _typing.TYPE_CHECKING:
    from .clip_skip import a1111_prompt_embeds  # noqa: F401
    from .code import recipe_code, record_code  # noqa: F401
    from .noise import ToolNoise, a1111_noise, comfyui_noise, invokeai_noise, invokeai_start  # noqa: F401
    from .read import foreign_source, metadata_source, read_recipe, recipe_from_image_file, recipe_from_record  # noqa: F401
    from .recipe import ForeignMetadataError, Recipe  # noqa: F401
