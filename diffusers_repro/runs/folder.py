"""A run folder of `diffusers_repro.distributed.generate`: its jobs and files, ``run.json``, the manifest, resume.

The jobs are the prompt x seed grid in a fixed order, prompt-major (`make_jobs`); job ``k``'s image is
``job{index:06d}-seed{seed}.png`` (`job_file_name`). The folder holds:

- one image per job, with its provenance record embedded, each written atomically (temporary file + rename);
- ``manifest.jsonl``: one JSON line per job in job order (see `MANIFEST_FIELDS`), merged by the main process from
  per-process part files (and from the images' own records for any job no part file names);
- ``run.json``: the settings that decide the pixels (model source and weights digests, scheduler, call arguments,
  batch size, batch-invariant mode, thread count, prompts, seeds, ...) as asked, and once the run is complete
  ``used``: the values the pipeline used where it resolved or overrode them (height/width, ...). A rerun with other
  settings in a folder that holds an image is refused with `SettingsMismatchError` unless ``overwrite=True``.

A rerun resumes: a job whose image exists, whose record matches the job and the settings, and whose pixels match the
recorded output digest is kept (`_verified_line`); files left by a killed run are removed (`remove_leftovers`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..generation import validate_seed
from ..records import Provenance, ProvenanceError, jsonable

__all__ = ["MANIFEST_FIELDS", "GenerationJob", "SettingsMismatchError", "job_file_name", "make_jobs"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
RUN_NAME = "run.json"
RUN_FORMAT = "diffusers-repro/run"
RUN_FORMAT_VERSION = 1
JOB_ORDER = "prompt-major: for each prompt, for each seed"
MANIFEST_FIELDS = ("job", "file", "prompt", "seed", "output_digest", "pixel_digest", "noise_digest", "fingerprint")

_JOB_FILE = re.compile(r"^job\d{6,}-seed\d+\.(png|jpg|webp)$")
_PART_PREFIX = ".manifest-part-"
_TEMP_SUFFIX = ".tmp"

# Arguments that generate() sets itself, one job per image: passing them in call_kwargs would break that.
SET_BY_GENERATE = frozenset(
    {
        "prompt",
        "negative_prompt",
        "num_images_per_prompt",
        "batch_size",
        "generator",
        "seed",
        "latents",
        "output_type",
        "return_dict",
        "deterministic",
        "batch_invariant",
        "prompt_embeds",
        "negative_prompt_embeds",
    }
)
# Call parameters that never change pixels: left out of the settings fingerprint.
_NOT_SETTINGS = frozenset({"callback", "callback_steps", "callback_on_step_end", "callback_on_step_end_tensor_inputs"})


class SettingsMismatchError(ValueError):
    """The output folder holds a run made with other settings; ``overwrite=True`` (``--overwrite``) replaces it.

    Args:
        problem (`str`): What is wrong, without the remedy (the command line names its own option).
    """

    _REMEDY = "; rerun with the same settings to resume, or pass {option} to replace its images"

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(problem + self._REMEDY.format(option="overwrite=True"))

    def for_command_line(self) -> str:
        """The message with the command line's ``--overwrite`` as the remedy."""
        return self.problem + self._REMEDY.format(option="--overwrite")


@dataclasses.dataclass(frozen=True)
class GenerationJob:
    """One image of the grid: its index in job order, its prompt (`None` for unconditional pipelines) and seed."""

    index: int
    prompt: str | None
    seed: int
    suffix: str = ".png"

    @property
    def file_name(self) -> str:
        return job_file_name(self.index, self.seed, self.suffix)


def job_file_name(index: int, seed: int, suffix: str = ".png") -> str:
    """The file name of a job's image: ``job{index:06d}-seed{seed}.png`` (``.jpg``, ``.webp`` for those formats).

    Example:

    ```py
    >>> from diffusers_repro.distributed import job_file_name
    >>> job_file_name(12, 42)
    'job000012-seed42.png'
    ```
    """
    return f"job{index:06d}-seed{seed}{suffix}"


