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

from data_layers.scenes import FINE_SHAPES, look
from data_layers.voc import VOC_MEAN_BGR
from fcn.demo import nets
from fcn.demo.run import close_data_layers
from netspec import caffe_pb2
from runner.net import Net
from solvers.score import voc_palette

FCN_STAGES = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
FIGURE_COLUMNS = ("fcn32s", "fcn16s", "fcn8s")
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


def stage_metrics(demo) -> Dict[str, Dict[str, float]]:
    """Per FCN stage: the four metrics of the paper, mean IU on the fine classes and training seconds."""
    fine = fine_classes()
    metrics = {}
    for name in FCN_STAGES:
        stage = demo.results[name]
        s = stage.final
        metrics[name] = {"pixel_accuracy": s["pixel_accuracy"], "mean_accuracy": s["mean_accuracy"],
                         "mean_iu": s["mean_iu"], "fw_iu": s["fw_iu"],
                         "fine_iu": _nanmean([s["per_class_iu"][c] for c in fine]), "seconds": stage.seconds}
    return metrics


METRIC_COLUMNS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "fine_iu")


def _cell(values: List[float]) -> str:
    """One value, or mean ± half the range over seeds (percent)."""
    if len(values) == 1:
        return _pct(values[0])
    spread = (max(values) - min(values)) / 2
    return f"{_pct(float(np.mean(values)))} ± {100 * spread:.1f}"


def metrics_table(runs: List[Dict[str, Dict[str, float]]]) -> List[str]:
    """The paper-style table; with several runs each cell is the mean ± half the range over them."""
    rows = ["| net | pixel acc. | mean acc. | mean IU | f.w. IU | mean IU, fine classes | training time |",
            "|---|---|---|---|---|---|---|"]
    for name in FCN_STAGES:
        cells = [_cell([run[name][key] for run in runs]) for key in METRIC_COLUMNS]
        seconds = np.mean([run[name]["seconds"] for run in runs])
        rows.append(f"| {name} | {' | '.join(cells)} | {seconds:.0f} s |")
    return rows


def compare(runs: List[Dict[str, Dict[str, float]]], low: str, high: str, key: str = "mean_iu",
            factor: float = 1.0) -> str:
    """Whether ``high`` beats ``factor`` x ``low`` on ``key`` by more than the spread (the larger of the two
    ranges over seeds); with one run there is no spread, so no verdict."""
    a = [factor * run[low][key] for run in runs]
    b = [run[high][key] for run in runs]
    times = f"{factor:g}x " if factor != 1 else ""
    text = f"{high} {_cell(b)} vs {times}{low} {_cell(a)}"
    if len(runs) < 2:
        return f"{text}: one seed, so no verdict (the spread over seeds is unknown; `fcn demo --seeds 3`)"
    spread = max(max(a) - min(a), max(b) - min(b))
    difference = float(np.mean(b) - np.mean(a))
    if difference > spread:
        return f"{text}: {high} is ahead by {100 * difference:.1f}, more than the spread {100 * spread:.1f}"
    return f"{text}: the difference {100 * difference:.1f} does not exceed the spread {100 * spread:.1f}, no finding"


def findings(runs: List[Dict[str, Dict[str, float]]]) -> List[str]:
    """The paper's claims, each stated only where the seeds' spread allows."""
    return [f"- Skips, overall: {compare(runs, 'fcn32s', 'fcn16s')}.",
            f"- Skips, overall: {compare(runs, 'fcn16s', 'fcn8s')}.",
            f"- Fine structure: {compare(runs, 'fcn32s', 'fcn8s', 'fine_iu', 2.0)}.",
            f"- Staged vs at once: {compare(runs, 'fcn8s', 'fcn8s-atonce')}."]


def _recipe(demo) -> str:
    b = demo.budget
    return (f"Synthetic PASCAL VOC-format data ({b.images} pictures per split, up to {b.size[0]}x{b.size[1]}, 21 "
            "classes; every third object class a fine structure 5-8 px across: bars, specks, rings), read by the "
            "real VOC data layer. A VGG-style classifier (five narrow conv stages, fc6/fc7/fc8) was trained "
            f"for {b.classifier} iterations with Caffe's Adam on {nets.PATCH}x{nets.PATCH} pictures of one class "
            "each (its ImageNet, drawn from the same generator with other seeds), convolutionalized by net "
            f"surgery (fc6/fc7 reshaped into convolutions, fc8 dropped), then FCN-32s ({b.fcn32s} iterations), "
            f"FCN-16s ({b.fcn16s}, from FCN-32s), FCN-8s ({b.fcn8s}, from FCN-16s) and FCN-8s at once "
            f"({b.atonce}, from the convolutionalized classifier) were trained with Caffe's SGD on summed pixel "
            "losses and scored on the validation split.")


def _report_lines(title: str, demo, runs: List[Dict[str, Dict[str, float]]], total_seconds: float,
                  seeds: List[int]) -> List[str]:
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}, mean ± half the range"
    return [
        title, "",
        _recipe(demo) + f" Whole run: {total_seconds / 60:.1f} minutes ({seed_text}).", "",
        *metrics_table(runs), "",
        f"Fine classes: {', '.join(map(str, fine_classes()))} (VOC indices). The paper's VOC 2011 validation "
        "figures, for scale (pixel acc., mean acc., mean IU, f.w. IU): "
        + "; ".join(f"{k} {'/'.join(str(v) for v in vals)}" for k, vals in PAPER.items()) + ".", "",
        "## What this run shows", "",
        "A difference is a finding only where it exceeds the spread over seeds (the larger of the two nets' "
        "ranges).", "",
        *findings(runs), "",
    ]


def write_report(demo, total_seconds: float) -> str:
    """REPORT.md in the demo folder; returns its path."""
    lines = _report_lines("# fcn-caffe demo: the FCN recipe in miniature", demo, [stage_metrics(demo)],
                          total_seconds, [demo.seed])
    lines.append("Files: `curves.png` (loss and mean IU per iteration, percent), `predictions.png` (input, ground "
                 "truth, 32s, 16s, 8s), and per stage its prototxts (train, val, deploy), solver, `train_log.jsonl`, "
                 "snapshots and `best.caffemodel`.")
    return _write_text(os.path.join(demo.out, "REPORT.md"), lines)


def write_seeds_report(out_dir: str, demos: List, total_seconds: float) -> str:
    """REPORT.md over several seeds' demos (each in its own ``seed-K`` folder); returns its path."""
    runs = [stage_metrics(demo) for demo in demos]
    lines = _report_lines(f"# fcn-caffe demo over {len(demos)} seeds", demos[0], runs, total_seconds,
                          [demo.seed for demo in demos])
    lines.append("Each seed's own report, curves and predictions are in its `seed-K` folder.")
    return _write_text(os.path.join(out_dir, "REPORT.md"), lines)


def _write_text(path: str, lines: List[str]) -> str:
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
        scores = [(r["iter"] + start, 100 * r["mean_iu"]) for r in records if "mean_iu" in r]
        if losses:
            left.plot(*zip(*losses), label=name)
        if scores:
            right.plot(*zip(*scores), marker="o", label=name)
        if name in ("fcn32s", "fcn16s"):
            offset = start + (losses[-1][0] - start + 1 if losses else 0)
    left.set(title="training loss (smoothed, summed over pixels)", xlabel="iteration (staged nets continue)",
             yscale="log")
    right.set(title="validation mean IU (%)", xlabel="iteration (staged nets continue)")
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
