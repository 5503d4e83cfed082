# Quick start: `make demo` (set up .venv, run all three stages on the tiny demo) and `make test`.
# `make ablation`: the demo's stage-2 variants (grouping, warm-up, language share) from one stage 1.
# TORCH: the torch requirement installed only when the venv has no importable torch
#   (CPU-only machines: torch==2.13.0 is the CPU build; GPU users: VENV_FLAGS=--system-site-packages
#   reuses the torch you already have, or TORCH="torch==X.Y" picks another).
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV_FLAGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dsvl-installed

.PHONY: setup demo ablation test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -c constraints.txt -e ".[test,sweep]"
	touch $@

setup: $(STAMP)

demo: setup
	$(VENV)/bin/dsvl-demo $(ARGS)

ablation: setup
	$(VENV)/bin/dsvl-demo ablation $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

bench: setup
	$(PY) -m pip install -q -c constraints.txt -e ".[bench]"  # TRL, for the dsvl-vs-SFTTrainer row only
	$(PY) tools/bench.py $(ARGS)

clean:
	rm -rf outputs multirun runs data/demo .pytest_cache build dist  # a stale build/lib leaks old files into wheels
