"""The outcome of `reproduce`: `Reproduction` (verdict, pixel measures, Content Credentials) and the `Difference`s
between a record and its replay that explain a result.

`record_differences` compares any two records field by field. The list a replay reports leaves out the bookkeeping a
replay changes by construction (its batch, its generator, the defaults it resolves) and names the causes instead (an
image regenerated outside its batch, a shared or used generator, an emulated CUDA generator), plus a file whose pixels
no longer match their digest.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..files import Credentials, ImageFile
from ..records import Provenance, jsonable

__all__ = ["Difference", "Reproduction", "record_differences"]

# Call arguments that define the batch: the regeneration makes one image, the batch itself is reported separately.
BATCH_ARGUMENTS = frozenset({"num_images_per_prompt", "batch_size"})
LOSSY_FORMATS = ("jpeg", "webp")


class Difference(NamedTuple):
    """One field in which two records differ: ``field`` (dotted path), the ``recorded`` and the ``current`` value.

    A missing field reads as `None`.
    """

    field: str
    recorded: Any
    current: Any


@dataclasses.dataclass
class Reproduction:
    """The outcome of `reproduce`.

    Args:
        image: The regenerated image, of the recorded ``output_type``.
        provenance (`Provenance`): The record of the regeneration.
        recorded (`Provenance`): The record that was replayed.
        bitwise_equal (`bool`): The output digest equals the recorded ``output_digest`` and, when a file was given,
            the 8-bit pixels equal the file's pixels.
        output_digest_equal (`bool` or `None`): The output digest alone (`None` when the record has none).
        pixels_equal (`bool` or `None`): The 8-bit pixels against the file's (`None` without a file).
        max_abs_diff (`float` or `None`): Largest per-pixel difference against the file, in ``[0, 1]`` units; `None`
            without a file, since a record alone holds a digest and no pixels to measure against.
        psnr (`float` or `None`): Peak signal-to-noise ratio in dB against the file (``inf`` when equal).
        verdict (`str`): ``"bitwise"``; ``"close"`` when ``max_abs_diff <= tolerance``; ``"different"`` otherwise
            (always ``"different"`` when not bitwise and no file was given).
        differences (`list[Difference]`): Recipe and environment fields that differ, with recorded and current values.
        tolerance (`float`): The tolerance the verdict used.
        path (`pathlib.Path` or `None`): The file that was replayed.
        whole_batch (`bool`): The image was regenerated within its whole original batch (same prompts, same seeds,
            same order) rather than alone.
        credentials (`diffusers_repro.credentials.Credentials` or `None`): What the file's Content Credentials say
            (state ``trusted``, ``valid``, ``unsigned`` or ``tampered``, signer, failure codes); `None` without a file.
        file_format (`str` or `None`): ``"png"``, ``"jpeg"`` or ``"webp"``; `None` without a file. For the lossy
            formats ``bitwise`` means the regenerated output equals the recorded output digest and the Content
            Credentials vouch that the file is the one written (its pixels carry the encoder's loss).
        reencoding_equal (`bool` or `None`): For a lossy file, whether encoding the regeneration here gives the file's
            pixels exactly (what vouches for its pixels when the signer is not trusted); `None` for other files.
        file (`diffusers_repro.imagefile.ImageFile` or `None`): The file as it was read, once: the verdict, the
            measures and the report are all about these bytes.
    """

    image: Any
    provenance: Provenance
    recorded: Provenance
    bitwise_equal: bool
    output_digest_equal: bool | None
    pixels_equal: bool | None
    max_abs_diff: float | None
    psnr: float | None
    verdict: str
    differences: list[Difference]
    tolerance: float
    path: Path | None = None
    whole_batch: bool = False
    credentials: Credentials | None = None
    file_format: str | None = None
    reencoding_equal: bool | None = None
    file: ImageFile | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def file_edited(self) -> bool:
        """The file was changed after saving: its pixels no longer match the pixel digest written with them, or its
        Content Credentials say it was tampered with."""
        return any(difference.field in ("file.pixel_digest", "file.credentials") for difference in self.differences)

    @property
    def summary(self) -> str:
        """One line: the verdict and, when measured, the pixel difference."""
        if self.verdict == "tampered" and self.credentials is not None:
            return self.credentials.summary
        if self.verdict == "bitwise" and self.file_format in LOSSY_FORMATS:
            if self.credentials is not None and self.credentials.state != "trusted":
                return (
                    f"bitwise (lossy {self.file_format}: the regenerated output equals the recorded output digest and "
                    "encoding it again gives the file's pixels exactly; its signer is not on the trust list)"
                )
            pixels = (
                "encoding it again gives the file's pixels exactly"
                if self.reencoding_equal
                else "encoding it again here gives other pixels (another Pillow build?)"
            )
            return (
                f"bitwise (lossy {self.file_format}: the regenerated output equals the recorded output digest, the "
                f"Content Credentials of a trusted signer vouch that the file is the one written, and {pixels})"
            )
        if self.max_abs_diff is None or self.verdict == "bitwise":
            return self.verdict
        psnr = "inf" if self.psnr is None or math.isinf(self.psnr) else f"{self.psnr:.1f}"
        steps = self.max_abs_diff * 255
        return f"{self.verdict} (max abs diff {self.max_abs_diff:.4g} = {steps:.0f}/255, PSNR {psnr} dB)"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (without the image and the records)."""
        return {
            "path": str(self.path) if self.path is not None else None,
            "verdict": self.verdict,
            "bitwise_equal": self.bitwise_equal,
            "output_digest_equal": self.output_digest_equal,
            "pixels_equal": self.pixels_equal,
            "max_abs_diff": self.max_abs_diff,
            "psnr": None if self.psnr is None or math.isinf(self.psnr) else self.psnr,
            "tolerance": self.tolerance,
            "whole_batch": self.whole_batch,
            "file_edited": self.file_edited,
            "file_format": self.file_format,
            "reencoding_equal": self.reencoding_equal,
            "credentials": self.credentials.to_dict() if self.credentials is not None else None,
            "differences": [difference._asdict() for difference in self.differences],
        }


# ----------------------------------------------------------------------------------------------------------------
# Differences


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _flatten(value[key], f"{prefix}.{key}")
    else:
        yield prefix, value


def _compare(
    recorded: dict[str, Any], current: dict[str, Any], skip: frozenset[str] = frozenset()
) -> list[Difference]:
    left, right = dict(_flatten(recorded, "")), dict(_flatten(current, ""))
    differences = []
    for field in sorted(left.keys() | right.keys()):
        name = field.lstrip(".")
        if any(name == prefix or name.startswith(prefix + ".") for prefix in skip):
            continue
        # Floats and ints compare by value (7.5 == 7.5, 1 == 1.0), lists and strings exactly.
        if left.get(field) != right.get(field):
            differences.append(Difference(name, left.get(field), right.get(field)))
    return differences


def _record_fields(record: Provenance) -> dict[str, Any]:
    # jsonable: a record fresh from a pipeline may hold values JSON turns into strings (a Path as name_or_path); a
    # record read from a file holds the strings. Both must compare equal.
    data = jsonable(record.to_dict())
    data.pop("schema", None)
    return data


def record_differences(recorded: Provenance, current: Provenance) -> list[Difference]:
    """Every field in which two records differ, as dotted paths (``environment.torch_num_threads``) with both values.

    Nested objects are compared field by field, lists as a whole. Useful to compare two images' records.

    Example:

    ```py
    >>> from diffusers_repro.files import read_provenance
    >>> from diffusers_repro.replay import record_differences
    >>> for field, a, b in record_differences(read_provenance("a.png"), read_provenance("b.png")):  # doctest: +SKIP
    ...     print(f"{field}: {a!r} -> {b!r}")
    seed: 42 -> 43
    ```
    """
    for name, record in (("recorded", recorded), ("current", current)):
        if not isinstance(record, Provenance):
            raise TypeError(f"{name} must be a diffusers_repro.Provenance, got {type(record).__name__}")
    return _compare(_record_fields(recorded), _record_fields(current))


def _batch_description(batch: dict[str, Any]) -> str:
    named = f", batch {batch['id'][:19]}..." if isinstance(batch.get("id"), str) else ""
    return f"image {batch.get('index')} of a batch of {batch.get('size')} (batch_invariant=False{named})"


def replay_differences(
    recorded: Provenance, current: Provenance, image_file: ImageFile | None, whole_batch: bool = False
) -> list:
    # The regeneration makes this image alone under a seed taken from the record: its own batch and generator
    # bookkeeping differ by construction and are summarized below instead of listed field by field. It passes the
    # sizes the original call left to the pipeline explicitly, so which defaults were resolved differs too (the
    # values themselves are compared in recipe.call).
    skip = frozenset(
        {"seed_source", "recipe.batch", "recipe.generator", "recipe.defaults_resolved", "result.output_digest"}
        # The replay passes the values the call used, so what the caller had asked for is not asked again.
        | {"recipe.requested"}
        # Where the CUDA geometry came from (the device, the caller; a replay takes it from the record) is no cause.
        | {"recipe.rng.geometry_from"}
        | {f"recipe.call.{name}" for name in BATCH_ARGUMENTS}
    )
    differences = _compare(_record_fields(recorded), _record_fields(current), skip)
    batch = recorded.batch
    if batch.get("size", 1) > 1 and not batch.get("batch_invariant", False) and not whole_batch:
        # Kernels block differently for different batch sizes: regenerating alone is not bitwise in general.
        differences.append(Difference("recipe.batch", _batch_description(batch), "generated alone"))
    if batch.get("global_rng_used") and batch.get("global_rng_seed") != current.batch.get("global_rng_seed"):
        # Something drew from torch's global RNG, which the call seeds from all its seeds together.
        differences.append(
            Difference(
                "recipe.batch.global_rng_seed", batch.get("global_rng_seed"), current.batch.get("global_rng_seed")
            )
        )
    generator = recorded.recipe.get("generator")
    emulated = (current.recipe.get("rng") or {}).get("emulated")
    if isinstance(generator, dict) and emulated:
        # A user's torch.Generator("cuda") replayed without that GPU: its draws were computed by PhiloxGenerator.
        geometry = generator.get("geometry")
        differences = [d for d in differences if d.field != "recipe.rng" and not d.field.startswith("recipe.rng.")]
        differences.append(
            Difference(
                "recipe.generator.device",
                f"{generator.get('device')} (torch.Generator('cuda'), geometry {geometry})",
                "emulated by diffusers_repro.PhiloxGenerator (close to the GPU's noise, not bitwise)",
            )
        )
    if isinstance(generator, dict):
        if generator.get("shared_by_batch"):
            differences.append(
                Difference("recipe.generator", "one generator shared by the batch", "its own generator")
            )
        elif not generator.get("seed_certain", True):
            differences.append(
                Difference(
                    "recipe.generator", "generator used before the call", f"fresh generator seeded {current.seed}"
                )
            )
    if image_file is not None and image_file.pixels_intact is False:
        differences.append(Difference("file.pixel_digest", image_file.stored_pixel_digest, image_file.pixel_digest))
    return differences
