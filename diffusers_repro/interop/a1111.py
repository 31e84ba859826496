"""The AUTOMATIC1111/Forge/SD.Next ``parameters`` infotext as a `Recipe`.

A1111 writes its infotext into a PNG ``parameters`` text chunk, and into a JPEG's or WebP's EXIF ``UserComment`` with
``piexif.helper.UserComment.dump(text, encoding="unicode")`` (an ``UNICODE\\0`` prefix and UTF-16); its reader also
takes a comment without a known prefix as UTF-8, which other tools write. `infotext_of` reads both (and UTF-16 of
either byte order) from the EXIF bytes the reading edge already holds.

The text is split as A1111's ``parse_generation_parameters`` splits it (`diffusers_repro.infotext.parse_infotext`):
the prompt lines, ``Negative prompt:`` and the lines after it, and a last line of at least three ``Key: value`` pairs.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Any

from ..files import INFOTEXT_PAIR, MAX_PARAMETERS_LINE, ImageFile, parse_infotext
from ..generation import SamplerMapping, from_a1111
from .recipe import (
    MAX_METADATA_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    ForeignMetadataError,
    Recipe,
    check_float,
    check_int,
    prompt_blockers,
    shown,
)

__all__ = ["decode_user_comment", "infotext_of", "recipe_from_infotext"]

_UNICODE = b"UNICODE\x00"
_ASCII = b"ASCII\x00\x00\x00"
_HASH_KINDS = {10: "a1111-sha256-prefix-10", 8: "a1111-legacy-8"}
_RNG = {"CPU": "cpu", "GPU": "gpu", "NV": "nv"}
# Fields read into the recipe itself; every other pair goes to extras under its snake_case key.
_HIRES = ("hires_upscale", "hires_steps", "hires_upscaler", "hires_resize_1", "hires_resize_2", "hires_sampler")


def _utf16_candidate(body: bytes, encoding: str) -> tuple[int, str]:
    """How odd ``body`` decoded as ``encoding`` looks (undecodable, or control, private or unassigned characters)."""
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        return len(body) + 1, body.decode(encoding, errors="replace")
    odd = sum(1 for char in text if unicodedata.category(char) in ("Cc", "Co", "Cn") and char not in "\n\r\t")
    return odd, text


def decode_user_comment(comment: bytes) -> str | None:
    """An EXIF ``UserComment`` as A1111 reads it: ``UNICODE`` (UTF-16, either byte order), ``ASCII``, or no known
    prefix as UTF-8. `None` for an empty or undecodable comment."""
    if not isinstance(comment, bytes) or not comment:
        return None
    body = comment[8:]
    if comment.startswith(_UNICODE):
        if len(body) % 2:
            body = body[:-1]
        # piexif writes big-endian; a writer on a little-endian machine may not. A byte order mark decides; else the
        # decoding with fewer control characters, then the byte order whose high bytes are zero (ASCII text), then
        # big-endian.
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = body.decode("utf-16", errors="replace")
        else:
            looks_le = body[1::2].count(0) > body[0::2].count(0)
            (_, text), _ = min(
                ((_utf16_candidate(body, name), name) for name in ("utf-16-be", "utf-16-le")),
                key=lambda item: (item[0][0], (item[1] == "utf-16-le") != looks_le),
            )
    elif comment.startswith(_ASCII):
        text = body.decode("ascii", errors="replace")
    else:
        text = comment.decode("utf-8", errors="replace")
    text = text.rstrip("\x00")
    return text or None


def infotext_of(image_file: ImageFile) -> str | None:
    """The A1111 infotext of a file: the PNG ``parameters`` chunk, or the EXIF ``UserComment`` of a JPEG/WebP in any
    encoding `decode_user_comment` reads (the reading edge's own decoding takes only piexif's prefixes)."""
    if image_file.format == "png":
        return image_file.infotext
    exif = image_file.image.info.get("exif")
    if not isinstance(exif, bytes) or not exif:
        return image_file.infotext
    try:
        import piexif

        comment = piexif.load(exif).get("Exif", {}).get(piexif.ExifIFD.UserComment)
    except Exception:  # noqa: BLE001 - piexif parses by hand: struct, index and decode errors alike
        return image_file.infotext
    return decode_user_comment(comment) if isinstance(comment, bytes) else image_file.infotext


def _pairs(text: str, where: str) -> dict[str, str]:
    """The ``Key: value`` pairs of the last line, refusing a key written twice with two values."""
    lines = text.strip("\n").split("\n")
    if lines and len(lines[-1]) > MAX_PARAMETERS_LINE:
        raise ForeignMetadataError(
            f"{where}: the A1111 parameters line is longer than {MAX_PARAMETERS_LINE} characters"
        )
    found = INFOTEXT_PAIR.findall(lines[-1]) if lines else []
    pairs: dict[str, str] = {}
    if len(found) < 3:
        return pairs
    for key, value in found:
        key, value = key.strip(), value.strip()
        if key in pairs and pairs[key] != value:
            raise ForeignMetadataError(
                f"{where}: the A1111 infotext gives {shown(key)} twice with different values ({shown(pairs[key])}, "
                f"{shown(value)})"
            )
        pairs[key] = value
    return pairs


def _lora_hashes(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, str) or not value:
        return {}
    hashes = {}
    for item in value.split(","):
        name, sep, digest = item.strip().rpartition(":")
        if not sep or not name.strip():
            raise ForeignMetadataError(f"{where}: 'Lora hashes' must be 'name: hash, ...', got {value[:80]!r}")
        hashes[name.strip()] = digest.strip()
    return hashes


def _loras(prompt: str, hashes: dict[str, str], where: str) -> tuple[dict[str, Any], ...]:
    loras = []
    for match in re.finditer(r"<(?:lora|lyco):([^:<>]+)(?::([^:<>]*))?[^<>]*>", prompt or ""):
        name = match.group(1).strip()
        weight = check_float(match.group(2) or "1", f"the weight of LoRA {name!r} in the prompt", where)
        loras.append({"name": name, "weight": weight, "hash": hashes.get(name)})
    named = {lora["name"] for lora in loras}
    loras.extend(
        {"name": name, "weight": None, "hash": digest} for name, digest in hashes.items() if name not in named
    )
    return tuple(loras)


def _size(fields: dict[str, Any], pairs: dict[str, str], where: str) -> tuple[int | None, int | None]:
    if "Size" not in pairs:
        return None, None
    if "width" not in fields:
        raise ForeignMetadataError(f"{where}: 'Size' must be WIDTHxHEIGHT, got {pairs['Size'][:40]!r}")
    return (
        check_int(fields["width"], "'Size' width", 1, MAX_SIDE, where),
        check_int(fields["height"], "'Size' height", 1, MAX_SIDE, where),
    )


def recipe_from_infotext(text: str, where: str = "<infotext>", image_size: tuple[int, int] | None = None) -> Recipe:
    """The recipe an A1111/Forge/SD.Next infotext gives.

    Args:
        text (`str`): The infotext.
        where (`str`, *optional*): What to name in messages (the file).
        image_size (`tuple[int, int]`, *optional*): The image's ``(width, height)``, to tell a resized file.

    Raises:
        `ForeignMetadataError`: no parameters line (a prompt alone is not a recipe), no ``Steps`` or ``Seed``, a field
            that does not parse as its type or is out of range, a key given twice with different values.

    Example:

    ```py
    >>> from diffusers_repro.interop.a1111 import recipe_from_infotext
    >>> recipe = recipe_from_infotext("a fox\\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, Seed: 7")
    >>> recipe.scheduler, recipe.scheduler_config, recipe.rng
    ('DPMSolverMultistepScheduler', {'use_karras_sigmas': True}, 'gpu')
    ```
    """
    fields = _checked_fields(text, where)
    found = _Found()
    seed = check_int(fields.get("seed"), "'Seed'", 0, MAX_SEED, where)
    steps = check_int(fields.get("steps"), "'Steps'", 1, MAX_STEPS, where)
    width, height = _size(fields, fields["_pairs"], where)
    mapping = _sampler(fields, found)
    loras = _prompts(fields, where, found)
    _noise_fields(fields, where, mapping, found)
    batch_index, batch_size = _batch(fields, where)
    _other_passes(fields, where, mapping, (width, height), image_size, found)
    return Recipe(
        source="a1111",
        source_version=fields.get("version"),
        prompt=fields["prompt"],
        negative_prompt=fields["negative_prompt"],
        seed=seed,
        steps=steps,
        guidance_scale=check_float(fields.get("cfg_scale"), "'CFG scale'", where),
        width=width,
        height=height,
        sampler=fields.get("sampler"),
        schedule_type=fields.get("schedule_type"),
        scheduler=mapping.scheduler if mapping else None,
        scheduler_config=dict(mapping.config) if mapping else {},
        model=_model(fields, where),
        loras=loras,
        clip_skip=_clip_skip(fields, where, found),
        batch_index=batch_index,
        batch_size=batch_size,
        rng=_rng(fields, where, found),
        extras=found.extras,
        blockers=tuple(found.blockers),
        notes=tuple(found.notes),
        runs_anyway=tuple(found.runs_anyway),
    )


@dataclasses.dataclass
class _Found:
    """What the parts of an infotext add up to besides its plain fields."""

    blockers: list[str] = dataclasses.field(default_factory=list)
    runs_anyway: list[str] = dataclasses.field(default_factory=list)  # the blockers that leave a call to run
    notes: list[str] = dataclasses.field(default_factory=list)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


def _checked_fields(text: Any, where: str) -> dict[str, Any]:
    """The infotext's fields (`parse_infotext`), with ``_pairs``: its raw key/value pairs, each key once."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(text) > MAX_METADATA_CHARS:
        raise ForeignMetadataError(f"{where}: the A1111 infotext is longer than {MAX_METADATA_CHARS} characters")
    text = text.replace("\r\n", "\n")
    pairs = _pairs(text, where)
    if not pairs:
        raise ForeignMetadataError(
            f"{where}: the A1111 infotext has no parameters line (at least three 'Key: value' pairs such as Steps, "
            "Sampler, Seed after the prompt)"
        )
    for required in ("Steps", "Seed"):
        if required not in pairs:
            raise ForeignMetadataError(f"{where}: the A1111 infotext has no {required!r} field")
    return {**parse_infotext(text), "_pairs": pairs}


