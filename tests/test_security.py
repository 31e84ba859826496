"""Files from anyone: a record chooses no code, takes no machine, leaks no other image's prompt."""

from __future__ import annotations

import io
import json
import os
import re
import struct

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest
import torch

import diffusers_repro.verify.replay as replay
from diffusers_repro import ProvenanceError, ReproStableDiffusionPipeline
from diffusers_repro.cli import main
from diffusers_repro.files.imagefile import PROVENANCE_KEY, ImageProvenanceError, read_provenance
from diffusers_repro.files.save import save_image
from diffusers_repro.records.provenance import Provenance
from diffusers_repro.verify.limits import LimitExceededError, ReplayLimits, check_limits, usable_threads
from diffusers_repro.verify.replay import ReproductionError, reproduce

STEPS = 2


@pytest.fixture(scope="module")
def alone(sd):
    """One image made alone, with its record as a dict to edit."""
    return sd("a fox", seed=3, num_inference_steps=STEPS)


def _write_record(path, data, size=(8, 8)):
    """A PNG whose record chunk holds ``data`` (a dict, or text as is): what anyone can write."""
    info = PIL.Image.new("RGB", size)
    pnginfo = PIL.PngImagePlugin.PngInfo()
    pnginfo.add_itxt(PROVENANCE_KEY, data if isinstance(data, str) else json.dumps(data))
    info.save(path, format="PNG", pnginfo=pnginfo)
    return path


def _edited(output, edit):
    data = output.provenance[0].to_dict()
    edit(data)
    return data


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------- nothing chooses code


def test_a_lora_operation_naming_a_pipeline_method_is_refused_and_runs_nothing(alone, tmp_path, capsys):
    target = tmp_path / "written-by-the-file"

    def edit(data):
        data["recipe"]["model"]["lora"] = {"operations": [{"op": "save_pretrained", "save_directory": str(target)}]}

    evil = _write_record(tmp_path / "evil.png", _edited(alone, edit))
    good = save_image(alone.images[0], tmp_path / "good.png", alone.provenance[0])
    message = (
        "provenance record: recipe.model.lora.operations[0].op must be one of the LoRA operations load_lora_weights, "
        "set_adapters, delete_adapters, fuse_lora, unfuse_lora, unload_lora_weights, enable_lora, disable_lora, got "
        "'save_pretrained'"
    )
    with pytest.raises(ImageProvenanceError, match=re.escape(message.replace("provenance record", f"in {evil}"))):
        reproduce(evil)
    code, out, _ = run(capsys, "verify", evil, good)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{evil}: refused: {message}"
    assert lines[1] == f"{good}: bitwise"
    assert lines[-1].startswith("2 images: 1 bitwise, 0 close, 0 different, 1 refused; FAILED")
    assert not target.exists()


@pytest.mark.parametrize(
    "operation, field",
    [
        ({"op": "set_adapters", "adapter_names": ["a"], "save_directory": "/tmp/x"}, "save_directory"),
        ({"op": "fuse_lora", "kwargs": {"push_to_hub": True}}, "kwargs.push_to_hub"),
        ({"op": "unload_lora_weights", "repo_id": "someone/else"}, "repo_id"),
    ],
)
def test_an_allowed_lora_operation_takes_only_its_own_arguments(alone, operation, field):
    data = _edited(alone, lambda d: d["recipe"]["model"].update(lora={"operations": [operation]}))
    with pytest.raises(ProvenanceError, match=re.escape(f"recipe.model.lora.operations[0].{field} must be absent")):
        Provenance.from_dict(data)


def test_a_call_argument_the_pipeline_does_not_name_is_never_passed(sd, alone):
    data = _edited(alone, lambda d: d["recipe"]["call"].update(safety_override=1))
    message = (
        "the record's call argument safety_override=1 is not a parameter of ReproStableDiffusionPipeline.__call__"
    )
    with pytest.raises(ReproductionError, match=re.escape(message)):
        reproduce(Provenance.from_dict(data), pipe=sd)


@pytest.mark.parametrize("name", ["DiffusionPipeline", "UNet2DConditionModel", "load_image", "os"])
def test_only_diffusers_own_pipeline_classes_are_loaded(alone, name):
    record = Provenance.from_dict(_edited(alone, lambda d: d["recipe"].update(pipeline_class=name)))
    with pytest.raises(ReproductionError, match=f"the record's pipeline_class '{name}' is not a pipeline class"):
        replay.load_pipeline(record)


