"""``fcn pycaffe SCRIPT [ARGS]``: run an unmodified pycaffe script with ``import caffe`` bound to our facade."""
from __future__ import annotations

import os
import runpy
import sys
from typing import List


def run_pycaffe_script(script: str, args: List[str]) -> None:
    """Execute ``script`` as ``__main__`` with ``sys.argv = [script, *args]``, its folder first on sys.path
    (as ``python script.py`` would), and the pycaffe module names pointing at ``fcn.caffe``."""
    if not os.path.isfile(script):
        raise FileNotFoundError(f"fcn pycaffe: no such script: {script}")
    from fcn import caffe
    caffe.install_as_caffe()
    folder = os.path.dirname(os.path.abspath(script))
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [script, *args]
    sys.path.insert(0, folder)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
