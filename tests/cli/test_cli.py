"""The ``diffusers-repro`` command line: every command, its help, its output and its exit codes.

Commands run in-process through ``main()`` (fast: no interpreter start, no re-import); one test starts a real
``python -m diffusers_repro`` subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest
import torch

from diffusers_repro.cli import main
from diffusers_repro.cli.common import parse_seeds
from diffusers_repro.files.imagefile import read_image_file, read_provenance

COMMANDS = ("generate", "verify", "inspect", "env", "diff", "demo")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffusers-repro: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_sd_path):
    """2 prompts x 2 seeds generated once for the whole module, 2 steps, 1 thread."""
    out = tmp_path_factory.mktemp("cli") / "grid"
    code = main(
        ["generate", "--model", str(tiny_sd_path), "--prompt", "a fox", "--prompt", "a bear", "--seeds", "0,1"]
        + ["--steps", "2", "--threads", "1", "--no-progress", "--out", str(out)]
    )
    assert code == 0
    return out


# --------------------------------------------------------------------------------------------------------------------
# Help and user errors


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: diffusers-repro {command}")


def test_top_level_help_lists_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out


def test_parse_seeds():
    assert parse_seeds("0-3,42") == [0, 1, 2, 3, 42]
    assert parse_seeds("7") == [7]
    assert parse_seeds(" 1 , 3-4 ") == [1, 3, 4]


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["generate", "--prompt", "a", "--seeds", "5-3", "--out", "x"], ["--seeds '5-3'", "ends before it starts"]),
        (["generate", "--prompt", "a", "--seeds", "1,x", "--out", "x"], ["--seeds '1,x'", "'x' is not a seed"]),
        (["generate", "--prompt", "a", "--seeds", "1,0-2", "--out", "x"], ["the seed 1 appears more than once"]),
        (["generate", "--prompt", "a", "--seeds", f"{2**64}", "--out", "x"], ["past the largest seed"]),
        (["generate", "--prompt", "a", "--seed", "-1", "--out", "x"], ["--seed", "'-1'"]),
        (["generate", "--prompt", "a", "--seed", "1.5", "--out", "x"], ["--seed", "'1.5'"]),
        (["generate", "--prompt", "a", "--seed", "1", "--seeds", "2", "--out", "x"], ["not allowed with"]),
        (["generate", "--prompt", "a", "--seeds", "1", "--num-images", "2", "--out", "x"], ["--num-images"]),
        (["generate", "--prompt", "a", "--steps", "0", "--out", "x"], ["--steps", "positive integer"]),
        (["generate", "--prompt", "a"], ["--out"]),
        (["generate", "--prompt", "a", "--scheduler", "NoSuchScheduler", "--out", "x"], ["'NoSuchScheduler'"]),
        (["generate", "--prompt", "a", "--device", "toaster", "--out", "x"], ["--device 'toaster'"]),
        (["generate", "--prompt", "a", "--dtype", "float64", "--out", "x"], ["--dtype", "float64"]),
        (["generate", "--prompts-file", "no-such-prompts.txt", "--out", "x"], ["no-such-prompts.txt", "no such file"]),
        (["generate", "--model", "./no/such/model", "--prompt", "a", "--out", "x"], ["./no/such/model"]),
        (["verify", "no-such-image.png"], ["no-such-image.png", "no such file"]),
        (["inspect", "no-such-image.png"], ["no-such-image.png"]),
        (["diff", "no-such-a.png", "no-such-b.png"], ["no-such-a.png"]),
        (["verify", "--tolerance", "3", "x.png"], ["--tolerance"]),
        (["teleport"], ["invalid choice", "teleport"]),
        ([], ["a command is required"]),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, monkeypatch, tmp_path, argv, fragments):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert_user_error(code, err, *fragments)


def test_unreadable_images_are_user_errors(capsys, tmp_path):
    not_png = tmp_path / "notes.png"
    not_png.write_text("hello")
    plain = tmp_path / "plain.png"
    PIL.Image.new("RGB", (4, 4)).save(plain)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "inspect", not_png)
    assert_user_error(code, err, "notes.png", "not a PNG")
    # verify refuses the file on one line of its own and goes on (here with no other file), exiting non-zero.
    code, out, _ = run(capsys, "verify", plain)
    assert code == 1
    assert out.splitlines()[0] == (
        f"{plain}: refused: has no 'diffusers-repro' text chunk: it was not saved by diffusers-repro, or its "
        "metadata was stripped (image editors and upload sites often do)"
    )
    code, _, err = run(capsys, "verify", empty)
    assert_user_error(code, err, "folder without image files (.png, .jpg, .jpeg, .webp)")


def test_prompt_is_required_for_a_text_to_image_model(capsys, tmp_path, tiny_sd_path):
    code, _, err = run(capsys, "generate", "--model", tiny_sd_path, "--out", tmp_path / "out")
    assert_user_error(code, err, "--prompt")


def test_unexpected_failures_exit_1_without_traceback(capsys, monkeypatch):
    import diffusers_repro.cli.records as records

    def broken(args):
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(records, "env_command", broken)
    code, _, err = run(capsys, "env")
    assert code == 1
    assert err.strip() == (
        "diffusers-repro: error: RuntimeError: the disk is on fire (run with --traceback for details)"
    )
    code, _, err = run(capsys, "env", "--traceback")
    assert code == 1 and "Traceback" in err


# --------------------------------------------------------------------------------------------------------------------
# generate


def test_generate_writes_images_manifest_and_settings(grid):
    names = ["job000000-seed0.png", "job000001-seed1.png", "job000002-seed0.png", "job000003-seed1.png"]
    assert sorted(path.name for path in grid.iterdir()) == sorted([*names, "manifest.jsonl", "run.json"])
    lines = [json.loads(line) for line in (grid / "manifest.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == names
    assert [(line["job"], line["prompt"], line["seed"]) for line in lines] == [
        (0, "a fox", 0),
        (1, "a fox", 1),
        (2, "a bear", 0),
        (3, "a bear", 1),
    ]
    for line in lines:
        assert list(line) == [
            *("job", "file", "prompt", "seed", "output_digest", "pixel_digest", "noise_digest", "fingerprint")
        ]
        image_file = read_image_file(grid / line["file"])
        assert line["pixel_digest"] == line["output_digest"] == image_file.pixel_digest
        assert line["noise_digest"] == image_file.provenance.result["noise_digest"]
        assert image_file.provenance.call_arguments["num_inference_steps"] == 2
        assert image_file.provenance.environment["torch_num_threads"] == 1
    settings = json.loads((grid / "run.json").read_text())["settings"]
    assert settings["prompts"] == ["a fox", "a bear"] and settings["seeds"] == [0, 1]


def test_generate_seed_and_num_images_and_prompts_file(capsys, tmp_path, tiny_sd_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n\n  a bear  \n", encoding="utf-8")
    out = tmp_path / "out"
    code, out_text, _ = run(
        capsys, "generate", "--model", tiny_sd_path, "--prompts-file", prompts, "--seed", "5", "--num-images", "2",
        "--steps", "2", "--threads", "1", "--scheduler", "EulerDiscreteScheduler", "--height", "32", "--width", "32",
        "--no-progress", "--out", out,
    )  # fmt: skip
    assert code == 0
    assert "4 images" in out_text
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(line["prompt"], line["seed"]) for line in lines] == [
        ("a fox", 5),
        ("a fox", 6),
        ("a bear", 5),
        ("a bear", 6),
    ]
    image_file = read_image_file(out / lines[0]["file"])
    assert image_file.image.size == (32, 32)
    assert image_file.provenance.recipe["scheduler"]["class"] == "EulerDiscreteScheduler"


def test_generate_refuses_changed_settings_then_overwrites(capsys, tmp_path, tiny_sd_path):
    common = ["generate", "--model", tiny_sd_path, "--prompt", "a fox", "--threads", "1", "--no-progress"]
    out = tmp_path / "out"
    assert run(capsys, *common, "--steps", "2", "--out", out)[0] == 0
    code, _, err = run(capsys, *common, "--steps", "3", "--out", out)
    assert_user_error(code, err, "other settings", "call.num_inference_steps: 2 -> 3", "--overwrite")
    code, out_text, _ = run(capsys, *common, "--steps", "3", "--out", out, "--overwrite")
    assert code == 0 and "1 generated" in out_text
    assert read_provenance(out / "job000000-seed0.png").call_arguments["num_inference_steps"] == 3


# --------------------------------------------------------------------------------------------------------------------
# verify


def _tamper(path, delta: int, restamp: bool = False) -> None:
    """Changes one pixel by ``delta`` (8-bit steps), keeping every text chunk.

    With ``restamp`` the stored pixel digest is rewritten to match, as a file written by another machine whose
    result differs slightly: then only the regeneration, not the file itself, tells the difference.
    """
    from diffusers_repro.files.imagefile import PIXELS_KEY
    from diffusers_repro.files.save import pixel_digest

    with PIL.Image.open(path) as image:
        image.load()
        pixels = np.asarray(image).copy()
        chunks = dict(image.text)
    pixels[3, 5, 1] = (int(pixels[3, 5, 1]) + delta) % 256
    changed = PIL.Image.fromarray(pixels)
    if restamp:
        stamp = json.loads(chunks[PIXELS_KEY])
        stamp["pixel_digest"] = pixel_digest(changed)
        chunks[PIXELS_KEY] = json.dumps(stamp, sort_keys=True)
    info = PIL.PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_itxt(key, value)
    changed.save(path, pnginfo=info)


def test_verify_passes_then_catches_a_changed_pixel(capsys, grid, tmp_path):
    code, out, _ = run(capsys, "verify", grid)
    assert code == 0, out
    assert out.count(": bitwise") == 4
    assert out.strip().splitlines()[-1] == "4 images: 4 bitwise, 0 close, 0 different; OK"

    tampered = tmp_path / "tampered.png"
    tampered.write_bytes((grid / "job000001-seed1.png").read_bytes())
    _tamper(tampered, delta=1)
    code, out, _ = run(capsys, "verify", tampered, grid / "job000000-seed0.png")
    assert code == 1
    assert "tampered.png: close" in out
    assert "1 bitwise, 1 close, 0 different; FAILED: 1 image does not reproduce bitwise" in out

    # A file edited after it was written is caught even within a tolerance: its pixels no longer match the digest
    # stored with them.
    code, out, _ = run(capsys, "verify", "--tolerance", "2/255", tampered)
    assert code == 1 and "file.pixel_digest" in out and "edited after it was written" in out

    # The tolerance is for results that differ slightly (other hardware or versions): one 8-bit step is within
    # 2/255, a large change is not.
    drifted = tmp_path / "drifted.png"
    drifted.write_bytes((grid / "job000001-seed1.png").read_bytes())
    _tamper(drifted, delta=1, restamp=True)
    assert run(capsys, "verify", "--tolerance", "2/255", drifted)[0] == 0
    _tamper(drifted, delta=100, restamp=True)
    code, out, _ = run(capsys, "verify", "--tolerance", "2/255", drifted)
    assert code == 1 and "drifted.png: different" in out


def test_verify_json(capsys, grid):
    code, out, _ = run(capsys, "verify", "--json", grid / "job000002-seed0.png")
    assert code == 0
    image, summary = (json.loads(line) for line in out.strip().splitlines())
    assert image["verdict"] == "bitwise" and image["accepted"] is True
    expected = {
        "images": 1,
        "bitwise": 1,
        "close": 0,
        "different": 0,
        "refused": 0,
        "tampered": 0,
        "failed": 0,
        "ok": True,
    }
    assert summary == {"summary": expected}


def test_verify_uses_the_recorded_thread_count(capsys, grid):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run(capsys, "verify", grid)[0] == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------------------------
# inspect, env, diff


def test_inspect_summary_and_json(capsys, grid):
    path = grid / "job000002-seed0.png"
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0
    assert "prompt:          'a bear'" in out
    assert "seed:            0 (from seed)" in out
    assert "steps:           2" in out
    assert "size:            64x64" in out
    assert "1 torch thread(s)" in out
    assert "pixels:          intact" in out
    code, out, _ = run(capsys, "inspect", "--json", path)
    assert code == 0
    assert json.loads(out) == read_provenance(path).to_dict()


def test_env_json(capsys):
    code, out, _ = run(capsys, "env", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["environment"]["device"] == "cpu"
    assert report["environment"]["torch_num_threads"] == torch.get_num_threads()
    assert report["full_determinism_possible"] is True
    assert report["environment"]["determinism"]["full_determinism"] is False  # left as found
    code, out, _ = run(capsys, "env")
    assert code == 0 and "full determinism:  possible here" in out


def test_diff(capsys, grid):
    a, b = grid / "job000000-seed0.png", grid / "job000001-seed1.png"
    code, out, _ = run(capsys, "diff", a, b)
    assert code == 1
    assert "  seed: 0 -> 1" in out
    assert "result.output_digest" in out
    assert "recipe.call.prompt" not in out  # same prompt
    code, out, _ = run(capsys, "diff", "--json", a, grid / "job000002-seed0.png")
    fields = {item["field"]: (item["recorded"], item["current"]) for item in json.loads(out)["records"]}
    assert code == 1 and fields["recipe.call.prompt"] == ("a fox", "a bear")
    code, out, _ = run(capsys, "diff", a, a)
    assert code == 0 and out.splitlines()[-1] == "pixels: identical (4096 pixels)"


# --------------------------------------------------------------------------------------------------------------------
# A real process: python -m diffusers_repro demo


def test_demo_in_a_subprocess(tmp_path, tiny_cache):
    env = {**os.environ, "DIFFUSERS_REPRO_CACHE": str(tiny_cache), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "diffusers_repro", "demo", "--out", str(tmp_path / "demo"), "--steps", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "4/4 images bitwise identical across the two runs" in completed.stdout
    assert "4/4 images reproduce bitwise" in completed.stdout
    assert completed.stdout.count(": bitwise") == 4
    assert sorted(p.name for p in (tmp_path / "demo" / "run-1").glob("*.png")) == [
        "job000000-seed0.png",
        "job000001-seed1.png",
        "job000002-seed0.png",
        "job000003-seed1.png",
    ]


def test_verify_is_bitwise_for_micro_batches_of_several_images(capsys, tmp_path, tiny_sd_path):
    # Without --batch-invariant, an image of a micro-batch of 3 is only bitwise within that batch: verify
    # regenerates the whole batch from the record's prompt lists and seeds.
    out = tmp_path / "batched"
    code = main(
        ["generate", "--model", str(tiny_sd_path), "--prompt", "a fox", "--seeds", "0-2", "--batch-size", "3"]
        + ["--steps", "2", "--threads", "1", "--no-progress", "--out", str(out)]
    )
    assert code == 0
    capsys.readouterr()
    code, printed, _ = run(capsys, "verify", out)
    assert code == 0, printed
    assert printed.strip().splitlines()[-1] == "3 images: 3 bitwise, 0 close, 0 different; OK"


def test_batch_invariant_generate_does_not_depend_on_batch_size(capsys, tmp_path, tiny_sd_path):
    common = ["generate", "--model", str(tiny_sd_path), "--prompt", "a fox", "--prompt", "a bear", "--seeds", "0-2"]
    common += ["--negative-prompt", "blurry", "--guidance", "5", "--deterministic", "--batch-invariant"]
    common += ["--steps", "2", "--threads", "1", "--no-progress"]
    assert main([*common, "--batch-size", "1", "--out", str(tmp_path / "one")]) == 0
    assert main([*common, "--batch-size", "4", "--out", str(tmp_path / "four")]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(names) == 6 and names == sorted(p.name for p in (tmp_path / "four").glob("*.png"))
    from diffusers_repro.files.imagefile import read_image_file

    for name in names:
        one, four = read_image_file(tmp_path / "one" / name), read_image_file(tmp_path / "four" / name)
        assert np.array_equal(one.pixels, four.pixels), name
        call = four.provenance.call_arguments
        assert (call["negative_prompt"], call["guidance_scale"]) == ("blurry", 5.0)
        assert four.provenance.batch["batch_invariant"] is True
        assert four.provenance.environment["determinism"]["full_determinism"] is True
    code, printed, _ = run(capsys, "verify", tmp_path / "four")
    assert code == 0, printed


def test_resume_without_run_json_refuses_images_of_other_settings_until_overwrite(capsys, tmp_path, tiny_sd_path):
    out = tmp_path / "lost-settings"
    common = ["generate", "--model", str(tiny_sd_path), "--prompt", "a fox", "--seeds", "0-1", "--steps", "2"]
    common += ["--threads", "1", "--no-progress", "--out", str(out)]
    assert main([*common, "--guidance", "3"]) == 0
    (out / "run.json").unlink()
    capsys.readouterr()
    # The images' own records say they were made with other settings: refused by name, never kept as done.
    assert main(common) == 2
    assert "job000000-seed0.png: its record is not this job's" in capsys.readouterr().err
    assert main([*common, "--overwrite"]) == 0
    assert "(2 generated, 0 already there)" in capsys.readouterr().out
    from diffusers_repro.files.imagefile import read_provenance

    assert read_provenance(out / "job000000-seed0.png").call_arguments["guidance_scale"] == 7.5
    assert main(common) == 0
    assert "(0 generated, 2 already there)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------------------
# Commands with nothing to compute start fast


@pytest.mark.parametrize(
    "command",
    [
        ["inspect", "{image}"],
        ["inspect", "{image}", "--json"],
        ["diff", "{image}", "{image}"],
        ["find", "{image}", "{folder}"],
        ["keys", "show"],
        ["--help"],
        ["verify", "--help"],
    ],
)
def test_commands_that_load_no_model_import_neither_torch_nor_diffusers(tmp_path, tiny_sd_path, command):
    from diffusers_repro import ReproStableDiffusionPipeline

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_sd_path)
    folder = tmp_path / "images"
    image = pipe("a fox", seed=0, num_inference_steps=1).save(folder)[0]
    argv = [part.format(image=image, folder=folder) for part in command]
    script = (
        "import sys\n"
        "from diffusers_repro.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('HEAVY', sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines()[-1] == "HEAVY []"


# --------------------------------------------------------------------------------------------------------------------
# Issue 16: records say what was made; the CLI behaves the way a newcomer expects


def test_generate_height_alone_records_the_size_made_verifies_and_resumes(capsys, tmp_path, tiny_sd_path):
    common = ["generate", "--model", tiny_sd_path, "--prompt", "a fox", "--height", "30", "--steps", "2"]
    common += ["--threads", "1", "--no-progress", "--out", tmp_path / "run"]
    assert run(capsys, *common)[0] == 0
    path = tmp_path / "run" / "job000000-seed0.png"
    record = read_provenance(path)
    # Vanilla SD ignores height without width: the image is the model's 64x64, and the record says so.
    assert PIL.Image.open(path).size == (64, 64)
    assert (record.call_arguments["height"], record.call_arguments["width"]) == (64, 64)
    assert record.recipe["requested"] == {"height": 30, "width": None}
    assert record.recipe["defaults_resolved"] == ["height", "width"]
    run_file = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_file["settings"]["call"]["height"] == 30 and run_file["used"] == {"height": 64, "width": 64}
    code, out, _ = run(capsys, "verify", path)
    assert code == 0 and "bitwise" in out
    # The same command again resumes: the image is kept.
    code, out, _ = run(capsys, *common)
    assert code == 0 and "0 generated, 1 already there" in out


def test_generate_prints_counts_in_the_right_number(capsys, tmp_path, tiny_sd_path):
    argv = ["generate", "--model", tiny_sd_path, "--prompt", "a fox", "--steps", "1", "--threads", "1"]
    code, out, _ = run(capsys, *argv, "--no-progress", "--out", tmp_path / "one")
    assert code == 0 and out.startswith(f"1 image in {tmp_path / 'one'} (1 generated, 0 already there) by 1 process ")
    assert "with 1 torch thread each;" in out


def test_diff_compares_pixels_beside_the_records(capsys, grid, tmp_path):
    import shutil

    a = grid / "job000000-seed0.png"
    b = shutil.copy(a, tmp_path / "copy.png")
    _tamper(b, 213)
    code, out, _ = run(capsys, "diff", a, b)
    lines = out.splitlines()
    assert code == 1, out
    assert lines[0] == f"the records of {a} and {b} are identical"
    steps = int(np.abs(read_image_file(a).pixels.astype(int) - read_image_file(b).pixels.astype(int)).max())
    assert steps > 0
    assert lines[1].startswith(f"pixels: max abs diff {steps / 255:.4g} ({steps}/255), PSNR ")
    assert lines[1].endswith(" dB, 1 of 4096 pixels differ")
    code, out, _ = run(capsys, "diff", "--json", a, b)
    result = json.loads(out)
    assert code == 1 and result["records"] == []
    assert result["pixels"]["max_abs_diff_steps"] == steps and result["pixels"]["psnr"] > 30


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_missing_or_unreadable_trust_file_is_one_usage_error(capsys, grid, tmp_path, command):
    # Before: verify refused every image ("trust anchor 'missing.pem': no such file") and said they do not reproduce.
    command = [command, grid / "job000000-seed0.png"]
    code, out, err = run(capsys, *command, "--trust", tmp_path / "missing.pem")
    assert_user_error(code, err, "--trust", "missing.pem", "no such file")
    assert out == ""
    code, _, err = run(capsys, *command, "--trust", tmp_path)
    assert_user_error(code, err, "--trust", "not a regular file")


def test_missing_cert_and_key_files_are_usage_errors_before_any_work(capsys, tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("not used")
    argv = ["generate", "--prompt", "a", "--out", tmp_path / "out", "--key", key]
    code, _, err = run(capsys, *argv, "--cert", tmp_path / "chain.pem")
    assert_user_error(code, err, "--cert", "chain.pem", "no such file")
    assert not (tmp_path / "out").exists()


def test_verify_of_a_file_that_is_not_an_image_is_a_usage_error(capsys, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# hello")
    code, out, err = run(capsys, "verify", readme)
    assert_user_error(code, err, "README.md", "not an image file", ".png")
    assert out == ""


def test_abbreviated_options_are_not_guessed(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--prompts", "a fox", "--out", tmp_path)
    assert_user_error(code, err, "generate: unrecognized arguments: --prompts a fox (see diffusers-repro generate")
    code, _, err = run(capsys, "verify", "--tol", "0.1", "x.png")
    assert_user_error(code, err, "--tol")


def test_verify_summary_names_refused_files_apart_from_those_that_do_not_reproduce(capsys, grid, tmp_path):
    plain = tmp_path / "plain.png"
    PIL.Image.new("RGB", (4, 4)).save(plain)
    code, out, _ = run(capsys, "verify", plain, grid / "job000000-seed0.png")
    assert code == 1
    assert out.splitlines()[-1] == (
        "2 images: 1 bitwise, 0 close, 0 different, 1 refused; FAILED: 1 refused (not verified: see the refused "
        "lines for why)"
    )
    assert "do not reproduce" not in out and "does not reproduce" not in out


def test_a_run_that_failed_before_any_image_can_be_rerun_with_other_settings(capsys, tmp_path, tiny_sd_path):
    common = ["generate", "--model", tiny_sd_path, "--prompt", "a fox", "--steps", "1", "--threads", "1"]
    common += ["--no-progress", "--out", tmp_path / "run"]
    code, _, err = run(capsys, *common, "--height", "30", "--width", "30")
    assert code != 0 and "divisible by 8" in err  # diffusers refuses the size after run.json was written
    assert (tmp_path / "run" / "run.json").exists()
    code, out, _ = run(capsys, *common, "--height", "32", "--width", "32")
    assert code == 0 and "1 generated" in out
    # Once the folder holds an image its settings are bound, and the refusal names the command line's option.
    code, _, err = run(capsys, *common, "--height", "40", "--width", "40")
    assert_user_error(code, err, "other settings", "call.height: 32 -> 40", "pass --overwrite")
    assert "overwrite=True" not in err


def test_verify_looks_into_subfolders_with_recursive_and_says_where_images_are(capsys, grid, tmp_path):
    import shutil

    top = tmp_path / "outputs"
    for name in ("run-1", "run-2"):
        (top / name).mkdir(parents=True)
        shutil.copy(grid / "job000000-seed0.png", top / name / "job000000-seed0.png")
    code, _, err = run(capsys, "verify", top)
    assert_user_error(code, err, "holds no image files itself", "run-1", "run-2", "-r (--recursive)")
    code, out, _ = run(capsys, "verify", "-r", top)
    assert code == 0 and out.splitlines()[-1] == "2 images: 2 bitwise, 0 close, 0 different; OK"
    code, out, _ = run(capsys, "verify", "--recursive", top / "run-1")
    assert code == 0 and out.splitlines()[-1] == "1 image: 1 bitwise, 0 close, 0 different; OK"


@pytest.mark.parametrize(
    ("command", "absent", "present"),
    [
        ("diff", "a PNG", "PNG, JPEG or WebP"),
        ("inspect", "a PNG", "PNG, JPEG or WebP"),
        ("generate", "one PNG per job", "one image file per job"),
    ],
)
def test_help_texts_name_every_format(capsys, command, absent, present):
    code, out, _ = run(capsys, command, "--help")
    text = " ".join(out.split())
    assert code == 0 and absent not in text and present in text
