# fcn-caffe: `make demo` and `make test` work on a fresh machine (they install what they need).
# Everything runs in the active virtualenv when there is one, else in a project .venv made on first use,
# so that a system Python that refuses pip installs (PEP 668: Debian 12+, Ubuntu 23.04+) is never touched.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

ifdef VIRTUAL_ENV
PY := $(VIRTUAL_ENV)/bin/python
else
PY := $(VENV)/bin/python
endif

.PHONY: install install-test demo test fuzz nets bench experiments

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV) with $(PYTHON): on Debian/Ubuntu install python3-venv (apt-get install python3-venv), or activate a virtualenv first" >&2; exit 1; }

# torch first, pinned, so that pip never resolves another (CUDA-laden) build for our `torch>=2.1`.
install: $(PY)
	@$(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$(TORCH_VERSION)' else 1)" 2>/dev/null \
		|| $(PY) -m pip install -q torch==$(TORCH_VERSION)
	@$(PY) -m pip show -q fcn-caffe >/dev/null 2>&1 && $(PY) -c "import numpy, scipy, matplotlib, google.protobuf, PIL, tqdm, h5py, lmdb, plyvel, cv2" 2>/dev/null \
		|| $(PY) -m pip install -q -e .

install-test: install
	@$(PY) -c "import pytest, onnx, onnxruntime, safetensors" 2>/dev/null || $(PY) -m pip install -q -e '.[test]'

demo: install
	$(PY) -m fcn demo --out demo

# experiments/REPORT.md: the paper's ablations (Tables 2, 3, 8, loss sampling, IU bounds) on synthetic VOC
# data from one convolutionalized classifier.
experiments: install
	$(PY) -m fcn.experiments --out experiments

test: install-test
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# Malformed files (truncated, flipped, lying lengths, gzip bombs, gigapixel headers, deep nesting) against
# every reader for FUZZ_SECONDS per reader, fresh seeds each run; `make test` runs a fixed seeded subset.
FUZZ_SECONDS ?= 60
fuzz: install-test
	FCN_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -s -m fuzz tests/test_fuzz_readers.py

# Every models/<experiment>/*.prototxt, rewritten from its net.py (`python -m models.make_nets --check`
# only compares).
nets: install
	$(PY) -m models.make_nets

# BENCHMARKS.md and bench/results.json: the runner against plain PyTorch and OpenCV, training, amortization,
# loading, data layers, scoring, dilation (under 10 minutes on a 2-core CPU). ARGS=--quick checks the harness only.
bench: install-test
	$(PY) -m bench.run $(ARGS)
