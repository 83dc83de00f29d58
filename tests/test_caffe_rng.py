"""Caffe's generator (runner.caffe_rng): the engine is the standard's mt19937, and the vectorised draws are
the scalar algorithm's, output for output. (That the algorithm is boost's is checked against real Caffe's
numbers: tests/test_fillers.py's seeded net and tests/test_caffe_tool.py's training from random_seed 7.)
"""
from __future__ import annotations

import numpy as np

from runner import caffe_rng
from runner.caffe_rng import MT19937, CaffeRNG


def test_engine_is_the_standard_mt19937():
    # C++ [rand.predef]: the 10000th output of a default-constructed mt19937 (seed 5489) is 4123659995
    engine = MT19937(5489)
    for _ in range(9999):
        engine()
    assert engine() == 4123659995
    assert MT19937(2 ** 32 + 7)() == MT19937(7)()  # Caffe's seed is an unsigned int


def _scalar_gaussians(seed: int, count: int, mean: float, sigma: float):
    engine = MT19937(seed)
    values = [caffe_rng._unit_normal(engine) * np.float32(sigma) + np.float32(mean) for _ in range(count)]
    return np.array(values, dtype=np.float32), engine()


def test_vectorised_normal_draws_are_the_scalar_algorithms():
    want, next_output = _scalar_gaussians(11, 20000, 0.5, 0.25)
    rng = CaffeRNG(11)
    got = np.concatenate([rng.gaussian(n, 0.5, 0.25) for n in (1, 7, 4992, 15000)])
    assert np.array_equal(got, want)
    assert rng.rand() == next_output  # and they consumed the same engine outputs
    unit = (want - np.float32(0.5)) / np.float32(0.25)
    assert np.abs(unit).max() > caffe_rng._NORMAL_X[1]  # the tail was drawn from, not only the strips


def test_uniform_and_bernoulli_follow_their_formulas():
    rng, engine = CaffeRNG(5), MT19937(5)
    values = rng.uniform(5000, -0.5, 0.25)
    raw = np.array([engine() for _ in range(5000)], dtype=np.uint32)
    top = np.nextafter(np.float32(0.25), np.float32(1))
    assert np.array_equal(values, raw.astype(np.float32) / np.float32(2 ** 32) * (top - np.float32(-0.5))
                          + np.float32(-0.5))
    assert values.min() >= -0.5 and values.max() < top
    keep = rng.bernoulli(4000, 0.25)
    raw = np.array([engine() for _ in range(4000)], dtype=np.uint32)
    assert np.array_equal(keep, raw.astype(np.float32) <= np.float32(0.25) * np.float32(2 ** 32))
    assert not rng.bernoulli(10, 0.0).any() and rng.rand() == engine()  # p = 0 draws nothing
