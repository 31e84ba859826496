"""Generation of a prompt x seed grid across processes: sharded, resumable, the same bits at any process count.

The jobs are the prompt x seed grid in a fixed order, prompt-major: for each prompt, for each seed. Job ``k`` is
prompt ``k // len(seeds)`` with seed ``k % len(seeds)``. Jobs are cut into micro-batches of ``batch_size``
consecutive jobs; the cut depends on the job order and ``batch_size`` alone, never on the number of processes. One
micro-batch is one pipeline call with one seed per image, so a micro-batch gives the same bits whichever process runs
it, and the output of every job is bitwise identical with 1, 2 or 8 processes (for a fixed torch thread count, which
every process pins to the same value).

Whole micro-batches are spread over the processes of accelerate's `PartialState` (round-robin), so the same code runs
alone, under ``torchrun`` and under ``accelerate launch``. The output folder holds:

- one PNG per job, ``job{index:06d}-seed{seed}.png``, with its provenance record embedded (`save_image`), each
  written atomically (temporary file + rename): a killed process never leaves a half-written image;
- ``manifest.jsonl``: one JSON line per job in job order (see `MANIFEST_FIELDS`), written by the main process once
  every process has finished, from per-process part files (and from the images' own records for any job no part file
  names); a run that does not complete writes no manifest;
- ``run.json``: the settings that decide the pixels (model source and weights digests, scheduler, call arguments,
  batch size, batch-invariant mode, thread count, prompts, seeds, ...). A rerun with other settings is refused with
  `SettingsMismatchError` unless ``overwrite=True``.

A rerun resumes: a job whose image exists, whose record matches the job and the settings, and whose pixels match the
recorded output digest is skipped; missing or corrupt images are made again (their whole micro-batch is recomputed so
that the bits stay those of the original micro-batch); temporary files left by a killed run are removed.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from .provenance import Provenance, ProvenanceError, jsonable
from .seeding import validate_seed

__all__ = [
    "MANIFEST_FIELDS",
    "GenerationJob",
    "GenerationResult",
    "SettingsMismatchError",
    "generate",
    "job_file_name",
    "make_jobs",
    "micro_batches",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
RUN_NAME = "run.json"
RUN_FORMAT = "diffusers-repro/run"
RUN_FORMAT_VERSION = 1
JOB_ORDER = "prompt-major: for each prompt, for each seed"
MANIFEST_FIELDS = ("job", "file", "prompt", "seed", "output_digest", "pixel_digest", "noise_digest", "fingerprint")

# Test hook: "RANK:N" makes the process with that index SIGKILL itself right after saving its N-th image of the run.
# tests/test_distributed.py uses it to check that a process killed mid-run loses only its unfinished images.
KILL_HOOK_ENV = "DIFFUSERS_REPRO_TEST_KILL_AFTER_IMAGES"

_JOB_FILE = re.compile(r"^job\d{6,}-seed\d+\.(png|jpg|webp)$")
_PART_PREFIX = ".manifest-part-"
_TEMP_SUFFIX = ".tmp"
_POLL_SECONDS = 0.5

# Arguments that generate() sets itself, one job per image: passing them in call_kwargs would break that.
_SET_BY_GENERATE = frozenset(
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
    """The output folder holds a run made with other settings; ``overwrite=True`` (``--overwrite``) replaces it."""


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


@dataclasses.dataclass
class GenerationResult:
    """What `generate` did, the same on every process.

    Args:
        out_dir (`Path`): The output folder.
        paths (`list[Path]`): The image of every job, in job order.
        manifest_path (`Path`): ``out_dir / "manifest.jsonl"``.
        run_path (`Path`): ``out_dir / "run.json"``, the settings of the run.
        num_jobs (`int`): ``len(prompts) * len(seeds)``.
        generated (`int`): Images written by this run, over all processes.
        skipped (`int`): Images found complete and verified, kept as they were.
        num_processes (`int`): Processes that shared the work.
        torch_num_threads (`int`): The torch thread count every process used.
    """

    out_dir: Path
    paths: list[Path]
    manifest_path: Path
    run_path: Path
    num_jobs: int
    generated: int
    skipped: int
    num_processes: int
    torch_num_threads: int


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
    prompts = _check_prompts(prompts)
    seeds = _check_seeds(seeds)
    grid = [None] if prompts is None else prompts
    return [
        GenerationJob(index=p * len(seeds) + s, prompt=prompt, seed=seed)
        for p, prompt in enumerate(grid)
        for s, seed in enumerate(seeds)
    ]


def micro_batches(jobs: Sequence[GenerationJob], batch_size: int) -> list[list[GenerationJob]]:
    """Consecutive runs of ``batch_size`` jobs (the last one may be shorter): fixed by job order and batch size alone.

    Example:

    ```py
    >>> from diffusers_repro.distributed import make_jobs, micro_batches
    >>> [[job.index for job in batch] for batch in micro_batches(make_jobs(["a"], range(5)), batch_size=2)]
    [[0, 1], [2, 3], [4]]
    ```
    """
    _check_positive_int("batch_size", batch_size)
    return [list(jobs[start : start + batch_size]) for start in range(0, len(jobs), batch_size)]


# --------------------------------------------------------------------------------------------------------------------
# Checks


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_prompts(prompts: Any) -> list[str] | None:
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


def _check_seeds(seeds: Any) -> list[int]:
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
            raise ValueError(f"seeds must not repeat, but {seed} appears more than once in {_short(checked)}")
        seen.add(seed)
    return checked


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call_parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(type(pipe).__call__).parameters)


def _check_call_kwargs(pipe: Any, call_kwargs: dict[str, Any]) -> None:
    parameters = _call_parameters(pipe)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for name in call_kwargs:
        if name in _SET_BY_GENERATE:
            raise TypeError(
                f"generate() sets {name} itself (one image per job, one seed per image, PIL output); "
                f"remove {name}={_short(call_kwargs[name])} from the call arguments"
            )
        if name not in parameters and not takes_any:
            raise TypeError(f"{type(pipe).__name__}.__call__ has no parameter {name!r}")


# --------------------------------------------------------------------------------------------------------------------
# Settings fingerprint (run.json)


def _settings_fingerprint(
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
    from .mixin import _scheduler_record, vanilla_pipeline_class

    call = {}
    for name, parameter in _call_parameters(pipe).items():
        if name == "self" or name in _SET_BY_GENERATE or name in _NOT_SETTINGS:
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
        "scheduler": jsonable(_scheduler_record(getattr(pipe, "scheduler", None))),
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
        f"{key}: {_short(old.get(key), 60)} -> {_short(new.get(key), 60)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _check_settings(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    run_path = out_dir / RUN_NAME
    if overwrite or not run_path.exists():
        return
    hint = "; rerun with the same settings to resume, or pass overwrite=True (--overwrite) to replace its images"
    try:
        data = json.loads(run_path.read_text(encoding="utf-8"))
        recorded = data["settings"]
        if data.get("format") != RUN_FORMAT or not isinstance(recorded, dict):
            raise ValueError("not a diffusers-repro run file")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SettingsMismatchError(f"out_dir {str(out_dir)!r} has an unreadable {RUN_NAME} ({error}){hint}") from None
    differences = _settings_differences(recorded, settings)
    if differences:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise SettingsMismatchError(
            f"out_dir {str(out_dir)!r} holds a run made with other settings ({run_path.name}): {shown}{hint}"
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


def _remove_leftovers(out_dir: Path, previous_run_too: bool) -> int:
    removed = 0
    for entry in os.scandir(out_dir):
        if not entry.is_file(follow_symlinks=False):
            continue
        name = entry.name
        if _is_leftover(name) or (previous_run_too and (_JOB_FILE.match(name) or name in (MANIFEST_NAME, RUN_NAME))):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


def _pixel_digest(path: Path) -> str:
    from .files import read_image_file

    return read_image_file(path).pixel_digest


def _manifest_line(job: GenerationJob, record: Provenance, pixel_digest: str, fingerprint: str) -> dict[str, Any]:
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
    for name, value in {**expected, **passed}.items():
        if name in call and call[name] != value:
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
    from .cuda_noise import parse_rng

    recorded, wanted = record.recipe.get("rng"), parse_rng(rng)
    if wanted == "cpu":
        return recorded is None
    if not isinstance(recorded, dict) or recorded.get("type") != "cuda":
        return False
    return wanted == "cuda" or recorded.get("geometry") == wanted.to_dict()


def _verified_line(
    out_dir: Path, job: GenerationJob, settings: dict[str, Any], passed: dict[str, Any]
) -> dict[str, Any] | None:
    """The manifest line of a job whose image is complete and intact, else `None` (missing, corrupt, foreign)."""
    from .files import read_image_file
    from .fingerprint import fingerprint

    path = out_dir / job.file_name
    if not path.is_file():
        return None
    try:
        image_file = read_image_file(path)
    except (ProvenanceError, OSError, ValueError):
        return None
    record = image_file.provenance
    if not _record_matches(record, job, settings, passed):
        return None
    # A lossy file's pixels carry the encoder's loss: the digest of the image that was encoded is compared instead.
    written = image_file.source_pixel_digest if image_file.format != "png" else image_file.pixel_digest
    if written != record.result.get("output_digest"):
        return None
    return _manifest_line(job, record, image_file.pixel_digest, fingerprint(image_file.image))


# --------------------------------------------------------------------------------------------------------------------
# Progress


class _FolderProgress:
    """A tqdm bar on the main process that counts the images every process writes, by watching the folder.

    Images are renamed into place only when complete, so a new (or replaced) file under a pending job's name is a
    finished image, whichever process wrote it. Nothing is exchanged between processes, so no process ever waits for
    the bar. ``before`` is the folder as it stood before any process started writing (`_job_files`).
    """

    def __init__(
        self,
        out_dir: Path,
        pending: list[GenerationJob],
        before: dict[str, tuple[int, int]],
        done: int,
        total: int,
        enabled: bool,
    ):
        self.out_dir = out_dir
        self.names = {job.file_name for job in pending}
        self.before = before
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, unit="image", desc="generate", dynamic_ncols=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="diffusers-repro-progress", daemon=True)

    def _refresh(self) -> None:
        if self.bar is not None:
            now = _job_files(self.out_dir)
            written = sum(1 for name in self.names if name in now and now[name] != self.before.get(name))
            self.bar.update(written - (self.bar.n - self.bar.initial))

    def _run(self) -> None:
        while not self._stop.wait(_POLL_SECONDS):
            self._refresh()

    def __enter__(self) -> _FolderProgress:
        if self.bar is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self._stop.set()
            self._thread.join()
            self._refresh()
            self.bar.close()


def _job_files(out_dir: Path) -> dict[str, tuple[int, int]]:
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


# --------------------------------------------------------------------------------------------------------------------
# Processes


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def _process_state(device: str | torch.device | None) -> Any:
    from accelerate import PartialState

    if device is not None:
        device = torch.device(device)
    # Without cpu=True on a machine with no accelerator, every process under torchrun believes it is alone.
    cpu = (device is not None and device.type == "cpu") or (device is None and not _has_accelerator())
    state = PartialState(cpu=cpu)
    if device is not None and device.index is not None and state.num_processes > 1:
        raise ValueError(
            f"device={str(device)!r} names one device, but {state.num_processes} processes share the work; pass the "
            f"device type ({device.type!r}) and each process uses its own"
        )
    return state


def _run_device(state: Any, device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device(state.device)
    device = torch.device(device)
    if device.type == torch.device(state.device).type and device.index is None:
        return torch.device(state.device)
    return device


class _KillHook:
    def __init__(self, process_index: int):
        self.after: int | None = None
        spec = os.environ.get(KILL_HOOK_ENV)
        if spec:
            rank, _, count = spec.partition(":")
            if int(rank) == process_index:
                self.after = int(count)
        self.saved = 0

    def image_saved(self) -> None:
        self.saved += 1
        if self.after is not None and self.saved >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------------------------------------------------
# generate


def generate(
    pipe: Any,
    prompts: Sequence[str] | str | None,
    seeds: Sequence[int] | int,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 1,
    negative_prompt: str | None = None,
    overwrite: bool = False,
    batch_invariant: bool = False,
    deterministic: bool = False,
    threads: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    format: str = "png",
    quality: int | None = None,
    sign: Any = True,
    **call_kwargs: Any,
) -> GenerationResult:
    """Generates the prompt x seed grid into ``out_dir``, sharing micro-batches among the processes of the launch.

    Call it the same way in every process (alone, under ``torchrun`` or ``accelerate launch``); every process returns
    the same `GenerationResult` once the whole set and its manifest are on disk. See the module documentation for the
    job order, the folder layout and resuming.

    Args:
        pipe (`ReproducibleMixin` pipeline):
            A Repro pipeline (e.g. `ReproStableDiffusionPipeline`). It is moved to this process's device.
        prompts (`list[str]`, `str` or `None`):
            The prompts; `None` for an unconditional pipeline (e.g. DDIM), which makes one image per seed.
        seeds (`list[int]` or `int`):
            The seeds; each prompt is generated with every seed. Each between 0 and 2**64 - 1, no repeats.
        out_dir (`str` or `os.PathLike`):
            The output folder, created if missing. Must be shared by all processes.
        batch_size (`int`, *optional*, defaults to 1):
            Jobs per pipeline call. Part of the settings: the bits of an image depend on its micro-batch unless
            ``batch_invariant=True``.
        negative_prompt (`str`, *optional*):
            One negative prompt for every job.
        overwrite (`bool`, *optional*, defaults to `False`):
            Removes the images, manifest and settings of an earlier run in ``out_dir`` and starts afresh. Without
            it, a folder made with other settings raises `SettingsMismatchError`, and one made with the same settings
            is resumed.
        batch_invariant (`bool`, *optional*, defaults to `False`):
            Evaluates the models one image at a time, so an image does not depend on its micro-batch.
        deterministic (`bool`, *optional*, defaults to `False`):
            Runs every call inside ``full_determinism()``.
        threads (`int`, *optional*):
            The torch intra-op thread count of every process (restored afterwards). Defaults to the main process's
            current count, broadcast to all processes. CPU results depend on it, so it is part of the settings.
        device (`str` or `torch.device`, *optional*):
            Defaults to the process's device from accelerate (``cuda:<local rank>``, or the CPU when there is no
            accelerator). ``"cpu"`` forces the CPU.
        progress (`bool`, *optional*, defaults to `True`):
            Shows one progress bar on the main process, counting the images of all processes.
        format (`str`, *optional*, defaults to ``"png"``), quality (`int`, *optional*):
            The image format (``"png"``, ``"jpeg"``, ``"webp"``) and the lossy encoders' quality (default 95).
        sign (`bool` or `SigningIdentity`, *optional*, defaults to `True`):
            Signs every file with Content Credentials: this machine's identity (made once for all processes when
            missing), or the given one; `False` for unsigned files. See `diffusers_repro.save_image`.
        **call_kwargs:
            Further pipeline arguments (``num_inference_steps``, ``guidance_scale``, ``height``, ``width``, ...),
            including the Repro call's ``rng`` (``"cuda"``: the noise of ``torch.Generator("cuda")`` on any device).

    Returns:
        `GenerationResult`: paths in job order, the manifest path, and how many images were generated and skipped.

    Raises:
        `SettingsMismatchError`: when ``out_dir`` holds a run with other settings and ``overwrite`` is `False`.

    Example:

    ```py
    >>> from diffusers_repro import ReproStableDiffusionPipeline
    >>> from diffusers_repro.distributed import generate
    >>> from diffusers_repro.tiny import tiny_pipeline_path
    >>> pipe = ReproStableDiffusionPipeline.from_pretrained(str(tiny_pipeline_path("sd")))
    >>> result = generate(pipe, ["a fox", "a bear"], [0, 1], "outputs/grid", num_inference_steps=2, progress=False)
    >>> [path.name for path in result.paths]
    ['job000000-seed0.png', 'job000001-seed1.png', 'job000002-seed0.png', 'job000003-seed1.png']
    ```
    """
    from accelerate.utils import broadcast_object_list, gather_object

    from .files import check_save_options, image_suffix, save_image, to_pil_image
    from .fingerprint import fingerprint
    from .mixin import ReproducibleMixin

    if not isinstance(pipe, ReproducibleMixin):
        raise TypeError(
            f"pipe must be a Repro pipeline (a ReproducibleMixin subclass such as ReproStableDiffusionPipeline), got "
            f"{type(pipe).__name__}"
        )
    takes_prompt = "prompt" in _call_parameters(pipe)
    if takes_prompt and prompts is None:
        raise ValueError(f"prompts must hold at least one prompt for {type(pipe).__name__}, got None")
    if not takes_prompt and prompts is not None:
        raise ValueError(f"{type(pipe).__name__} takes no prompt, so prompts must be None, got {_short(prompts)}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt must be a string or None, got {_short(negative_prompt)}")
    for name, value in (("overwrite", overwrite), ("batch_invariant", batch_invariant)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}")
    if not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be a bool, got {deterministic!r}")
    if threads is not None:
        _check_positive_int("threads", threads)
    _check_positive_int("batch_size", batch_size)
    _check_call_kwargs(pipe, call_kwargs)
    prompts = _check_prompts(prompts)
    seeds = _check_seeds(seeds)
    format, quality, identity = check_save_options(format, quality, sign)
    jobs = [dataclasses.replace(job, suffix=image_suffix(format)) for job in make_jobs(prompts, seeds)]
    batches = micro_batches(jobs, batch_size)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir {str(out_dir)!r} exists and is not a folder")

    state = _process_state(device)
    rank, world = state.process_index, state.num_processes

    def log(message: str) -> None:
        logger.info("[process %d/%d] %s", rank, world, message)

    previous_threads = torch.get_num_threads()
    if threads is None:
        threads = broadcast_object_list([previous_threads])[0]
    try:
        torch.set_num_threads(threads)
        run_device = _run_device(state, device)
        pipe.to(run_device)
        settings = _settings_fingerprint(
            pipe,
            prompts,
            seeds,
            batch_size=batch_size,
            negative_prompt=negative_prompt,
            batch_invariant=batch_invariant,
            deterministic=deterministic,
            threads=threads,
            device=run_device,
            call_kwargs=call_kwargs,
        )
        if format != "png":
            # Other file names and other bits on disk: a run in another format is another run.
            settings["image_format"] = {"format": format, "quality": quality}
        passed = {name: jsonable(value) for name, value in call_kwargs.items()}
        out_dir.mkdir(parents=True, exist_ok=True)
        # Every process reads the same run.json before the main process rewrites it, so all decide alike.
        _check_settings(out_dir, settings, overwrite)
        state.wait_for_everyone()
        if state.is_main_process:
            removed = _remove_leftovers(out_dir, previous_run_too=overwrite)
            if removed:
                log(f"removed {removed} file(s) of an earlier run" if overwrite else f"removed {removed} temp file(s)")
            run_record = {
                "format": RUN_FORMAT,
                "format_version": RUN_FORMAT_VERSION,
                "settings": settings,
                "num_jobs": len(jobs),
                "last_run": {"num_processes": world, "device": str(run_device)},
            }
            _write_atomically(out_dir / RUN_NAME, json.dumps(run_record, indent=2, sort_keys=True) + "\n")
        state.wait_for_everyone()

        # Existing images are checked in parallel (micro-batch b by process b % world), then the micro-batches that
        # still need work are dealt out afresh, so resumed work is shared evenly too.
        lines: dict[int, dict[str, Any]] = {}
        my_pending = []
        for batch_index in range(rank, len(batches), world):
            missing = []
            for job in batches[batch_index]:
                line = _verified_line(out_dir, job, settings, passed)
                if line is None:
                    missing.append(job.index)
                else:
                    lines[job.index] = line
            if missing:
                my_pending.append((batch_index, missing))
        # Taken before the gather below, so before any process starts writing images.
        before_generation = _job_files(out_dir) if state.is_main_process and progress else {}
        pending = sorted(gather_object(my_pending))
        num_pending = sum(len(missing) for _, missing in pending)
        skipped = len(jobs) - num_pending
        mine = pending[rank::world]
        log(f"{len(jobs)} jobs, {skipped} already done; {len(mine)} of {len(pending)} pending micro-batches here")

        kill_hook = _KillHook(rank)
        generated = 0
        pending_jobs = [jobs[index] for _, missing in pending for index in missing]
        progress_bar = _FolderProgress(
            out_dir,
            pending_jobs,
            before_generation,
            done=skipped,
            total=len(jobs),
            enabled=progress and state.is_main_process,
        )
        with progress_bar:
            for batch_index, missing in mine:
                to_write = set(missing)
                batch = batches[batch_index]
                # Outside batch-invariant mode a job's bits depend on its whole micro-batch: recompute all of it.
                call_jobs = [job for job in batch if job.index in to_write] if batch_invariant else batch
                output = _call(pipe, call_jobs, negative_prompt, batch_invariant, deterministic, call_kwargs)
                for job, image, record in zip(call_jobs, output.images, output.provenance, strict=True):
                    if job.index not in to_write:
                        continue
                    path = save_image(
                        image, out_dir / job.file_name, record, format=format, quality=quality, sign=identity or False
                    )
                    pixels = to_pil_image(image)
                    lines[job.index] = _manifest_line(job, record, _pixel_digest(path), fingerprint(pixels))
                    generated += 1
                    kill_hook.image_saved()
            _write_atomically(
                out_dir / f"{_PART_PREFIX}{rank:05d}.jsonl",
                "".join(json.dumps(lines[index]) + "\n" for index in sorted(lines)),
            )
            log(f"generated {generated} image(s)")
            state.wait_for_everyone()

        merge_error = None
        if state.is_main_process:
            try:
                _merge_manifest(out_dir, jobs, settings, passed, world)
            except Exception as error:
                merge_error = error
        # The other processes learn of a failed merge instead of waiting for the main process forever.
        failure = broadcast_object_list([None if merge_error is None else str(merge_error)])[0]
        if merge_error is not None:
            raise merge_error
        if failure is not None:
            raise RuntimeError(f"the main process could not write the manifest: {failure}")
        counts = gather_object([generated])
        state.wait_for_everyone()
    finally:
        torch.set_num_threads(previous_threads)

    return GenerationResult(
        out_dir=out_dir,
        paths=[out_dir / job.file_name for job in jobs],
        manifest_path=out_dir / MANIFEST_NAME,
        run_path=out_dir / RUN_NAME,
        num_jobs=len(jobs),
        generated=sum(counts),
        skipped=skipped,
        num_processes=world,
        torch_num_threads=threads,
    )


def _call(
    pipe: Any,
    jobs: list[GenerationJob],
    negative_prompt: str | None,
    batch_invariant: bool,
    deterministic: bool,
    call_kwargs: dict[str, Any],
) -> Any:
    arguments = dict(call_kwargs)
    parameters = _call_parameters(pipe)
    if jobs[0].prompt is not None:
        arguments["prompt"] = [job.prompt for job in jobs]
        if "num_images_per_prompt" in parameters:
            arguments["num_images_per_prompt"] = 1
        if negative_prompt is not None:
            # diffusers wants the negative prompt of the same type as the prompt: one per prompt of the list.
            arguments["negative_prompt"] = [negative_prompt] * len(jobs)
    else:
        arguments["batch_size"] = len(jobs)
    return pipe(
        seed=[job.seed for job in jobs],
        output_type="pil",
        deterministic=deterministic,
        batch_invariant=batch_invariant,
        **arguments,
    )


def _merge_manifest(
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
