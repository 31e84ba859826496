# Everything a fresh machine needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test quality benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,serve]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/diffusers-repro demo --out outputs/demo

test: install
	$(PY) -m pytest -q

quality: install
	$(VENV)/bin/ruff check diffusers_repro tests examples benchmarks
	$(VENV)/bin/ruff format --check diffusers_repro tests examples benchmarks

benchmark: install
	$(PY) benchmarks/bench_call_overhead.py
	$(PY) benchmarks/bench_batch_invariant.py
	$(PY) benchmarks/bench_loading.py
	$(PY) benchmarks/bench_distributed.py
	$(PY) benchmarks/bench_concurrency.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
