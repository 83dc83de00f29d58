"""The demo's outputs: REPORT.md (the paper-style table and what it shows), curves.png, predictions.png.

Everything is read back from what the stages wrote (their JSONL logs and final snapshots), so the report
describes the run that happened, whatever its numbers.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

import numpy as np

from data_layers.scenes import look
from data_layers.voc import VOC_MEAN_BGR
from fcn.demo import nets
from fcn.demo.run import close_data_layers
from netspec import caffe_pb2
from runner.net import Net
from solvers.score import voc_palette

FCN_STAGES = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
FIGURE_COLUMNS = ("fcn32s", "fcn16s", "fcn8s")
FINE_SHAPES = ("bars", "specks", "ring")
# The paper's PASCAL VOC 2011 validation figures (CVPR 2015, Table 2), for scale.
PAPER = {"fcn32s": (89.1, 73.3, 59.4, 81.4), "fcn16s": (90.0, 75.7, 62.4, 83.0), "fcn8s": (90.3, 75.9, 62.7, 83.2)}


def fine_classes(num_classes: int = 21) -> List[int]:
    """The object classes drawn as thin bars, specks or rings: what a stride-32 net cannot resolve."""
    return [c for c in range(1, num_classes) if look(c).shape in FINE_SHAPES]


def _nanmean(values: List[Optional[float]]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _read_log(path: str) -> List[Dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}"


def write_report(demo, total_seconds: float) -> str:
    """REPORT.md in the demo folder; returns its path."""
    fine = fine_classes()
    rows, fine_iu = [], {}
    for name in FCN_STAGES:
        stage = demo.results[name]
        s = stage.final
        fine_iu[name] = _nanmean([s["per_class_iu"][c] for c in fine])
        rows.append(f"| {name} | {_pct(s['pixel_accuracy'])} | {_pct(s['mean_accuracy'])} | {_pct(s['mean_iu'])} | "
                    f"{_pct(s['fw_iu'])} | {_pct(fine_iu[name])} | {stage.seconds:.0f} s |")
    b = demo.budget
    iu = {name: demo.results[name].final["mean_iu"] for name in FCN_STAGES}
    skip_fine = fine_iu["fcn8s"] > fine_iu["fcn32s"]
    skip_all = iu["fcn8s"] > iu["fcn32s"]
    lines = [
        "# fcn-caffe demo: the FCN recipe in miniature",
        "",
        f"Synthetic PASCAL VOC-format data ({b.images} pictures per split, up to {b.size[0]}x{b.size[1]}, "
        "21 classes, one third of the object classes drawn as fine structures: 1-2 px bars, specks, rings), "
        "read by the real VOC data layer. A VGG-style classifier (five narrow conv stages, fc6/fc7/fc8) was "
        f"trained on {nets.PATCH}x{nets.PATCH} patches for {b.classifier} iterations, convolutionalized by net "
        f"surgery (fc6/fc7 reshaped into convolutions, fc8 dropped), then FCN-32s ({b.fcn32s} iterations), "
        f"FCN-16s ({b.fcn16s}, from FCN-32s), FCN-8s ({b.fcn8s}, from FCN-16s) and FCN-8s at once "
        f"({b.atonce}, from the convolutionalized classifier) were trained with Caffe's SGD on summed pixel "
        "losses and scored on the validation split. Whole run: "
        f"{total_seconds / 60:.1f} minutes (classifier {demo.results['classifier'].seconds:.0f} s).",
        "",
        "| net | pixel acc. | mean acc. | mean IU | f.w. IU | mean IU, fine classes | training time |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Fine classes: {', '.join(map(str, fine))} (VOC indices). The paper's VOC 2011 validation figures, "
        "for scale (pixel acc., mean acc., mean IU, f.w. IU): "
        + "; ".join(f"{k} {'/'.join(str(v) for v in vals)}" for k, vals in PAPER.items()) + ".",
        "",
        "## What this run shows",
        "",
        f"- Skip architecture on fine structure: FCN-8s {_pct(fine_iu['fcn8s'])} vs FCN-32s "
        f"{_pct(fine_iu['fcn32s'])} mean IU on the fine classes: "
        + ("the finer stride helped, as the paper found." if skip_fine else
           "no benefit in this run (the paper's finding did not reproduce at this scale)."),
        f"- Overall mean IU: FCN-8s {_pct(iu['fcn8s'])}, FCN-16s {_pct(iu['fcn16s'])}, FCN-32s {_pct(iu['fcn32s'])}: "
        + ("the staged skip nets improved on FCN-32s." if skip_all else "the skips did not raise overall mean IU here."),
        f"- Staged vs at once: FCN-8s {_pct(iu['fcn8s'])} after {b.fcn32s + b.fcn16s + b.fcn8s} staged iterations, "
        f"FCN-8s at once {_pct(iu['fcn8s-atonce'])} after {b.atonce}.",
        "- The numbers are whatever came out of this short CPU run on synthetic data; they are not the "
        "paper's, and a longer run (`Budget` in fcn/demo/run.py) changes them.",
        "",
        "Files: `curves.png` (loss and mean IU per iteration), `predictions.png` (input, ground truth, 32s, 16s, "
        "8s), and per stage its prototxts, solver, `train_log.jsonl` and snapshots.",
    ]
    path = os.path.join(demo.out, "REPORT.md")
    with open(path + ".tmp", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    return path


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    temp = path + ".tmp.png"
    fig.savefig(temp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    os.replace(temp, path)


def write_curves(demo) -> str:
    """Loss and mean IU per iteration for every FCN stage, in one picture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for name in FCN_STAGES:
        records = _read_log(demo.results[name].log)
        staged = name in ("fcn16s", "fcn8s")
        start = offset if staged else 0
        losses = [(r["iter"] + start, r["loss"]) for r in records if "loss" in r and "mean_iu" not in r]
        scores = [(r["iter"] + start, r["mean_iu"]) for r in records if "mean_iu" in r]
        if losses:
            left.plot(*zip(*losses), label=name)
        if scores:
            right.plot(*zip(*scores), marker="o", label=name)
        if name in ("fcn32s", "fcn16s"):
            offset = start + (losses[-1][0] - start + 1 if losses else 0)
    left.set(title="training loss (smoothed, summed over pixels)", xlabel="iteration (staged nets continue)",
             yscale="log")
    right.set(title="validation mean IU", xlabel="iteration (staged nets continue)")
    left.legend()
    right.legend()
    path = os.path.join(demo.out, "curves.png")
    _save(fig, path)
    return path