def test_a_non_scheduler_class_is_not_built_from_the_record(alone):
    data = _edited(alone, lambda d: d["recipe"]["scheduler"].update({"class": "AutoencoderKL"}))
    assert replay._recorded_schedulers(Provenance.from_dict(data)) == {}


def test_weights_load_as_safetensors_only_unless_pickle_is_allowed(tmp_path, tiny_ddim_path):
    from diffusers import DDIMPipeline

    from diffusers_repro import ReproDDIMPipeline

    folder = tmp_path / "pickled-ddim"
    DDIMPipeline.from_pretrained(tiny_ddim_path).save_pretrained(folder, safe_serialization=False)
    assert list(folder.glob("unet/*.bin"))
    record = ReproDDIMPipeline.from_pretrained(folder)(num_inference_steps=STEPS, seed=1).provenance[0]
    with pytest.raises(ReproductionError, match=f"cannot load the record's model {re.escape(str(folder))}"):
        replay.load_pipeline(record)
    assert reproduce(record, allow_pickle=True).verdict == "bitwise"


def test_verify_allow_pickle_flag(tmp_path, tiny_ddim_path, capsys):
    from diffusers import DDIMPipeline

    from diffusers_repro import ReproDDIMPipeline

    folder = tmp_path / "pickled-ddim"
    DDIMPipeline.from_pretrained(tiny_ddim_path).save_pretrained(folder, safe_serialization=False)
    out = ReproDDIMPipeline.from_pretrained(folder)(num_inference_steps=STEPS, seed=1)
    path = save_image(out.images[0], tmp_path / "ddim.png", out.provenance[0])
    code, printed, _ = run(capsys, "verify", path)
    assert code == 1 and printed.startswith(f"{path}: refused: cannot load the record's model {folder}")
    code, printed, _ = run(capsys, "verify", "--allow-pickle", path)
    assert code == 0 and printed.startswith(f"{path}: bitwise")


def test_a_pickled_lora_file_is_refused_unless_pickle_is_allowed(alone, tmp_path):
    weights = tmp_path / "pytorch_lora_weights.bin"
    weights.write_bytes(b"not loaded")
    operation = {"op": "load_lora_weights", "adapter_name": "x", "source": {"type": "local", "path": str(weights)}}
    with pytest.raises(ReproductionError, match="which is not a safetensors file; loading a pickled file can run"):
        replay._replay_lora_operations(None, [operation])


# ----------------------------------------------------------------------------------------------------- bounded work


def test_a_huge_image_is_refused_before_any_model_loads(alone, tmp_path, monkeypatch, capsys):
    data = _edited(alone, lambda d: d["recipe"]["call"].update(height=8192, width=8192))
    path = _write_record(tmp_path / "huge.png", data)
    monkeypatch.setattr(replay, "load_pipeline", lambda *a, **k: pytest.fail("a model was loaded"))
    message = (
        "the record asks for recipe.call.height x width = 8192x8192 (67108864 pixels), above the replay limit "
        "max_pixels=16777216; pass limits=ReplayLimits(max_pixels=...) or --max-pixels to allow it"
    )
    with pytest.raises(LimitExceededError, match=re.escape(message)):
        reproduce(path)  # refused before any model loads (load_pipeline fails the test if reached)
    code, out, _ = run(capsys, "verify", path)
    assert code == 1 and out.splitlines()[0] == f"{path}: refused: {message}"
    check_limits(Provenance.from_dict(data), ReplayLimits(max_pixels=8192 * 8192))  # a user who means it


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["recipe"]["call"].update(num_inference_steps=5000),
            "recipe.call.num_inference_steps = 5000, above the replay limit max_steps=1000",
        ),
        (
            lambda d: d["recipe"]["call"].update(timesteps=list(range(2000))),
            "recipe.call.timesteps = 2000 values, above the replay limit max_steps=1000",
        ),
    ],
)
def test_steps_are_bounded(alone, edit, message):
    with pytest.raises(LimitExceededError, match=re.escape(message)):
        reproduce(Provenance.from_dict(_edited(alone, edit)))


