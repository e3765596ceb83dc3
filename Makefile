# Set-up and everyday commands. Everything installs into ./.venv on first use.
#   make demo    install, then replay the bundled sample with the default model (offline)
#   make test    install, then run the test suite (what CI runs)
#   make bench   install, then run the benchmarks and update docs/benchmarks.md
# TORCH picks the torch build: the default is the CPU wheel these machines keep on disk;
# elsewhere use e.g. `make test TORCH=torch` for your platform's default build.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY      = $(VENV)/bin/python

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/emomon replay streamer/samples/emodb_speaker11.wav --no-dashboard --csv out/demo.csv

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
