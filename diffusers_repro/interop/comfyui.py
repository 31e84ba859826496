"""ComfyUI's ``prompt`` graph as a `Recipe`, followed from the save node back.

ComfyUI's ``SaveImage`` writes two PNG text chunks: ``prompt``, the API-format graph that ran
(``{node_id: {"class_type": ..., "inputs": {...}}}``, an input that comes from another node being the link
``[node_id, output_index]``), and ``workflow``, the editor's graph (positional widget values, not read here). The
reader starts at the graph's one save node and follows its links back through ``VAEDecode``, ``KSampler`` /
``KSamplerAdvanced``, ``CLIPTextEncode``, ``EmptyLatentImage``, ``CLIPSetLastLayer``, ``LoraLoader`` and
``CheckpointLoaderSimple``. Any other node on that path is named in a blocker, never guessed at. The graph is bounded
(`MAX_NODES`), every link is checked to name a node, and a link cycle is refused.
"""

from __future__ import annotations

from typing import Any

from ..generation import from_comfyui
from .recipe import (
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    ForeignMetadataError,
    Recipe,
    check_float,
    check_int,
    check_text,
    load_json_object,
    prompt_blockers,
)

__all__ = ["MAX_NODES", "PROMPT_KEY", "WORKFLOW_KEY", "recipe_from_comfyui"]

PROMPT_KEY = "prompt"
WORKFLOW_KEY = "workflow"
MAX_NODE_ID_CHARS = 64
"""Longest ComfyUI node id read."""

MAX_NODES = 10_000
"""Most nodes a ``prompt`` graph may have."""

_SAVE_NODES = ("SaveImage", "PreviewImage")
_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")


class _Graph:
    def __init__(self, nodes: dict[str, Any], where: str):
        self.nodes = nodes
        self.where = where
        self.blockers: list[str] = []

    def node(self, node_id: str) -> dict[str, Any]:
        return self.nodes[node_id]

    def visit(self, node_id: str, seen: set[str]) -> str:
        """The class of ``node_id``, the next node of a walk along links; a node seen before is a link cycle."""
        if node_id in seen:
            raise ForeignMetadataError(f"{self.where}: the ComfyUI 'prompt' graph has a link cycle through {node_id}")
        seen.add(node_id)
        return self.nodes[node_id]["class_type"]

    def input(self, node_id: str, name: str) -> Any:
        inputs = self.nodes[node_id]["inputs"]
        if name not in inputs:
            raise ForeignMetadataError(
                f"{self.where}: ComfyUI node {node_id} ({self.nodes[node_id]['class_type']}) has no input {name!r}"
            )
        return inputs[name]

    @staticmethod
    def is_link(value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], str | int)
            and not isinstance(value[0], bool)
            and isinstance(value[1], int)
            and not isinstance(value[1], bool)
        )

    def linked(self, node_id: str, name: str) -> str:
        """The node an input links to (checked to exist)."""
        value = self.input(node_id, name)
        if not self.is_link(value):
            raise ForeignMetadataError(
                f"{self.where}: input {name!r} of ComfyUI node {node_id} must be a link [node_id, output], got "
                f"{str(value)[:60]!r}"
            )
        target = str(value[0])
        if target not in self.nodes:
            raise ForeignMetadataError(
                f"{self.where}: input {name!r} of ComfyUI node {node_id} links to node {target[:40]!r}, which the "
                "graph does not have"
            )
        return target

    def value(self, node_id: str, name: str) -> Any:
        """A widget value; a link there (the value comes from another node) is a blocker and `None`."""
        value = self.input(node_id, name)
        if self.is_link(value):
            target = self.linked(node_id, name)
            self.blockers.append(
                f"input {name!r} of ComfyUI node {node_id} ({self.nodes[node_id]['class_type']}) comes from node "
                f"{target} ({self.nodes[target]['class_type']}), which diffusers-repro does not follow"
            )
            return None
        return value

    def unknown(self, node_id: str, reached_from: str) -> None:
        self.blockers.append(
            f"ComfyUI node {node_id} ({self.nodes[node_id]['class_type']}) is on the path from the save node "
            f"({reached_from}); diffusers-repro does not follow it, and the recipe stops there"
        )


