"""The record schema: typed fields with ranges and allowed keys, caps on text, and fuzzing of every reader.

The fuzz tests run a few thousand cases in the normal suite; ``make fuzz`` raises the count through
``DIFFUSERS_REPRO_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import copy
import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffusers_repro.verify.replay as replay
from diffusers_repro import ImageProvenanceError, Provenance, ProvenanceError
from diffusers_repro.files.credentials import CREDENTIAL_STATES, file_credentials, read_credentials
from diffusers_repro.files.imagefile import MAX_FILE_BYTES, read_image, read_image_file, read_provenance
from diffusers_repro.files.save import save_image
from diffusers_repro.files.signing import CredentialsError
from diffusers_repro.records.schema import (
    MAX_DEPTH,
    MAX_RECORD_CHARS,
    SCHEMA_VERSION,
    check_record,
    parse_json,
    record_digest,
)
from diffusers_repro.verify.limits import LimitExceededError, check_limits
from diffusers_repro.verify.siblings import batch_prompt_lists, find_siblings

SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
FUZZ_EXAMPLES = int(os.environ.get("DIFFUSERS_REPRO_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int):
    return settings(
        max_examples=FUZZ_EXAMPLES or examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


@pytest.fixture(scope="module")
def saved(sd, tmp_path_factory):
    """A real image of a mixed batch with its record, saved to a PNG."""
    out = sd(["a fox", "a bear"], seed=5, num_inference_steps=2, height=32, width=32)
    path = save_image(out.images[0], tmp_path_factory.mktemp("schema") / "real.png", out.provenance[0])
    return out.provenance[0].to_dict(), path.read_bytes()


def test_records_are_written_in_version_2_and_version_1_is_read(saved):
    data, _ = saved
    assert SCHEMA_VERSION == 2 and data["schema_version"] == 2
    old = copy.deepcopy(data)
    old["schema_version"] = 1
    batch = old["recipe"]["batch"]
    for key in ("id", "record_digests", "same_prompts", "prompt_list_lengths"):
        batch.pop(key)
    batch["prompt_lists"] = {"prompt": ["a fox", "a bear"]}
    assert Provenance.from_dict(old).schema_version == 1
    for wrong in ([], ["a", "b", "c"]):
        batch["prompt_lists"] = {"prompt": wrong}
        message = f"the batch's prompt list must have a length that divides recipe.batch.size=2, got {len(wrong)}"
        with pytest.raises(ProvenanceError, match=re.escape(message)):
            Provenance.from_dict(old)
    old["schema_version"] = 2  # prompt lists are a version 1 field only
    with pytest.raises(ProvenanceError, match=re.escape("recipe.batch.prompt_lists must be absent (allowed keys:")):
        Provenance.from_dict(old)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(seed="7"), "seed must be an int from 0 to 18446744073709551615 or null, got '7'"),
        (
            lambda d: d["recipe"]["call"].update(num_inference_steps=[50]),
            "recipe.call.num_inference_steps must be an int from 1 to 10000 or null, got [50]",
        ),
        (lambda d: d["recipe"]["call"].update(height=True), "recipe.call.height must be an int from 1 to 65536"),
        (lambda d: d["recipe"]["call"].update(prompt=3), "recipe.call.prompt must be a string, a list of strings"),
        (
            lambda d: d["recipe"]["call"].update(output_type="pil.Image"),
            "recipe.call.output_type must be an output type name such as 'pil' or null, got 'pil.Image'",
        ),
        (lambda d: d["recipe"]["call"].update({"not a name": 1}), "recipe.call.not a name must be a key that is"),
        (lambda d: d["recipe"]["call"].update(strength=2.5), "recipe.call.strength must be a number from 0 to 1"),
        (
            lambda d: d["recipe"].update(pipeline_class="os.system"),
            "recipe.pipeline_class must be a class name (a Python identifier) or null, got 'os.system'",
        ),
        (lambda d: d["recipe"]["scheduler"].update({"class": "a.b"}), "recipe.scheduler.class must be a class name"),
        (
            lambda d: d["recipe"]["scheduler"]["config"].update(num_train_timesteps=10**9),
            "recipe.scheduler.config.num_train_timesteps must be an int from 1 to 100000 or null, got 1000000000",
        ),
        (lambda d: d["recipe"]["model"].update(type="ftp"), "recipe.model.type must be one of 'local', 'hub'"),
        (lambda d: d["recipe"]["batch"].update(index=7), "recipe.batch.index must be below recipe.batch.size=2"),
        (lambda d: d["recipe"]["batch"].update(seeds=[1]), "recipe.batch.seeds must have recipe.batch.size=2 items"),
        (lambda d: d["recipe"]["batch"].update(id="x"), "recipe.batch.id must be a 'sha256:' followed by 64 hex"),
        (lambda d: d["environment"].update(torch_num_threads=0), "environment.torch_num_threads must be an int from"),
        (lambda d: d.update(extra=1), "extra must be absent (allowed keys: environment, recipe, result, schema, "),
        (lambda d: d["recipe"].update(note="\udc80"), "recipe.note must be text without lone surrogates"),
        (lambda d: d["recipe"].update(note=float("inf")), "recipe.note must be a finite number, got inf"),
        (lambda d: d["recipe"].update(note=object), "recipe.note must be a JSON value, got <class 'object'>"),
    ],
)
def test_a_field_that_does_not_fit_names_its_path_value_and_expectation(saved, edit, message):
    data = copy.deepcopy(saved[0])
    edit(data)
    with pytest.raises(ProvenanceError, match=f"^provenance record in x.png: {re.escape(message)}"):
        Provenance.from_dict(data, source="x.png")


def test_long_values_are_cut_short_in_messages(saved):
    data = copy.deepcopy(saved[0])
    data["seed"] = "9" * 500
    with pytest.raises(ProvenanceError, match="or null, got '9{76}\\.\\.\\.$"):
        check_record(data)


@pytest.mark.parametrize(
    "text, message",
    [
        ("x" * (MAX_RECORD_CHARS + 1), f"is longer than {MAX_RECORD_CHARS} characters"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nests 33 levels deep, at most {MAX_DEPTH} are read"),
        ('{"a": NaN}', "is not valid JSON: NaN is not a JSON number"),
        ("1" * 5000, "is not valid JSON: Exceeds the limit (4300 digits)"),
        (b"\xff{}", "is not valid UTF-8"),
    ],
)
def test_text_caps(text, message):
    with pytest.raises(ProvenanceError, match=re.escape(message)):
        parse_json(text)


def test_brackets_inside_strings_do_not_count_as_depth():
    assert parse_json(json.dumps({"prompt": "[" * 1000 + '\\"{'})) == {"prompt": "[" * 1000 + '\\"{'}


def test_record_digest_leaves_out_the_digest_list_only(saved):
    data = copy.deepcopy(saved[0])
    digest = record_digest(data)
    data["recipe"]["batch"]["record_digests"] = []
    assert record_digest(data) == digest
    data["recipe"]["call"]["prompt"] = "a fix"
    assert record_digest(data) != digest


# -------------------------------------------------------------------------------------------------------------- fuzz

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _mutate(data, path, action, value):
    if not path:
        return value
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[f"{last}_"] = value
    else:
        parent[last] = value
    return data


def _use_as_replay_would(record: Provenance) -> None:
    # What verify does with a record before any model loads: none of it may fail with anything but our errors.
    try:
        check_limits(record)
    except LimitExceededError:
        pass
    batch_prompt_lists(record, None)
    find_siblings(record, None, [record])
    replay._can_replay_whole_batch(record, {})
    try:
        replay._recorded_schedulers(record)
    except replay.ReproductionError:
        pass
    json.loads(record.to_json())
    assert Provenance.from_json(record.to_json()) == record


@fuzz_settings(1500)
@given(data=st.data())
def test_fuzz_mutated_records_give_a_record_or_a_provenance_error(saved, data):
    record = copy.deepcopy(saved[0])
    paths = list(_paths(record))
    path = data.draw(st.sampled_from(paths))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    mutated = _mutate(record, path, action, data.draw(JSON_VALUES))
    try:
        parsed = Provenance.from_dict(mutated)
    except ProvenanceError:
        return
    _use_as_replay_would(parsed)


@fuzz_settings(600)
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_fuzz_random_text_gives_a_record_or_a_provenance_error(text):
    try:
        Provenance.from_json(text)
    except ProvenanceError:
        pass


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "input.png"


def _read_everything(path) -> None:
    try:
        read_provenance(path)
    except ImageProvenanceError:
        pass
    try:
        image_file = read_image_file(path)
    except ImageProvenanceError:
        return
    _use_as_replay_would(image_file.provenance)


@fuzz_settings(400)
@given(raw=st.binary(max_size=300), signed=st.booleans())
def test_fuzz_random_bytes_give_a_record_or_an_image_provenance_error(fuzz_file, raw, signed):
    fuzz_file.write_bytes((b"\x89PNG\r\n\x1a\n" if signed else b"") + raw)
    _read_everything(fuzz_file)


@fuzz_settings(500)
@given(data=st.data())
def test_fuzz_mutated_real_pngs_give_a_record_or_an_image_provenance_error(saved, fuzz_file, data):
    raw = bytearray(saved[1])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "length"]))
        at = data.draw(st.integers(8, len(raw) - 1))
        if kind == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "truncate":
            del raw[at:]
            if len(raw) <= 9:
                break
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # a chunk length field claiming up to 4 GiB
            raw[8:12] = data.draw(st.binary(min_size=4, max_size=4))
    fuzz_file.write_bytes(bytes(raw))
    _read_everything(fuzz_file)


@pytest.fixture(scope="module")
def signed_files(sd, tmp_path_factory):
    """Signed PNG, JPEG and WebP files of one image: ``{format: (bytes, record, pixel digest of the file)}``."""
    out = sd("a fox", seed=6, num_inference_steps=2, height=32, width=32)
    folder = tmp_path_factory.mktemp("signed")
    files = {}
    for format, suffix in (("png", ".png"), ("jpeg", ".jpg"), ("webp", ".webp")):
        path = save_image(out.images[0], folder / f"real{suffix}", out.provenance[0], format=format)
        files[format] = (path.read_bytes(), out.provenance[0], read_image_file(path).pixel_digest)
    return files


def _mutate_bytes(data, raw: bytearray) -> bytearray:
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = data.draw(st.integers(4, len(raw) - 1))
        if kind == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "truncate":
            del raw[at:]
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del raw[at : at + data.draw(st.integers(1, 64))]
        if len(raw) <= 12:
            break
    return raw


@fuzz_settings(300)
@given(data=st.data(), format=st.sampled_from(["jpeg", "webp"]))
def test_fuzz_mutated_jpeg_and_webp_give_a_record_or_an_image_provenance_error(
    signed_files, tmp_path_factory, data, format
):
    raw = _mutate_bytes(data, bytearray(signed_files[format][0]))
    path = tmp_path_factory.getbasetemp() / f"fuzz{SUFFIXES[format]}"
    path.write_bytes(bytes(raw))
    _read_everything(path)


@fuzz_settings(300)
@given(data=st.data(), format=st.sampled_from(["png", "jpeg", "webp"]))
def test_fuzz_mutated_signed_files_never_vouch_for_a_changed_record_or_pixels(
    signed_files, tmp_path_factory, data, format
):
    # The credentials reader gives Credentials or a CredentialsError; a file it calls intact holds the record and
    # pixels that were signed, or cannot be read at all.
    original, record, pixel_digest = signed_files[format]
    raw = _mutate_bytes(data, bytearray(original))
    path = tmp_path_factory.getbasetemp() / f"fuzz-signed{SUFFIXES[format]}"
    path.write_bytes(bytes(raw))
    try:
        credentials = read_credentials(path)
    except CredentialsError:
        return
    assert credentials.state in CREDENTIAL_STATES
    if not credentials.intact:
        return
    try:
        image_file = read_image_file(path)
    except ImageProvenanceError:
        return
    if file_credentials(image_file).intact:
        assert image_file.provenance == record and image_file.pixel_digest == pixel_digest


# ---------------------------------------------------------------------------------------- large files, hostile folders


@fuzz_settings(60)
@given(size=st.integers(MAX_FILE_BYTES + 1, 1 << 40), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8"]))
def test_fuzz_sparse_files_past_the_cap_are_refused_before_any_byte_is_read(fuzz_file, size, prefix):
    with open(fuzz_file, "wb") as handle:
        handle.write(prefix)
        handle.truncate(size)  # sparse: up to 1 TiB on paper, nothing on disk
    try:
        with pytest.raises(ImageProvenanceError, match=rf"is {size} bytes, more than the {MAX_FILE_BYTES} bytes"):
            read_image(fuzz_file)
        with pytest.raises(ImageProvenanceError, match="more than the"):
            read_provenance(fuzz_file)
    finally:
        fuzz_file.unlink()


_HOSTILE_ENTRIES = ["fifo", "dev-zero", "loop", "dangling", "folder", "junk", "image", "link-to-image", "manifest"]


def _hostile_folder(folder, entries, image_bytes, junk, manifest_lines):
    folder.mkdir()
    for index, kind in enumerate(entries):
        name = folder / (f"{index:03d}.png" if kind != "manifest" else "manifest.jsonl")
        if name.exists() or name.is_symlink():
            continue
        if kind == "fifo":
            os.mkfifo(name)
        elif kind == "dev-zero":
            name.symlink_to("/dev/zero")
        elif kind == "loop":
            name.symlink_to(name)
        elif kind == "dangling":
            name.symlink_to(folder / "nowhere")
        elif kind == "folder":
            name.mkdir()
            (name / "inner.png").write_bytes(junk)
        elif kind == "junk":
            name.write_bytes(junk)
        elif kind == "image":
            name.write_bytes(image_bytes)
        elif kind == "link-to-image":
            (folder / "image-target.png").write_bytes(image_bytes)
            name.symlink_to(folder / "image-target.png")
        else:
            name.write_text("".join(line + "\n" for line in manifest_lines))


@fuzz_settings(80)
@given(
    entries=st.lists(st.sampled_from(_HOSTILE_ENTRIES), max_size=12),
    junk=st.binary(max_size=200),
    manifest_lines=st.lists(
        st.one_of(
            st.text(max_size=40),
            st.builds(lambda name: json.dumps({"file": name}), st.text(max_size=20)),
            st.just(json.dumps({"file": "000.png", "fingerprint": "phash-16:" + "f" * 64})),
        ),
        max_size=30,
    ),
    seed=st.integers(0, 1 << 30),
)
def test_fuzz_folders_of_hostile_entries_never_stop_find_or_the_sibling_search(
    saved, tmp_path_factory, entries, junk, manifest_lines, seed
):
    from diffusers_repro.cli.credentials import _fingerprints_in

    folder = tmp_path_factory.mktemp("hostile") / f"f{seed}"
    _hostile_folder(folder, entries, saved[1], junk, manifest_lines)
    image = folder / "the-image.png"
    image.write_bytes(saved[1])
    found = _fingerprints_in(folder)
    assert image in found
    record = read_image_file(image).provenance
    # The batch's sibling was never written here: the search ends with None, whatever the folder holds.
    assert find_siblings(record, read_image_file(image)) is None
