"""Caffe's random numbers, bit for bit: boost's mt19937 and the boost.random distributions Caffe draws from.

Caffe keeps one ``boost::mt19937`` (``Caffe::set_random_seed`` seeds it) and draws everything a net's
set-up needs from it, in layer order: the fillers (``caffe_rng_gaussian``, ``caffe_rng_uniform``,
``caffe_rng_bernoulli``) and the seeds of the data layers' own generators (``caffe_rng_rand``). The
engine is the standard Mersenne Twister (numpy's MT19937, seeded with its classic ``init_genrand``);
the distributions are boost's algorithms, computed here in float32 exactly as ``Dtype = float`` runs them:

* ``normal_distribution<float>``: the 128-strip ziggurat. One 32-bit draw gives the strip (low 8 bits:
  7 for the strip, 1 for the sign) and a 24-bit fraction; most draws land inside their strip's rectangle
  and are done. The rest are decided with a ``uniform_01`` draw between the curve's bounds, and strip 0
  falls back to the tail (two ``exponential_distribution`` draws, the 256-strip exponential ziggurat).
* ``uniform_real<float>(a, nextafter(b))``: ``u / 2^32 * (max - min) + min``, drawn again when it reaches max.
* ``bernoulli_distribution``: ``float(u) <= p * 2^32``, no draw when p is 0.

The ziggurat tables are computed from their definition (Marsaglia and Tsang: equal-area strips under
``exp(-x^2/2)`` from r = 3.4426198558966521, under ``exp(-x)`` from r = 7.6971174701310497); they agree with
boost's constants to 1e-13, identical as float32. Draws are vectorised: the common case is decided for a
whole block of engine outputs at once and only the rare remainder steps through the scalar algorithm.

A seeded run therefore starts from the weights real Caffe starts from (``caffe train`` with a solver's
``random_seed`` logs Caffe's losses from iteration 0). ``seed`` installs the stream; until then
``stream()`` is None and the callers use torch's generator (as unseeded Caffe, random anyway).
"""
from __future__ import annotations

import math
import threading
from typing import Callable, List, Optional, Tuple

import numpy as np

f32 = np.float32
_MT_N = 624
_FRACTION = f32(2.0 ** -24)
_TWO_32 = f32(4294967295.0) + f32(1)  # float(max - min) + 1, as boost computes 2^32 in float
_UNIT = f32(1) / _TWO_32  # uniform_01's factor


def _ziggurat(strips: int, start: float, density: Callable[[float], float], inverse: Callable[[float], float],
              tail_area: float) -> Tuple[np.ndarray, np.ndarray]:
    """The x and y = density(x) tables of a ziggurat with ``strips`` strips of equal area whose base strip
    starts at ``start`` (x[0] is the base strip's width including the tail, x[strips] = 0, y[0] = 0,
    y[strips] = 1)."""
    area = start * density(start) + tail_area
    xs = [area / density(start), start]
    for i in range(1, strips - 1):
        xs.append(inverse(area / xs[i] + density(xs[i])))
    xs.append(0.0)
    ys = [0.0] + [density(x) for x in xs[1:strips]] + [1.0]
    return np.array(xs), np.array(ys)


_NORMAL_R = 3.4426198558966521214
_NORMAL_X, _NORMAL_Y = _ziggurat(128, _NORMAL_R, lambda x: math.exp(-x * x / 2), lambda y: math.sqrt(-2 * math.log(y)),
                                 math.sqrt(math.pi / 2) * math.erfc(_NORMAL_R / math.sqrt(2)))
_EXP_R = 7.6971174701310497140
_EXP_X, _EXP_Y = _ziggurat(256, _EXP_R, lambda x: math.exp(-x), lambda y: -math.log(y), math.exp(-_EXP_R))
_NORMAL_X32, _NORMAL_Y32 = _NORMAL_X.astype(f32), _NORMAL_Y.astype(f32)
_NORMAL_DY32 = (_NORMAL_Y[1:] - _NORMAL_Y[:-1]).astype(f32)  # RealType(table_y[i + 1] - table_y[i])
_NORMAL_DX32 = (_NORMAL_X[:-1] - _NORMAL_X[1:]).astype(f32)  # RealType(table_x[i] - table_x[i + 1])
_EXP_X32, _EXP_Y32 = _EXP_X.astype(f32), _EXP_Y.astype(f32)


