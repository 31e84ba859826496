"""The one reading edge: every image file is read once, offline and bounded (diffusers_repro/imagefile.py), and no cost
a stranger's file or folder controls is left without a limit."""

from __future__ import annotations

import builtins
import http.server
import io
import json
import os
import re
import socket
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest

import diffusers_repro.files.imagefile as imagefile
import diffusers_repro.verify.replay as replay
from diffusers_repro.cli import main
from diffusers_repro.files.credentials import read_credentials
from diffusers_repro.files.imagefile import (
    MAX_FILE_BYTES,
    PROVENANCE_KEY,
    ImageProvenanceError,
    parse_image_bytes,
    read_image,
    read_image_file,
    read_regular_file,
)
from diffusers_repro.files.save import save_image
from diffusers_repro.records.provenance import Provenance
from diffusers_repro.records.schema import ProvenanceError
from diffusers_repro.verify.limits import LimitExceededError, ReplayLimits
from diffusers_repro.verify.replay import ReproductionError, reproduce

STEPS = 2


@pytest.fixture(scope="module")
def alone(sd):
    return sd("a fox", seed=3, num_inference_steps=STEPS)


@pytest.fixture(scope="module")
def mixed(sd):
    return sd(["a fox", "a bear", "a cat"], seed=11, num_inference_steps=STEPS)


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class OpenCounter:
    """Counts the opens of one file through every door Python has (os.open, open, io.open) and serves other bytes
    from the second open on: what a file swapped on disk between two reads looks like to the reader."""

    def __init__(self, monkeypatch, path: Path, other_bytes: bytes):
        self.path, self.opens = path.resolve(), 0
        self.swapped = path.with_name("swapped" + path.suffix)
        self.swapped.write_bytes(other_bytes)
        real_os_open, real_open = os.open, builtins.open

        def target(file):
            if self._is_target(file):
                self.opens += 1
                return self.swapped if self.opens > 1 else file
            return file

        monkeypatch.setattr(os, "open", lambda file, *a, **k: real_os_open(target(file), *a, **k))
        monkeypatch.setattr(builtins, "open", lambda file, *a, **k: real_open(target(file), *a, **k))
        monkeypatch.setattr(io, "open", lambda file, *a, **k: real_open(target(file), *a, **k))

    def _is_target(self, file) -> bool:
        try:
            return isinstance(file, (str, os.PathLike)) and Path(file).resolve() == self.path
        except (OSError, RuntimeError):
            return False


def _red_square(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", size, (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------------------- one read


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_verify_opens_a_signed_file_once_so_a_swap_between_reads_cannot_mix_two_files(
    alone, tmp_path, capsys, monkeypatch, format
):
    suffix = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}[format]
    path = save_image(alone.images[0], tmp_path / f"fox{suffix}", alone.provenance[0])
    counter = OpenCounter(monkeypatch, path, _red_square())
    code, out, _ = run(capsys, "verify", path)
    assert counter.opens == 1, f"{path.name} was opened {counter.opens} times"
    assert code == 0 and out.splitlines()[0].startswith(f"{path}: bitwise")
    assert "trusted: signed by" in out


def test_inspect_and_reproduce_open_the_file_once(alone, sd, tmp_path, capsys, monkeypatch):
    path = save_image(alone.images[0], tmp_path / "fox.jpg", alone.provenance[0])
    counter = OpenCounter(monkeypatch, path, _red_square())
    assert run(capsys, "inspect", path)[0] == 0
    assert counter.opens == 1
    counter.opens = 0
    result = reproduce(path, pipe=sd)
    assert counter.opens == 1 and result.verdict == "bitwise"
    # Everything the verdict stands on is the one read: the report shows those pixels too.
    assert result.file.data[:3] == b"\xff\xd8\xff"


def test_the_sibling_search_never_reads_the_image_itself_again(mixed, sd, tmp_path, monkeypatch):
    paths = mixed.save(tmp_path)
    counter = OpenCounter(monkeypatch, paths[1], _red_square())
    result = reproduce(paths[1], pipe=sd)
    assert (counter.opens, result.whole_batch, result.verdict) == (1, True, "bitwise")