def test_a_whole_batch_replay_is_bounded_and_the_flag_lifts_it(sd, tmp_path, capsys):
    out = sd("a fox", num_images_per_prompt=3, seed=1, num_inference_steps=STEPS)
    paths = out.save(tmp_path)
    with pytest.raises(LimitExceededError, match=re.escape("recipe.batch.size = 3 images in one call")):
        reproduce(out.provenance[0], pipe=sd, limits=ReplayLimits(max_batch_images=2))
    code, printed, _ = run(capsys, "verify", "--max-batch-images", "2", paths[0])
    assert code == 1 and "refused: the record asks for recipe.batch.size = 3 images" in printed
    assert reproduce(out.provenance[0], pipe=sd, limits=ReplayLimits(max_batch_images=3)).verdict == "bitwise"


def test_thread_counts_above_the_cores_are_never_applied(alone, tmp_path, capsys, monkeypatch):
    cores = os.cpu_count()
    assert usable_threads(cores + 100, 1) == cores and usable_threads(1, 4) == 1 and usable_threads(None, 1) == 1
    data = _edited(alone, lambda d: d["environment"].update(torch_num_threads=cores + 100))
    path = save_image(alone.images[0], tmp_path / "threads.png", Provenance.from_dict(data))
    applied = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: applied.append(n) or real(n))
    run(capsys, "verify", path)
    assert applied and max(applied) <= cores


# -------------------------------------------------------------------------------------------- a reader not crashed


@pytest.mark.parametrize("depth", [200_000, 33])
def test_a_deeply_nested_record_is_a_provenance_error(tmp_path, depth):
    path = _write_record(tmp_path / "deep.png", "[" * depth + "]" * depth)
    with pytest.raises(ImageProvenanceError, match=f"nests {depth} levels deep, at most 32 are read"):
        read_provenance(path)


def test_a_huge_image_file_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    PIL.Image.new("1", (9000, 8000)).save(path)
    with pytest.raises(ImageProvenanceError, match="is 9000x8000 pixels, more than the 67108864 pixels"):
        read_provenance(path)


# ---------------------------------------------------------------------------------------------------- no prompt leak


def _chunks_text(path):
    with PIL.Image.open(path) as image:
        image.load()
        return json.dumps(image.text)


def test_a_record_holds_no_other_image_prompt_and_the_batch_replays_from_its_siblings(sd, tmp_path):
    out = sd(["a fox", "a private prompt"], seed=1, num_inference_steps=STEPS)
    paths = out.save(tmp_path / "batch")
    assert "private" not in _chunks_text(paths[0]) and "a fox" not in _chunks_text(paths[1])
    batch = out.provenance[0].batch
    assert batch["same_prompts"] is False and batch["prompt_list_lengths"] == {"prompt": 2}
    assert batch["record_digests"] == out.provenance[1].batch["record_digests"] and len(batch["record_digests"]) == 2
    assert batch["id"] == out.provenance[1].batch["id"] and batch["id"].startswith("sha256:")
    # Beside the file: the whole batch, bitwise.
    result = reproduce(paths[0], pipe=sd)
    assert result.whole_batch and result.verdict == "bitwise", result.differences
    # Without the sibling: alone, and the batch is named among the differences.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = paths[1].rename(elsewhere / paths[1].name)
    alone_result = reproduce(paths[0], pipe=sd)
    assert not alone_result.whole_batch
    assert [d.field for d in alone_result.differences if d.field == "recipe.batch"] == ["recipe.batch"]
    assert batch["id"][:19] in next(d.recorded for d in alone_result.differences if d.field == "recipe.batch")
    with pytest.raises(ReproductionError, match="the records of its siblings in batch sha256:"):
        reproduce(paths[0], pipe=sd, whole_batch=True)
    # batch_from= names where they are.
    assert reproduce(paths[0], pipe=sd, batch_from=[moved]).verdict == "bitwise"


def test_a_sibling_whose_record_was_edited_is_not_used(sd, tmp_path):
    out = sd(["a fox", "a bear"], seed=1, num_inference_steps=STEPS)
    edited = Provenance.from_dict(out.provenance[1].to_dict())
    edited.recipe["call"]["prompt"] = "something else"
    result = reproduce(out.provenance[0], pipe=sd, batch_from=[out.provenance[0], edited])
    assert not result.whole_batch


