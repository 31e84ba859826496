import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_repro import Provenance, ProvenanceError
from diffusers_repro.records.provenance import (
    array_digest,
    environment_fingerprint,
    file_digest,
    image_digest,
    jsonable,
    tensor_digest,
)
from diffusers_repro.records.schema import SCHEMA_VERSION


@pytest.fixture
def record(sd_pipe):
    return sd_pipe(["a fox", "a bear"], num_images_per_prompt=2, seed=42, num_inference_steps=2).provenance[3]


def test_round_trip_through_json(record):
    data = record.to_dict()
    text = json.dumps(data)
    assert Provenance.from_dict(json.loads(text)).to_dict() == data
    assert Provenance.from_json(record.to_json()) == record
    assert data["schema_version"] == SCHEMA_VERSION


def test_record_is_self_contained_for_its_image(record):
    recipe = record.recipe
    assert record.seed == 45 and record.seed_source == "seed"
    assert recipe["pipeline_class"] == "StableDiffusionPipeline"
    assert recipe["call"]["prompt"] == "a bear"
    assert recipe["call"]["num_inference_steps"] == 2
    assert recipe["call"]["guidance_scale"] == 7.5
    assert recipe["call"]["num_images_per_prompt"] == 2
    assert "generator" not in recipe["call"] and "return_dict" not in recipe["call"]
    assert (
        recipe["batch"].items()
        >= {
            "size": 4,
            "index": 3,
            "seeds": [42, 43, 44, 45],
            "description": "2 prompts x num_images_per_prompt=2",
            "batch_invariant": False,
        }.items()
    )
    assert set(recipe["model"]["components"]) == {"vae", "text_encoder", "tokenizer", "unet"}
    assert recipe["scheduler"]["class"] == "DDIMScheduler"


def test_environment_fields(record):
    env = record.environment
    assert env["device"] == "cpu" and env["dtype"] == "torch.float32"
    assert env["torch_num_threads"] == torch.get_num_threads()
    for name in ("torch", "diffusers", "transformers", "accelerate", "python"):
        assert env["versions"][name]
    assert env["versions"]["torch"] == torch.__version__
    assert set(env["determinism"]) >= {"deterministic_algorithms", "cudnn_deterministic", "full_determinism"}
    assert env["platform"]


def test_result_digests(record, sd_pipe):
    again = sd_pipe("a bear", seed=45, num_inference_steps=2).provenance[0]
    assert again.result["noise_digest"] == record.result["noise_digest"]
    assert record.result["output_digest"].startswith("sha256:")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(schema_version=99), "has schema_version 99, but this diffusers-repro reads versions 1, 2"),
        (lambda d: d.update(schema="other"), "has schema 'other', expected 'diffusers-repro/provenance'"),
        (lambda d: d.pop("recipe"), "lacks the field recipe"),
        (
            lambda d: d.update(seed_source="dice"),
            "seed_source must be one of 'seed', 'random', 'generator', got 'dice'",
        ),
        (lambda d: d.update(result=[]), "result must be an object"),
    ],
)
def test_bad_records_raise_provenance_error(record, mutate, message):
    data = record.to_dict()
    mutate(data)
    with pytest.raises(ProvenanceError, match=re.escape(message)):
        Provenance.from_dict(data, source="x.png")


def test_broken_json_is_a_provenance_error_not_json_decode_error():
    with pytest.raises(ProvenanceError, match="provenance record in a.png is not valid JSON"):
        Provenance.from_json("{nope", source="a.png")
    assert issubclass(ProvenanceError, ValueError)


def test_not_an_object():
    with pytest.raises(ProvenanceError, match="must be a JSON object, got list"):
        Provenance.from_dict([1])


def test_digests_cover_dtype_shape_and_bytes():
    a = torch.zeros(2, 3)
    assert tensor_digest(a) == tensor_digest(a.clone())
    assert tensor_digest(a) != tensor_digest(a.reshape(3, 2))
    assert tensor_digest(a) != tensor_digest(a.double())
    assert tensor_digest(torch.ones(2, dtype=torch.bfloat16)).startswith("sha256:")
    assert array_digest(np.zeros((2, 3), np.float32)) != array_digest(np.zeros((3, 2), np.float32))
    image = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    assert image_digest(image) == image_digest(image.copy())
    with pytest.raises(TypeError, match="cannot digest an output of type str"):
        image_digest("x")


def test_file_digest_is_cached_by_path_size_mtime(tmp_path, monkeypatch):
    import hashlib

    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    assert file_digest(path) == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    file_digest(path)
    assert opened == []


def test_file_digest_uses_hub_blob_name_without_reading(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    name = "a" * 64
    (blobs / name).write_bytes(b"not what the name says")
    (tmp_path / "model.safetensors").symlink_to(blobs / name)
    assert file_digest(tmp_path / "model.safetensors") == "sha256:" + name


def test_jsonable_turns_tensors_and_images_into_digests():
    value = jsonable({"t": torch.ones(2), "a": np.ones(2), "f": float("nan"), "n": np.int64(3), "x": (1, 2)})
    assert value["t"]["shape"] == [2] and value["t"]["tensor_digest"].startswith("sha256:")
    assert value["a"]["dtype"] == "float64"
    assert value["f"] == "nan" and value["n"] == 3 and value["x"] == [1, 2]
    json.dumps(value)


def test_environment_fingerprint_is_cheap_to_copy_and_independent():
    first = environment_fingerprint()
    first["versions"]["torch"] = "changed"
    assert environment_fingerprint()["versions"]["torch"] == torch.__version__


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("seed",), "abc", "seed must be an int from 0 to 18446744073709551615 or null, got 'abc'"),
        (("seed",), -4, "seed must be an int from 0 to 18446744073709551615 or null, got -4"),
        (("recipe", "batch"), "x", "recipe.batch must be an object, got 'x'"),
        (("recipe", "call"), [], "recipe.call must be an object, got []"),
        (("recipe", "batch", "index"), "1", "recipe.batch.index must be an int from 0 to 4095, got '1'"),
        (
            ("recipe", "call", "num_inference_steps"),
            "two",
            "recipe.call.num_inference_steps must be an int from 1 to 10000 or null, got 'two'",
        ),
        (
            ("recipe", "call", "guidance_scale"),
            "high",
            "recipe.call.guidance_scale must be a number from -1e+06 to 1e+06 or null, got 'high'",
        ),
        (
            ("environment", "torch_num_threads"),
            "x",
            "environment.torch_num_threads must be an int from 1 to 65536, got 'x'",
        ),
        (
            ("result", "output_digest"),
            3,
            "result.output_digest must be a 'sha256:' followed by 64 hex digits or null, got 3",
        ),
    ],
)
def test_edited_nested_fields_raise_provenance_error_naming_them(record, path, value, message):
    data = record.to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProvenanceError, match=re.escape(f"provenance record in x.png: {message}")):
        Provenance.from_dict(data, source="x.png")
