"""The recipe of any file: a fixed order of checks picks the reader; hostile metadata is a clear error, never a
traceback (fuzzed, honouring DIFFUSERS_REPRO_FUZZ_EXAMPLES like tests/records/test_schema.py)."""

from __future__ import annotations

import json
import os
import re

import pytest
from foreign_files import (
    a1111_unicode_comment,
    comfyui_graph,
    comfyui_png,
    invokeai_metadata,
    jpeg_with_user_comment,
    png_with_chunks,
    read,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusers_repro.interop.a1111 import decode_user_comment, recipe_from_infotext
from diffusers_repro.interop.read import recipe_from_image_file
from diffusers_repro.interop.recipe import ForeignMetadataError, Recipe

FUZZ_EXAMPLES = int(os.environ.get("DIFFUSERS_REPRO_FUZZ_EXAMPLES", "0"))
INFOTEXT = "a fox\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 64x48"


def fuzz_settings(examples: int):
    return settings(
        max_examples=FUZZ_EXAMPLES or examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


def test_a_fixed_order_of_checks_picks_the_reader():
    both = {
        "parameters": INFOTEXT,
        "prompt": json.dumps(comfyui_graph()),
        "invokeai_metadata": json.dumps(invokeai_metadata()),
    }
    assert recipe_from_image_file(read(png_with_chunks(both))).source == "invokeai"
    del both["invokeai_metadata"]
    assert recipe_from_image_file(read(png_with_chunks(both))).source == "comfyui"
    del both["prompt"]
    assert recipe_from_image_file(read(png_with_chunks(both))).source == "a1111"
    # A value naming a tool selects nothing: a "parameters" chunk saying "comfyui" is still an A1111 infotext.
    text = "comfyui invokeai\nSteps: 2, Sampler: comfyui, Seed: 3"
    recipe = recipe_from_image_file(read(png_with_chunks({"parameters": text})))
    assert recipe.source == "a1111" and recipe.scheduler is None


def test_a_file_without_any_tools_metadata_is_a_clear_error():
    with pytest.raises(ForeignMetadataError, match=re.escape("plain.png carries no generation metadata")):
        recipe_from_image_file(read(png_with_chunks({"Software": "GIMP"}), "plain.png"))
    with pytest.raises(ForeignMetadataError, match=re.escape("carries no generation metadata")):
        recipe_from_image_file(read(jpeg_with_user_comment(b""), "a.jpg"))


def test_our_own_files_give_their_records_recipe(sd, tmp_path):
    from diffusers_repro import read_recipe
    from diffusers_repro.files import save_image

    out = sd("a fox", negative_prompt="blur", seed=11, num_inference_steps=2, height=32, width=32, clip_skip=None)
    path = save_image(out.images[0], tmp_path / "ours.png", out.provenance[0])
    recipe = read_recipe(path)
    record = out.provenance[0]
    assert (recipe.source, recipe.prompt, recipe.negative_prompt, recipe.seed) == (
        "diffusers-repro",
        "a fox",
        "blur",
        11,
    )
    assert (recipe.steps, recipe.width, recipe.height, recipe.rng, recipe.blockers) == (2, 32, 32, "cpu", ())
    assert recipe.scheduler == recipe.sampler == record.recipe["scheduler"]["class"]
    # Only the keys that differ from the class defaults the sampler table knows: the tiny SD's DDIM has A1111's
    # steps_offset=1, and keeps its model keys (betas).
    assert recipe.scheduler_config["steps_offset"] == 1 and "beta_schedule" in recipe.scheduler_config
    assert recipe.model["hash"] == record.recipe["model"]["components"]["unet"]["weights_digest"]
    assert recipe.source_version == record.environment["versions"]["diffusers-repro"]
    assert (recipe.batch_index, recipe.batch_size) == (0, 1)


def test_our_file_with_a_refused_record_is_that_error_not_a_guess(sd, tmp_path):
    from diffusers_repro import ImageProvenanceError, read_recipe
    from diffusers_repro.files import save_image
    from diffusers_repro.files.imagefile import read_image

    out = sd("a fox", seed=1, num_inference_steps=1, height=32, width=32)
    ours = read_image(save_image(out.images[0], tmp_path / "ours.png", out.provenance[0], sign=False))
    chunks = dict(ours.metadata)
    chunks["diffusers-repro"] = chunks["diffusers-repro"].replace('"seed": 1', '"seed": "1"', 1)
    with pytest.raises(ImageProvenanceError, match="seed must be an int"):
        read_recipe(read(png_with_chunks(chunks), "broken.png"))


def test_recipe_to_dict_is_plain_json():
    recipe = recipe_from_image_file(read(comfyui_png(comfyui_graph())))
    data = recipe.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) >= {"source", "prompt", "seed", "scheduler", "scheduler_config", "loras", "blockers", "model"}
    with pytest.raises(ValueError, match="source must be one of"):
        Recipe(source="midjourney")
    with pytest.raises(TypeError, match="image_file must be a diffusers_repro ImageFile, got str"):
        recipe_from_image_file("x.png")


_KEYS = st.sampled_from(["parameters", "prompt", "workflow", "invokeai_metadata", "invokeai_graph", "other"])
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def _mutated_graph(data) -> str:
    graph = comfyui_graph(lora=data.draw(st.booleans()), unknown=data.draw(st.booleans()))
    for _ in range(data.draw(st.integers(0, 4))):
        node = data.draw(st.sampled_from(sorted(graph)))
        inputs = graph[node].get("inputs") if isinstance(graph[node], dict) else None
        if isinstance(inputs, dict) and inputs and data.draw(st.booleans()):
            inputs[data.draw(st.sampled_from(sorted(inputs)))] = data.draw(_JSONISH)
        else:
            graph[node] = data.draw(_JSONISH)
    return json.dumps(graph)


def _mutated_infotext(data) -> str:
    parts = [
        "Steps: 20",
        "Sampler: DPM++ 2M",
        "Schedule type: Karras",
        "Seed: 5",
        "Size: 64x48",
        "RNG: CPU",
        "Clip skip: 2",
        "ENSD: 31337",
        'Lora hashes: "a: 1"',
        "Model hash: 6ce0161689",
        "Eta: 0.5",
    ]
    chosen = data.draw(st.lists(st.sampled_from(parts), max_size=8))
    junk = data.draw(st.lists(st.text(max_size=12), max_size=3))
    return data.draw(st.text(max_size=40)) + "\n" + ", ".join(chosen + [f"{j}: {j}" for j in junk])


@fuzz_settings(300)
@given(data=st.data())
def test_any_metadata_gives_a_recipe_or_a_clear_error(data):
    chunks = {}
    kind = data.draw(st.sampled_from(["random", "graph", "invokeai", "infotext"]))
    if kind == "random":
        chunks = data.draw(st.dictionaries(_KEYS, st.text(max_size=60) | _JSONISH.map(json.dumps), max_size=4))
    elif kind == "graph":
        chunks = {"prompt": _mutated_graph(data)}
    elif kind == "invokeai":
        metadata = invokeai_metadata()
        for _ in range(data.draw(st.integers(0, 3))):
            metadata[data.draw(st.sampled_from(sorted(metadata)))] = data.draw(_JSONISH)
        chunks = {"invokeai_metadata": json.dumps(metadata)}
    else:
        chunks = {"parameters": _mutated_infotext(data)}
    try:
        recipe = recipe_from_image_file(read(png_with_chunks(chunks, size=(8, 8))))
    except ForeignMetadataError as error:
        assert str(error) and "\n" not in str(error)[:1]
        return
    assert isinstance(recipe, Recipe)
    json.dumps(recipe.to_dict())


@fuzz_settings(300)
@given(text=st.text(max_size=300))
def test_any_infotext_gives_a_recipe_or_a_clear_error(text):
    try:
        recipe_from_infotext(text)
    except ForeignMetadataError:
        pass


@fuzz_settings(300)
@given(
    comment=st.binary(max_size=200), prefix=st.sampled_from([b"", b"UNICODE\x00", b"ASCII\x00\x00\x00", b"JIS\x00"])
)
def test_any_user_comment_decodes_or_is_none(comment, prefix):
    result = decode_user_comment(prefix + comment)
    assert result is None or isinstance(result, str)


@fuzz_settings(60)
# Infotexts hold no control characters.
@given(
    text=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn")) | st.just("\n"), max_size=200),
    format=st.sampled_from(["JPEG", "WEBP"]),
)
def test_any_exif_infotext_survives_a1111s_encoding(text, format):
    # An infotext ends in its ASCII parameters line, which tells the byte order of a comment without a byte order mark.
    text += "\nSteps: 20, Sampler: Euler, Seed: 1"
    image_file = read(jpeg_with_user_comment(a1111_unicode_comment(text), format), "x." + format.lower())
    from diffusers_repro.interop.a1111 import infotext_of

    assert infotext_of(image_file) == (text.rstrip("\x00") or None)


# --------------------------------------------------------------------------------------------------------------------
# Findings of the adversarial review of the readers


@pytest.mark.parametrize(
    "text",
    [
        "[" + ":" * 1_000_000 + "\nSteps: 20, Sampler: Euler, Seed: 1",  # prompt editing pattern, quadratic before
        "[" + "|" * 1_000_000 + "\nSteps: 20, Sampler: Euler, Seed: 1",
        "<lora:" * 200_000 + "\nSteps: 20, Sampler: Euler, Seed: 1",
        "a fox\n" + "a" * 60_000,  # a parameters line without a colon: the web UIs' own pair pattern is quadratic
    ],
)
def test_hostile_infotexts_are_read_in_one_pass(text):
    # Each took minutes to hours with the patterns the web UIs use; read in linear time they finish at once (the
    # suite's timeout is the bound: no wall-clock assertion here).
    try:
        recipe = recipe_from_infotext(text)
    except ForeignMetadataError as error:
        assert "no parameters line" in str(error)
    else:
        assert recipe.seed == 1


def test_a_parameters_line_past_its_cap_is_one_clear_error():
    with pytest.raises(ForeignMetadataError, match="the A1111 parameters line is longer than 65536 characters"):
        recipe_from_infotext("a fox\nSteps: 20, Seed: 1, Sampler: Euler, " + "x" * 70_000)


def test_huge_json_integers_are_a_clear_error_naming_the_field():
    graph = comfyui_graph()
    data = json.dumps(graph).replace('"cfg": 8.0', '"cfg": 1' + "0" * 400)
    assert data != json.dumps(graph)
    with pytest.raises(ForeignMetadataError, match="cfg of node 3 must be a finite number"):
        recipe_from_image_file(read(png_with_chunks({"prompt": data})))


def test_a_name_from_the_file_cannot_turn_a_blocker_into_one_that_runs():
    from diffusers_repro.verify.foreign import regeneration_blockers

    text = (
        "a fox\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64, Refiner: sdxl which diffusers reads as plain text, "
        "Refiner switch at: 0.8"
    )
    recipe = recipe_from_infotext(text)
    assert any("refiner model" in blocker for blocker in regeneration_blockers(recipe))
    # What runs anyway is the reader's decision: prompt syntax, here.
    weighted = recipe_from_infotext("a (fox:1.2)\nSteps: 20, Sampler: Euler, Seed: 1")
    assert weighted.runs_anyway and regeneration_blockers(weighted) == ()


def test_messages_quote_file_values_cut_short():
    with pytest.raises(ForeignMetadataError) as error:
        recipe_from_infotext("a fox\nSteps: 20, Sampler: Euler, Seed: 1, Seed: " + "9" * 50_000)
    assert "'Seed' twice" in str(error.value) and len(str(error.value)) < 400
    graph = comfyui_graph()
    graph["3"]["inputs"]["model"] = ["Q" * 100_000, 0]
    with pytest.raises(ForeignMetadataError) as error:
        recipe_from_image_file(read(png_with_chunks({"prompt": json.dumps(graph)})))
    assert len(str(error.value)) < 400
    graph = {"Q" * 100: {"class_type": "SaveImage", "inputs": {}}}
    with pytest.raises(ForeignMetadataError, match="is longer than 64"):
        recipe_from_image_file(read(png_with_chunks({"prompt": json.dumps(graph)})))