def test_a_lossy_file_of_a_trusted_signer_still_has_its_pixels_compared(alone, sd, tmp_path, monkeypatch):
    path = save_image(alone.images[0], tmp_path / "fox.jpg", alone.provenance[0])
    assert reproduce(path, pipe=sd).reencoding_equal is True
    # Another Pillow build encodes other pixels: the trusted signer still vouches, and the verdict says which held.
    import diffusers_repro.files as files

    # replay finds the function through its subpackage's public names
    monkeypatch.setattr(files, "reencoded_pixels", lambda image, format, quality: np.zeros((1, 1, 3), np.uint8))
    result = reproduce(path, pipe=sd)
    assert (result.verdict, result.reencoding_equal) == ("bitwise", False)
    assert "encoding it again here gives other pixels" in result.summary


# ----------------------------------------------------------------------------------------------------------- bounded


def test_only_regular_files_are_read_and_their_size_is_checked_before_any_byte(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageProvenanceError, match="is not a regular file"):
        read_regular_file(fifo)  # would wait forever for a writer if it were read
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    with pytest.raises(ImageProvenanceError, match="is not a regular file"):
        read_image(zero)  # would never end if it were read
    sparse = tmp_path / "sparse.png"
    with open(sparse, "wb") as handle:
        handle.write(_red_square())
        handle.truncate(2 << 30)  # 2 GiB on paper, a few KB on disk
    bytes_read = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: bytes_read.append(n) or real_read(fd, n))
    message = f"is {2 << 30} bytes, more than the {MAX_FILE_BYTES} bytes diffusers-repro reads of an image"
    with pytest.raises(ImageProvenanceError, match=re.escape(message)):
        read_image(sparse)
    assert bytes_read == []
    monkeypatch.undo()
    small = tmp_path / "small.png"
    small.write_bytes(_red_square())
    size = small.stat().st_size
    assert read_image(small, max_bytes=size).image.size == (64, 64)  # the cap is lifted by max_bytes
    with pytest.raises(ImageProvenanceError, match=f"is {size} bytes, more than the {size - 1} bytes"):
        read_image(small, max_bytes=size - 1)


def test_the_file_cap_is_a_flag_of_every_reading_command(alone, tmp_path, capsys):
    path = save_image(alone.images[0], tmp_path / "fox.png", alone.provenance[0])
    size = path.stat().st_size
    for command in (["inspect", path], ["diff", path, path], ["verify", path]):
        code, out, err = run(capsys, *command, "--max-file-bytes", "1K")
        assert code in (1, 2), command
        assert f"is {size} bytes, more than the 1024 bytes" in out + err, command
    assert run(capsys, "inspect", path, "--max-file-bytes", str(size))[0] == 0
    code, _, err = run(capsys, "inspect", path, "--max-file-bytes", "lots")
    assert code == 2 and "expected a positive number of bytes" in err


# ---------------------------------------------------------------------------------------------------------- offline


@pytest.fixture
def tracking_server():
    """An HTTP server on 127.0.0.1 that counts the requests made to it."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/manifest.c2pa", hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_sockets(monkeypatch):
    """Every socket connection made from Python fails the test."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise AssertionError(f"a connection to {address} was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def _png_pointing_to(output, path, url):
    """Our own unsigned PNG, plus an XMP packet naming a remote C2PA manifest (dcterms:provenance)."""
    save_image(output.images[0], path, output.provenance[0], sign=False)
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:dcterms="http://purl.org/dc/terms/"><dcterms:provenance>{url}'
        "</dcterms:provenance></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    with PIL.Image.open(path) as image:
        image.load()
        info = PIL.PngImagePlugin.PngInfo()
        for key, value in image.text.items():
            if key != "XML:com.adobe.xmp":  # ours (the IPTC DigitalSourceType) is replaced: one XMP packet per file
                info.add_itxt(key, value)
        info.add_itxt("XML:com.adobe.xmp", xmp)
        image.save(path, pnginfo=info)
    return path


