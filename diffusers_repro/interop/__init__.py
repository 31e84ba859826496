"""Images from other Stable Diffusion tools: their metadata read as one `Recipe`, and their sampler names.

- ``samplers.py``: the one table of sampler and schedule names of AUTOMATIC1111/Forge, ComfyUI and InvokeAI <->
  diffusers scheduler classes and configs (`from_a1111`, `from_comfyui`, `from_invokeai`, `to_a1111`), with a plain
  sentence (a blocker) where a tool's sampler has no diffusers equivalent.
- ``a1111.py``: the A1111/Forge/SD.Next ``parameters`` infotext (PNG text chunk, JPEG/WebP EXIF UserComment) as a
  recipe.
- ``comfyui.py``: ComfyUI's ``prompt`` graph (API format) followed from the save node back, as a recipe; every node
  it does not know is named in a blocker.
- ``invokeai.py``: InvokeAI's ``invokeai_metadata`` (and ``invokeai_graph``) chunk as a recipe.
- ``recipe.py``: `Recipe`, the one recipe of any file, `ForeignMetadataError`, and `recipe_from_image_file`, which
  picks the reader by a fixed order of checks on the file's metadata (never by a name the file gives).

Every reader treats the file as hostile: sizes and depths are bounded before parsing, nothing in a file selects code,
and malformed metadata is a `ForeignMetadataError` (a `ValueError`) naming the field. Nothing here imports torch or
diffusers.
"""
