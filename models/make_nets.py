"""Regenerate every experiment's prototxts from its net.py: ``python -m models.make_nets [name ...]``.

Experiments are the folders of models/ holding a net.py; each script is loaded as a module (its
folder name has dashes, so it is no package) and its ``EXPERIMENT`` written into its folder.
``--check`` writes nothing and fails if a committed prototxt is not what its net.py writes now.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Optional, Sequence

from models.experiment import Experiment
from netspec.prototxt import read_prototxt

__all__ = ["MODELS", "experiment_folders", "load", "main", "stale"]

MODELS = Path(__file__).resolve().parent


def experiment_folders() -> dict[str, Path]:
    """Experiment name -> folder, for every models/<name>/net.py, sorted by name."""
    return {script.parent.name: script.parent for script in sorted(MODELS.glob("*/net.py"))}


def load(folder: Path) -> Experiment:
    """The ``EXPERIMENT`` defined by ``folder``/net.py."""
    name = "models_" + folder.name.replace("-", "_") + "_net"
    spec = importlib.util.spec_from_file_location(name, folder / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


def stale(folder: Path, experiment: Experiment) -> list[str]:
    """The prototxts of ``folder`` missing or differing (as messages) from what it generates."""
    return [name for name, net in experiment.nets().items()
            if not (folder / name).is_file() or read_prototxt(folder / name) != net]


def main(argv: Optional[Sequence[str]] = None) -> int:
    folders = experiment_folders()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="name",
                        help="experiments to regenerate (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; list stale prototxts and fail if there are any")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(folders))
    if unknown:
        parser.error(f"no experiment {', '.join(unknown)}; there are: {', '.join(folders)}")
    changed = 0
    for name in args.names or folders:
        experiment = load(folders[name])
        outdated = stale(folders[name], experiment)
        changed += len(outdated)
        if args.check:
            for file in outdated:
                print(f"stale: models/{name}/{file} (run: make nets)", file=sys.stderr)
        elif outdated:
            for path in experiment.write(folders[name]):
                if path.name in outdated:
                    print(f"rewrote {path.relative_to(MODELS.parent)}")
    if not args.check and not changed:
        print("every prototxt already matches its net.py")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