def test_a_file_naming_a_remote_manifest_never_makes_us_fetch_it(alone, tmp_path, capsys, tracking_server, no_sockets):
    url, hits = tracking_server
    path = _png_pointing_to(alone, tmp_path / "tracker.png", url)
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0 and f"it points to a remote manifest at '{url}', which is never fetched" in out
    code, out, _ = run(capsys, "verify", path)
    assert code == 0 and out.startswith(f"{path}: bitwise")
    assert "credentials: unsigned" in out
    other = tmp_path / "elsewhere"
    other.mkdir()
    code, _, _ = run(capsys, "find", path, other)
    credentials = read_credentials(path)
    assert (credentials.state, credentials.remote_url) == ("unsigned", url)
    assert hits == [] and no_sockets == []


def test_a_hub_model_named_by_a_record_is_loaded_only_from_this_machine(alone, monkeypatch, no_sockets):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    data = alone.provenance[0].to_dict()
    data["recipe"]["model"].update(type="hub", path=None, repo_id="someone/watching", revision="main")
    record = Provenance.from_dict(data)
    seen = {}

    def from_pretrained(cls, source, **kwargs):
        seen.update(kwargs, source=source)
        raise OSError("not in the cache")

    cls = replay._repro_class(record.recipe["pipeline_class"])
    monkeypatch.setattr(cls, "from_pretrained", classmethod(from_pretrained))
    with pytest.raises(ReproductionError, match=r"pass download=True, or --download, to fetch it"):
        reproduce(record)
    assert seen["local_files_only"] is True and seen["source"] == "someone/watching"
    with pytest.raises(ReproductionError, match="not in the cache"):
        reproduce(record, download=True)
    assert seen["local_files_only"] is False
    assert no_sockets == []


# ------------------------------------------------------------------------------------------ costs a record controls


@pytest.mark.parametrize("name", ["solver_order", "predictor_order", "original_inference_steps"])
def test_scheduler_config_numbers_that_size_each_step_are_bounded(alone, name):
    data = alone.provenance[0].to_dict()
    data["recipe"]["scheduler"]["config"][name] = 30_000_000
    with pytest.raises(ProvenanceError, match=rf"recipe\.scheduler\.config\.{name} must be an int from"):
        Provenance.from_dict(data)


def test_images_per_replay_are_counted_from_the_call_not_the_records_batch_size(alone, sd):
    data = alone.provenance[0].to_dict()
    data["recipe"]["call"]["prompt"] = [f"a fox {i}" for i in range(256)]
    assert data["recipe"]["batch"]["size"] == 1
    record = Provenance.from_dict(data)
    with pytest.raises(LimitExceededError, match=r"recipe\.call\.prompt = 256 images in one call.*max_batch_images=2"):
        reproduce(record, pipe=sd, limits=ReplayLimits(max_batch_images=2))
    data["recipe"]["call"].update(prompt=["a fox"] * 4096, height=4096, width=4096, num_inference_steps=1000)
    with pytest.raises(
        LimitExceededError, match=r"4096 images in one call, above the replay limit max_batch_images=64"
    ):
        reproduce(Provenance.from_dict(data), pipe=sd)


# ----------------------------------------------------------------------------------------------------------- folders


def test_find_survives_a_fifo_manifest_a_dev_zero_manifest_and_a_folder_1200_deep(alone, tmp_path, capsys):
    folder = tmp_path / "outputs"
    folder.mkdir()
    os.mkfifo(folder / "manifest.jsonl")
    deep = folder / "zero"
    deep.mkdir()
    (deep / "manifest.jsonl").symlink_to("/dev/zero")
    levels = [folder / "nest"]
    levels[0].mkdir()
    for depth in range(1, 1201):
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
        if depth == 40:  # past find's depth cap (32)
            save_image(alone.images[0], levels[-1] / "lost.png", alone.provenance[0], sign=False)
    try:
        source = save_image(alone.images[0], deep / "source.png", alone.provenance[0], sign=False)
        copy = tmp_path / "copy.jpg"
        PIL.Image.open(source).convert("RGB").resize((48, 48)).save(copy, quality=70)
        code, out, _ = run(capsys, "find", copy, folder)
        assert code == 0
        assert out.splitlines()[0].startswith(f"{source}  similarity")  # the one 40 levels down is past the cap
        assert "lost.png" not in out
    finally:
        # shutil.rmtree (pytest's clean-up) recurses once per level: take the tree down from the bottom instead.
        (levels[40] / "lost.png").unlink()
        for level in reversed(levels):
            level.rmdir()


