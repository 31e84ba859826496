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

This module runs the processes and the generation loop; the run folder itself (jobs and their file names,
``run.json``, resume checks, the manifest) is `diffusers_repro.runs`.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..records import jsonable
from .folder import (
    MANIFEST_FIELDS,
    MANIFEST_NAME,
    RUN_NAME,
    SET_BY_GENERATE,
    GenerationJob,
    SettingsMismatchError,
    call_parameters,
    check_existing,
    check_positive_int,
    check_prompts,
    check_seeds,
    check_settings,
    file_pixel_digest,
    foreign_files_error,
    job_file_name,
    job_files,
    make_jobs,
    manifest_line,
    merge_manifest,
    remove_leftovers,
    settings_fingerprint,
    short_repr,
    write_manifest_part,
    write_run_file,
)

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


# Test hook: "RANK:N" makes the process with that index SIGKILL itself right after saving its N-th image of the run.
# tests/test_distributed.py uses it to check that a process killed mid-run loses only its unfinished images.
KILL_HOOK_ENV = "DIFFUSERS_REPRO_TEST_KILL_AFTER_IMAGES"

_POLL_SECONDS = 0.5


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


def micro_batches(jobs: Sequence[GenerationJob], batch_size: int) -> list[list[GenerationJob]]:
    """Consecutive runs of ``batch_size`` jobs (the last one may be shorter): fixed by job order and batch size alone.

    Example:

    ```py
    >>> from diffusers_repro.distributed import make_jobs, micro_batches
    >>> [[job.index for job in batch] for batch in micro_batches(make_jobs(["a"], range(5)), batch_size=2)]
    [[0, 1], [2, 3], [4]]
    ```
    """
    check_positive_int("batch_size", batch_size)
    return [list(jobs[start : start + batch_size]) for start in range(0, len(jobs), batch_size)]


# --------------------------------------------------------------------------------------------------------------------
# Checks


def _check_call_kwargs(pipe: Any, call_kwargs: dict[str, Any]) -> None:
    parameters = call_parameters(pipe)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for name in call_kwargs:
        if name in SET_BY_GENERATE:
            raise TypeError(
                f"generate() sets {name} itself (one image per job, one seed per image, PIL output); "
                f"remove {name}={short_repr(call_kwargs[name])} from the call arguments"
            )
        if name not in parameters and not takes_any:
            raise TypeError(f"{type(pipe).__name__}.__call__ has no parameter {name!r}")


# --------------------------------------------------------------------------------------------------------------------
# Progress


