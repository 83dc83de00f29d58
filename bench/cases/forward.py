"""Case 1: one FCN-8s forward through the runner, plain PyTorch, OpenCV's Caffe importer, and the runner's
speed options, all on the same weights and image.

The runner and plain PyTorch must agree to float rounding (the runner's inference convolutions are
oneDNN's with packed weights and fused ReLUs, plain PyTorch's are torch's own) before their times are
compared; OpenCV and the speed options are held to tolerances. OpenCV is timed twice, with its default
Winograd convolutions and with direct ones, and the runner likewise (``set_speed(winograd=True)``), so each
algorithm meets its like in the same round. The other speed options are timed in a second round, against
the runner again, with plain PyTorch's bfloat16 configurations beside the runner's (autocast, a bfloat16
copy of the weights on channels-last input, and torch.compile with frozen weights under autocast), so that
the runner's best bfloat16 meets plain PyTorch's best. Each round also times one large convolution, the
machine's convolution peak under that round's load, which the nets' GFLOP/s are set against.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable, Dict

import torch

from bench.measure import big_convolution, interleaved
from bench.nets import fcn8s_deploy, multiply_adds, random_image, randomize
from bench.plain_fcn import PlainFCN8s
from bench.sizes import Sizes
from netspec import caffe_pb2
from netspec.prototxt import write_prototxt
from runner.net import Net

#: The runner's speed options timed here: name -> Net.set_speed keywords, and the largest deviation from
#: float32 eager allowed, relative to the largest output magnitude.
OPTIONS = {
    "winograd": (dict(winograd=True), 1e-4),
    "bf16_autocast": (dict(autocast=torch.bfloat16), 5e-2),
    "compile": (dict(compile=True), 1e-5),
    "bf16_compile": (dict(autocast=torch.bfloat16, compile=True), 5e-2),
}
#: The runner's bfloat16 options and plain PyTorch's bfloat16 configurations, best against best.
RUNNER_BF16 = ("bf16_autocast", "bf16_compile")
PLAIN_BF16 = ("plain_bf16_autocast", "plain_bf16_weights", "plain_bf16_compile")
#: Largest deviation of the runner's float32 forward from plain PyTorch's, relative to the output's magnitude.
RUNNER_TOLERANCE = 1e-5


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).abs().max() / want.abs().max().clamp_min(1e-30))


def _opencv(prototxt: str, caffemodel: str, image: torch.Tensor, winograd: bool) -> Callable[[], Any]:
    """OpenCV's forward; ``winograd`` False makes its 3x3 convolutions direct, as torch's are (OpenCV >= 4.7
    computes them by Winograd's F(6x6, 3x3), which needs fewer multiplications than the layer's MACs)."""
    import cv2
    cv_net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    cv_net.enableWinograd(winograd)
    cv_net.setInput(image.numpy())
    return lambda: cv_net.forward("score")


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    param = fcn8s_deploy(sizes)
    net = Net(param, caffe_pb2.TEST)
    randomize(net)
    image = random_image((1, 3, sizes.image, sizes.image))
    net.blobs["data"].data[...] = image.numpy()
    plain = PlainFCN8s(sizes.widths, sizes.fc_width, sizes.classes).load_from(net).eval()

    prototxt, caffemodel = os.path.join(scratch, "fcn8s.prototxt"), os.path.join(scratch, "fcn8s.caffemodel")
    write_prototxt(prototxt, param)
    net.save(caffemodel)

    def forward(which: Net) -> Callable[[], torch.Tensor]:
        """``net.forward()`` exactly as a pycaffe script calls it: no ``torch.no_grad()`` around it (a deploy
        net records no gradient by itself, as Caffe back-propagates nothing there)."""
        def call() -> torch.Tensor:
            which.forward()
            return which.blobs["score"].tensor()
        return call

    def plain_forward() -> torch.Tensor:
        with torch.no_grad():
            return plain(image)

    contenders: Dict[str, Callable[[], Any]] = {
        "runner": forward(net),
        "plain_pytorch": plain_forward,
        "opencv_dnn": _opencv(prototxt, caffemodel, image, winograd=True),
        "opencv_dnn_direct": _opencv(prototxt, caffemodel, image, winograd=False),
    }
    reference = contenders["runner"]().clone()
    checks: Dict[str, Any] = {"plain_pytorch_relative_error": _relative_error(plain_forward(), reference)}
    if checks["plain_pytorch_relative_error"] > RUNNER_TOLERANCE:
        raise AssertionError(f"the runner and plain PyTorch FCN-8s disagree on the same weights: relative error "
                             f"{checks['plain_pytorch_relative_error']:.1e}")
    for name in ("opencv_dnn", "opencv_dnn_direct"):
        checks[f"{name}_relative_error"] = _relative_error(torch.from_numpy(contenders[name]()), reference)

    def variant(name: str) -> Callable[[], torch.Tensor]:
        """The runner with one speed option, checked against float32 eager (which warms it up)."""
        keywords, tolerance = OPTIONS[name]
        fast = Net(param, caffe_pb2.TEST)
        fast.share_with(net)
        fast.blobs["data"].data[...] = image.numpy()
        fast.set_speed(**keywords)
        call = forward(fast)
        start = time.perf_counter()
        error = _relative_error(call(), reference)
        seconds[name] = time.perf_counter() - start
        if error > tolerance:
            raise AssertionError(f"speed option {name}: relative error {error:.2e} > {tolerance:.0e}")
        checks[f"{name}_relative_error"] = error
        return call

    seconds: Dict[str, float] = {}
    contenders["winograd"] = variant("winograd")
    conv_peak, conv_flops = big_convolution()
    conv_peak()
    # every contender has run once above (the checks); one more round lets the heap settle at its size
    # for all of them together (runner.host_memory), so that no timed round page-faults
    timings = interleaved({**contenders, "conv_peak": conv_peak}, sizes.forward_reps, warmup=1)

    options = {"runner": contenders["runner"], "conv_peak": conv_peak}
    options.update((name, variant(name)) for name, (keywords, _) in OPTIONS.items()
                   if name != "winograd" and (sizes.compile or not keywords.get("compile")))
    for name, call in _plain_bf16(plain, image, sizes.compile).items():
        start = time.perf_counter()
        checks[f"{name}_relative_error"] = _relative_error(call(), reference)
        seconds[name] = time.perf_counter() - start
        options[name] = call
    option_timings = interleaved(options, sizes.option_reps, warmup=1)

    macs = multiply_adds(net)
    runner = timings["runner"].median
    best = {side: min((n for n in names if n in option_timings), key=lambda n: option_timings[n].median, default=None)
            for side, names in (("runner", RUNNER_BF16), ("plain", PLAIN_BF16))}
    return {
        "input": [1, 3, sizes.image, sizes.image],
        "gmac": macs / 1e9,
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "option_timings": {name: t.as_dict() for name, t in option_timings.items()},
        "checks": checks,
        "compile_seconds": {name: seconds[name] for name in seconds if "compile" in name},
        "runner_overhead_vs_plain": runner / timings["plain_pytorch"].median - 1.0,
        "runner_overhead_vs_plain_cpu": timings["runner"].cpu_median / timings["plain_pytorch"].cpu_median - 1.0,
        "runner_speedup_vs_opencv": timings["opencv_dnn"].median / runner,
        "runner_speedup_vs_opencv_direct": timings["opencv_dnn_direct"].median / runner,
        "winograd_speedup_vs_opencv": timings["opencv_dnn"].median / timings["winograd"].median,
        "option_speedups": {name: option_timings["runner"].median / option_timings[name].median
                            for name in option_timings if name != "conv_peak"},
        "bf16_best": best,
        "bf16_runner_over_plain": (option_timings[best["runner"]].median / option_timings[best["plain"]].median
                                   if best["runner"] and best["plain"] else None),
        "winograd_speedup": runner / timings["winograd"].median,
        "runner_gflops": 2 * macs / runner / 1e9,
        "plain_gflops": 2 * macs / timings["plain_pytorch"].median / 1e9,
        "conv_peak_gflops": {"main": conv_flops / timings["conv_peak"].median / 1e9,
                             "options": conv_flops / option_timings["conv_peak"].median / 1e9},
    }


def _plain_bf16(plain: PlainFCN8s, image: torch.Tensor, compile_too: bool) -> Dict[str, Callable[[], torch.Tensor]]:
    """Plain PyTorch's bfloat16 configurations on the CPU: autocast; a bfloat16 copy of the weights on a
    channels-last bfloat16 input (no casts per call, oneDNN's layout); and, with ``compile_too``,
    torch.compile with inductor's frozen weights under autocast (each run once here, so compiled)."""
    def autocast() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return plain(image)

    weights = copy.deepcopy(plain).to(torch.bfloat16)
    low = image.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def bf16_weights() -> torch.Tensor:
        with torch.no_grad():
            return weights(low)

    configurations = {"plain_bf16_autocast": autocast, "plain_bf16_weights": bf16_weights}
    if compile_too:
        from torch._inductor import config as inductor_config
        compiled = torch.compile(plain)

        def frozen() -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), inductor_config.patch(freezing=True):
                return compiled(image)
        configurations["plain_bf16_compile"] = frozen
    return configurations
