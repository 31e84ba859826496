import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DiffusionPipeline, StableDiffusionPipeline
from safetensors import safe_open
from safetensors.torch import load_file

from diffusers_repro import tiny
from diffusers_repro.tiny import TINY_FORMAT_VERSION, TINY_KINDS, build_tiny_pipeline, tiny_pipeline_path


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, steps=2, **kwargs):
    generator = torch.Generator().manual_seed(0)
    if isinstance(pipe, DDIMPipeline):
        return pipe(num_inference_steps=steps, generator=generator, output_type="np", **kwargs).images
    return pipe("a fox", num_inference_steps=steps, generator=generator, output_type="np", **kwargs).images


def _state_dicts(pipe):
    return {
        name: component.state_dict()
        for name, component in pipe.components.items()
        if isinstance(component, torch.nn.Module)
    }


@pytest.fixture(scope="module")
def pipes():
    return {kind: _quiet(build_tiny_pipeline(kind)) for kind in TINY_KINDS}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {kind: tiny_pipeline_path(kind, cache_dir=cache) for kind in ("ddim", "sd")}


def test_kinds():
    assert TINY_KINDS == ("ddim", "sd", "sd-small")
    assert isinstance(TINY_FORMAT_VERSION, int)


@pytest.mark.parametrize(
    "kind, cls, size",
    [("ddim", DDIMPipeline, 16), ("sd", StableDiffusionPipeline, 64), ("sd-small", StableDiffusionPipeline, 256)],
)
def test_build_and_call(pipes, kind, cls, size):
    pipe = pipes[kind]
    assert type(pipe) is cls
    if cls is StableDiffusionPipeline:
        assert pipe.safety_checker is None and pipe.feature_extractor is None
        assert pipe.unet.config.sample_size * pipe.vae_scale_factor == size
        assert pipe.vae_scale_factor == 8
        # sd-small at its default size is benchmark-sized; 2 steps at 64x64 still exercise every component.
        kwargs = {"height": 64, "width": 64} if kind == "sd-small" else {}
        images = _run(pipe, **kwargs)
        expected = 64
    else:
        images = _run(pipe)
        expected = size
    assert images.shape == (1, expected, expected, 3)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_every_module_in_eval_mode_float32_cpu(pipes, kind):
    modules = [c for c in pipes[kind].components.values() if isinstance(c, torch.nn.Module)]
    assert modules
    for component in modules:
        assert not any(m.training for m in component.modules()), type(component).__name__
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in component.parameters())


def test_global_rng_untouched():
    state = torch.get_rng_state()
    for kind in TINY_KINDS:
        build_tiny_pipeline(kind)
    assert torch.equal(torch.get_rng_state(), state)


def test_unknown_kind_error():
    with pytest.raises(ValueError) as info:
        build_tiny_pipeline("nope")
    message = str(info.value)
    assert "kind" in message and "'nope'" in message
    for kind in TINY_KINDS:
        assert kind in message
    with pytest.raises(ValueError, match="nope"):
        tiny_pipeline_path("nope")


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_rebuild_is_bitwise_identical(pipes, kind):
    first, second = _state_dicts(pipes[kind]), _state_dicts(build_tiny_pipeline(kind))
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].keys() == second[name].keys()
        for key, tensor in first[name].items():
            assert torch.equal(tensor, second[name][key]), f"{name}.{key}"
    assert pipes[kind].scheduler.config == build_tiny_pipeline(kind).scheduler.config


def test_build_in_another_process_is_bitwise_identical(pipes, tmp_path):
    # tiny.py is loaded by file path so the child pays only for diffusers and transformers, not for the package.
    code = (
        "import importlib.util, sys\n"
        "from safetensors.torch import save_file\n"
        "spec = importlib.util.spec_from_file_location('tiny_standalone', sys.argv[1])\n"
        "tiny = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(tiny)\n"
        "for kind in ('ddim', 'sd'):\n"
        "    for name, component in tiny.build_tiny_pipeline(kind).components.items():\n"
        "        if hasattr(component, 'state_dict'):\n"
        "            state = {k: v.contiguous().clone() for k, v in component.state_dict().items()}\n"
        "            save_file(state, f'{sys.argv[2]}/{kind}-{name}.safetensors')\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", code, tiny.__file__, str(tmp_path)], env=env, check=True, timeout=120)
    for kind in ("ddim", "sd"):
        for name, state in _state_dicts(pipes[kind]).items():
            other = load_file(tmp_path / f"{kind}-{name}.safetensors")
            assert other.keys() == state.keys()
            for key, tensor in state.items():
                assert torch.equal(tensor, other[key]), f"{kind}: {name}.{key}"