def _sampler(fields: dict[str, Any], found: _Found) -> SamplerMapping | None:
    sampler, schedule_type = fields.get("sampler"), fields.get("schedule_type")
    if sampler is None:
        found.blockers.append("the infotext names no sampler (A1111 would use its first one)")
        return None
    mapping = from_a1111(sampler, schedule_type)
    found.blockers.extend(mapping.blockers)
    found.notes.extend(mapping.notes)
    if schedule_type is None and mapping.scheduler is not None:
        found.notes.append(
            "no 'Schedule type': an infotext from before A1111 1.9, read with the sampler's own sigmas (A1111 1.9+ "
            "would read it as 'Automatic')"
        )
    return mapping


def _rng(fields: dict[str, Any], where: str, found: _Found) -> str:
    rng_text = fields.get("rng")
    if rng_text is None:
        found.notes.append("no 'RNG' field: A1111 draws the starting noise on the GPU (torch.Generator('cuda'))")
        return "gpu"  # A1111 reads a missing RNG as GPU
    if rng_text in _RNG:
        return _RNG[rng_text]
    raise ForeignMetadataError(f"{where}: 'RNG' must be CPU, GPU or NV, got {rng_text[:40]!r}")


def _clip_skip(fields: dict[str, Any], where: str, found: _Found) -> int | None:
    """A1111's ``Clip skip: N`` in diffusers' numbering (``N - 1``; 1 is no skip)."""
    if "clip_skip" not in fields:
        return None
    a1111_skip = check_int(fields["clip_skip"], "'Clip skip'", 1, 12, where)
    found.extras["a1111_clip_skip"] = a1111_skip
    return a1111_skip - 1 if a1111_skip > 1 else None


