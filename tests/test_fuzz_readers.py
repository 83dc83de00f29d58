"""Malformed-input families against every reader of a file format (issue #14).

Each reader must, for any bytes, either read them or raise a ValueError or OSError whose message is one
line naming the file: never another exception type (RecursionError, MemoryError, IndexError, struct.error,
...), never a hang, never a huge allocation. The families are what an adversarial probe tried by hand:
truncation anywhere, flipped and inserted bytes, protobuf length fields that lie, gzip bombs, headers
declaring gigapixels, deep nesting, huge names.

The suite runs a fixed, seeded handful per reader and family. ``make fuzz`` runs the same families for
a time budget instead (``FCN_FUZZ_SECONDS`` per reader, fresh seeds each run; a failure prints its seed).
"""
import gzip
import io
import os
import random
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import numpy as np
import pytest
from PIL import Image

from caffe_cases import ROOT
from data_layers.encoders import save_sbd_cls
from data_layers.readers import read_index_png, read_mat, read_rgb
from malformed import png_header_only
from netspec.caffemodel import load_caffemodel, load_solverstate
from netspec.hdf5 import load_weights_hdf5
from netspec.prototxt import read_prototxt

FUZZ_SECONDS = float(os.environ.get("FCN_FUZZ_SECONDS", "0"))
#: Cases per reader and family in the ordinary suite (seeded: the same every run).
SUITE_CASES = 4
#: No single read may take longer than this (seconds).
PER_CASE_SECONDS = 10


# ----- seeds: one small valid file per format -----

def _fixture(relpath: str) -> bytes:
    return Path(ROOT, relpath).read_bytes()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (12, 10, 3)).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(1).randint(0, 255, (12, 10, 3)).astype(np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _mat(tmp: Path) -> bytes:
    path = tmp / "seed.mat"
    save_sbd_cls(path, np.random.RandomState(2).randint(0, 21, (6, 5)).astype(np.uint8))
    return path.read_bytes()


# ----- mutations: the families -----

Mutation = Callable[[bytes, random.Random], bytes]


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def insert_bytes(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data[at:]


def lying_length(data: bytes, rng: random.Random) -> bytes:
    """A byte that may be a protobuf/PNG length replaced by a 10-byte varint of up to 2^63."""
    at = rng.randrange(len(data))
    huge = rng.choice([2 ** 31, 2 ** 32 + 7, 2 ** 62, 2 ** 63 - 1])
    varint = bytearray()
    while True:
        byte, huge = huge & 0x7F, huge >> 7
        varint.append(byte | (0x80 if huge else 0))
        if not huge:
            break
    return data[:at] + bytes(varint) + data[at + 1:]


def gzip_bomb(data: bytes, rng: random.Random) -> bytes:
    """A gzip of the file followed by gigabytes of zeros: about 10 MB compressed would be 10 GB."""
    return gzip.compress(data + b"\0" * (rng.randint(1, 4) << 20), compresslevel=1)


def deep_nesting(data: bytes, rng: random.Random) -> bytes:
    depth = rng.choice([1_000, 50_000])
    return b"layer { " * depth + data + b" }" * depth


def huge_name(data: bytes, rng: random.Random) -> bytes:
    return b'name: "' + b"N" * rng.choice([10_000, 3_000_000]) + b'"\n' + data


def gigapixel_header(data: bytes, rng: random.Random) -> bytes:
    return png_header_only(rng.choice([20_000, 60_000, 2 ** 31 - 1]), rng.choice([20_000, 2 ** 31 - 1]))


BINARY = [truncate, flip_bytes, insert_bytes, lying_length]
READERS: Dict[str, tuple] = {
    # name: (seed bytes (or a function of a temp folder), reader of a path, mutation families)
    "prototxt": (lambda tmp: _fixture("layers/absval/net.prototxt"), read_prototxt,
                 [truncate, flip_bytes, insert_bytes, deep_nesting, huge_name]),
    "caffemodel": (lambda tmp: _fixture("layers/absval/net.caffemodel"), load_caffemodel, BINARY + [gzip_bomb]),
    "solverstate": (lambda tmp: _fixture("solvers/adam/snap_iter_6.solverstate"), load_solverstate, BINARY),
    "caffemodel.h5": (lambda tmp: _fixture("solvers/sgd_hdf5_snapshot/snap_iter_3.caffemodel.h5"),
                      load_weights_hdf5, [truncate, flip_bytes]),
    "png": (lambda tmp: _png(), read_rgb, BINARY + [gigapixel_header]),
    "label png": (lambda tmp: _png(), read_index_png, BINARY + [gigapixel_header]),
    "jpeg": (lambda tmp: _jpeg(), read_rgb, BINARY),
    "mat": (_mat, lambda path: read_mat(path, "GTcls", "Segmentation"), BINARY),
}


class _Overtime(Exception):
    pass


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def expire(signum, frame):
        raise _Overtime()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _check_one(reader: Callable, path: Path, what: str) -> None:
    """The reader either reads ``path`` or raises a one-line ValueError/OSError naming it."""
    try:
        with _deadline(PER_CASE_SECONDS):
            reader(path)
    except _Overtime:
        pytest.fail(f"{what}: reading took over {PER_CASE_SECONDS} s")
    except (ValueError, OSError) as error:
        message = str(error)
        assert str(path) in message, f"{what}: the error does not name the file: {message[:300]}"
        assert "\n" not in message, f"{what}: a multi-line error: {message[:300]}"
        assert len(message) < 2000, f"{what}: a {len(message)}-character error"
    except Exception as error:  # anything else is a crash for the user
        pytest.fail(f"{what}: {type(error).__name__}: {str(error)[:300]}")


def _cases(name: str, tmp: Path, seeds: List[int]) -> Iterator[tuple]:
    seed_source, reader, families = READERS[name]
    original = seed_source(tmp)
    suffix = {"prototxt": ".prototxt", "caffemodel": ".caffemodel", "solverstate": ".solverstate",
              "caffemodel.h5": ".caffemodel.h5", "png": ".png", "label png": ".png", "jpeg": ".jpg",
              "mat": ".mat"}[name]
    for seed in seeds:
        for family in families:
            rng = random.Random(f"{name}/{family.__name__}/{seed}")
            path = tmp / f"{family.__name__}_{seed}{suffix}"
            path.write_bytes(family(original, rng))
            yield reader, path, f"{name} {family.__name__} seed {seed}"


@pytest.mark.parametrize("name", sorted(READERS))
def test_readers_survive_the_malformed_input_families(name: str, tmp_path: Path) -> None:
    for reader, path, what in _cases(name, tmp_path, list(range(SUITE_CASES))):
        _check_one(reader, path, what)
        path.unlink()


@pytest.mark.fuzz
@pytest.mark.skipif(FUZZ_SECONDS <= 0, reason="make fuzz sets FCN_FUZZ_SECONDS")
@pytest.mark.parametrize("name", sorted(READERS))
def test_fuzz_for_a_time_budget(name: str, tmp_path: Path) -> None:
    start, seed = time.monotonic(), random.SystemRandom().randrange(10 ** 9)
    count = 0
    while time.monotonic() - start < FUZZ_SECONDS:
        for reader, path, what in _cases(name, tmp_path, [seed]):
            _check_one(reader, path, what)
            path.unlink()
            count += 1
        seed += 1
    print(f"{name}: {count} malformed files read cleanly")
