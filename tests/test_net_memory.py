"""What building and loading a net costs in memory, measured in fresh processes (peak resident size).

Caffe's blobs allocate when first used, and weights given to the constructor are the parameters: a
deploy net built without weights holds no activations until a forward (or a ``.data`` read), and
``Net(deploy, TEST, weights=...)`` peaks at about the caffemodel's size, not twice or four times it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.net import Net

REPO = Path(__file__).resolve().parents[1]
MIB = 2 ** 20

# Activations of 64 x 1500 x 1500 floats (549 MiB per blob), parameters of a few kilobytes.
WIDE = """
name: "wide"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 1500 dim: 1500 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 64 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""

# fc weights of 3000 x 8000 floats: a 92 MiB caffemodel.
HEAVY = """
name: "heavy"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8000 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 3000 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "fc2" type: "InnerProduct" bottom: "fc" top: "fc2" inner_product_param { num_output: 7 } }
"""


def _peak_mib(script: str) -> dict:
    """Run ``script`` in a fresh interpreter; it prints a JSON dict, to which the peak resident size
    above the interpreter (with torch and the runner imported) is added as ``peak_mib`` (Linux's VmHWM,
    reset before the script)."""
    prelude = textwrap.dedent("""
        import json, sys
        import numpy as np, torch
        from netspec import caffe_pb2
        from runner.net import Net

        def status_kib(field):
            with open("/proc/self/status") as handle:
                return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))

        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # VmHWM starts again from here (ru_maxrss would carry the parent's size)
        base = status_kib("VmRSS")
        out = {}
    """)
    ending = "\nout['peak_mib'] = (status_kib('VmHWM') - base) / 1024\nprint(json.dumps(out))\n"
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script) + ending], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_built_net_allocates_activations_only_when_used(tmp_path) -> None:
    path = tmp_path / "wide.prototxt"
    path.write_text(WIDE)
    built = _peak_mib(f"net = Net({str(path)!r}, caffe_pb2.TEST)\nout['shape'] = list(net.blobs['conv'].shape)")
    assert built["shape"] == [1, 64, 1500, 1500]
    assert built["peak_mib"] < 100, built  # a single conv blob would be 549 MiB
    touched = _peak_mib(f"net = Net({str(path)!r}, caffe_pb2.TEST)\nout['sum'] = float(net.blobs['conv'].data.sum())")
    assert touched["sum"] == 0.0 and touched["peak_mib"] > 500, touched


def test_weights_given_to_the_constructor_become_the_parameters(tmp_path) -> None:
    prototxt, weights = tmp_path / "heavy.prototxt", tmp_path / "heavy.caffemodel"
    prototxt.write_text(HEAVY)
    source = Net(parse_prototxt(HEAVY), caffe_pb2.TEST)
    source.params["fc2"][1].data[...] = np.arange(7)
    source.save(str(weights))
    size_mib = weights.stat().st_size / MIB
    loaded = _peak_mib(f"""
        net = Net({str(prototxt)!r}, caffe_pb2.TEST, weights={str(weights)!r})
        out['built_mib'] = (status_kib('VmHWM') - base) / 1024
        out['fc_sum'] = float(net.params['fc'][0].data.astype(np.float64).sum())
        out['fc2_bias'] = net.params['fc2'][1].data.tolist()
        net.params['fc'][0].data[...] *= 2  # the adopted parameters are writable
        out['doubled'] = float(net.params['fc'][0].data.astype(np.float64).sum())
        net.blobs['data'].data[...] = 1
        out['out'] = net.forward()['fc2'].tolist()
    """)
    want = source.params["fc"][0].data.astype(np.float64).sum()
    assert np.isclose(loaded["fc_sum"], want) and np.isclose(loaded["doubled"], 2 * want)
    assert loaded["fc2_bias"] == list(range(7))
    source.params["fc"][0].data[...] *= 2
    source.blobs["data"].data[...] = 1
    np.testing.assert_allclose(loaded["out"], source.forward()["fc2"], rtol=1e-5)
    assert loaded["built_mib"] < 1.2 * size_mib, (loaded["built_mib"], size_mib)