class MT19937:
    """boost::mt19937 seeded with one 32-bit value; raw 32-bit outputs, read ahead in blocks."""

    def __init__(self, seed: int) -> None:
        key = np.empty(_MT_N, dtype=np.uint32)
        value = int(seed) & 0xFFFFFFFF
        for i in range(_MT_N):  # init_genrand, as boost's seed(value)
            key[i] = value
            value = (1812433253 * (value ^ (value >> 30)) + i + 1) & 0xFFFFFFFF
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": _MT_N}}
        self._buffer = np.empty(0, dtype=np.uint32)
        self._pos = 0
        #: Outputs consumed so far.
        self.consumed = 0

    def peek(self, count: int) -> np.ndarray:
        """The next ``count`` outputs, not consumed."""
        left = len(self._buffer) - self._pos
        if left < count:
            more = self._bits.random_raw(max(count - left, 1024)).astype(np.uint32)
            self._buffer = np.concatenate([self._buffer[self._pos:], more])
            self._pos = 0
        return self._buffer[self._pos:self._pos + count]

    def skip(self, count: int) -> None:
        """Consume ``count`` outputs already peeked at."""
        self._pos += count
        self.consumed += count

    def __call__(self) -> int:
        value = int(self.peek(1)[0])
        self.skip(1)
        return value


# ----- boost's algorithms, one value at a time (the rare cases) -----

def _int_float_pair(engine: MT19937) -> Tuple[np.float32, int]:
    """generate_int_float_pair<float, 8> on a 32-bit engine: the low 8 bits, and the top 24 as a fraction."""
    u = engine()
    return f32(u >> 8) * _FRACTION, u & 255


def _expf(x):
    """std::exp on a float: glibc's expf is correctly rounded, as exp in double rounded to float is."""
    return np.exp(np.asarray(x, dtype=np.float64)).astype(f32)


def _uniform_01(engine: MT19937) -> np.float32:
    while True:
        value = f32(engine()) * _UNIT
        if value < f32(1):
            return value


def _unit_exponential(engine: MT19937) -> np.float32:
    shift = f32(0)
    while True:
        fraction, i = _int_float_pair(engine)
        x = fraction * _EXP_X32[i]
        if x < _EXP_X32[i + 1]:
            return shift + x
        if i == 0:
            shift = shift + _EXP_X32[1]
            continue
        y01 = _uniform_01(engine)
        y = _EXP_Y32[i] + y01 * f32(_EXP_Y[i + 1] - _EXP_Y[i])
        above_upper = f32(_EXP_X[i] - _EXP_X[i + 1]) * y01 - (_EXP_X32[i] - x)
        above_lower = y - (f32(_EXP_Y[i + 1]) + (_EXP_X32[i + 1] - x) * f32(_EXP_Y[i + 1]))
        if above_upper < 0 and (above_lower < 0 or y < _expf(-x)):
            return x + shift


def _normal_tail(engine: MT19937) -> np.float32:
    """Beyond r: rejection from the exponential(r) distribution shifted by r."""
    start = _NORMAL_X32[1]
    while True:
        x = _unit_exponential(engine) / start
        y = _unit_exponential(engine) / f32(1)
        if f32(2) * y > x * x:
            return x + start


def _unit_normal(engine: MT19937) -> np.float32:
    """unit_normal_distribution<float> from its first draw on."""
    while True:
        fraction, i = _int_float_pair(engine)
        sign = f32((i & 1) * 2 - 1)
        i >>= 1
        x = fraction * _NORMAL_X32[i]
        if float(x) < _NORMAL_X[i + 1]:
            return x * sign
        if i == 0:
            return _normal_tail(engine) * sign
        y01 = _uniform_01(engine)
        if _wedge_accepts(i, x, y01):
            return x * sign


def _wedge_accepts(i, x, y01):
    """Whether (x, y) in strip ``i``'s wedge lies under exp(-x^2/2): convex strips (x >= 1) lie under the
    chord and above the tangent, concave ones the other way (works on arrays too)."""
    y = _NORMAL_Y32[i] + y01 * _NORMAL_DY32[i]
    line = _NORMAL_DX32[i] * y01 - (_NORMAL_X32[i] - x)
    tangent = y - (_NORMAL_Y32[i] + (_NORMAL_X32[i] - x) * _NORMAL_Y32[i] * _NORMAL_X32[i])
    convex = _NORMAL_X[i] >= 1
    above_upper = np.where(convex, line, tangent)
    above_lower = np.where(convex, tangent, line)
    return (above_upper < 0) & ((above_lower < 0) | (y < _expf(-(x * x / f32(2)))))


# ----- blocks of values -----

#: What a draw starting at an engine output comes to (``block`` results): a value from that one output, a
#: value from it and the next, nothing from those two (rejected: start again after them), or the scalar path.
ONE, TWO, REJECTED_TWO, SCALAR = 0, 1, 2, 3


