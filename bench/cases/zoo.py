"""Case 9: model-zoo deploy nets (bench/zoo/) through the runner's default ``net.forward()`` (as a pycaffe
script calls it: no wrapper), through ``set_speed(compile=True)``, and through OpenCV DNN reading the same
prototxt and the same random weights written as a caffemodel; at each thread count (torch's intra-op
threads and OpenCV's alike), taking turns in one process, medians.

The three outputs must agree to 1e-4 of their magnitude before anything is timed. Each net runs at batch 1
(the zoo's AlexNet and GoogLeNet prototxts say 10) on a standard-normal image, its BatchNorm statistics set
to what that image gives (bench.zoo_nets). Compiled code is specialised to the number of threads, so each
thread count compiles afresh; the compile times are recorded.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict

import numpy as np
import torch

from bench.measure import interleaved
from bench.nets import multiply_adds
from bench.sizes import Sizes
from bench.zoo_nets import prototxt, zoo_net
from netspec import caffe_pb2
from runner.net import Net

#: Largest deviation from the runner's default output allowed, relative to the output's magnitude.
TOLERANCE = 1e-4


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.reshape(want.shape) - want).max() / max(float(np.abs(want).max()), 1e-30))


def _time_net(name: str, sizes: Sizes, scratch: str) -> Dict[str, Any]:
    import cv2
    net, image = zoo_net(name)
    caffemodel = os.path.join(scratch, f"{name}.caffemodel")
    net.save(caffemodel)
    cv_net = cv2.dnn.readNetFromCaffe(prototxt(name), caffemodel)
    cv_net.setInput(image)
    (output,) = net.outputs
    compiled = Net(prototxt(name), caffe_pb2.TEST)
    compiled.share_with(net)
    compiled.blobs[net.inputs[0]].reshape(*image.shape)
    compiled.reshape()
    compiled.blobs[net.inputs[0]].data[...] = image
    compiled.set_speed(compile=True)

    def default() -> Any:
        return net.forward()[output]

    def compiled_forward() -> Any:
        return compiled.forward()[output]

    contenders: Dict[str, Callable[[], Any]] = {"runner": default, "opencv_dnn": cv_net.forward}
    if sizes.compile:
        contenders["compile"] = compiled_forward
    result: Dict[str, Any] = {"input": list(image.shape), "gmac": multiply_adds(net) / 1e9, "threads": {}}
    for threads in sizes.zoo_threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        reference = default().copy()
        errors, compile_seconds = {}, None
        for contender in ("opencv_dnn", "compile"):
            if contender in contenders:
                start = time.perf_counter()
                errors[contender] = _relative_error(contenders[contender](), reference)
                if contender == "compile":
                    compile_seconds = time.perf_counter() - start
        bad = {k: v for k, v in errors.items() if v > TOLERANCE}
        if bad:
            raise AssertionError(f"zoo net {name}: outputs differ from the runner's by {bad} (> {TOLERANCE:.0e})")
        timings = interleaved(contenders, sizes.zoo_reps, warmup=1)
        result["threads"][str(threads)] = {
            "timings": {k: t.as_dict() for k, t in timings.items()}, "relative_errors": errors,
            "compile_seconds": compile_seconds,
            "opencv_over_runner": timings["opencv_dnn"].median / timings["runner"].median,
            "compile_speedup": (timings["runner"].median / timings["compile"].median
                                if "compile" in timings else None)}
    return result


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    import cv2
    torch_threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        return {"nets": {name: _time_net(name, sizes, scratch) for name in sizes.zoo_nets},
                "load_average": list(os.getloadavg())}
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv_threads)
