"""pycaffe's solver names: ``get_solver(path)`` and one class per solver type.

``get_solver`` builds whatever the file's ``type`` (or legacy ``solver_type``) asks for;
``SGDSolver(path)``, ``AdamSolver(path)``... build their own type whatever the file says, exactly as
the pycaffe classes of the same names do. As in pycaffe, the adaptive solvers derive from SGDSolver
(they share its learning-rate policies, clipping and weight decay).
"""
from __future__ import annotations

from typing import Dict, Optional, Type

from netspec import caffe_pb2
from solvers.parameters import declared_solver_type, solver_type
from solvers.solver import PathLike, Solver

__all__ = ["get_solver", "Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver"]


class SGDSolver(Solver):
    """Stochastic gradient descent with momentum."""
    kind = "SGD"


class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient."""
    kind = "Nesterov"


class AdaGradSolver(SGDSolver):
    """AdaGrad (no momentum)."""
    kind = "AdaGrad"


class RMSPropSolver(SGDSolver):
    """RMSProp (no momentum; ``rms_decay``)."""
    kind = "RMSProp"


class AdaDeltaSolver(SGDSolver):
    """AdaDelta (``momentum`` is its decay; base_lr usually 1)."""
    kind = "AdaDelta"


class AdamSolver(SGDSolver):
    """Adam (``momentum`` = beta1, ``momentum2`` = beta2, ``delta`` = epsilon)."""
    kind = "Adam"


_BY_TYPE: Dict[str, Type[Solver]] = {cls.kind: cls for cls in
                                     (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver,
                                      AdamSolver)}


def get_solver(solver_file: PathLike, param: Optional["caffe_pb2.SolverParameter"] = None) -> Solver:
    """The solver a solver.prototxt describes, of the class for its type (pycaffe's ``caffe.get_solver``);
    ``param``: that file's parameter already read and adjusted (see ``Solver``), Caffe's CreateSolver."""
    kind = declared_solver_type(solver_file) if param is None else solver_type(param)
    return _BY_TYPE[kind](solver_file, param)