class _FolderProgress:
    """A tqdm bar on the main process that counts the images every process writes, by watching the folder.

    Images are renamed into place only when complete, so a new (or replaced) file under a pending job's name is a
    finished image, whichever process wrote it. Nothing is exchanged between processes, so no process ever waits for
    the bar. ``before`` is the folder as it stood before any process started writing (`job_files`).
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
            now = job_files(self.out_dir)
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

    plan = _plan_grid(
        pipe,
        prompts,
        seeds,
        out_dir,
        batch_size=batch_size,
        negative_prompt=negative_prompt,
        overwrite=overwrite,
        batch_invariant=batch_invariant,
        deterministic=deterministic,
        threads=threads,
        format=format,
        quality=quality,
        sign=sign,
        call_kwargs=call_kwargs,
    )
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
        settings = _run_settings(pipe, plan, threads, run_device)
        passed = {name: jsonable(value) for name, value in call_kwargs.items()}
        _prepare_run_folder(state, plan.out_dir, settings, overwrite, len(plan.jobs), run_device, log)
        dealt = _deal_jobs(state, plan, settings, passed, progress)
        log(
            f"{_count(len(plan.jobs), 'job')}, {dealt.skipped} already done; {len(dealt.mine)} of "
            f"{_count(len(dealt.pending), 'pending micro-batch', 'pending micro-batches')} here"
        )
        generated = _run_jobs(pipe, state, plan, dealt, progress)
        log(f"generated {_count(generated, 'image')}")
        _merge_on_main_process(state, plan.out_dir, plan.jobs, settings, passed)
        counts = gather_object([generated])
        state.wait_for_everyone()
    finally:
        torch.set_num_threads(previous_threads)

    return GenerationResult(
        out_dir=plan.out_dir,
        paths=[plan.out_dir / job.file_name for job in plan.jobs],
        manifest_path=plan.out_dir / MANIFEST_NAME,
        run_path=plan.out_dir / RUN_NAME,
        num_jobs=len(plan.jobs),
        generated=sum(counts),
        skipped=dealt.skipped,
        num_processes=world,
        torch_num_threads=threads,
    )


# --------------------------------------------------------------------------------------------------------------------
# The steps of generate: plan the grid, deal the jobs, run them (the manifest is merged by _merge_on_main_process)


@dataclasses.dataclass
class _Plan:
    """The checked grid: its jobs in job order, their micro-batches, the folder and how every call and file is made."""

    prompts: list[str]
    seeds: list[int]
    jobs: list[Any]
    batches: list[Any]
    out_dir: Path
    batch_size: int
    negative_prompt: str | None
    batch_invariant: bool
    deterministic: bool
    call_kwargs: dict[str, Any]
    save_options: dict[str, Any]


def _plan_grid(
    pipe: Any,
    prompts: Any,
    seeds: Any,
    out_dir: str | os.PathLike,
    *,
    batch_size: int,
    negative_prompt: str | None,
    overwrite: bool,
    batch_invariant: bool,
    deterministic: bool,
    threads: int | None,
    format: str,
    quality: int | None,
    sign: Any,
    call_kwargs: dict[str, Any],
) -> _Plan:
    """Every argument checked (before any work), and the grid laid out as jobs and micro-batches."""
    from ..files import check_save_options, image_suffix

    prompts, seeds = _check_arguments(
        pipe,
        prompts,
        seeds,
        negative_prompt,
        overwrite,
        batch_invariant,
        deterministic,
        threads,
        batch_size,
        call_kwargs,
    )
    format, quality, identity = check_save_options(format, quality, sign)
    jobs = [dataclasses.replace(job, suffix=image_suffix(format)) for job in make_jobs(prompts, seeds)]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir {str(out_dir)!r} exists and is not a folder")
    return _Plan(
        prompts=prompts,
        seeds=seeds,
        jobs=jobs,
        batches=micro_batches(jobs, batch_size),
        out_dir=out_dir,
        batch_size=batch_size,
        negative_prompt=negative_prompt,
        batch_invariant=batch_invariant,
        deterministic=deterministic,
        call_kwargs=call_kwargs,
        save_options={"format": format, "quality": quality, "sign": identity or False},
    )


def _run_settings(pipe: Any, plan: _Plan, threads: int, run_device: Any) -> dict[str, Any]:
    """The settings a resumed run must share with the run in the folder (``run.json``)."""
    settings = settings_fingerprint(
        pipe,
        plan.prompts,
        plan.seeds,
        batch_size=plan.batch_size,
        negative_prompt=plan.negative_prompt,
        batch_invariant=plan.batch_invariant,
        deterministic=plan.deterministic,
        threads=threads,
        device=run_device,
        call_kwargs=plan.call_kwargs,
    )
    format, quality = plan.save_options["format"], plan.save_options["quality"]
    if format != "png":
        # Other file names and other bits on disk: a run in another format is another run.
        settings["image_format"] = {"format": format, "quality": quality}
    return settings


@dataclasses.dataclass
class _Dealt:
    """What this process does: its manifest lines of finished jobs, and its share of the pending micro-batches."""

    lines: dict[int, Any]
    pending: list[tuple[int, list[int]]]
    mine: list[tuple[int, list[int]]]
    skipped: int
    before_generation: dict[str, Any]


def _deal_jobs(state: Any, plan: _Plan, settings: dict[str, Any], passed: dict[str, Any], progress: bool) -> _Dealt:
    from accelerate.utils import gather_object

    rank, world = state.process_index, state.num_processes
    identity = plan.save_options["sign"] or None
    # Existing images are checked in parallel (micro-batch b by process b % world), then the micro-batches that
    # still need work are dealt out afresh, so resumed work is shared evenly too.
    lines, my_pending, my_foreign = check_existing(
        plan.out_dir, plan.batches, range(rank, len(plan.batches), world), settings, passed, identity
    )
    # Every process learns of every foreign file, so all refuse alike (no process waits for another forever).
    foreign = sorted(gather_object(my_foreign))
    if foreign:
        raise foreign_files_error(plan.out_dir, foreign)
    # Taken before the gather below, so before any process starts writing images.
    before_generation = job_files(plan.out_dir) if state.is_main_process and progress else {}
    pending = sorted(gather_object(my_pending))
    num_pending = sum(len(missing) for _, missing in pending)
    return _Dealt(
        lines=lines,
        pending=pending,
        mine=pending[rank::world],
        skipped=len(plan.jobs) - num_pending,
        before_generation=before_generation,
    )


def _run_jobs(pipe: Any, state: Any, plan: _Plan, dealt: _Dealt, progress: bool) -> int:
    """Generates this process's micro-batches and writes its part of the manifest: the number of images made."""
    kill_hook = _KillHook(state.process_index)
    generated = 0
    pending_jobs = [plan.jobs[index] for _, missing in dealt.pending for index in missing]
    progress_bar = _FolderProgress(
        plan.out_dir,
        pending_jobs,
        dealt.before_generation,
        done=dealt.skipped,
        total=len(plan.jobs),
        enabled=progress and state.is_main_process,
    )
    with progress_bar:
        for batch_index, missing in dealt.mine:
            generated += _generate_batch(
                pipe,
                plan.batches[batch_index],
                set(missing),
                dealt.lines,
                plan.out_dir,
                kill_hook,
                negative_prompt=plan.negative_prompt,
                batch_invariant=plan.batch_invariant,
                deterministic=plan.deterministic,
                call_kwargs=plan.call_kwargs,
                save_options=plan.save_options,
            )
        write_manifest_part(plan.out_dir, state.process_index, dealt.lines)
        state.wait_for_everyone()
    return generated