def test_a_same_prompt_batch_says_so_and_replays_from_its_record_alone(sd, tmp_path):
    out = sd(["a fox", "a fox"], num_images_per_prompt=2, seed=4, num_inference_steps=STEPS, output_type="np")
    record = out.provenance[3]
    assert record.batch["same_prompts"] is True and record.batch["prompt_list_lengths"] == {"prompt": 2}
    result = reproduce(record, pipe=sd)
    assert result.whole_batch and result.verdict == "bitwise"
    np.testing.assert_array_equal(result.image, out.images[3])


def test_a_version_1_record_with_its_prompt_lists_still_replays_its_batch(sd):
    out = sd(["a fox", "a bear"], seed=2, num_inference_steps=STEPS, output_type="np")
    data = out.provenance[1].to_dict()
    batch = data["recipe"]["batch"]
    for key in ("id", "record_digests", "same_prompts", "prompt_list_lengths"):
        batch.pop(key)
    batch["prompt_lists"] = {"prompt": ["a fox", "a bear"]}
    data["schema_version"] = 1
    result = reproduce(Provenance.from_dict(data), pipe=sd)
    assert result.whole_batch and result.verdict == "bitwise"


# -------------------------------------------------------------------------------------------------------- inspect


def test_inspect_of_a_hostile_file_shows_it_escaped_and_runs_nothing(alone, tmp_path, capsys, monkeypatch):
    data = _edited(alone, lambda d: d["recipe"]["model"].update(lora={"operations": [{"op": "push_to_hub"}]}))
    path = tmp_path / "hostile.png"
    pnginfo = PIL.PngImagePlugin.PngInfo()
    pnginfo.add_itxt(PROVENANCE_KEY, json.dumps(data))
    pnginfo.add_itxt("parameters", "\x1b[2Jcleared\nSteps: 2")  # an escape sequence that would clear a terminal
    PIL.Image.new("RGB", (8, 8)).save(path, format="PNG", pnginfo=pnginfo)
    monkeypatch.setattr(ReproStableDiffusionPipeline, "__call__", lambda *a, **k: pytest.fail("ran a pipeline"))
    code, out, _ = run(capsys, "inspect", path)
    assert code == 1
    lines = out.splitlines()
    assert lines[1].startswith("refused:         provenance record: recipe.model.lora.operations[0].op must be one of")
    assert "\x1b" not in out and "\\x1b[2Jcleared\\nSteps: 2" in out and "got 'push_to_hub'" in out


# ------------------------------------------------------------------------------------------ hostile JPEG and WebP


def _jpeg_claiming_size(path, record_json, width, height):
    """A JPEG with a record whose frame header claims ``width x height`` pixels: a decompression bomb."""
    from diffusers_repro.files.lossy import _xmp_packet

    buffer = io.BytesIO()
    PIL.Image.new("RGB", (8, 8)).save(buffer, format="JPEG", xmp=_xmp_packet(record_json, "{}"))
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def _manifest_longer_than_its_box(path):
    data = bytearray(path.read_bytes())
    data[data.index(b"frecordy") + len(b"frecordy")] ^= 0x20
    path.write_bytes(bytes(data))
    return path


