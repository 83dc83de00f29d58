"""Case 4: reading a released-size caffemodel (FCN-8s VGG16, ~540 MB of random weights).

Each way of reading runs in a fresh subprocess (``python -m bench.cases.loading WAY MODEL [PROTOTXT]``),
which reports its seconds and its peak resident memory above what it held just before. The peak is the
process's own high-water mark (``VmHWM``, reset just before the timed call), not ``ru_maxrss``: Linux
carries the parent's resident size at fork into a child's ``ru_maxrss``, and the parent here holds the
net that wrote the file. The ways:
``pycaffe`` is what a pycaffe script writes, ``caffe.Net(deploy, caffe.TEST, weights=...)``: building the
net and loading its weights, timed from before the constructor (its imports done); ``fast`` is
netspec.caffemodel.load_caffemodel (numpy views of the packed bytes); ``copy_from`` is
``Net.copy_from`` into a net built beforehand (the net's own parameters are not counted); ``protobuf`` is
``NetParameter.FromString`` and ``numpy.array`` over each blob's repeated ``data`` field.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict

from bench.measure import REPO
from bench.nets import fcn8s_deploy, randomize
from bench.sizes import Sizes
from netspec import caffe_pb2
from netspec.prototxt import write_prototxt

WAYS = ("pycaffe", "fast", "copy_from", "protobuf")


def _status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (reported in kB)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    """Make VmHWM start again from the current resident size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _protobuf_decode(model: str) -> None:
    import numpy as np
    with open(model, "rb") as handle:
        net = caffe_pb2.NetParameter.FromString(handle.read())
    arrays = [np.array(blob.data, dtype=np.float32) for layer in net.layer for blob in layer.blobs]
    assert arrays


def _prepare(way: str, model: str, prototxt: str) -> Callable[[], Any]:
    """What to time for ``way``, with its set-up (imports, the net) done before the baseline is taken."""
    if way == "pycaffe":
        import fcn.caffe as caffe
        return lambda: caffe.Net(prototxt, caffe.TEST, weights=model)
    if way == "fast":
        from netspec.caffemodel import load_caffemodel
        return lambda: load_caffemodel(model)
    if way == "copy_from":
        from runner.net import Net
        net = Net(prototxt, caffe_pb2.TEST)
        return lambda: net.copy_from(model)
    if way == "protobuf":
        return lambda: _protobuf_decode(model)
    raise ValueError(f"unknown way {way!r}; known: {', '.join(WAYS)}")


def _read_through(path: str) -> None:
    """Read the file once in small chunks, so that it sits in the page cache and every way decodes from
    memory: otherwise whichever way runs first after the cache was squeezed also times the disk."""
    with open(path, "rb") as handle:
        while handle.read(16 * 2**20):
            pass


def measure_here(way: str, model: str, prototxt: str) -> Dict[str, float]:
    """Seconds and peak memory of one way of reading, in this process (call it in a fresh one)."""
    action = _prepare(way, model, prototxt)
    _read_through(model)
    _reset_peak()
    baseline = _status_bytes("VmRSS")
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    del result
    return {"seconds": seconds, "peak_bytes_above_start": max(0, peak - baseline)}


def _measure_in_subprocess(way: str, model: str, prototxt: str) -> Dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.cases.loading", way, model, prototxt], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    from runner.net import Net
    prototxt, model = os.path.join(scratch, "deploy.prototxt"), os.path.join(scratch, "weights.caffemodel")
    param = fcn8s_deploy(sizes)
    write_prototxt(prototxt, param)
    net = Net(param, caffe_pb2.TEST)
    randomize(net)
    net.save(model)
    del net
    size = os.path.getsize(model)
    ways = {way: _measure_in_subprocess(way, model, prototxt) for way in WAYS}
    for figures in ways.values():
        figures["peak_over_file_size"] = figures["peak_bytes_above_start"] / size
    return {"file_bytes": size, "ways": ways,
            "fast_speedup_vs_protobuf": ways["protobuf"]["seconds"] / ways["fast"]["seconds"]}


if __name__ == "__main__":
    print(json.dumps(measure_here(*sys.argv[1:4])))