def _draw(engine: MT19937, count: int, block: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]],
          one: Callable[[MT19937], np.float32]) -> np.ndarray:
    """``count`` values of a distribution that mostly takes one engine output per value: ``block(raw)`` gives,
    for a draw starting at every output, its value and its kind (ONE, TWO, REJECTED_TWO, SCALAR); SCALAR
    runs ``one(engine)``, the whole algorithm, from there."""
    out = np.empty(count, dtype=np.float32)
    filled = 0
    while filled < count:
        raw = engine.peek(count - filled + (count - filled) // 16 + 16)
        start = engine.consumed
        values, kinds = block(raw)
        special = np.flatnonzero(kinds != ONE)
        while filled < count:
            at = engine.consumed - start  # where the engine stands in raw
            if at >= len(raw):
                break
            k = np.searchsorted(special, at)
            stop = int(special[k]) if k < len(special) else len(raw)
            take = min(stop - at, count - filled)
            out[filled:filled + take] = values[at:at + take]
            filled += take
            engine.skip(take)
            if filled == count or stop == len(raw):
                break
            kind = kinds[stop]
            if kind == SCALAR:
                out[filled] = one(engine)
                filled += 1
            else:
                if kind == TWO:
                    out[filled] = values[stop]
                    filled += 1
                engine.skip(2)
    return out


def _normal_block(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    bucket = (raw & 255).astype(np.int64)
    strip = bucket >> 1
    x = (raw >> 8).astype(f32) * _FRACTION * _NORMAL_X32[strip]
    values = np.where(bucket & 1, x, -x)
    kinds = np.full(len(raw), SCALAR, dtype=np.int8)
    kinds[x.astype(np.float64) < _NORMAL_X[strip + 1]] = ONE
    # a wedge: decided by the next output (uniform_01), unless that one must be drawn again or is not here
    y01 = np.append(raw[1:], 0).astype(f32) * _UNIT
    wedge = (kinds == SCALAR) & (strip > 0) & (y01 < f32(1))
    wedge[-1] = False
    index = np.flatnonzero(wedge)
    accepted = _wedge_accepts(strip[index], x[index], y01[index])
    kinds[index] = np.where(accepted, TWO, REJECTED_TWO)
    return values, kinds


class CaffeRNG:
    """Caffe's generator: ``rand()`` (caffe_rng_rand) and the filler distributions, in float32."""

    def __init__(self, seed: int) -> None:
        self.engine = MT19937(seed)

    def rand(self) -> int:
        """One raw 32-bit output."""
        return self.engine()

    def gaussian(self, count: int, mean: float, sigma: float) -> np.ndarray:
        """caffe_rng_gaussian<float>: normal_distribution<float>(mean, sigma), ``unit * sigma + mean``."""
        unit = _draw(self.engine, count, _normal_block, _unit_normal)
        return unit * f32(sigma) + f32(mean)

    def uniform(self, count: int, low: float, high: float) -> np.ndarray:
        """caffe_rng_uniform<float>: uniform_real<float>(low, nextafter(high)), drawn again at the bound."""
        low = f32(low)
        top = np.nextafter(f32(high), f32(np.inf))
        width = top - low

        def block(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            values = raw.astype(f32) / _TWO_32 * width + low
            return values, np.where(values < top, ONE, SCALAR).astype(np.int8)

        def one(engine: MT19937) -> np.float32:
            while True:
                value = f32(engine()) / _TWO_32 * width + low
                if value < top:
                    return value

        return _draw(self.engine, count, block, one)

    def bernoulli(self, count: int, probability: float) -> np.ndarray:
        """caffe_rng_bernoulli<float>: ``float(u) <= p * float(2^32 - 1)``; p = 0 draws nothing."""
        p = f32(probability)
        if p == 0:
            return np.zeros(count, dtype=bool)
        raw = self.engine.peek(count)
        self.engine.skip(count)
        return raw.astype(f32) <= p * f32(4294967295.0)


_state: dict = {"stream": None}
_lock = threading.Lock()


def seed(value: int) -> None:
    """Caffe::set_random_seed: a fresh stream from ``value`` (taken modulo 2^32, as Caffe's unsigned int)."""
    with _lock:
        _state["stream"] = CaffeRNG(int(value) & 0xFFFFFFFF)


def stream() -> Optional[CaffeRNG]:
    """The seeded stream, or None when nothing seeded it."""
    return _state["stream"]


def unseed() -> None:
    """Forget the stream (back to torch's generator)."""
    _state["stream"] = None


__all__: List[str] = ["CaffeRNG", "MT19937", "seed", "stream", "unseed"]
