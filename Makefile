# Esper: `make demo` and `make test` each create .venv on first use.
#
# The default install is CPU-sized: torch is installed first, pinned to TORCH_SPEC, so that the
# project's range (torch>=2.4,<2.15) is already satisfied and pip pulls no CUDA build.
# GPU clusters: make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (or any CUDA wheel index your site mirrors); see README "GPU install".

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# Benchmark/peer-test anchors; their metadata asks for torchvision, which they don't need here.
ANCHORS := "backpack-for-pytorch>=1.6,<2" "rigl-torch==0.5.2"
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest test-slow clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps $(ANCHORS)
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/esper demo

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check esper tests benchmarks
	$(VENV)/bin/ruff format --check esper tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy esper

pytest: $(STAMP)
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