def _check_arguments(
    pipe: Any,
    prompts: Any,
    seeds: Any,
    negative_prompt: Any,
    overwrite: Any,
    batch_invariant: Any,
    deterministic: Any,
    threads: Any,
    batch_size: Any,
    call_kwargs: dict[str, Any],
) -> tuple[list[str] | None, list[int]]:
    """Checks `generate`'s arguments before any work; returns the prompts and seeds as lists."""
    from ..pipelines import ReproducibleMixin

    if not isinstance(pipe, ReproducibleMixin):
        raise TypeError(
            f"pipe must be a Repro pipeline (a ReproducibleMixin subclass such as ReproStableDiffusionPipeline), got "
            f"{type(pipe).__name__}"
        )
    takes_prompt = "prompt" in call_parameters(pipe)
    if takes_prompt and prompts is None:
        raise ValueError(f"prompts must hold at least one prompt for {type(pipe).__name__}, got None")
    if not takes_prompt and prompts is not None:
        raise ValueError(f"{type(pipe).__name__} takes no prompt, so prompts must be None, got {short_repr(prompts)}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt must be a string or None, got {short_repr(negative_prompt)}")
    for name, value in (("overwrite", overwrite), ("batch_invariant", batch_invariant)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}")
    if not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be a bool, got {deterministic!r}")
    if threads is not None:
        check_positive_int("threads", threads)
    check_positive_int("batch_size", batch_size)
    _check_call_kwargs(pipe, call_kwargs)
    prompts = check_prompts(prompts)
    seeds = check_seeds(seeds)
    return prompts, seeds


def _count(number: int, noun: str, plural: str | None = None) -> str:
    """``"1 job"``, ``"4 jobs"``: a count with its noun in the right number, for the log lines."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def _prepare_run_folder(
    state: Any,
    out_dir: Path,
    settings: dict[str, Any],
    overwrite: bool,
    num_jobs: int,
    run_device: torch.device,
    log: Callable[[str], None],
) -> None:
    """Refuses a folder with other settings, then the main process clears leftovers and writes ``run.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Every process reads the same run.json before the main process rewrites it, so all decide alike.
    check_settings(out_dir, settings, overwrite)
    state.wait_for_everyone()
    if state.is_main_process:
        removed = remove_leftovers(out_dir, previous_run_too=overwrite)
        if removed:
            log(
                f"removed {_count(removed, 'file')} of an earlier run"
                if overwrite
                else f"removed {_count(removed, 'temporary file')}"
            )
        write_run_file(out_dir, settings, num_jobs, state.num_processes, run_device)
    state.wait_for_everyone()


def _generate_batch(
    pipe: Any,
    batch: list[GenerationJob],
    to_write: set[int],
    lines: dict[int, dict[str, Any]],
    out_dir: Path,
    kill_hook: _KillHook,
    *,
    negative_prompt: str | None,
    batch_invariant: bool,
    deterministic: bool,
    call_kwargs: dict[str, Any],
    save_options: dict[str, Any],
) -> int:
    """Makes one micro-batch and saves the images of the jobs in ``to_write``; returns how many it saved."""
    from ..files import fingerprint, save_image, to_pil_image

    generated = 0
    # Outside batch-invariant mode a job's bits depend on its whole micro-batch: recompute all of it.
    call_jobs = [job for job in batch if job.index in to_write] if batch_invariant else batch
    output = _call(pipe, call_jobs, negative_prompt, batch_invariant, deterministic, call_kwargs)
    for job, image, record in zip(call_jobs, output.images, output.provenance, strict=True):
        if job.index not in to_write:
            continue
        path = save_image(image, out_dir / job.file_name, record, **save_options)
        pixels = to_pil_image(image)
        lines[job.index] = manifest_line(job, record, file_pixel_digest(path), fingerprint(pixels))
        generated += 1
        kill_hook.image_saved()
    return generated


def _merge_on_main_process(
    state: Any, out_dir: Path, jobs: list[GenerationJob], settings: dict[str, Any], passed: dict[str, Any]
) -> None:
    """The main process writes the manifest; every process raises if that failed."""
    from accelerate.utils import broadcast_object_list

    merge_error = None
    if state.is_main_process:
        try:
            merge_manifest(out_dir, jobs, settings, passed, state.num_processes)
        except Exception as error:
            merge_error = error
    # The other processes learn of a failed merge instead of waiting for the main process forever.
    failure = broadcast_object_list([None if merge_error is None else str(merge_error)])[0]
    if merge_error is not None:
        raise merge_error
    if failure is not None:
        raise RuntimeError(f"the main process could not write the manifest: {failure}")


def _call(
    pipe: Any,
    jobs: list[GenerationJob],
    negative_prompt: str | None,
    batch_invariant: bool,
    deterministic: bool,
    call_kwargs: dict[str, Any],
) -> Any:
    arguments = dict(call_kwargs)
    parameters = call_parameters(pipe)
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
