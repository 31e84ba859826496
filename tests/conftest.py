"""Shared fixtures: the embedded tiny pipelines, built once per test session into a private cache folder."""

from __future__ import annotations

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


@pytest.fixture
def sd_pipe(tiny_sd_path):
    from diffusers_repro import ReproStableDiffusionPipeline

    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_sd_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def ddim_pipe(tiny_ddim_path):
    from diffusers_repro import ReproDDIMPipeline

    pipe = ReproDDIMPipeline.from_pretrained(tiny_ddim_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def cpu_generators():
    """``cpu_generators(seeds)``: the generator list a vanilla call needs to match ``seed=`` in a Repro call."""

    def make(seeds):
        return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

    return make
