"""``make bench``: how fast the runner, its solver, loaders and metrics are, as ratios measured in one run.

Every figure is compared with something timed in the same process and the same minutes (plain PyTorch,
OpenCV's Caffe importer, protobuf's own decoder), because on a shared machine absolute seconds drift with
the load while ratios of interleaved measurements hold. ``python -m bench.run`` writes BENCHMARKS.md and
bench/results.json; ``--quick`` runs every case on toy sizes (the test suite's smoke test).
"""
