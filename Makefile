# Two entry points, each installing what it needs into .venv first:
#   make series   run the notebook series (the main job); pass options with ARGS="..."
#   make test     run the test suite (CPU, synthetic data, no network)
# CPU-only machine and want the small CPU wheels?  make series TORCH_INDEX=https://download.pytorch.org/whl/cpu
# AMD GPU (ROCm)?                                  make series TORCH_INDEX=https://download.pytorch.org/whl/rocm6.4
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_INDEX ?=
ARGS ?=

.PHONY: series test lint bench bench-series clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.stamp-run: pyproject.toml | $(PY)
ifneq ($(TORCH_INDEX),)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1 --index-url $(TORCH_INDEX)
endif
	$(PY) -m pip install --quiet -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-run
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

series: $(VENV)/.stamp-run
	$(PY) -m cifarkit series $(ARGS)

test: $(VENV)/.stamp-dev
	$(PY) -m pytest -q $(ARGS)

lint: $(VENV)/.stamp-dev
	$(PY) -m ruff check cifarkit tests solutions
	$(PY) -m ruff format --check cifarkit tests solutions
	$(PY) -m ruff check notebooks --select F  # notebooks: unused imports, undefined names

bench: $(VENV)/.stamp-run
	$(PY) -m cifarkit input-bench $(ARGS)

# the quick series timed against its goal (30 min of notebooks on a 2-core AVX2 CPU); run it on a quiet machine
bench-series: $(VENV)/.stamp-run
	$(PY) -m cifarkit series --profile quick --goal 1800 $(ARGS)

clean-venv:
	rm -rf $(VENV)