def make_jobs(prompts: Sequence[str] | None, seeds: Sequence[int]) -> list[GenerationJob]:
    """The prompt x seed grid in job order: for each prompt, for each seed.

    Args:
        prompts (`list[str]` or `None`):
            The prompts; `None` for an unconditional pipeline (one job per seed).
        seeds (`list[int]`):
            The seeds, each between 0 and 2**64 - 1.

    Example:

    ```py
    >>> from diffusers_repro.distributed import make_jobs
    >>> [(job.index, job.prompt, job.seed) for job in make_jobs(["a fox", "a bear"], [0, 7])]
    [(0, 'a fox', 0), (1, 'a fox', 7), (2, 'a bear', 0), (3, 'a bear', 7)]
    ```
    """
    prompts = check_prompts(prompts)
    seeds = check_seeds(seeds)
    grid = [None] if prompts is None else prompts
    return [
        GenerationJob(index=p * len(seeds) + s, prompt=prompt, seed=seed)
        for p, prompt in enumerate(grid)
        for s, seed in enumerate(seeds)
    ]


# --------------------------------------------------------------------------------------------------------------------
# Checks


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_prompts(prompts: Any) -> list[str] | None:
    if prompts is None:
        return None
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Iterable):
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must hold at least one prompt, got an empty list")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{index}] must be a string, got {prompt!r} of type {type(prompt).__name__}")
    return prompts


def check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, range):
        seeds = list(seeds)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if isinstance(seeds, (list, tuple)):
        checked = validate_seed(list(seeds)) if seeds else None
    else:
        checked = validate_seed(seeds)
    if not checked:
        raise ValueError("seeds must hold at least one seed, got an empty list")
    if not isinstance(checked, list):
        checked = [checked]
    seen: set[int] = set()
    for seed in checked:
        if seed in seen:
            raise ValueError(f"seeds must not repeat, but {seed} appears more than once in {short_repr(checked)}")
        seen.add(seed)
    return checked


def short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def call_parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(type(pipe).__call__).parameters)


# --------------------------------------------------------------------------------------------------------------------
# Settings fingerprint (run.json)


