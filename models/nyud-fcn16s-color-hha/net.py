"""nyud-fcn16s-color-hha: the late-fusion color + HHA net at stride 16 on NYUDv2: two FCN-16s
streams, scores averaged, 40 classes.

Run ``python models/nyud-fcn16s-color-hha/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment  # noqa: E402
from models.sources import nyud  # noqa: E402
from netspec.fusion import late_fusion_fcn16s  # noqa: E402

EXPERIMENT = Experiment(nyud("color", "hha"), lambda n, deploy: late_fusion_fcn16s(
    n, {"color": n.color, "hha": n.hha}, None if deploy else n.label, dropout=not deploy))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
