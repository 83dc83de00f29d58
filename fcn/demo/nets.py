"""The demo's nets, written with NetSpec: a small VGG-style classifier and the FCNs made from its body.

The body keeps the VGG16 FCN's names and geometry (five 2x2 poolings, fc6/fc7, pool3/pool4 skips) but
one narrow 3x3 convolution per stage, so that everything trains in minutes on two CPU cores. The
classifier sees 128x128 patches, so after five poolings fc6 covers a 4x4 cell: as an FCN it becomes a 4x4
convolution, as VGG16's fc6 becomes 7x7 at full size. (fc6 must be at least that wide: with a narrower
one the skips' crops do not fit every input size, whatever conv1_1's padding.)

conv1_1's padding plays the part of VGG16's 100: the least that lets any input of one pixel or more
yield an fc6 output, ``FIRST_PAD``. VGG16's 100 only just covers its 7x7 fc6 (a stride of 32 times 6
cells, halved); the same rule for a 4x4 fc6 gives 49, and a padding of 100 here would spend most of
every pass on padding (at 64x80 pictures, 2.5x the pixels of the FIRST_PAD net in conv1).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from netspec import caffe_pb2
from netspec.backbones import FIXED, LEARNED, conv_relu, fcn_head, max_pool
from netspec.net_spec import L, NetSpec, Top
from netspec.null_background import null_background_head

WIDTHS = (16, 32, 48, 64, 64)
FC_WIDTH = 128
NUM_CLASSES = 21
FC6_KERNEL = 4
PATCH = 32 * FC6_KERNEL  # pool5 of a patch is FC6_KERNEL x FC6_KERNEL
STRIDE = 32
# One pixel padded by p gives a conv1_1 output of 2p - 1 pixels and a pool5 of ceil((2p - 1) / 32): that
# must reach the fc6 kernel, so 2p - 1 > 32 * (FC6_KERNEL - 1).
FIRST_PAD = STRIDE * (FC6_KERNEL - 1) // 2 + 1
# The data layers feed BGR minus the mean on a 0-255 scale (standard deviation about 50, as the release's
# layers do). A net trained from scratch in minutes needs unit-scale inputs (He's initialisation assumes
# them, and plain SGD then moves every layer at the same relative rate), so the body starts with a fixed
# Power layer (Caffe's y = (shift + scale * x) ^ power) that rescales the pixels.
INPUT_SCALE = 1.0 / 50
SKIPS = {"fcn32s": (), "fcn16s": ("pool4",), "fcn8s": ("pool4", "pool3"), "fcn8s-atonce": ("pool4", "pool3"),
         "fcn32s-fixed": (), "fcn32s-null": ()}
# The PAMI Table 3 ablations of the small body, as netspec.ablations builds them for VGG16: the body
# truncated after pool<N> and scored there alone (no fc6/fc7, no skips), upsampled 2^N x in one step.
# The release's at-once net damps its skips by 0.01 (pool4) and 0.0001 (pool3), values tuned to VGG16's
# activations. This body's pool4 and pool3 activations are already smaller than fc7's (root mean squares
# about 1.0 and 0.5 against 7 after the classifier), so the demo keeps the fixed Scale layers at 1.
AT_ONCE_SCALES = (1.0, 1.0)
POOL_ONLY = {"pool5": 5, "pool4": 4, "pool3": 3}


def body(n: NetSpec, data: Top, first_pad: int, stages: int = len(WIDTHS),
         param: Optional[List[Dict]] = LEARNED) -> Top:
    """conv1_1..pool<stages> with in-place ReLUs; returns the last pooling. ``param`` FIXED holds the
    layers at their classifier weights (FCN-32s-fixed)."""
    n.data_scaled = top = L.Power(data, power=1.0, scale=INPUT_SCALE)
    for stage, width in enumerate(WIDTHS[:stages], start=1):
        n[f"conv{stage}_1"], top = conv_relu(top, width, pad=first_pad if stage == 1 else 1, param=param,
                                             weight_filler=dict(type="msra"))
        n[f"relu{stage}_1"] = top
        n[f"pool{stage}"] = top = max_pool(top)
    return top


def _filler(kind: str) -> Dict:
    return dict(type=kind) if kind != "gaussian" else dict(type="gaussian", std=0.01)


def classifier(patch_params: str) -> caffe_pb2.NetParameter:
    """Patches in, class scores out: conv body, then InnerProduct fc6/fc7/fc8 (He-initialised)."""
    n = NetSpec()
    n.data, n.label = L.Python(module="fcn.demo.patches", layer="PatchLayer", ntop=2, param_str=patch_params)
    top = body(n, n.data, first_pad=1)
    for name, width in (("fc6", FC_WIDTH), ("fc7", FC_WIDTH)):
        n[name] = L.InnerProduct(top, num_output=width, param=LEARNED, weight_filler=_filler("msra"))
        n[f"relu{name[2:]}"] = top = L.ReLU(n[name], in_place=True)
    n.fc8 = L.InnerProduct(top, num_output=NUM_CLASSES, param=LEARNED, weight_filler=_filler("gaussian"))
    n.loss = L.SoftmaxWithLoss(n.fc8, n.label)
    n.accuracy = L.Accuracy(n.fc8, n.label)
    return n.to_proto()


def fcn(kind: str, data_params: str) -> caffe_pb2.NetParameter:
    """FCN-32s/16s/8s (or 8s at once, with the fixed skip scales) over the VOC data layer; also the
    ablations FCN-32s-fixed (only the score layer learns), FCN-32s-null (the null background head) and
    pool5/pool4/pool3 (see ``POOL_ONLY``)."""
    n = NetSpec()
    n.data, n.label = L.Python(module="data_layers.voc", layer="VOCSegDataLayer", ntop=2, param_str=data_params)
    _fcn_layers(kind, n, n.data, n.label)
    return n.to_proto()


def deploy(kind: str, size: Sequence[int]) -> caffe_pb2.NetParameter:
    """The inference net of ``kind``: an Input layer of one ``size`` (h, w) picture, no loss; ``fcn infer``
    and ``fcn.Segmenter`` reshape it to each picture they are given."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, int(size[0]), int(size[1])]))
    _fcn_layers(kind, n, n.data, None)
    return n.to_proto()


