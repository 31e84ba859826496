"""Shared fixtures: the embedded tiny pipelines, built once per test session into a private cache folder."""

from __future__ import annotations

import hashlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from diffusers_repro.tiny import tiny_pipeline_path  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A cache folder for the tiny pipelines that belongs to this test session alone."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_sd_path(tiny_cache):
    return tiny_pipeline_path("sd", cache_dir=tiny_cache)


@pytest.fixture(scope="session")
def tiny_ddim_path(tiny_cache):
    return tiny_pipeline_path("ddim", cache_dir=tiny_cache)


def _load(class_name: str, path):
    import diffusers_repro

    pipe = getattr(diffusers_repro, class_name).from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def sd_pipe(tiny_sd_path):
    """A fresh reproducible tiny SD pipeline for one test (free to change its scheduler or adapters)."""
    return _load("ReproStableDiffusionPipeline", tiny_sd_path)


@pytest.fixture
def ddim_pipe(tiny_ddim_path):
    return _load("ReproDDIMPipeline", tiny_ddim_path)


@pytest.fixture(scope="module")
def sd(tiny_sd_path):
    """One tiny SD pipeline shared by a test module: CPU kernels warm up once per shape. Tests must not change it."""
    return _load("ReproStableDiffusionPipeline", tiny_sd_path)


@pytest.fixture(scope="module")
def ddim(tiny_ddim_path):
    """One tiny DDIM pipeline shared by a test module. Tests must not change it."""
    return _load("ReproDDIMPipeline", tiny_ddim_path)


@pytest.fixture
def cpu_generators():
    """``cpu_generators(seeds)``: the generator list a vanilla call needs to match ``seed=`` in a Repro call."""

    def make(seeds):
        return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

    return make


def _make_hub_cache(source, cache_dir, repo_id="tiny-org/tiny-sd", commit="0123456789abcdef0123456789abcdef01234567"):
    """Lays ``source`` out as huggingface_hub caches ``repo_id`` at ``commit``: blobs named by their sha256,
    snapshot files linking to them, ``refs/main`` naming the commit. Returns ``(repo_id, commit)``."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    for path in sorted(source.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = repo / "snapshots" / commit / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(blob)
    return repo_id, commit


@pytest.fixture
def make_hub_cache():
    """``make_hub_cache(source, cache_dir, repo_id=..., commit=...)``: a hub-style cache folder made from a folder."""
    return _make_hub_cache


@pytest.fixture(scope="session", autouse=True)
def _session_repro_home(tmp_path_factory):
    # Session-scoped so that module- and session-scoped fixtures that write images sign in it too.
    home = tmp_path_factory.mktemp("diffusers-repro-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIFFUSERS_REPRO_HOME", str(home))
        yield home


@pytest.fixture(autouse=True)
def repro_home(_session_repro_home, monkeypatch):
    """Every test signs with an identity in a session folder, never in the user's own config folder."""
    monkeypatch.setenv("DIFFUSERS_REPRO_HOME", str(_session_repro_home))
    return _session_repro_home
