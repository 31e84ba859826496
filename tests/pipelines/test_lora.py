"""LoRA adapters loaded with load_lora_weights: names, weights digests, scales and fusion in the provenance."""

import hashlib

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from tiny_components import tiny_unet_lora

import diffusers_repro.pipelines.adapters as adapters
import diffusers_repro.pipelines.weights as weights
from diffusers_repro import ReproStableDiffusionPipeline
from diffusers_repro.records.provenance import state_dict_digest
from diffusers_repro.tiny import build_tiny_pipeline

SD_CALL = {"num_inference_steps": 2, "output_type": "np", "height": 32, "width": 32}

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora") / "style"
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers={k.removeprefix("unet."): v for k, v in tiny_unet_lora(1).items()}
    )
    return folder


def model_record(pipe):
    return pipe("a fox", seed=0, **SD_CALL).provenance[0].recipe["model"]


def test_adapters_are_recorded_with_sources_digests_and_scales(sd_pipe, lora_folder):
    sd_pipe.load_lora_weights(lora_folder, adapter_name="style")
    detail = tiny_unet_lora(2)
    sd_pipe.load_lora_weights(detail, adapter_name="detail")
    sd_pipe.set_adapters(["style", "detail"], adapter_weights=[0.5, 1.0])
    out = sd_pipe("a fox", seed=0, **SD_CALL)
    # The same components with the same adapters in a vanilla pipeline make the same bits.
    plain = StableDiffusionPipeline(**sd_pipe.components)
    plain.set_progress_bar_config(disable=True)
    theirs = plain("a fox", generator=[torch.Generator().manual_seed(0)], **SD_CALL)
    np.testing.assert_array_equal(out.images, theirs.images)

    model = out.provenance[0].recipe["model"]
    lora = model["lora"]
    assert lora["active_adapters"] == ["style", "detail"] == sd_pipe.get_active_adapters()
    assert lora["enabled"] is True
    listed = {name: sorted(record["components"]) for name, record in lora["adapters"].items()}
    assert listed == {name: ["unet"] for name in sd_pipe.get_list_adapters()["unet"]}
    style, detail_record = lora["adapters"]["style"], lora["adapters"]["detail"]
    weights_file = lora_folder / "pytorch_lora_weights.safetensors"
    assert style["source"] == {
        "type": "local",
        "path": str(weights_file.resolve()),
        "file_digest": "sha256:" + hashlib.sha256(weights_file.read_bytes()).hexdigest(),
    }
    assert detail_record["source"]["type"] == "state_dict" and detail_record["source"]["tensors"] == len(detail)
    assert (style["weight"], detail_record["weight"]) == (0.5, 1.0)
    # Rank 2, alpha 2: the layers' multiplier is the set_adapters weight.
    assert style["components"]["unet"]["scaling"] == [0.5] and detail_record["components"]["unet"]["scaling"] == [1.0]
    unet_style = style["components"]["unet"]
    assert unet_style["rank"] == 2 and unet_style["tensors"] == len(detail) and unet_style["fused"] is False
    assert unet_style["weights_digest"] != detail_record["components"]["unet"]["weights_digest"]
    assert [operation["op"] for operation in lora["operations"]] == [
        "load_lora_weights",
        "load_lora_weights",
        "set_adapters",
    ]
    # Unfused adapters leave the base weights alone: the UNet is still described by its files.
    assert model["components"]["unet"]["digest_of"] == "files"


def test_adapter_digest_depends_on_the_adapter_weights_only(sd_pipe, lora_folder, tiny_sd_path):
    sd_pipe.load_lora_weights(lora_folder, adapter_name="style")
    other = ReproStableDiffusionPipeline.from_pretrained(tiny_sd_path)
    other.set_progress_bar_config(disable=True)
    other.load_lora_weights(lora_folder, adapter_name="style")
    first = model_record(sd_pipe)["lora"]["adapters"]["style"]["components"]["unet"]["weights_digest"]
    assert model_record(other)["lora"]["adapters"]["style"]["components"]["unet"]["weights_digest"] == first


