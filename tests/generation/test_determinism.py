import os
import warnings

import pytest
import torch

from diffusers_repro import full_determinism
from diffusers_repro.generation.determinism import CUBLAS_WORKSPACE_CONFIG, DeterminismWarning, determinism_status


def snapshot():
    precisions = []
    for owner in (torch.backends.cuda.matmul, torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends):
        precisions.append(getattr(owner, "fp32_precision", None))
    return {**determinism_status(), "env_present": CUBLAS_WORKSPACE_CONFIG in os.environ, "precisions": precisions}


@pytest.fixture(autouse=True)
def no_workspace_variable(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE_CONFIG, raising=False)


def test_sets_everything_and_restores_exactly():
    before = snapshot()
    assert before["env_present"] is False
    with full_determinism():
        inside = determinism_status()
        assert inside["cublas_workspace_config"] == ":16:8"
        assert inside["deterministic_algorithms"] is True
        assert inside["deterministic_algorithms_warn_only"] is False
        assert inside["cudnn_deterministic"] is True
        assert inside["cudnn_benchmark"] is False
        assert inside["tf32_disabled"] is True
        assert inside["tf32_precision"] == {"cuda_matmul": "ieee", "cudnn_conv": "ieee", "cudnn_rnn": "ieee"}
        assert inside["full_determinism"] is True
    assert snapshot() == before
    # An unset variable is unset again, not left as an empty string.
    assert CUBLAS_WORKSPACE_CONFIG not in os.environ


def test_keeps_a_valid_workspace_value(monkeypatch):
    monkeypatch.setenv(CUBLAS_WORKSPACE_CONFIG, ":4096:8")
    with full_determinism():
        assert os.environ[CUBLAS_WORKSPACE_CONFIG] == ":4096:8"
    assert os.environ[CUBLAS_WORKSPACE_CONFIG] == ":4096:8"


def test_replaces_an_invalid_workspace_value_and_restores_it(monkeypatch):
    monkeypatch.setenv(CUBLAS_WORKSPACE_CONFIG, "")
    with full_determinism():
        assert os.environ[CUBLAS_WORKSPACE_CONFIG] == ":16:8"
    assert os.environ[CUBLAS_WORKSPACE_CONFIG] == ""


def test_restores_on_exception():
    before = snapshot()
    with pytest.raises(RuntimeError, match="boom"):
        with full_determinism():
            raise RuntimeError("boom")
    assert snapshot() == before


def test_nesting_and_reuse_of_one_object():
    before = snapshot()
    guard = full_determinism()
    with guard:
        middle = snapshot()
        with guard:
            with full_determinism(warn_only=True):
                assert torch.is_deterministic_algorithms_warn_only_enabled()
            assert snapshot() == middle
        assert snapshot() == middle
    assert snapshot() == before


def test_restores_non_default_flags():
    matmul = torch.backends.cuda.matmul
    original = matmul.fp32_precision
    torch.backends.cudnn.benchmark = True
    matmul.fp32_precision = "tf32"
    try:
        before = snapshot()
        assert before["tf32_precision"]["cuda_matmul"] == "tf32"
        with full_determinism():
            assert torch.backends.cudnn.benchmark is False
            assert matmul.fp32_precision == "ieee"
        assert snapshot() == before
    finally:
        torch.backends.cudnn.benchmark = False
        matmul.fp32_precision = original


def test_state_read_after_exit_through_the_legacy_api_still_works():
    with full_determinism():
        pass
    # torch refuses to read TF32 flags after the legacy and new APIs were mixed; we use the new one only.
    assert isinstance(torch.backends.cuda.matmul.allow_tf32, bool)
    assert isinstance(torch.backends.cudnn.allow_tf32, bool)
    assert torch.get_float32_matmul_precision() in ("highest", "high", "medium")


def test_usable_as_decorator():
    @full_determinism()
    def inside():
        return torch.are_deterministic_algorithms_enabled()

    assert inside() is True
    assert torch.are_deterministic_algorithms_enabled() is False


def test_warns_when_cuda_was_initialized_first(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.warns(DeterminismWarning, match="CUDA was initialized before CUBLAS_WORKSPACE_CONFIG was set"):
        with full_determinism():
            pass


def test_no_warning_when_cuda_is_not_initialized():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeterminismWarning)
        with full_determinism():
            pass


def test_warn_only_must_be_bool():
    with pytest.raises(TypeError, match="warn_only must be a bool, got 'yes'"):
        full_determinism(warn_only="yes")


def _tf32_state():
    backends = torch.backends
    owners = (backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn)
    legacy = []
    for getter in (lambda: backends.cuda.matmul.allow_tf32, lambda: backends.cudnn.allow_tf32):
        try:
            legacy.append(getter())
        except RuntimeError:
            legacy.append("refused")
    return legacy, [owner.fp32_precision for owner in owners]


@pytest.mark.parametrize(
    "setup",
    [
        "defaults",
        "legacy off",
        "new api tf32 everywhere",
        "conv and rnn disagree",
    ],
)
def test_legacy_and_new_tf32_reads_work_inside_and_everything_is_restored(setup):
    backends = torch.backends
    original = _tf32_state()
    try:
        if setup == "legacy off":
            backends.cudnn.allow_tf32 = False
            backends.cuda.matmul.allow_tf32 = False
        elif setup == "new api tf32 everywhere":
            for owner in (backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn):
                owner.fp32_precision = "tf32"
        elif setup == "conv and rnn disagree":
            backends.cudnn.conv.fp32_precision = "ieee"
        before = _tf32_state()
        with full_determinism():
            # torch._inductor's convolution lowering reads the legacy cuDNN flag: it must answer inside.
            assert backends.cudnn.allow_tf32 is False
            assert backends.cuda.matmul.allow_tf32 is False
            assert [backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision] == ["ieee", "ieee"]
            assert backends.cudnn.rnn.fp32_precision == "ieee"
            with full_determinism():
                assert backends.cudnn.allow_tf32 is False
            assert backends.cudnn.allow_tf32 is False
        assert _tf32_state() == before
    finally:
        backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = original[0]
        owners = (backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn)
        for owner, value in zip(owners, original[1], strict=True):
            owner.fp32_precision = value
    assert _tf32_state() == original
