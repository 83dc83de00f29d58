# fcn-caffe: `make demo` and `make test` work on a fresh machine (they install what they need).
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test nets bench experiments

# torch first, pinned, so that pip never resolves another (CUDA-laden) build for our `torch>=2.1`.
install:
	@$(PYTHON) -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$(TORCH_VERSION)' else 1)" 2>/dev/null \
		|| $(PYTHON) -m pip install -q torch==$(TORCH_VERSION)
	@$(PYTHON) -m pip install -q -e '.[test]'

demo: install
	$(PYTHON) -m fcn demo --out demo

# experiments/REPORT.md: the paper's ablations (Tables 2, 3, 8, loss sampling, IU bounds) on synthetic VOC
# data from one convolutionalized classifier (about 12-20 minutes on a 2-core CPU).
experiments: install
	$(PYTHON) -m fcn.experiments --out experiments

test: install
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests

# Every models/<experiment>/*.prototxt, rewritten from its net.py (`python -m models.make_nets --check`
# only compares).
nets: install
	$(PYTHON) -m models.make_nets

# BENCHMARKS.md and bench/results.json: the runner against plain PyTorch and OpenCV, training, amortization,
# loading, data layers, scoring, dilation (under 10 minutes on a 2-core CPU). `--quick` checks the harness only.
bench: install
	$(PYTHON) -m bench.run