def test_fusing_changes_the_digest_of_the_component_it_changed(sd_pipe, lora_folder):
    sd_pipe.load_lora_weights(lora_folder, adapter_name="style")
    before = model_record(sd_pipe)["components"]
    sd_pipe.fuse_lora(lora_scale=0.7)
    fused = model_record(sd_pipe)
    unet = fused["components"]["unet"]
    assert unet["digest_of"] == "tensors" and unet["weights_digest"] != before["unet"]["weights_digest"]
    assert unet["fused_adapters"] == ["style"] and "fused" in unet["note"]
    # The text encoder had no adapter: it keeps its file digest.
    assert fused["components"]["text_encoder"] == before["text_encoder"]
    assert fused["lora"]["adapters"]["style"]["components"]["unet"]["fused"] is True
    fuse = fused["lora"]["operations"][-1]
    assert fuse["op"] == "fuse_lora" and fuse["lora_scale"] == 0.7 and fuse["components"] == ["unet", "text_encoder"]

    sd_pipe.unfuse_lora()
    unfused = model_record(sd_pipe)["components"]["unet"]
    assert unfused["digest_of"] == "tensors" and "fused_adapters" not in unfused
    assert unfused["weights_digest"] != unet["weights_digest"]


def test_base_weights_digest_of_an_in_memory_unet_ignores_unfused_adapters():
    pipe = ReproStableDiffusionPipeline(**build_tiny_pipeline("sd").components)
    pipe.set_progress_bar_config(disable=True)
    before = model_record(pipe)["components"]["unet"]
    assert before["weights_digest"] == state_dict_digest(pipe.unet)
    pipe.load_lora_weights(tiny_unet_lora(1), adapter_name="style")
    weights.COMPONENT_DIGESTS.pop(pipe.unet)  # digest the tensors again, now with peft's layers injected
    after = model_record(pipe)["components"]["unet"]
    assert after == before


def test_disabled_and_unloaded_adapters_are_recorded(sd_pipe, lora_folder):
    sd_pipe.load_lora_weights(lora_folder, adapter_name="style")
    sd_pipe.disable_lora()
    assert model_record(sd_pipe)["lora"]["enabled"] is False
    sd_pipe.unload_lora_weights()
    lora = model_record(sd_pipe)["lora"]
    assert lora["adapters"] == {} and [op["op"] for op in lora["operations"]][-2:] == [
        "disable_lora",
        "unload_lora_weights",
    ]


def test_adapter_digests_are_not_recomputed_per_call(sd_pipe, lora_folder, monkeypatch):
    sd_pipe.load_lora_weights(lora_folder, adapter_name="style")
    model_record(sd_pipe)
    monkeypatch.setattr(
        adapters, "named_tensors_digest", lambda *a: pytest.fail("adapter tensors digested during a call")
    )
    assert "style" in model_record(sd_pipe)["lora"]["adapters"]


def test_pipelines_without_lora_support_get_no_lora_methods():
    from diffusers import DDPMPipeline

    from diffusers_repro.pipelines.factory import reproducible

    assert not hasattr(reproducible(DDPMPipeline), "load_lora_weights")
    assert "fuse_lora" in vars(ReproStableDiffusionPipeline)


def test_reproduce_without_pipe_loads_the_recorded_adapters_again(tiny_sd_path, lora_folder):
    from diffusers_repro import reproduce

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_sd_path)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(lora_folder, adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.5])
    record = pipe("a fox", seed=4, **SD_CALL).provenance[0]
    result = reproduce(record)
    assert result.verdict == "bitwise", result.differences
    assert result.provenance.recipe["model"]["lora"]["adapters"]["style"]["weight"] == 0.5

    pipe.fuse_lora(lora_scale=0.8)
    fused = pipe("a fox", seed=4, **SD_CALL).provenance[0]
    assert reproduce(fused).verdict == "bitwise"


def test_reproduce_refuses_an_adapter_given_as_a_state_dict(tiny_sd_path):
    from diffusers_repro import reproduce
    from diffusers_repro.verify.replay import ReproductionError

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_sd_path)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(tiny_unet_lora(3), adapter_name="memory")
    record = pipe("a fox", seed=4, **SD_CALL).provenance[0]
    with pytest.raises(ReproductionError, match="LoRA adapter 'memory' was loaded from 'state_dict'"):
        reproduce(record)