def settings_fingerprint(
    pipe: Any,
    prompts: list[str] | None,
    seeds: list[int],
    *,
    batch_size: int,
    negative_prompt: str | None,
    batch_invariant: bool,
    deterministic: bool,
    threads: int,
    device: torch.device,
    call_kwargs: dict[str, Any],
) -> dict[str, Any]:
    from ..pipelines import scheduler_record, vanilla_pipeline_class

    call = {}
    for name, parameter in call_parameters(pipe).items():
        if name == "self" or name in SET_BY_GENERATE or name in _NOT_SETTINGS:
            continue
        if parameter.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        if name in call_kwargs:
            call[name] = jsonable(call_kwargs[name])
        elif parameter.default is not inspect.Parameter.empty:
            call[name] = jsonable(parameter.default)
    for name, value in call_kwargs.items():
        call.setdefault(name, jsonable(value))
    model = jsonable(pipe._repro_model_record())
    denoiser = pipe._repro_denoiser()
    return {
        "pipeline_class": vanilla_pipeline_class(type(pipe)).__name__,
        "model": {
            "type": model.get("type"),
            "path": model.get("path"),
            "repo_id": model.get("repo_id"),
            "revision": model.get("revision"),
            "weights_digests": {name: record.get("weights_digest") for name, record in model["components"].items()},
        },
        "scheduler": jsonable(scheduler_record(getattr(pipe, "scheduler", None))),
        "dtype": str(denoiser.dtype) if denoiser is not None else None,
        "device_type": device.type,
        "call": call,
        "negative_prompt": negative_prompt,
        "batch_size": batch_size,
        "batch_invariant": batch_invariant,
        "deterministic": deterministic,
        "torch_num_threads": threads,
        "job_order": JOB_ORDER,
        "prompts": prompts,
        "seeds": seeds,
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists stay leaves."""
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _settings_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    old, new = _flatten(recorded), _flatten(current)
    return [
        f"{key}: {short_repr(old.get(key), 60)} -> {short_repr(new.get(key), 60)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _holds_a_finished_image(out_dir: Path) -> bool:
    """Whether the folder holds a job image (images are written atomically: one there is whole)."""
    return any(_JOB_FILE.match(entry.name) and entry.is_file(follow_symlinks=False) for entry in os.scandir(out_dir))


def check_settings(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    run_path = out_dir / RUN_NAME
    # A run binds its folder to its settings only once it made an image: one that failed before (a size the
    # pipeline refuses) can be rerun with other settings, and its run.json is rewritten.
    if overwrite or not run_path.exists() or not _holds_a_finished_image(out_dir):
        return
    try:
        data = json.loads(run_path.read_text(encoding="utf-8"))
        recorded = data["settings"]
        if data.get("format") != RUN_FORMAT or not isinstance(recorded, dict):
            raise ValueError("not a diffusers-repro run file")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SettingsMismatchError(f"out_dir {str(out_dir)!r} has an unreadable {RUN_NAME} ({error})") from None
    differences = _settings_differences(recorded, settings)
    if differences:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise SettingsMismatchError(
            f"out_dir {str(out_dir)!r} holds a run made with other settings ({run_path.name}): {shown}"
        )


# --------------------------------------------------------------------------------------------------------------------
# Files


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")
    # Mode 0o666 lets the umask decide the permissions, as for any new file (tempfile would force 0o600).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _is_leftover(name: str) -> bool:
    """Files of an interrupted run: per-process manifest parts, and temporary files (ours and `save_image`'s are
    both hidden ``.<name>.<random>.tmp`` files next to their target)."""
    return name.startswith(_PART_PREFIX) or (name.startswith(".") and name.endswith(_TEMP_SUFFIX))


def remove_leftovers(out_dir: Path, previous_run_too: bool) -> int:
    removed = 0
    for entry in os.scandir(out_dir):
        if not entry.is_file(follow_symlinks=False):
            continue
        name = entry.name
        if _is_leftover(name) or (previous_run_too and (_JOB_FILE.match(name) or name in (MANIFEST_NAME, RUN_NAME))):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


def file_pixel_digest(path: Path) -> str:
    from ..files import read_image_file

    return read_image_file(path).pixel_digest


def manifest_line(job: GenerationJob, record: Provenance, pixel_digest: str, fingerprint: str) -> dict[str, Any]:
    return {
        "job": job.index,
        "file": job.file_name,
        "prompt": job.prompt,
        "seed": job.seed,
        "output_digest": record.result.get("output_digest"),
        "pixel_digest": pixel_digest,
        "noise_digest": record.result.get("noise_digest"),
        "fingerprint": fingerprint,
    }


def _record_matches(record: Provenance, job: GenerationJob, settings: dict[str, Any], passed: dict[str, Any]) -> bool:
    # Every setting with a value is compared (passed or the pipeline's default); None is skipped, since the record
    # may hold the value the pipeline resolved (height and width from the model's sample size). The images must
    # match even when run.json was lost.
    call = record.call_arguments
    if record.seed != job.seed or record.seed_source != "seed":
        return False
    if job.prompt is not None and call.get("prompt") != job.prompt:
        return False
    if call.get("negative_prompt") != settings["negative_prompt"]:
        return False
    expected = {name: value for name, value in settings["call"].items() if value is not None}
    # The settings hold what was asked; where the pipeline used another value the record keeps the request apart.
    asked = {**call, **(record.recipe.get("requested") or {})}
    for name, value in {**expected, **passed}.items():
        if name in asked and asked[name] != value:
            return False
    if bool(record.batch.get("batch_invariant")) != settings["batch_invariant"]:
        return False
    if record.recipe.get("scheduler") != settings["scheduler"]:
        return False
    if record.environment.get("torch_num_threads") != settings["torch_num_threads"]:
        return False
    if not _rng_matches(record, settings["call"].get("rng", "cpu")):
        return False
    components = record.recipe.get("model", {}).get("components", {})
    recorded_digests = {name: item.get("weights_digest") for name, item in components.items()}
    return recorded_digests == settings["model"]["weights_digests"]


def _rng_matches(record: Provenance, rng: Any) -> bool:
    """The record's noise generators are the ones ``rng`` (a call argument, ``"cpu"`` by default) asks for."""
    from ..generation import parse_rng

    recorded, wanted = record.recipe.get("rng"), parse_rng(rng)
    if wanted == "cpu":
        return recorded is None
    if not isinstance(recorded, dict) or recorded.get("type") != "cuda":
        return False
    return wanted == "cuda" or recorded.get("geometry") == wanted.to_dict()


def _verified_line(
    out_dir: Path, job: GenerationJob, settings: dict[str, Any], passed: dict[str, Any], identity: Any = None
) -> dict[str, Any] | None:
    """The manifest line of a job whose image is complete and intact, else `None` (missing, corrupt, foreign)."""
    return _existing_image(out_dir, job, settings, passed, identity)[0]


def _existing_image(
    out_dir: Path, job: GenerationJob, settings: dict[str, Any], passed: dict[str, Any], identity: Any = None
) -> tuple[dict[str, Any] | None, str | None]:
    """``(manifest line, None)`` for a job whose image is this run's own, ``(None, None)`` when there is none or the
    file in its place is damaged (not a readable image: what a crash may leave; it is made again), and
    ``(None, why)`` for a readable image in its place that is not the run's own: a run trusts only its own files.

    Its own: a regular file whose record matches the job, whose pixels match the digest written with them (a PNG's
    pixel record; a lossy file's encoded-image digest) and the record's output digest, and - when the run signs -
    whose Content Credentials are intact, vouch for that record and were signed under this run's signing identity.
    """
    from ..files import fingerprint, read_image_file, signed_by

    path = out_dir / job.file_name
    if not os.path.lexists(path):
        return None, None
    try:
        image_file = read_image_file(path)
    except (ProvenanceError, OSError, ValueError) as error:
        logger.warning("%s is damaged and will be made again: %s", path, " ".join(str(error).split())[:160])
        return None, None
    record = image_file.provenance
    if not _record_matches(record, job, settings, passed):
        return None, "its record is not this job's (another prompt, seed or setting)"
    # A lossy file's pixels carry the encoder's loss: the digest of the image that was encoded is compared instead.
    written = image_file.source_pixel_digest if image_file.format != "png" else image_file.pixel_digest
    if image_file.pixels_intact is False or written != record.result.get("output_digest"):
        return None, "its pixels are not the ones its record and pixel digest name"
    if identity is not None and not signed_by(image_file, identity):
        return None, f"it is not signed by this run's signer {identity.signer!r}"
    return manifest_line(job, record, image_file.pixel_digest, fingerprint(image_file.image)), None


def job_files(out_dir: Path) -> dict[str, tuple[int, int]]:
    """``{file name: (inode, modification time)}`` of the job images in ``out_dir``."""
    files = {}
    for entry in os.scandir(out_dir):
        if _JOB_FILE.match(entry.name):
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            files[entry.name] = (stat.st_ino, stat.st_mtime_ns)
    return files


def merge_manifest(
    out_dir: Path, jobs: list[GenerationJob], settings: dict[str, Any], passed: dict[str, Any], world: int
) -> None:
    """Merges the part files into ``manifest.jsonl`` (job order, one line per job) and removes them."""
    lines: dict[int, dict[str, Any]] = {}
    parts = sorted(out_dir.glob(f"{_PART_PREFIX}*.jsonl"))
    for part in parts:
        for text in part.read_text(encoding="utf-8").splitlines():
            if text.strip():
                line = json.loads(text)
                lines.setdefault(line["job"], line)
    missing = []
    for job in jobs:
        if job.index not in lines:
            # No part names this job (a part lost on a shared filesystem): the image's own record is the truth.
            line = _verified_line(out_dir, job, settings, passed)
            if line is None:
                missing.append(job.file_name)
            else:
                lines[job.index] = line
    if missing:
        raise RuntimeError(
            f"{len(missing)} job(s) have no valid image in {str(out_dir)!r} after all {world} process(es) finished: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    _write_atomically(out_dir / MANIFEST_NAME, "".join(json.dumps(lines[job.index]) + "\n" for job in jobs))
    for part in parts:
        part.unlink(missing_ok=True)
    _add_used_values(out_dir, jobs[0])


def _add_used_values(out_dir: Path, job: GenerationJob) -> None:
    """Adds to ``run.json`` the values the pipeline used where it resolved or overrode the settings asked for
    (``"used"``: every job of a run shares them), read from the first image's record; ``settings`` stay as asked,
    which is what a rerun is compared with."""
    from ..files import read_provenance

    run_path = out_dir / RUN_NAME
    recipe = read_provenance(out_dir / job.file_name).recipe
    names = recipe.get("defaults_resolved") or []
    call = recipe.get("call") or {}
    used = {name: call[name] for name in names if name in call}
    if recipe.get("denoising_steps") is not None:
        used["denoising_steps"] = recipe["denoising_steps"]
    data = json.loads(run_path.read_text(encoding="utf-8"))
    data.pop("used", None)
    if used:
        data["used"] = used
    _write_atomically(run_path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_run_file(out_dir: Path, settings: dict[str, Any], num_jobs: int, world: int, device: torch.device) -> None:
    """Writes ``run.json``: the settings of the run, and how its last launch ran."""
    run_record = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "settings": settings,
        "num_jobs": num_jobs,
        "last_run": {"num_processes": world, "device": str(device)},
    }
    _write_atomically(out_dir / RUN_NAME, json.dumps(run_record, indent=2, sort_keys=True) + "\n")


def write_manifest_part(out_dir: Path, rank: int, lines: dict[int, dict[str, Any]]) -> None:
    """Writes one process's manifest lines (its own jobs and those it verified) to its part file."""
    _write_atomically(
        out_dir / f"{_PART_PREFIX}{rank:05d}.jsonl",
        "".join(json.dumps(lines[index]) + "\n" for index in sorted(lines)),
    )


def check_existing(
    out_dir: Path,
    batches: list[list[GenerationJob]],
    batch_indices: Iterable[int],
    settings: dict[str, Any],
    passed: dict[str, Any],
    identity: Any = None,
) -> tuple[dict[int, dict[str, Any]], list[tuple[int, list[int]]], list[str]]:
    """The manifest lines of the jobs of ``batches[batch_indices]`` whose images are this run's own, per micro-batch
    the jobs still to make, and the files in the jobs' places that are not this run's (each ``"name: why"``):
    ``(lines, [(batch index, [job index, ...]), ...], foreign)``."""
    lines: dict[int, dict[str, Any]] = {}
    pending = []
    foreign = []
    for batch_index in batch_indices:
        missing = []
        for job in batches[batch_index]:
            line, problem = _existing_image(out_dir, job, settings, passed, identity)
            if line is None:
                missing.append(job.index)
                if problem is not None:
                    foreign.append(f"{job.file_name}: {problem}")
            else:
                lines[job.index] = line
        if missing:
            pending.append((batch_index, missing))
    return lines, pending, foreign


def foreign_files_error(out_dir: Path, foreign: list[str]) -> SettingsMismatchError:
    """The refusal of a run folder holding files in its jobs' places that are not the run's own."""
    shown = "; ".join(foreign[:3]) + (f"; and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return SettingsMismatchError(
        f"out_dir {str(out_dir)!r} holds {len(foreign)} file(s) in this run's places that are not its own images, "
        f"which a resume would keep or silently replace: {shown}; remove them, or pass overwrite=True (--overwrite) "
        "to replace the run's images"
    )
