# The README's two commands: `make demo` and `make test`. Both install what they need first.
PY ?= python3
PIP := $(PY) -m pip
# torch is pinned first so pip never resolves a CUDA build on CPU machines.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test test-fast wheel-test clean

setup:
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[test]"

demo: setup
	$(PY) -m trainer demo

test: setup
	$(PY) -m pytest -q -n 2 --durations=15

test-fast:
	$(PY) -m pytest -q -n 2 -m "not slow"

clean:
	rm -rf build dist *.egg-info .pytest_cache runs