def test_verify_of_a_folder_of_hostile_files_refuses_each_and_goes_on(alone, tmp_path, capsys):
    folder = tmp_path / "from-anyone"
    folder.mkdir()
    record_json = alone.provenance[0].to_json()
    bomb = _jpeg_claiming_size(folder / "a-bomb.jpg", record_json, 12000, 12000)
    manifest = _manifest_longer_than_its_box(
        save_image(alone.images[0], folder / "b-manifest.jpg", alone.provenance[0], format="jpeg")
    )
    empty = folder / "c-empty.webp"
    empty.write_bytes(b"")
    good = save_image(alone.images[0], folder / "d-good.png", alone.provenance[0])
    code, out, err = run(capsys, "verify", folder)
    lines = out.splitlines()
    assert (code, err) == (1, "")
    assert lines[0] == f"{bomb}: refused: is 12000x12000 pixels, more than the 67108864 pixels diffusers-repro reads"
    assert lines[1].startswith(f"{manifest}: refused: its Content Credentials cannot be read: ")
    assert lines[2] == (
        f"{empty}: refused: is not a PNG, JPEG or WebP file (it is empty); diffusers-repro reads PNG, JPEG and WebP "
        "files"
    )
    assert lines[3] == f"{good}: bitwise"
    assert lines[-1].startswith("4 images: 1 bitwise, 0 close, 0 different, 3 refused; FAILED")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_verify_and_find_skip_what_is_not_a_regular_file(alone, tmp_path, capsys):
    folder = tmp_path / "outputs"
    folder.mkdir()
    good = save_image(alone.images[0], folder / "a.png", alone.provenance[0])
    os.mkfifo(folder / "b.png")  # opening it would wait forever for a writer
    code, out, _ = run(capsys, "verify", folder)
    assert code == 0 and out.splitlines()[0] == f"{good}: bitwise"
    code, out, _ = run(capsys, "find", good, folder)
    assert code == 0 and out.splitlines() == [f"{good}  similarity 1.000"]


def test_find_in_a_folder_of_hostile_files_names_the_match(alone, tmp_path, capsys):
    folder = tmp_path / "from-anyone"
    folder.mkdir()
    _jpeg_claiming_size(folder / "bomb.jpg", alone.provenance[0].to_json(), 65000, 65000)
    _jpeg_claiming_size(folder / "large.jpg", alone.provenance[0].to_json(), 12000, 12000)
    (folder / "manifest.jsonl").write_text("[" * 100000 + "]" * 100000 + "\n{}\n[1]\n")
    (folder / "notes.png").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    good = save_image(alone.images[0], folder / "good.png", alone.provenance[0])
    code, out, err = run(capsys, "find", good, folder)
    assert (code, err, out.splitlines()) == (0, "", [f"{good}  similarity 1.000"])


def test_verify_report_of_lossy_files_shows_them(alone, tmp_path, capsys):
    paths = [
        save_image(alone.images[0], tmp_path / f"a.{suffix}", alone.provenance[0], format=format)
        for format, suffix in (("jpeg", "jpg"), ("webp", "webp"))
    ]
    report = tmp_path / "report.html"
    code, out, err = run(capsys, "verify", *paths, "--report", report)
    assert (code, err) == (0, "")
    page = report.read_text()
    # Bitwise for a lossy file is not bit for bit in its pixels: the page shows the file, the regeneration and their
    # difference (the encoder's loss).
    assert "bit for bit" not in page
    assert page.count("<figcaption>difference x") == 2 and page.count('<img src="data:image/') == 6


def test_inspect_of_a_jpeg_whose_record_does_not_fit_shows_it_escaped(alone, tmp_path, capsys, monkeypatch):
    from diffusers_repro.files.lossy import _xmp_packet

    data = _edited(alone, lambda d: d["recipe"]["model"].update(lora={"operations": [{"op": "push_to_hub"}]}))
    path = tmp_path / "hostile.jpg"
    PIL.Image.new("RGB", (8, 8)).save(path, format="JPEG", xmp=_xmp_packet(json.dumps(data), "{}"))
    monkeypatch.setattr(ReproStableDiffusionPipeline, "__call__", lambda *a, **k: pytest.fail("ran a pipeline"))
    code, out, err = run(capsys, "inspect", path)
    lines = out.splitlines()
    assert (code, err) == (1, "")
    assert lines[1].startswith("refused:         provenance record: recipe.model.lora.operations[0].op must be one of")
    assert lines[2].startswith("xmp 'record': {") and "push_to_hub" in lines[2]


def test_a_recorded_scheduler_under_another_components_name_replaces_nothing(alone, sd, tmp_path, capsys):
    # recipe.schedulers names components: a record must not choose which attribute of the pipeline is replaced.
    def edit(data):
        scheduler = data["recipe"]["scheduler"]
        data["recipe"]["schedulers"] = {"scheduler": scheduler, "unet": scheduler, "progress_bar": scheduler}

    path = _write_record(tmp_path / "evil.png", _edited(alone, edit))
    unet = sd.unet
    result = reproduce(path, pipe=sd)
    assert sd.unet is unet and result.output_digest_equal
    code, out, err = run(capsys, "verify", path)
    assert code == 1 and err == "" and out.splitlines()[0].startswith(f"{path}: different")