def test_a_forged_manifest_cannot_name_the_wrong_file_or_hide_the_right_one(alone, sd, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    source = save_image(alone.images[0], folder / "job000000-seed3.png", alone.provenance[0], sign=False)
    other = sd("a bear in the snow", seed=99, num_inference_steps=STEPS)
    decoy = save_image(other.images[0], folder / "job000001-seed99.png", other.provenance[0], sign=False)
    source_fingerprint = read_image(source).fingerprint
    lines = [
        {"file": decoy.name, "fingerprint": source_fingerprint},
        {"file": source.name, "fingerprint": "phash-16:" + "0" * 64},
    ]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    copy = tmp_path / "copy.png"
    PIL.Image.open(source).save(copy)  # the same pixels, stripped of every record
    code, out, _ = run(capsys, "find", copy, folder, "--threshold", "0.95")
    assert code == 0
    assert out.splitlines()[0].startswith(f"{source}  similarity 1.000")
    assert str(decoy) not in out


def test_a_manifest_repeating_one_line_and_links_to_one_big_image_are_read_once(mixed, sd, tmp_path, monkeypatch):
    paths = mixed.save(tmp_path)
    big = tmp_path / "big.png"
    PIL.Image.new("RGB", (2048, 2048)).save(big)
    for index in range(40):
        (tmp_path / f"link{index:02d}.png").symlink_to(big)
    line = json.dumps({"file": big.name}) + "\n"
    (tmp_path / "manifest.jsonl").write_text(line * 20_000)
    reads, parses = [], []
    real_read, real_parse = imagefile.read_regular_file, imagefile.parse_image_bytes
    monkeypatch.setattr(
        imagefile, "read_regular_file", lambda path, *a, **k: reads.append(Path(path).name) or real_read(path, *a, **k)
    )
    monkeypatch.setattr(
        imagefile,
        "parse_image_bytes",
        lambda data, path=None: parses.append(Path(path).name) or real_parse(data, path),
    )
    result = reproduce(paths[2], pipe=sd)
    assert (result.verdict, result.whole_batch) == ("bitwise", True)
    # The big image is read once whatever names it (manifest lines, links), and never decoded: its header's size
    # is not the batch's.
    big_names = {"big.png", *(f"link{index:02d}.png" for index in range(40))}
    assert sum(name in big_names for name in reads) <= 1
    assert not big_names & set(parses)


# ------------------------------------------------------------------------------------------------------------ models


def test_one_model_folder_spelled_many_ways_loads_one_pipeline(alone, tmp_path, capsys, monkeypatch):
    folder = alone.provenance[0].recipe["model"]["path"]
    spellings = [folder, folder + "/", folder + "/.", "/" + folder, folder + "//"]
    for index, spelling in enumerate(spellings):
        data = alone.provenance[0].to_dict()
        data["recipe"]["model"]["path"] = spelling
        save_image(alone.images[0], tmp_path / f"{index}.png", Provenance.from_dict(data), sign=False)
    import diffusers_repro.verify as verify

    loads = []
    real = replay.load_pipeline
    # the command line finds it through the verify subpackage's public names
    monkeypatch.setattr(verify, "load_pipeline", lambda record, *a, **k: loads.append(1) or real(record, *a, **k))
    code, out, _ = run(capsys, "verify", tmp_path)
    assert code == 0, out
    assert len(loads) == 1


def test_hashing_a_model_folder_skips_links_out_of_it_pipes_and_big_extras(tiny_sd_path, tmp_path):
    import shutil

    from diffusers_repro import ReproStableDiffusionPipeline

    secret = tmp_path / "secret.txt"
    secret.write_text("the key to everything")
    model = tmp_path / "model"
    shutil.copytree(tiny_sd_path, model)
    (model / "tokenizer" / "secret.txt").symlink_to(secret)
    os.mkfifo(model / "tokenizer" / "pipe.txt")
    with open(model / "tokenizer" / "huge.txt", "wb") as handle:
        handle.truncate(100 << 20)
    pipe = ReproStableDiffusionPipeline.from_pretrained(model)
    out = pipe("a fox", seed=0, num_inference_steps=1)
    files = out.provenance[0].recipe["model"]["components"]["tokenizer"]["files"]
    assert "tokenizer.json" in files
    assert not {"secret.txt", "pipe.txt", "huge.txt"} & set(files)


# --------------------------------------------------------------------------------------------------------- terminals


def test_error_lines_show_file_names_and_record_keys_escaped(alone, tmp_path, capsys):
    named = tmp_path / "\x1b]0;owned\x07\x1b[2J.png"
    named.write_bytes(b"not an image")
    for command in (["inspect", named], ["diff", named, named]):
        code, out, err = run(capsys, *command)
        assert code == 2
        assert "\x1b" not in out + err and "\\x1b]0;owned\\x07\\x1b[2J.png" in err
    data = alone.provenance[0].to_dict()
    data["recipe"]["call"]["\x1b[32mbitwise OK\x1b[0m"] = 1
    edited = tmp_path / "keys.png"
    info = PIL.PngImagePlugin.PngInfo()
    info.add_itxt(PROVENANCE_KEY, json.dumps(data))
    PIL.Image.new("RGB", (8, 8)).save(edited, pnginfo=info)
    code, out, err = run(capsys, "diff", edited, edited)
    assert code == 2 and "\x1b" not in out + err and "\\x1b[32mbitwise OK" in err


def test_bidi_overrides_from_a_record_are_shown_visibly_in_the_report(alone, sd, tmp_path, capsys):
    data = alone.provenance[0].to_dict()
    data["recipe"]["call"]["prompt"] = "a fox \u202etxt.exe"
    path = save_image(alone.images[0], tmp_path / "bidi.png", Provenance.from_dict(data), sign=False)
    report = tmp_path / "report.html"
    run(capsys, "verify", path, "--report", report)
    page = report.read_text(encoding="utf-8")
    assert "\u202e" not in page and "&lt;U+202E&gt;txt.exe" in page
    code, out, _ = run(capsys, "inspect", path)
    assert "\u202e" not in out and "\\u202etxt.exe" in out


# ----------------------------------------------------------------------------------------------------------- parsing


def test_every_reader_gives_one_parsed_object(alone, tmp_path):
    path = save_image(alone.images[0], tmp_path / "fox.png", alone.provenance[0])
    image_file = read_image(path)
    assert image_file.provenance == alone.provenance[0] and image_file.record_error is None
    assert image_file.pixels_intact is True and image_file.infotext.startswith("a fox")
    assert image_file.data == path.read_bytes()
    assert read_image_file(path).provenance == image_file.provenance
    again = parse_image_bytes(image_file.data, path)
    assert again.pixel_digest == image_file.pixel_digest
    stripped = tmp_path / "stripped.png"
    PIL.Image.open(path).save(stripped)
    bare = read_image(stripped)
    assert bare.provenance is None and "has no 'diffusers-repro' text chunk" in str(bare.record_error)
    with pytest.raises(ImageProvenanceError, match="has no 'diffusers-repro' text chunk"):
        bare.require_record()


def test_a_model_folder_holding_a_named_pipe_or_a_device_is_refused_before_loading(alone, tiny_sd_path, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_sd_path, model)
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (model / "unet" / "diffusion_pytorch_model.safetensors").symlink_to("/dev/zero")
    data = alone.provenance[0].to_dict()
    data["recipe"]["model"]["path"] = str(model)
    with pytest.raises(ReproductionError, match=r"holds '.*unet/diffusion_pytorch_model.safetensors', which is not a"):
        reproduce(Provenance.from_dict(data))


def test_a_manifest_line_naming_a_file_with_a_nul_byte_is_skipped(mixed, sd, tmp_path):
    # Found by the fuzz test of hostile folders: Path.resolve() raises ValueError on such a name.
    paths = mixed.save(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"file": "a\x00b.png"}) + "\n")
    assert reproduce(paths[0], pipe=sd).whole_batch is True
