"""Images from other Stable Diffusion tools: their metadata read as one `Recipe`, and the noise they made.

The sampler-name table they share with our own infotext is `diffusers_repro.generation.samplers`.

- ``a1111.py``: the A1111/Forge/SD.Next ``parameters`` infotext (PNG text chunk, JPEG/WebP EXIF UserComment) as a
  recipe.
- ``comfyui.py``: ComfyUI's ``prompt`` graph (API format) followed from the save node back, as a recipe; every node
  it does not know is named in a blocker.
- ``invokeai.py``: InvokeAI's ``invokeai_metadata`` (and ``invokeai_graph``) chunk as a recipe.
- ``noise.py``: the noise each tool would have made (A1111's seed + i, variation seed, seed resize, RNG CPU/GPU/NV,
  ENSD; ComfyUI's whole-batch noise; InvokeAI's per-image noise), as ``latents`` and generators a diffusers call takes.
- ``clip_skip.py``: prompt embeddings of a skipped CLIP layer, as A1111's "Clip skip" makes them.
- ``recipe.py``: `Recipe`, the one recipe of any file, `ForeignMetadataError`, and `recipe_from_image_file`, which
  picks the reader by a fixed order of checks on the file's metadata (never by a name the file gives).

Every reader treats the file as hostile: sizes and depths are bounded before parsing, nothing in a file selects code,
and malformed metadata is a `ForeignMetadataError` (a `ValueError`) naming the field. Nothing here imports torch or
diffusers.
"""
