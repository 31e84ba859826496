"""benchmarks/gpu_check.py: says so and exits 0 without CUDA; its every step runs (--smoke) on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script measures the GPU")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    done = _run("--out", str(tmp_path / "gpu_check.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to measure here\n"
    )
    assert not (tmp_path / "gpu_check.json").exists()


def test_smoke_runs_every_step_and_writes_the_results(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = _run("--smoke", "--rounds", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "FAILED" not in done.stdout, done.stdout
    results = json.loads(out.read_text())
    assert results["geometry"] == {"multiprocessors": 2, "max_threads_per_multiprocessor": 256}
    assert results["known_vector"]["emulated_vs_known"]["max_ulp"] <= 8
    rows = results["philox"]["rows"]
    assert len(rows) == 3 * 7 * 2 and {row["dtype"] for row in rows} == {"float32", "float16", "bfloat16"}
    assert all(row["share_bitwise"] == 1.0 and row["offsets_equal"] for row in rows)  # the emulation against itself
    assert {row["above_threshold"] for row in rows} == {True, False}
    pipeline = results["pipeline"]
    assert pipeline["deterministic_runs_bitwise"] is True
    for key in ("noise_batch8_cpu_s", "call_batch8_cuda_noise_s", "batch_invariant_ratio"):
        assert pipeline[key] > 0
    assert pipeline["call_overhead_paired_median_ratio"] > 0
    # The tiny pipeline, 2 steps: the pipeline's and the scheduler's own operations (53 + 37 per step), none in layers.
    assert pipeline["call_overhead_operations_through_mode"] == 53 + 37 * 2


def test_compare_draws_counts_ulps_across_zero():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from gpu_check import compare_draws
    finally:
        sys.path.remove(str(SCRIPT.parent))
    smallest = torch.tensor([1e-45, -1e-45, 1.0])
    result = compare_draws(torch.tensor([0.0, 0.0, 1.0]), smallest)
    assert result == {"numel": 3, "share_bitwise": 1 / 3, "max_abs_diff": pytest.approx(1.4e-45), "max_ulp": 1}
    half = compare_draws(torch.tensor([1.0], dtype=torch.float16), torch.tensor([1.0009766], dtype=torch.float16))
    assert half["max_ulp"] == 1
