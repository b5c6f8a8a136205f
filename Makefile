# The README's commands: `make demo`, `make test`, `make test-fast`. Each installs what it needs first, visibly.
PY ?= python3
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# PyPI's default torch wheel is the CUDA build (plus ~20 nvidia packages, GBs). On a CPU-only machine take the CPU
# wheel instead: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: setup demo test test-fast clean

setup:
	@if $(PY) -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
		echo "torch $(TORCH_VERSION) is installed"; \
	else \
		command -v nvidia-smi >/dev/null 2>&1 || [ -n "$(TORCH_INDEX)" ] || echo "note: no GPU found; PyPI's torch is the CUDA build (GBs). For the CPU wheel: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu"; \
		echo "$(PIP) install $(TORCH_FLAGS) torch==$(TORCH_VERSION)"; \
		$(PIP) install $(TORCH_FLAGS) "torch==$(TORCH_VERSION)"; \
	fi
	$(PIP) install -e ".[test]"

# One intra-op thread per process on CPU is the default of `pgolf train` (see --threads).
demo: setup
	$(PY) -m pgolf demo

# -n 2 runs two test processes; durations on 2 cores are in the README.
test: setup
	$(PY) -m pytest -q -n 2 --durations=15

test-fast: setup
	$(PY) -m pytest -q -n 2 -m "not slow"

clean:
	rm -rf build dist *.egg-info .pytest_cache runs
