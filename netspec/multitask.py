"""One body, several FCN heads: SIFT Flow's semantic (33 classes) and geometric (3) labels.

The heads share VGG16 up to fc7 and each has its own scores, skips, upsampling and loss, so
learning and inference cost about what one task does (CVPR Sec. 5). Names carry the task as
suffix (score_fr_sem, upscore2_geo, ...), as in the release.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from netspec.backbones import fcn_head, softmax_loss, vgg16
from netspec.net_spec import NetSpec, Top

__all__ = ["SIFTFLOW_TASKS", "Task", "fcn_tasks"]


class Task(NamedTuple):
    """One head: its name suffix, its number of classes, and the name of its label blob."""

    suffix: str
    num_classes: int
    label: str


SIFTFLOW_TASKS = (Task("_sem", 33, "sem"), Task("_geo", 3, "geo"))


def fcn_tasks(n: NetSpec, data: Top, tasks: Sequence[Task], skips: Sequence[str] = (),
              losses: bool = True, dropout: bool = True) -> list[Top]:
    """VGG16 and one FCN head per task, each fusing the shared body's ``skips``.

    With ``losses`` each head gets a loss against ``n[task.label]``: the first task's is
    plain ``loss`` (the blob the release's scoring reads), the others' ``loss<suffix>``.
    Returns each task's cropped score.
    """
    features = vgg16(n, data, dropout=dropout)
    scores = []
    for i, task in enumerate(tasks):
        score = fcn_head(n, features, data, task.num_classes, skips=skips, suffix=task.suffix,
                         skip_suffix="")
        if losses:
            n["loss" if i == 0 else "loss" + task.suffix] = softmax_loss(score, n[task.label])
        scores.append(score)
    return scores
