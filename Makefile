# Everything a fresh machine needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install kdiffusion demo test fuzz quality benchmark browser clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,serve]'
	touch $(STAMP)

# k-diffusion (what A1111 and ComfyUI sample with) for the sampler closeness test and benchmark. Installed without its
# declared dependencies: those (torchvision, wandb, clean-fid, kornia...) pull a CUDA build of torch and are not what
# its samplers use; torchdiffeq (imported by k_diffusion/sampling.py) needs only torch and scipy, both already pinned.
# Not in the `test` extra because pip cannot install one requirement without its dependencies from there; `make test`
# installs it first.
kdiffusion: $(VENV)/.kdiffusion

$(VENV)/.kdiffusion: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt k-diffusion torchdiffeq
	touch $@

demo: install
	$(VENV)/bin/diffusers-repro demo --out outputs/demo

test: install kdiffusion
	$(PY) -m pytest -q

# The hypothesis fuzz tests of the readers and the record schema, with many more cases than the normal suite.
FUZZ_EXAMPLES ?= 20000
fuzz: install
	DIFFUSERS_REPRO_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/records/test_schema.py -k fuzz

quality: install
	$(VENV)/bin/ruff check diffusers_repro tests examples benchmarks
	$(VENV)/bin/ruff format --check diffusers_repro tests examples benchmarks

benchmark: install
	$(PY) benchmarks/bench_call_overhead.py
	$(PY) benchmarks/bench_batch_invariant.py
	$(PY) benchmarks/bench_loading.py
	$(PY) benchmarks/bench_distributed.py
	$(PY) benchmarks/bench_schema.py
	$(PY) benchmarks/bench_signing.py
	$(PY) benchmarks/bench_concurrency.py
	$(PY) benchmarks/bench_report.py
	$(PY) benchmarks/bench_philox.py
	$(PY) benchmarks/bench_verify_read.py --before 86f8723
	$(PY) benchmarks/bench_cli_start.py
	$(PY) benchmarks/gpu_check.py
	$(MAKE) kdiffusion
	$(PY) benchmarks/bench_sampler_closeness.py

# Headless Chromium for the test that renders the verify report (Debian's package; nothing when installed).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

clean:
	rm -rf $(VENV) outputs .pytest_cache
