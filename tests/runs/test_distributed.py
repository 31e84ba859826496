"""Generation across processes: the same bits with 1 and 2 processes, resume after SIGKILL, settings checks.

Multi-process runs use ``torchrun --nproc_per_node 2`` on CPU (gloo), which is what ``accelerate launch --multi_gpu``
runs underneath; ``accelerate launch --cpu`` would start a single process without MPI. Every run pins one torch
thread per process: CPU bits depend on the thread count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from diffusers_repro import ReproStableDiffusionPipeline
from diffusers_repro.files.imagefile import read_image_file
from diffusers_repro.runs.distributed import KILL_HOOK_ENV, generate, micro_batches
from diffusers_repro.runs.folder import SettingsMismatchError, job_file_name, make_jobs
from diffusers_repro.verify.replay import reproduce

PROMPTS = ["a fox", "a bear"]
SEEDS = [0, 1, 2]
STEPS = 2


@pytest.fixture(scope="module")
def pipe(tiny_sd_path):
    pipe = ReproStableDiffusionPipeline.from_pretrained(str(tiny_sd_path))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pipe):
    """The grid made by one process, micro-batches of 2 (the last one holds a single job)."""
    out = tmp_path_factory.mktemp("reference") / "grid"
    result = generate(pipe, PROMPTS, SEEDS, out, batch_size=2, threads=1, progress=False, num_inference_steps=STEPS)
    assert (result.generated, result.skipped, result.num_processes) == (6, 0, 1)
    return out


def torchrun(tiny_sd_path, out, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "diffusers_repro", "generate", "--model", str(tiny_sd_path), "--out", str(out)]
    command += [arg for prompt in PROMPTS for arg in ("--prompt", prompt)]
    command += ["--seeds", ",".join(map(str, SEEDS)), "--steps", str(STEPS), "--threads", "1", *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    full_env.update(env or {})
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=240)


def pixel_digests(folder) -> dict[str, str]:
    return {path.name: read_image_file(path).pixel_digest for path in sorted(folder.glob("*.png"))}


def expected_names(seeds=SEEDS) -> list[str]:
    return [job.file_name for job in make_jobs(PROMPTS, seeds)]


# --------------------------------------------------------------------------------------------------------------------
# Jobs and micro-batches


def test_jobs_are_prompt_major_and_micro_batches_depend_on_batch_size_alone():
    jobs = make_jobs(["a", "b"], [5, 7, 9])
    assert [(job.index, job.prompt, job.seed) for job in jobs] == [
        (0, "a", 5),
        (1, "a", 7),
        (2, "a", 9),
        (3, "b", 5),
        (4, "b", 7),
        (5, "b", 9),
    ]
    assert [[job.index for job in batch] for batch in micro_batches(jobs, 4)] == [[0, 1, 2, 3], [4, 5]]
    assert job_file_name(12, 42) == "job000012-seed42.png"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"seeds": [1, 1]}, ValueError, "seeds must not repeat, but 1 appears more than once"),
        ({"seeds": []}, ValueError, "seeds must hold at least one seed"),
        ({"seeds": [-1]}, ValueError, "seed[0] must be between 0 and"),
        ({"prompts": []}, ValueError, "prompts must hold at least one prompt"),
        ({"prompts": ["a", 3]}, TypeError, "prompts[1] must be a string, got 3"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int, got 0"),
        ({"threads": 0}, ValueError, "threads must be a positive int, got 0"),
        ({"num_images_per_prompt": 2}, TypeError, "generate() sets num_images_per_prompt itself"),
        ({"generator": None}, TypeError, "generate() sets generator itself"),
    ],
)
def test_bad_arguments_name_the_parameter(pipe, tmp_path, kwargs, error, message):
    arguments = {"prompts": ["a"], "seeds": [0], **kwargs}
    with pytest.raises(error) as info:
        generate(pipe, arguments.pop("prompts"), arguments.pop("seeds"), tmp_path / "out", **arguments)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------------------
# One process vs two


def test_two_processes_give_the_same_files_pixels_and_manifest(tmp_path, tiny_sd_path, reference):
    out = tmp_path / "two"
    completed = torchrun(tiny_sd_path, out, "--batch-size", "2")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == sorted([*expected_names(), "manifest.jsonl", "run.json"])
    assert pixel_digests(out) == pixel_digests(reference)
    assert (out / "manifest.jsonl").read_bytes() == (reference / "manifest.jsonl").read_bytes()
    # Log lines name the process; one progress bar, on the main process, counts the images of both.
    assert "[process 0/2]" in completed.stderr and "[process 1/2]" in completed.stderr
    assert completed.stderr.count("| 0/6 [") == 1 and "| 6/6 [" in completed.stderr
    assert "6 images in" in completed.stdout and "by 2 processes" in completed.stdout
    assert completed.stdout.count("6 images in") == 1
    records = [read_image_file(path).provenance for path in sorted(out.glob("*.png"))]
    assert {record.environment["torch_num_threads"] for record in records} == {1}


# --------------------------------------------------------------------------------------------------------------------
# SIGKILL and resume


def test_sigkill_mid_run_then_rerun_completes_the_set(tmp_path, tiny_sd_path, pipe):
    out = tmp_path / "killed"
    # Process 1 SIGKILLs itself right after saving its first image; torchrun then stops process 0.
    killed = torchrun(tiny_sd_path, out, "--no-progress", env={KILL_HOOK_ENV: "1:1"})
    assert killed.returncode != 0
    assert "Signal 9 (SIGKILL)" in killed.stderr
    done = sorted(path.name for path in out.glob("*.png"))
    assert 1 <= len(done) < len(SEEDS) * len(PROMPTS)
    assert not (out / "manifest.jsonl").exists()  # written only once a run completes
    # What else a crash may leave: a half-written temporary image, a per-process manifest part, a corrupt image.
    (out / ".job000005-seed2.png.0123456789ab.tmp").write_bytes(b"\x89PNG half")
    (out / ".manifest-part-00001.jsonl").write_text('{"job": 5}\n')
    corrupt = out / done[0]
    corrupt.write_bytes(corrupt.read_bytes()[:100])

    rerun = torchrun(tiny_sd_path, out, "--no-progress")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == sorted([*expected_names(), "manifest.jsonl", "run.json"])
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [line["job"] for line in lines] == list(range(len(SEEDS) * len(PROMPTS)))
    assert [line["file"] for line in lines] == expected_names()
    # The corrupt image was made again; the intact ones were kept.
    assert f"({len(SEEDS) * len(PROMPTS) - len(done) + 1} generated, {len(done) - 1} already there)" in rerun.stdout
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the recorded count
    try:
        for line in lines:
            result = reproduce(out / line["file"], pipe=pipe)
            assert result.verdict == "bitwise", (line["file"], result.differences)
            assert result.provenance.result["output_digest"] == line["output_digest"] == line["pixel_digest"]
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("batch_invariant", [False, True])
def test_resume_redoes_missing_and_corrupt_images_with_the_same_bits(tmp_path, pipe, reference, batch_invariant):
    out = tmp_path / "grid"
    kwargs = {"batch_size": 2, "threads": 1, "progress": False, "num_inference_steps": STEPS}
    first = generate(pipe, PROMPTS, SEEDS, out, batch_invariant=batch_invariant, **kwargs)
    manifest = (out / "manifest.jsonl").read_bytes()
    if not batch_invariant:
        assert manifest == (reference / "manifest.jsonl").read_bytes()
    (out / "job000001-seed1.png").unlink()  # second job of the first micro-batch
    (out / "job000004-seed1.png").write_bytes(b"not a png")  # first job of the third
    (out / "manifest.jsonl").unlink()
    result = generate(pipe, PROMPTS, SEEDS, out, batch_invariant=batch_invariant, **kwargs)
    assert (result.generated, result.skipped) == (2, 4)
    assert (out / "manifest.jsonl").read_bytes() == manifest
    assert [path.name for path in result.paths] == [path.name for path in first.paths]
    again = generate(pipe, PROMPTS, SEEDS, out, batch_invariant=batch_invariant, **kwargs)
    assert (again.generated, again.skipped) == (0, 6)


def test_a_tampered_pixel_is_refused_by_name_and_overwrite_replaces_it(tmp_path, pipe):
    import numpy as np
    import PIL.Image
    import PIL.PngImagePlugin

    out = tmp_path / "grid"
    kwargs = {"threads": 1, "progress": False, "num_inference_steps": STEPS}
    generate(pipe, ["a fox"], [0, 1], out, **kwargs)
    path = out / "job000000-seed0.png"
    before = read_image_file(path).pixel_digest
    with PIL.Image.open(path) as image:
        image.load()
        pixels = np.asarray(image).copy()
        info = PIL.PngImagePlugin.PngInfo()
        for key, value in image.text.items():
            info.add_itxt(key, value)
    pixels[0, 0, 0] ^= 1
    PIL.Image.fromarray(pixels).save(path, pnginfo=info)
    # A run trusts only its own files: one whose pixels are not the ones it wrote is neither kept nor silently
    # replaced.
    with pytest.raises(SettingsMismatchError, match="job000000-seed0.png: its pixels are not the ones its record"):
        generate(pipe, ["a fox"], [0, 1], out, **kwargs)
    result = generate(pipe, ["a fox"], [0, 1], out, overwrite=True, **kwargs)
    assert (result.generated, result.skipped) == (2, 0)
    assert read_image_file(path).pixel_digest == before


# --------------------------------------------------------------------------------------------------------------------
# Settings


def test_changed_settings_are_refused_unless_overwrite(tmp_path, pipe):
    out = tmp_path / "grid"
    kwargs = {"threads": 1, "progress": False}
    generate(pipe, ["a fox"], [0, 1], out, num_inference_steps=2, **kwargs)
    changes = [
        ({"num_inference_steps": 3}, "call.num_inference_steps: 2 -> 3"),
        ({"num_inference_steps": 2, "guidance_scale": 2.0}, "call.guidance_scale: 7.5 -> 2.0"),
        ({"num_inference_steps": 2, "batch_size": 2}, "batch_size: 1 -> 2"),
        ({"num_inference_steps": 2, "negative_prompt": "blurry"}, "negative_prompt: None -> 'blurry'"),
    ]
    for change, message in changes:
        with pytest.raises(SettingsMismatchError) as info:
            generate(pipe, ["a fox"], [0, 1], out, **kwargs, **change)
        assert message in str(info.value)
        assert "overwrite=True" in str(info.value)
    with pytest.raises(SettingsMismatchError, match=r"seeds: \[0, 1\] -> \[0, 1, 2\]"):
        generate(pipe, ["a fox"], [0, 1, 2], out, num_inference_steps=2, **kwargs)
    with pytest.raises(SettingsMismatchError, match="torch_num_threads: 1 -> 2"):
        generate(pipe, ["a fox"], [0, 1], out, num_inference_steps=2, threads=2, progress=False)
    assert isinstance(SettingsMismatchError("x"), ValueError)

    result = generate(pipe, ["a fox"], [0, 1, 2], out, num_inference_steps=3, overwrite=True, **kwargs)
    assert (result.generated, result.skipped) == (3, 0)
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [job_file_name(index, seed) for index, seed in enumerate([0, 1, 2])] + ["manifest.jsonl", "run.json"]
    )
    assert json.loads((out / "run.json").read_text())["settings"]["call"]["num_inference_steps"] == 3


def test_a_default_passed_explicitly_is_the_same_setting(tmp_path, pipe):
    out = tmp_path / "grid"
    kwargs = {"threads": 1, "progress": False, "num_inference_steps": 2}
    generate(pipe, ["a fox"], [0], out, **kwargs)
    # guidance_scale=7.5 and eta=0.0 are StableDiffusionPipeline's defaults.
    result = generate(pipe, ["a fox"], [0], out, guidance_scale=7.5, eta=0.0, **kwargs)
    assert (result.generated, result.skipped) == (0, 1)


def test_overwrite_keeps_files_that_are_not_ours(tmp_path, pipe):
    out = tmp_path / "grid"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    kwargs = {"threads": 1, "progress": False, "num_inference_steps": 2}
    generate(pipe, ["a fox"], [0], out, **kwargs)
    generate(pipe, ["a bear"], [3], out, overwrite=True, **kwargs)
    assert sorted(path.name for path in out.iterdir()) == [
        "job000000-seed3.png",
        "manifest.jsonl",
        "notes.txt",
        "run.json",
    ]


def test_thread_count_is_restored(tmp_path, pipe):
    previous = torch.get_num_threads()
    result = generate(pipe, ["a fox"], [0], tmp_path / "grid", threads=1, progress=False, num_inference_steps=2)
    assert result.torch_num_threads == 1
    assert torch.get_num_threads() == previous
