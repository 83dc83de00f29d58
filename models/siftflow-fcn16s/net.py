"""siftflow-fcn16s: FCN-16s on SIFT Flow with two heads: semantic (33) and geometric (3) classes.

Run ``python models/siftflow-fcn16s/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment  # noqa: E402
from models.sources import siftflow  # noqa: E402
from netspec.multitask import SIFTFLOW_TASKS, fcn_tasks  # noqa: E402

EXPERIMENT = Experiment(siftflow(), lambda n, deploy: fcn_tasks(
    n, n.data, SIFTFLOW_TASKS, ("pool4",), losses=not deploy, dropout=not deploy))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