def _model(fields: dict[str, Any], where: str) -> dict[str, Any] | None:
    model_hash, model_name = fields.get("model_hash"), fields.get("model")
    if model_hash is None and model_name is None:
        return None
    kind = None
    if model_hash is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{8}|[0-9a-fA-F]{10}", model_hash):
            raise ForeignMetadataError(
                f"{where}: 'Model hash' must be 8 or 10 hex digits, got {str(model_hash)[:40]!r}"
            )
        kind = _HASH_KINDS[len(model_hash)]
    return {"name": model_name, "hash": model_hash and model_hash.lower(), "hash_kind": kind}


def _prompts(fields: dict[str, Any], where: str, found: _Found) -> tuple[dict[str, Any], ...]:
    """The LoRAs the prompt names, and what in the prompts diffusers reads otherwise."""
    prompt, negative = fields["prompt"], fields["negative_prompt"]
    loras = _loras(prompt, _lora_hashes(fields.get("lora_hashes"), where), where)
    # Each of these leaves a call to run (the regeneration names them among the differences).
    runs = [
        f"LoRA {lora['name']!r} is applied; a plain diffusers call does not load it (load_lora_weights)"
        for lora in loras
    ]
    runs += prompt_blockers(prompt, "prompt", "a1111") + prompt_blockers(negative, "negative prompt", "a1111")
    if fields.get("ti_hashes"):
        runs.append("textual inversion embeddings are used (TI hashes); a plain diffusers call does not load them")
    found.blockers.extend(runs)
    found.runs_anyway.extend(runs)
    return loras


