"""PASCAL-Context: full-scene labels of VOC2010, reduced to the 59-class task (or the 33-class one).

Annotations label every pixel with one of ~460 names (``labels.txt``); the task keeps the classes listed
in ``59_labels.txt`` (``33_labels.txt``) and makes everything else background 0. The match is by name,
spaces removed, because the two lists number classes differently and spell three of them differently.
"""
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from data_layers.base import SegDataLayer
from data_layers.classes import CONTEXT_TASK_TO_FULL
from data_layers.readers import read_mat, read_rgb
from data_layers.transforms import image_blob, lookup_labels

CONTEXT_MEAN_BGR = (104.007, 116.669, 122.679)
TASKS = (59, 33)
_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")


def read_label_list(path: Path) -> List[Tuple[int, str]]:
    """``(id, name)`` of each "id: name" line, names with spaces removed; other lines are skipped."""
    entries = []
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match:
            entries.append((int(match.group(1)), match.group(2).replace(" ", "")))
    if not entries:
        raise ValueError(f"{path}: no 'id: name' lines")
    return entries


def task_table(full: Sequence[Tuple[int, str]], task: Sequence[Tuple[int, str]], where: Path) -> np.ndarray:
    """Lookup from full-list ids to task classes (1..K by the task list's ids, 0 for the rest)."""
    full_ids = {name: index for index, name in full}
    table = np.zeros(max(full_ids.values()) + 1, dtype=np.uint8)
    for task_id, name in task:
        full_name = CONTEXT_TASK_TO_FULL.get(name, name)
        if full_name not in full_ids:
            raise ValueError(f"{where}: class '{name}' is not in the full label list")
        table[full_ids[full_name]] = task_id
    return table


class PASCALContextSegDataLayer(SegDataLayer):
    """``voc_dir`` holds VOC2010/; ``context_dir`` holds labels.txt, 59_labels.txt, trainval/*.mat.

    Extra key ``classes``: 59 (default) or 33, the task to map to.
    """

    kind = "context"
    dataset = "PASCAL-Context"
    how_to_get = ("Get VOC2010 from http://host.robots.ox.ac.uk/pascal/VOC/voc2010/ and the annotations "
                  "from http://www.cs.stanford.edu/~roozbeh/pascal-context/.")
    dir_keys = ("voc_dir", "context_dir")
    extra_keys = ("classes",)
    default_mean = CONTEXT_MEAN_BGR

    @property
    def voc2010(self) -> Path:
        return Path(self.params["voc_dir"]) / "VOC2010"

    @property
    def context_dir(self) -> Path:
        return Path(self.params["context_dir"])

    def folders(self) -> Sequence[Path]:
        return [self.voc2010, self.context_dir]

    def configure(self, params: Dict[str, Any]) -> None:
        task = params.get("classes", 59)
        if task not in TASKS:
            raise ValueError(f"PASCALContextSegDataLayer: classes must be one of {TASKS}, got {task!r}")
        task_file = self.require(self.context_dir / f"{task}_labels.txt", "task label list")
        full = read_label_list(self.require(self.context_dir / "labels.txt", "full label list"))
        self.table = task_table(full, read_label_list(task_file), task_file)
        self.num_classes = int(self.table.max()) + 1

    def split_file(self) -> Path:
        return self.voc2010 / "ImageSets" / "Main" / f"{self.split}.txt"

    def source(self, top: str, sample_id: str) -> Path:
        if top == "data":
            return self.voc2010 / "JPEGImages" / f"{sample_id}.jpg"
        return self.context_dir / "trainval" / f"{sample_id}.mat"

    def decode(self, top: str, path: Path) -> np.ndarray:
        if top == "data":
            return image_blob(read_rgb(path), self.mean)
        return lookup_labels(read_mat(path, "LabelMap"), self.table, path)