def _fcn_layers(kind: str, n: NetSpec, data: Top, label: Optional[Top]) -> None:
    if kind in POOL_ONLY:
        top = body(n, data, first_pad=FIRST_PAD, stages=POOL_ONLY[kind])
        fcn_head(n, top, data, NUM_CLASSES, label=label, stride=2 ** POOL_ONLY[kind])
        return
    param = FIXED if kind == "fcn32s-fixed" else LEARNED
    top = body(n, data, first_pad=FIRST_PAD, param=param)
    for name, kernel in (("fc6", FC6_KERNEL), ("fc7", 1)):
        n[name], top = conv_relu(top, FC_WIDTH, ks=kernel, pad=0, param=param)
        n[f"relu{name[2:]}"] = top
    if kind == "fcn32s-null":
        if label is None:
            raise ValueError("fcn32s-null has no deploy net (its head needs the label)")
        null_background_head(n, top, data, NUM_CLASSES, label=label)
        return
    scales: Optional[Sequence[float]] = AT_ONCE_SCALES if kind == "fcn8s-atonce" else None
    fcn_head(n, top, data, NUM_CLASSES, skips=SKIPS[kind], label=label, skip_scales=scales)


def solver_text(net_path: str, test_path: str, base_lr: float, momentum: float, prefix: str, iters: int,
                normalize_note: str = "", iter_size: int = 1, solver_type: str = "SGD",
                clip_gradients: float = 0.0) -> str:
    """A solver.prototxt for one demo stage (scoring is done by the solve loop, not by test_interval);
    ``iter_size`` > 1 accumulates that many single-image passes per update (a batch, as the release);
    ``clip_gradients`` > 0 caps the gradient's L2 norm (Caffe's field of that name)."""
    extra = f"iter_size: {iter_size}\n" if iter_size != 1 else ""
    if solver_type != "SGD":
        extra += f'type: "{solver_type}"\nmomentum2: 0.999\n'
    if clip_gradients > 0:
        extra += f"clip_gradients: {clip_gradients:g}\n"
    return (extra + f'# {normalize_note}\ntrain_net: "{net_path}"\ntest_net: "{test_path}"\ntest_iter: 1\n'
            f'test_interval: 1000000000\ndisplay: 10\naverage_loss: 10\nlr_policy: "fixed"\nbase_lr: {base_lr}\n'
            f'momentum: {momentum}\nweight_decay: 0.0005\nmax_iter: {iters}\nsnapshot: 0\n'
            f'snapshot_prefix: "{prefix}"\nrandom_seed: 1701\n')