def _predictions(demo, name: str, count: int) -> List[tuple]:
    """(input RGB, ground truth, prediction) of the first ``count`` validation pictures."""
    stage_dir = os.path.dirname(demo.results[name].log)
    net = Net(os.path.join(stage_dir, "val.prototxt"), caffe_pb2.TEST, weights=demo.results[name].weights)
    out = []
    for _ in range(count):
        net.forward()
        data = net.blobs["data"].data[0].transpose(1, 2, 0) + np.array(VOC_MEAN_BGR)
        rgb = np.clip(data[:, :, ::-1], 0, 255).astype(np.uint8)
        label = net.blobs["label"].data[0, 0].astype(np.uint8)
        out.append((rgb, label, net.blobs["score"].data[0].argmax(0).astype(np.uint8)))
    close_data_layers(net)
    return out


def write_predictions(demo, count: int = 4) -> str:
    """Figure 4 of the paper, in miniature: input, ground truth, FCN-32s, FCN-16s, FCN-8s."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    palette = voc_palette()
    per_net = {name: _predictions(demo, name, count) for name in FIGURE_COLUMNS}
    titles = ("input", "ground truth", "FCN-32s", "FCN-16s", "FCN-8s")
    fig, axes = plt.subplots(count, len(titles), figsize=(2.2 * len(titles), 1.8 * count))
    for row in range(count):
        rgb, label, _ = per_net[FIGURE_COLUMNS[0]][row]
        panels = [rgb, palette[label]] + [palette[per_net[name][row][2]] for name in FIGURE_COLUMNS]
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col])
    path = os.path.join(demo.out, "predictions.png")
    _save(fig, path)
    return path
