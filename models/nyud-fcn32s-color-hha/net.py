"""nyud-fcn32s-color-hha: two FCN-32s streams on NYUDv2 color and HHA, scores averaged
(late fusion), 40 classes.

Run ``python models/nyud-fcn32s-color-hha/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment  # noqa: E402
from models.sources import nyud  # noqa: E402
from netspec.fusion import late_fusion_fcn32s  # noqa: E402

EXPERIMENT = Experiment(nyud("color", "hha"), lambda n, deploy: late_fusion_fcn32s(
    n, {"color": n.color, "hha": n.hha}, None if deploy else n.label, dropout=not deploy))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