@pytest.fixture(scope="module")
def mixed(sd):
    return sd(["a fox", "a bear"], seed=5, num_inference_steps=STEPS, height=32, width=32)


@pytest.mark.parametrize("format", ["jpeg", "webp"])
def test_the_siblings_of_a_lossy_file_are_found_beside_it(mixed, sd, tmp_path, format):
    paths = mixed.save(tmp_path, format=format)
    result = reproduce(paths[0], pipe=sd)
    assert (result.whole_batch, result.verdict, result.differences) == (True, "bitwise", [])


def test_a_hostile_folder_beside_a_mixed_batch_image_does_not_stop_its_replay(mixed, sd, tmp_path):
    paths = mixed.save(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("[" * 100000 + "]" * 100000 + "\n" + json.dumps({"file": "x.png"}) + "\n")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "00000-a-pipe.png")  # sorted before the siblings: opening it would wait forever
    result = reproduce(paths[1], pipe=sd)
    assert (result.whole_batch, result.verdict) == (True, "bitwise")


def test_a_record_the_pipeline_itself_refuses_is_one_refused_line_and_verify_goes_on(alone, tmp_path, capsys):
    # Values the schema cannot bound without the model (clip_skip past the text encoder's layers) or that diffusers
    # checks itself (a width not divisible by 8) fail inside the pipeline: that file is refused, the others go on.
    clip = _write_record(tmp_path / "a-clip.png", _edited(alone, lambda d: d["recipe"]["call"].update(clip_skip=1000)))
    width = _write_record(tmp_path / "b-width.png", _edited(alone, lambda d: d["recipe"]["call"].update(width=36)))
    good = save_image(alone.images[0], tmp_path / "c-good.png", alone.provenance[0])
    code, out, err = run(capsys, "verify", tmp_path)
    lines = out.splitlines()
    assert (code, err) == (1, "")
    assert (
        lines[0] == f"{clip}: refused: the pipeline failed on the record's call: ValueError: clip_skip must be "
        "between 0 and 2 (the text encoder's layers; diffusers counts A1111's 'Clip skip: 2' as 1), got 1000"
    )
    assert lines[1].startswith(f"{width}: refused: the pipeline failed on the record's call: ValueError: ")
    assert lines[2] == f"{good}: bitwise"
    assert lines[-1].startswith("3 images: 1 bitwise, 0 close, 0 different, 2 refused; FAILED")


def test_verify_and_find_show_file_names_from_anyone_escaped(alone, tmp_path, capsys):
    folder = tmp_path / "unpacked"
    folder.mkdir()
    good = save_image(alone.images[0], folder / "\x1b[2Jgood.png", alone.provenance[0])
    bad = folder / "\x1b[2Jbad.png"
    bad.write_bytes(b"")
    escaped = f"{folder}/\\x1b[2J"
    code, out, _ = run(capsys, "verify", folder)
    assert code == 1 and "\x1b" not in out
    assert out.splitlines()[:2] == [
        f"{escaped}bad.png: refused: is not a PNG, JPEG or WebP file (it is empty); "
        "diffusers-repro reads PNG, JPEG and WebP files",
        f"{escaped}good.png: bitwise",
    ]
    code, out, _ = run(capsys, "find", good, folder)
    assert (code, out) == (0, f"{escaped}good.png  similarity 1.000\n")


def test_verify_shows_the_field_names_of_a_record_escaped(alone, tmp_path, capsys):
    def edit(data):
        data["environment"]["\x1b[2Jname"] = "\x1b[2Jvalue"

    path = _write_record(tmp_path / "names.png", _edited(alone, edit))
    code, out, _ = run(capsys, "verify", path)
    assert code == 1 and "\x1b" not in out
    assert "    environment.\\x1b[2Jname: '\\x1b[2Jvalue' -> null" in out.splitlines()
    good = save_image(alone.images[0], tmp_path / "good.png", alone.provenance[0])
    code, out, _ = run(capsys, "diff", path, good)
    assert code == 1 and "\x1b" not in out
    assert "  environment.\\x1b[2Jname: '\\x1b[2Jvalue' -> null" in out.splitlines()
