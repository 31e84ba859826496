"""ComfyUI prompt graphs: followed from the save node back; LoRAs and CLIP skip read; other nodes named; bad graphs
refused with the node named."""

from __future__ import annotations

import json
import re

import pytest
from foreign_files import comfyui_graph, comfyui_png, png_with_chunks, read

from diffusers_repro.interop.comfyui import MAX_NODES, recipe_from_comfyui
from diffusers_repro.interop.read import recipe_from_image_file
from diffusers_repro.interop.recipe import ForeignMetadataError


def test_graph_with_a_lora_is_followed_back_to_the_checkpoint():
    recipe = recipe_from_image_file(read(comfyui_png(comfyui_graph(batch_size=3))))
    assert recipe.source == "comfyui" and recipe.rng == "cpu"
    assert (recipe.prompt, recipe.negative_prompt) == ("a fox in the snow,\nwinter", "blurry")
    assert (recipe.seed, recipe.steps, recipe.guidance_scale) == (156680208700286, 20, 8.0)
    assert (recipe.width, recipe.height, recipe.batch_size, recipe.batch_index) == (64, 48, 3, None)
    assert (recipe.sampler, recipe.schedule_type) == ("dpmpp_2m", "karras")
    assert (recipe.scheduler, recipe.scheduler_config) == ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})
    assert recipe.model == {"name": "v1-5-pruned-emaonly.safetensors", "hash": None, "hash_kind": None}
    assert recipe.loras == ({"name": "fox_style.safetensors", "weight": 0.8, "clip_weight": 0.6, "hash": None},)
    assert recipe.clip_skip == 1  # stop_at_clip_layer=-2
    assert recipe.blockers == (
        "LoRA 'fox_style.safetensors' is applied; a plain diffusers call does not load it (load_lora_weights)",
    )
    assert any("one generator" in note for note in recipe.notes)


def test_an_unknown_node_on_the_path_is_named_not_guessed_at():
    recipe = recipe_from_image_file(read(comfyui_png(comfyui_graph(lora=False, unknown=True, clip_skip=-1))))
    assert recipe.blockers == (
        "ComfyUI node 12 (ImageSharpen) is on the path from the save node (the saved images); diffusers-repro does "
        "not follow it, and the recipe stops there",
    )
    assert recipe.seed is None and recipe.prompt is None and recipe.clip_skip is None


def test_a_value_from_another_node_is_named():
    graph = comfyui_graph(lora=False)
    graph["20"] = {"class_type": "Seed (rgthree)", "inputs": {"seed": 5}}
    graph["3"]["inputs"]["seed"] = ["20", 0]
    graph["6"]["inputs"]["text"] = "(a fox:1.3), embedding:easynegative"
    recipe = recipe_from_comfyui({"prompt": json.dumps(graph)})
    assert recipe.seed is None
    assert recipe.blockers[0] == (
        "input 'seed' of ComfyUI node 3 (KSampler) comes from node 20 (Seed (rgthree)), which diffusers-repro does "
        "not follow"
    )
    assert any("prompt weighting" in b for b in recipe.blockers) and any("embedding" in b for b in recipe.blockers)


def test_sampler_without_equivalent_and_partial_steps():
    graph = comfyui_graph(lora=False)
    graph["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            **{k: v for k, v in graph["3"]["inputs"].items() if k not in ("seed", "denoise")},
            "noise_seed": 7,
            "add_noise": "enable",
            "start_at_step": 0,
            "end_at_step": 12,
            "return_with_leftover_noise": "disable",
            "sampler_name": "res_multistep",
        },
    }
    recipe = recipe_from_comfyui({"prompt": json.dumps(graph)})
    assert recipe.seed == 7 and recipe.scheduler is None
    assert "ComfyUI sampler 'res_multistep' has no diffusers equivalent" in recipe.blockers
    assert any("runs only part of the steps" in b for b in recipe.blockers)


def cyclic():
    graph = comfyui_graph(lora=True)
    graph["10"]["inputs"]["model"] = ["10", 0]
    return graph


def two_saves():
    graph = comfyui_graph()
    graph["13"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}
    return graph


def dangling():
    graph = comfyui_graph()
    graph["8"]["inputs"]["samples"] = ["99", 0]
    return graph


@pytest.mark.parametrize(
    "chunks, message",
    [
        ({"workflow": "{}"}, "has a ComfyUI 'workflow' chunk but no 'prompt' chunk"),
        ({"prompt": "{not json"}, "the 'prompt' chunk is not valid JSON"),
        ({"prompt": "[1, 2]"}, "the 'prompt' chunk must be a JSON object, got list"),
        ({"prompt": "[" * 100_000 + "]" * 100_000}, "the 'prompt' chunk is not valid JSON"),
        ({"prompt": json.dumps({"1": 5})}, "ComfyUI node '1' must be an object, got int"),
        ({"prompt": json.dumps({"1": {"inputs": {}}})}, "ComfyUI node '1' has no class_type string"),
        ({"prompt": json.dumps({"1": {"class_type": "KSampler"}})}, "has no SaveImage or PreviewImage node"),
        ({"prompt": json.dumps(cyclic())}, "graph has a link cycle through 10"),
        ({"prompt": json.dumps(two_saves())}, "has 2 save nodes (13, 9); the file does not say which one wrote it"),
        ({"prompt": json.dumps(dangling())}, "input 'samples' of ComfyUI node 8 links to node '99', which the graph"),
        (
            {"prompt": json.dumps({str(i): {"class_type": "X", "inputs": {}} for i in range(MAX_NODES + 1)})},
            f"has {MAX_NODES + 1} nodes, more than {MAX_NODES}",
        ),
        ({"prompt": json.dumps(comfyui_graph()), "workflow": "{"}, "the 'workflow' chunk is not valid JSON"),
    ],
)
def test_malformed_graphs_are_refused_naming_what(chunks, message):
    with pytest.raises(ForeignMetadataError, match=re.escape(message)):
        recipe_from_image_file(read(png_with_chunks(chunks)))


def test_out_of_range_values_name_the_node_and_input():
    graph = comfyui_graph()
    graph["3"]["inputs"]["steps"] = 10**9
    with pytest.raises(ForeignMetadataError, match=re.escape("steps of node 3 must be an integer from 1 to 10000")):
        recipe_from_comfyui({"prompt": json.dumps(graph)})
