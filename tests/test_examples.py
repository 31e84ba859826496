"""Every example script runs and says what it promises."""

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def private_tiny_cache(tiny_cache, monkeypatch):
    monkeypatch.setenv("DIFFUSERS_REPRO_CACHE", str(tiny_cache))


@pytest.fixture(autouse=True)
def keep_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cpu_generation_prints_the_same_value_twice(monkeypatch, capsys):
    first = run_example("cpu_generation.py", monkeypatch, capsys)
    second = run_example("cpu_generation.py", monkeypatch, capsys)
    assert "output digest sha256:" in first and first == second


def test_gpu_with_cpu_noise_falls_back_to_cpu(monkeypatch, capsys):
    out = run_example("gpu_with_cpu_noise.py", monkeypatch, capsys)
    assert re.search(r"cpu\s+seed 42 noise sha256:", out) and "seed 43" in out


def test_deterministic_algorithms_distance_zero(monkeypatch, capsys):
    out = run_example("deterministic_algorithms.py", monkeypatch, capsys)
    assert "L_inf distance between the two runs = 0.0" in out
    assert "deterministic algorithms after the call: False" in out


def test_batch_grid_saves_one_grid(monkeypatch, capsys, tmp_path):
    out = run_example("batch_grid.py", monkeypatch, capsys, "--out", str(tmp_path / "grid.png"))
    from PIL import Image

    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[0] == 2 * grid.size[1]
    assert [int(s) for s in re.findall(r"^seed (\d+)", out, flags=re.M)] == [0, 1, 2, 3, 0, 0, 0, 0]


def test_cuda_generator_images_are_made_again_anywhere(monkeypatch, capsys):
    out = run_example("cuda_generator_images.py", monkeypatch, capsys)
    lines = out.splitlines()
    assert lines[0] == "emulated vs the GPU's seed-0 vector: max abs diff 2.4e-07"
    pattern = r"seed 42: CUDA noise \((emulated|torch.Generator\('cuda'\))\), noise sha256:[0-9a-f]{16}"
    assert re.fullmatch(pattern, lines[-3])
    assert lines[-1] == "reproduced image 1 from its record: bitwise"


def test_content_credentials_signs_catches_a_tampered_copy_and_finds_a_stripped_one(monkeypatch, capsys, tmp_path):
    out = run_example("content_credentials.py", monkeypatch, capsys, str(tmp_path))
    lines = out.splitlines()
    assert lines[:3] == [
        "00000-seed0.jpg: trusted",
        "00001-seed1.jpg: trusted",
        "tampered.jpg: tampered (assertion.dataHash.mismatch)",
    ]
    assert lines[3].startswith("stripped copy: unsigned, came from 00001-seed1.jpg (similarity 0.9")


def test_other_tools_reads_an_a1111_file_and_makes_it_again_bitwise(monkeypatch, capsys, tmp_path):
    out = run_example("other_tools.py", monkeypatch, capsys, "--out", str(tmp_path))
    assert "00000-1234.png: a1111 recipe, sampler 'Euler a' -> EulerAncestralDiscreteScheduler" in out
    assert "blockers: none" in out and "a1111_noise(" in out
    assert "reproduce: bitwise (a1111 recipe); max abs pixel difference 0.0" in out