def _check_graph(graph: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    if len(graph) > MAX_NODES:
        raise ForeignMetadataError(
            f"{where}: the ComfyUI 'prompt' graph has {len(graph)} nodes, more than {MAX_NODES}"
        )
    nodes = {}
    for node_id, node in graph.items():
        shown = node_id[:40]
        if len(node_id) > MAX_NODE_ID_CHARS:
            # ComfyUI numbers its nodes ("3", "12:4"): a long id is only there to make every message long.
            raise ForeignMetadataError(f"{where}: ComfyUI node id {shown!r}... is longer than {MAX_NODE_ID_CHARS}")
        if not isinstance(node, dict):
            raise ForeignMetadataError(f"{where}: ComfyUI node {shown!r} must be an object, got {type(node).__name__}")
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type or len(class_type) > 200:
            raise ForeignMetadataError(f"{where}: ComfyUI node {shown!r} has no class_type string")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ForeignMetadataError(f"{where}: the inputs of ComfyUI node {shown!r} must be an object")
        nodes[node_id] = {"class_type": class_type, "inputs": inputs}
    return nodes


def _save_node(graph: _Graph) -> str:
    saves = [node_id for node_id, node in graph.nodes.items() if node["class_type"] in _SAVE_NODES]
    if not saves:
        raise ForeignMetadataError(f"{graph.where}: the ComfyUI 'prompt' graph has no SaveImage or PreviewImage node")
    if len(saves) > 1:
        raise ForeignMetadataError(
            f"{graph.where}: the ComfyUI 'prompt' graph has {len(saves)} save nodes "
            f"({', '.join(sorted(saves)[:10])}); "
            "the file does not say which one wrote it"
        )
    return saves[0]


def _follow_model(graph: _Graph, node_id: str, recipe: dict[str, Any], seen: set[str]) -> None:
    """From a sampler's ``model`` input back to the checkpoint: LoRAs on the way."""
    while True:
        class_type = graph.visit(node_id, seen)
        if class_type == "LoraLoader":
            name = check_text(graph.value(node_id, "lora_name"), f"lora_name of node {node_id}", graph.where)
            weight = check_float(
                graph.value(node_id, "strength_model"), f"strength_model of node {node_id}", graph.where
            )
            clip = check_float(graph.value(node_id, "strength_clip"), f"strength_clip of node {node_id}", graph.where)
            recipe["loras"].insert(0, {"name": name, "weight": weight, "clip_weight": clip, "hash": None})
            node_id = graph.linked(node_id, "model")
        elif class_type == "CheckpointLoaderSimple":
            name = check_text(graph.value(node_id, "ckpt_name"), f"ckpt_name of node {node_id}", graph.where)
            recipe["model"] = {"name": name, "hash": None, "hash_kind": None}
            return
        else:
            graph.unknown(node_id, "the sampler's model")
            return


def _follow_text(graph: _Graph, node_id: str, field: str, recipe: dict[str, Any]) -> str | None:
    if graph.node(node_id)["class_type"] != "CLIPTextEncode":
        graph.unknown(node_id, f"the sampler's {field}")
        return None
    text = check_text(graph.value(node_id, "text"), f"text of node {node_id}", graph.where)
    clip = graph.linked(node_id, "clip")
    seen: set[str] = set()
    while clip not in seen:
        seen.add(clip)
        class_type = graph.node(clip)["class_type"]
        if class_type == "CLIPSetLastLayer":
            layer = check_int(
                graph.value(clip, "stop_at_clip_layer"), f"stop_at_clip_layer of node {clip}", -24, -1, graph.where
            )
            # ComfyUI's -1 is the last layer (no skip); -2 is diffusers' clip_skip=1.
            skip = None if layer is None or layer == -1 else -layer - 1
            if recipe.get("clip_skip_seen") and recipe["clip_skip"] != skip:
                raise ForeignMetadataError(
                    f"{graph.where}: the ComfyUI prompt and negative prompt use different CLIP layers"
                )
            recipe["clip_skip"], recipe["clip_skip_seen"] = skip, True
            clip = graph.linked(clip, "clip")
        elif class_type == "LoraLoader":
            clip = graph.linked(clip, "clip")
        elif class_type == "CheckpointLoaderSimple":
            break
        else:
            graph.unknown(clip, f"the {field}'s text encoder")
            break
    else:
        raise ForeignMetadataError(f"{graph.where}: the ComfyUI 'prompt' graph has a link cycle through {clip}")
    return text


def _follow_latent(graph: _Graph, node_id: str, recipe: dict[str, Any]) -> None:
    if graph.node(node_id)["class_type"] != "EmptyLatentImage":
        graph.unknown(node_id, "the sampler's latent_image")
        return
    where = graph.where
    recipe["width"] = check_int(graph.value(node_id, "width"), f"width of node {node_id}", 1, MAX_SIDE, where)
    recipe["height"] = check_int(graph.value(node_id, "height"), f"height of node {node_id}", 1, MAX_SIDE, where)
    recipe["batch_size"] = check_int(
        graph.value(node_id, "batch_size"), f"batch_size of node {node_id}", 1, 4096, where
    )


def _read_sampler(graph: _Graph, node_id: str, recipe: dict[str, Any]) -> None:
    where = graph.where
    class_type = graph.node(node_id)["class_type"]
    seed_name = "seed" if class_type == "KSampler" else "noise_seed"
    recipe["seed"] = check_int(graph.value(node_id, seed_name), f"{seed_name} of node {node_id}", 0, MAX_SEED, where)
    recipe["steps"] = check_int(graph.value(node_id, "steps"), f"steps of node {node_id}", 1, MAX_STEPS, where)
    recipe["guidance_scale"] = check_float(graph.value(node_id, "cfg"), f"cfg of node {node_id}", where)
    sampler = check_text(graph.value(node_id, "sampler_name"), f"sampler_name of node {node_id}", where)
    scheduler = check_text(graph.value(node_id, "scheduler"), f"scheduler of node {node_id}", where)
    recipe["sampler"], recipe["schedule_type"] = sampler, scheduler
    if sampler is not None and scheduler is not None:
        mapping = from_comfyui(sampler, scheduler)
        recipe["scheduler"], recipe["scheduler_config"] = mapping.scheduler, dict(mapping.config)
        graph.blockers.extend(mapping.blockers)
        recipe["notes"].extend(mapping.notes)
    if class_type == "KSampler":
        denoise = check_float(graph.value(node_id, "denoise"), f"denoise of node {node_id}", where, 0, 1)
        if denoise is not None and denoise != 1.0:
            recipe["extras"]["denoise"] = denoise
            graph.blockers.append(f"KSampler node {node_id} denoises only {denoise:g} of the way (img2img-like)")
    else:
        advanced = {name: graph.value(node_id, name) for name in ("add_noise", "start_at_step", "end_at_step")}
        recipe["extras"].update({key: value for key, value in advanced.items() if isinstance(value, str | int)})
        start = advanced["start_at_step"]
        end = advanced["end_at_step"]
        if (
            advanced["add_noise"] == "disable"
            or start not in (0, None)
            or (isinstance(end, int) and recipe["steps"] is not None and end < recipe["steps"])
        ):
            graph.blockers.append(
                f"KSamplerAdvanced node {node_id} runs only part of the steps or adds no noise (add_noise, "
                "start_at_step, end_at_step)"
            )
    _follow_model(graph, graph.linked(node_id, "model"), recipe, set())
    recipe["prompt"] = _follow_text(graph, graph.linked(node_id, "positive"), "prompt", recipe)
    recipe["negative_prompt"] = _follow_text(graph, graph.linked(node_id, "negative"), "negative prompt", recipe)
    _follow_latent(graph, graph.linked(node_id, "latent_image"), recipe)


def recipe_from_comfyui(
    metadata: dict[str, str], where: str = "<comfyui>", image_size: tuple[int, int] | None = None
) -> Recipe:
    """The recipe of a ComfyUI PNG from its ``prompt`` chunk (``metadata``: the PNG's text chunks).

    ComfyUI draws a whole batch's starting noise from one CPU generator and writes the same graph into every image of
    the batch, so ``batch_index`` is `None` (unknown) and ``batch_size`` is the latent's.

    Raises:
        `ForeignMetadataError`: no ``prompt`` chunk (a ``workflow`` chunk alone is not read), JSON that is not a graph,
            a node without ``class_type``, a link to a missing node, a link cycle, no save node or several, a value
            out of range. The message names the node and the input.

    Example:

    ```py
    >>> import json
    >>> from diffusers_repro.interop.comfyui import recipe_from_comfyui
    >>> graph = {"9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}, ...}  # doctest: +SKIP
    >>> recipe_from_comfyui({"prompt": json.dumps(graph)}).seed  # doctest: +SKIP
    42
    ```
    """
    if PROMPT_KEY not in metadata:
        raise ForeignMetadataError(
            f"{where}: it has a ComfyUI {WORKFLOW_KEY!r} chunk but no {PROMPT_KEY!r} chunk; the workflow's widget "
            "values are positional and not read (export the image again from ComfyUI's SaveImage)"
        )
    if WORKFLOW_KEY in metadata:
        load_json_object(metadata[WORKFLOW_KEY], WORKFLOW_KEY, where)
    graph = _Graph(_check_graph(load_json_object(metadata[PROMPT_KEY], PROMPT_KEY, where), where), where)
    recipe: dict[str, Any] = {"loras": [], "extras": {}, "notes": [], "model": None, "clip_skip": None}
    save = _save_node(graph)
    node_id, seen = graph.linked(save, "images"), {save}
    while True:
        class_type = graph.visit(node_id, seen)
        if class_type == "VAEDecode":
            node_id = graph.linked(node_id, "samples")
        elif class_type in _SAMPLER_NODES:
            _read_sampler(graph, node_id, recipe)
            break
        else:
            graph.unknown(node_id, "the saved images")
            break
    # Each of these leaves a call to run (the regeneration names them among the differences).
    runs = [
        f"LoRA {lora['name']!r} is applied; a plain diffusers call does not load it (load_lora_weights)"
        for lora in recipe["loras"]
    ]
    runs += prompt_blockers(recipe.get("prompt"), "prompt", "comfyui")
    runs += prompt_blockers(recipe.get("negative_prompt"), "negative prompt", "comfyui")
    width, height = recipe.get("width"), recipe.get("height")
    if image_size is not None and width is not None and height is not None and (width, height) != tuple(image_size):
        runs.append(
            f"the image is {image_size[0]}x{image_size[1]} but its graph's latent is {width}x{height} (resized after "
            "generation, or a node the reader does not follow)"
        )
    blockers = [*graph.blockers, *runs]
    if recipe.get("batch_size") and recipe["batch_size"] > 1:
        recipe["notes"].append(
            "ComfyUI draws the whole batch's noise from one generator and does not write which image of the batch "
            "this is"
        )
    return Recipe(
        source="comfyui",
        prompt=recipe.get("prompt"),
        negative_prompt=recipe.get("negative_prompt"),
        seed=recipe.get("seed"),
        steps=recipe.get("steps"),
        guidance_scale=recipe.get("guidance_scale"),
        width=width,
        height=height,
        sampler=recipe.get("sampler"),
        schedule_type=recipe.get("schedule_type"),
        scheduler=recipe.get("scheduler"),
        scheduler_config=recipe.get("scheduler_config", {}),
        model=recipe["model"],
        loras=tuple(recipe["loras"]),
        clip_skip=recipe["clip_skip"],
        batch_index=None,
        batch_size=recipe.get("batch_size"),
        rng="cpu",
        extras=recipe["extras"],
        blockers=tuple(blockers),
        runs_anyway=tuple(runs),
        notes=tuple(recipe["notes"]),
    )
