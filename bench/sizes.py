"""How big each case runs: the paper's sizes for ``make bench``, toy sizes for the smoke test."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from netspec.backbones import VGG16_WIDTHS

#: The model-zoo deploy nets made of BVLC layers only (bench/zoo/; segnet and the SSD face detector there use
#: layers Caffe lacks).
ZOO_NETS = ("bvlc_alexnet", "bvlc_googlenet", "resnet50", "squeezenet_v1.1", "mobilenet_v1", "mobilenet_v2",
            "densenet121", "vgg16")


@dataclass(frozen=True)
class Sizes:
    """Every size and repetition count the cases read."""
    image: int = 500                              # FCN-8s input side (forward, training, loading)
    widths: Tuple[int, ...] = VGG16_WIDTHS        # VGG16 stage widths
    fc_width: int = 4096                          # fc6/fc7 channels
    classes: int = 21
    forward_reps: int = 7
    option_reps: int = 5                          # the runner's speed options (and plain bf16), timed apart
    train_reps: int = 2                           # after one untimed step (the loss check)
    compile: bool = True                          # time torch.compile (minutes of compiling on a CPU)
    grid_image: int = 500                         # AlexNet amortization: 500 -> a 10x10 grid
    patch: int = 227                              # AlexNet's classifier input
    amortize_reps: int = 2                        # each separate-patches repetition is 100 forwards
    dilation_image: int = 256                     # shift-and-stitch vs dilation (Section 3.2)
    dilation_widths: Tuple[int, ...] = (32, 64, 128)
    dilation_reps: int = 3                        # each shift-and-stitch repetition is 64 forwards
    data_images: int = 20                         # per data layer and prefetch setting
    data_size: Tuple[int, int] = (375, 500)       # a typical VOC picture
    wait_widths: Tuple[int, ...] = (16, 32, 64, 128, 128)   # FCN-8s of the data-wait run
    wait_fc_width: int = 256
    wait_iters: int = 12
    score_batch: int = 8                          # label maps of image x image pixels per histogram
    score_reps: int = 5
    zoo_nets: Tuple[str, ...] = ZOO_NETS          # bench/zoo/ deploy nets, timed at batch 1
    zoo_threads: Tuple[int, ...] = (1, 2)
    zoo_reps: int = 7


FULL = Sizes()
QUICK = Sizes(image=64, widths=(4, 4, 8, 8, 8), fc_width=16, forward_reps=1, option_reps=1, train_reps=1,
              compile=False, grid_image=227, amortize_reps=1, dilation_image=40,
              dilation_widths=(4, 4, 4), dilation_reps=1, data_images=3, data_size=(32, 40),
              wait_widths=(4, 4, 4, 4, 4), wait_fc_width=8, wait_iters=2, score_batch=1, score_reps=1,
              zoo_nets=("squeezenet_v1.1",), zoo_threads=(1,), zoo_reps=1)
