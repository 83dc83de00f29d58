"""Case 2: one training iteration of FCN-8s (forward, backward, Caffe's SGD update) through the solver,
against the same iteration written in plain PyTorch (cross-entropy summed over pixels, torch.optim.SGD
with the release's per-parameter rates: biases twice the rate and no decay, upsampling frozen).

With a fixed rate, Caffe's ``v = m v + lr g; w -= v`` and torch's ``v = m v + g; w -= lr v`` are the same
update. Both start from the same weights and batch, and their first losses must agree.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

from bench.measure import interleaved
from bench.nets import fcn8s_train, random_image, randomize
from bench.plain_fcn import PlainFCN8s
from bench.sizes import Sizes
from netspec.prototxt import write_prototxt
from solvers.api import get_solver

BASE_LR, MOMENTUM, WEIGHT_DECAY = 1e-10, 0.99, 5e-4
IGNORE = 255


def write_solver(sizes: Sizes, scratch: str) -> str:
    """Write the training net and an SGD solver.prototxt for it into ``scratch``; returns the solver's path."""
    net_path = os.path.join(scratch, "train.prototxt")
    write_prototxt(net_path, fcn8s_train(sizes))
    path = os.path.join(scratch, "solver.prototxt")
    with open(path, "w") as handle:
        handle.write(f'train_net: "{net_path}"\nbase_lr: {BASE_LR}\nlr_policy: "fixed"\nmomentum: {MOMENTUM}\n'
                     f"weight_decay: {WEIGHT_DECAY}\naverage_loss: 1\ndisplay: 0\nmax_iter: 100000000\n")
    return path


def random_label(sizes: Sizes) -> torch.Tensor:
    """A 1 x 1 x H x W label map of random classes with 5% void (255) pixels."""
    generator = torch.Generator().manual_seed(1)
    label = torch.randint(0, sizes.classes, (1, 1, sizes.image, sizes.image), generator=generator)
    void = torch.rand(label.shape, generator=generator) < 0.05
    return torch.where(void, torch.full_like(label, IGNORE), label).float()


def _plain_trainer(model: PlainFCN8s, image: torch.Tensor, label: torch.Tensor):
    """A closure doing one plain PyTorch iteration; returns the loss."""
    weights: List[torch.nn.Parameter] = []
    biases: List[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if name.startswith("upscore"):
            param.requires_grad_(False)
        else:
            (biases if name.endswith("bias") else weights).append(param)
    optimizer = torch.optim.SGD([dict(params=weights, lr=BASE_LR, weight_decay=WEIGHT_DECAY),
                                 dict(params=biases, lr=2 * BASE_LR, weight_decay=0.0)], momentum=MOMENTUM)
    target = label[:, 0].long()

    def step() -> float:
        optimizer.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(image), target, ignore_index=IGNORE, reduction="sum") / image.shape[0]
        loss.backward()
        optimizer.step()
        return float(loss.detach())
    return step


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    solver = get_solver(write_solver(sizes, scratch))
    randomize(solver.net)
    image, label = random_image((1, 3, sizes.image, sizes.image)), random_label(sizes)
    solver.net.blobs["data"].data[...] = image.numpy()
    solver.net.blobs["label"].data[...] = label.numpy()
    plain = PlainFCN8s(sizes.widths, sizes.fc_width, sizes.classes).load_from(solver.net).train()
    plain_step = _plain_trainer(plain, image, label)

    solver.step(1)
    solver_loss, plain_loss = solver.smoothed_loss, plain_step()
    if abs(solver_loss - plain_loss) > 1e-4 * abs(plain_loss):
        raise AssertionError(f"first training loss differs: solver {solver_loss}, plain PyTorch {plain_loss}")
    timings = interleaved({"solver": lambda: solver.step(1), "plain_pytorch": plain_step},
                          sizes.train_reps, warmup=0)
    return {
        "input": [1, 3, sizes.image, sizes.image],
        "first_loss": {"solver": solver_loss, "plain_pytorch": plain_loss},
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "solver_overhead_vs_plain": timings["solver"].median / timings["plain_pytorch"].median - 1.0,
        "solver_overhead_vs_plain_cpu": timings["solver"].cpu_median / timings["plain_pytorch"].cpu_median - 1.0,
        "solver_images_per_second": 1.0 / timings["solver"].median,
    }