_NOISE_KEYS = (
    "variation_seed",
    "variation_seed_strength",
    "seed_resize_from",
    "eta",
    "eta_ddim",
    "ensd",
    "eta_noise_seed_delta",
)


def _noise_fields(fields: dict[str, Any], where: str, mapping: SamplerMapping | None, found: _Found) -> None:
    """Variation seed, seed resize and ENSD: checked, kept in the extras; `a1111_noise` makes them."""
    found.extras.update({key: fields[key] for key in _NOISE_KEYS if key in fields})
    strength = check_float(fields.get("variation_seed_strength"), "'Variation seed strength'", where, 0, 1)
    if "variation_seed" in fields:
        check_int(fields["variation_seed"], "'Variation seed'", 0, MAX_SEED, where)
        if strength:
            found.notes.append(
                "a variation seed is mixed into the starting noise (A1111 slerps two draws): a plain diffusers call "
                "draws one; diffusers_repro.interop.a1111_noise makes A1111's"
            )
    if "seed_resize_from" in fields:
        found.notes.append(
            "'Seed resize from' draws the noise at another size: a plain diffusers call draws it at the image size; "
            "diffusers_repro.interop.a1111_noise makes A1111's"
        )
    ensd = fields.get("ensd", fields.get("eta_noise_seed_delta"))
    if ensd is not None:
        ensd = check_int(ensd, "'ENSD'", 0, MAX_SEED, where)
        if ensd and mapping is not None and (mapping.ancestral or mapping.sde):
            found.notes.append(
                f"ENSD {ensd} re-seeds the sampler's later noise with seed + {ensd}: a plain diffusers call draws it "
                "from the image's generator; diffusers_repro.interop.a1111_noise makes A1111's"
            )


def _batch(fields: dict[str, Any], where: str) -> tuple[int | None, int | None]:
    """``(Batch pos, Batch size)``: A1111 writes them for batches of two or more; image i has seed + i."""
    batch_size = check_int(fields.get("batch_size"), "'Batch size'", 1, 1 << 20, where)
    batch_index = check_int(fields.get("batch_pos"), "'Batch pos'", 0, (batch_size or 1 << 20) - 1, where)
    if batch_index is not None and batch_size is None:
        raise ForeignMetadataError(f"{where}: the A1111 infotext gives 'Batch pos' without 'Batch size'")
    if batch_size is not None and batch_size > 1 and batch_index is None:
        batch_size = None  # a batch without the image's place in it: regenerated alone
    return batch_index, batch_size


def _other_passes(
    fields: dict[str, Any],
    where: str,
    mapping: SamplerMapping | None,
    size: tuple[int | None, int | None],
    image_size: tuple[int, int] | None,
    found: _Found,
) -> None:
    """What ran besides one text-to-image call: an eta on the ancestral noise, hires fix, img2img, a refiner, a
    resize after generation."""
    eta = check_float(fields.get("eta"), "'Eta'", where)
    if eta is not None and mapping is not None and mapping.ancestral and eta != 1.0:
        found.blockers.append(f"Eta {eta:g} scales the ancestral noise; diffusers' ancestral schedulers have no eta")
        found.runs_anyway.append(found.blockers[-1])
    hires = any(key in fields for key in _HIRES)
    if hires:
        found.extras.update({key: fields[key] for key in _HIRES if key in fields})
        found.blockers.append("hires fix ran a second, upscaled img2img pass; a single diffusers call does not")
    if "denoising_strength" in fields:
        found.extras["denoising_strength"] = fields["denoising_strength"]
        if not hires:
            found.blockers.append(
                "img2img (Denoising strength without hires fix): the source image is not in the file"
            )
    if "refiner" in fields:
        found.extras.update({key: fields[key] for key in ("refiner", "refiner_switch_at") if key in fields})
        found.blockers.append(f"a refiner model ({fields['refiner']!r}) took over part of the steps")
    width, height = size
    if image_size is not None and width is not None and (width, height) != tuple(image_size) and not hires:
        found.blockers.append(
            f"the image is {image_size[0]}x{image_size[1]} but its infotext says {width}x{height} (resized or "
            "cropped after generation)"
        )
        found.runs_anyway.append(found.blockers[-1])