@pytest.mark.parametrize("kind", ["ddim", "sd"])
@pytest.mark.parametrize("loader", [DiffusionPipeline, "specific"])
def test_loaded_pipeline_is_bitwise_identical(pipes, saved, kind, loader):
    if loader == "specific":
        loader = DDIMPipeline if kind == "ddim" else StableDiffusionPipeline
    loaded = _quiet(loader.from_pretrained(saved[kind]))
    assert type(loaded) is type(pipes[kind])
    np.testing.assert_array_equal(_run(loaded), _run(pipes[kind]))
    if kind == "sd":
        # Batch 1 without CFG runs the timestep embedding through gemv, the path sensitive to weight alignment.
        np.testing.assert_array_equal(_run(loaded, guidance_scale=1.0), _run(pipes[kind], guidance_scale=1.0))


def test_saved_folder_layout(pipes, saved):
    folder = saved["sd"]
    assert folder.name == f"tiny-sd-v{TINY_FORMAT_VERSION}"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert not list(folder.rglob("*.bin"))
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    with safe_open(weights, framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        state = pipes["sd"].unet.state_dict()
        assert set(f.keys()) == set(state)
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), state[key])


def test_cache_reused_without_rebuild(tmp_path, monkeypatch):
    path = tiny_pipeline_path("ddim", cache_dir=tmp_path)
    assert path == tmp_path / f"tiny-ddim-v{TINY_FORMAT_VERSION}"
    mtime = (path / "model_index.json").stat().st_mtime_ns

    def fail(kind):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(tiny, "build_tiny_pipeline", fail)
    assert tiny_pipeline_path("ddim", cache_dir=str(tmp_path)) == path
    assert (path / "model_index.json").stat().st_mtime_ns == mtime


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSERS_REPRO_CACHE", str(tmp_path / "env-cache"))
    path = tiny_pipeline_path("ddim")
    assert path.parent == tmp_path / "env-cache" and (path / "model_index.json").is_file()


def test_lost_race_keeps_the_winner(tmp_path, monkeypatch):
    real_build = tiny.build_tiny_pipeline
    target = tmp_path / f"tiny-ddim-v{TINY_FORMAT_VERSION}"

    def build_while_another_process_finishes(kind):
        monkeypatch.setattr(tiny, "build_tiny_pipeline", real_build)
        winner = tiny_pipeline_path(kind, cache_dir=tmp_path)
        (winner / "winner").touch()
        return real_build(kind)

    monkeypatch.setattr(tiny, "build_tiny_pipeline", build_while_another_process_finishes)
    assert tiny_pipeline_path("ddim", cache_dir=tmp_path) == target
    assert (target / "winner").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_incomplete_folder_is_replaced(tmp_path):
    target = tmp_path / f"tiny-ddim-v{TINY_FORMAT_VERSION}"
    (target / "unet").mkdir(parents=True)
    (target / "unet" / "junk").touch()
    assert tiny_pipeline_path("ddim", cache_dir=tmp_path) == target
    assert (target / "model_index.json").is_file() and not (target / "unet" / "junk").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_tokenizer(pipes, saved):
    pipe = pipes["sd"]
    tokenizer = pipe.tokenizer
    assert len(tokenizer) == 514 == pipe.text_encoder.config.vocab_size
    assert tokenizer.model_max_length == 77 == pipe.text_encoder.config.max_position_embeddings
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.bos_token == "<|startoftext|>"
    assert pipe.text_encoder.config.eos_token_id == tokenizer.eos_token_id

    ids = tokenizer("a fox").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert all(0 <= i < len(tokenizer) for i in ids)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a fox"
    padded = tokenizer("a fox", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77 and padded[len(ids) :] == [tokenizer.pad_token_id] * (77 - len(ids))
    # Bytes outside ASCII still round-trip through the byte-level alphabet.
    assert tokenizer.decode(tokenizer("héllo wörld").input_ids, skip_special_tokens=True) == "héllo wörld"

    loaded = StableDiffusionPipeline.from_pretrained(saved["sd"]).tokenizer
    texts = ["a fox", "A photo of an astronaut riding a horse!", "x" * 200]
    for text in texts:
        assert (
            loaded(text, padding="max_length", truncation=True, max_length=77).input_ids
            == tokenizer(text, padding="max_length", truncation=True, max_length=77).input_ids
        )
    assert loaded.model_max_length == 77 and loaded.pad_token == "<|endoftext|>"
