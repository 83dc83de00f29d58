"""Reading a solver.prototxt the way Caffe does, and finding the nets it names.

Caffe accepts a solver file in several historical shapes: the solver kind as the legacy
``solver_type`` enum or as the ``type`` string; the train net as ``net``, ``net_param``,
``train_net`` or ``train_net_param``; test nets from ``test_net``/``test_net_param`` plus as many
copies of the generic ``net`` as there are extra ``test_iter`` entries. Each net's NetState is built
by merging, in this order, the phase the solver gives it, the net's own ``state`` and the solver's
``train_state``/``test_state``. Getting any of this wrong silently trains a different net, so the
rules live here, in one place, with Caffe's error messages.

One deliberate extension: Caffe opens a relative net path from the working directory only; we fall
back to the solver file's folder, so ``get_solver("models/x/solver.prototxt")`` works from anywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Union

from netspec import caffe_pb2, glog
from netspec.prototxt import read_prototxt

#: Caffe's registered solver types, by their ``type`` string.
SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
_LEGACY_TYPE = {caffe_pb2.SolverParameter.SGD: "SGD", caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
                caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad", caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
                caffe_pb2.SolverParameter.ADADELTA: "AdaDelta", caffe_pb2.SolverParameter.ADAM: "Adam"}


@dataclass
class NetSource:
    """One net a solver builds: a prototxt path or an inline NetParameter, and the NetState to build it in
    (already merged as Caffe merges it; ``stages`` are only those the solver adds, since the net's own
    ``state.stage`` entries are kept by the runner's filtering anyway)."""
    net: Union[str, "caffe_pb2.NetParameter"]
    phase: int
    level: int
    stages: List[str]
    #: Where Caffe says the net comes from: "net file: <path as given>", "test_net_param"...
    origin: str = ""


def read_solver_parameter(path: Union[str, "os.PathLike[str]"]) -> "caffe_pb2.SolverParameter":
    """Parse a solver.prototxt and upgrade it as Caffe's ReadSolverParamsFromTextFileOrDie does: the legacy
    ``solver_type`` enum becomes ``type``, and a missing ``snapshot_prefix`` becomes the solver file's
    path without its extension (a prefix naming a folder gets the file's stem appended)."""
    path = os.fspath(path)
    param = read_prototxt(path, caffe_pb2.SolverParameter)
    upgrade_solver_type(param, path)
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = os.path.splitext(path)[0]
        glog.info("upgrade_proto.cpp:1108", "snapshot_prefix was not specified and is set to %s",
                  param.snapshot_prefix)
    elif os.path.isdir(param.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(path))[0]
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, stem)
        glog.info("upgrade_proto.cpp:1113", "snapshot_prefix was a directory and is replaced to %s",
                  param.snapshot_prefix)
    return param


def upgrade_solver_type(param: "caffe_pb2.SolverParameter", source: str = "solver") -> None:
    """Move the legacy ``solver_type`` enum into the ``type`` string, in place, logging it as Caffe's
    UpgradeSolverAsNeeded does (``source``: the file); both at once is an error."""
    if not param.HasField("solver_type"):
        return
    if param.HasField("type"):
        raise ValueError(f"{source}: the old solver_type field (enum) and the new type field (string) cannot "
                         f"both be given; keep only 'type: \"{param.type}\"'")
    glog.info("upgrade_proto.cpp:1084", "Attempting to upgrade input file specified using deprecated "
              "'solver_type' field (enum)': %s", source)
    param.type = _LEGACY_TYPE[param.solver_type]
    param.ClearField("solver_type")
    glog.info("upgrade_proto.cpp:1091", "Successfully upgraded file specified using deprecated 'solver_type' "
              "field (enum) to 'type' field (string).")
    glog.warning("upgrade_proto.cpp:1093", "Note that future Caffe releases will only support 'type' field "
                 "(string) for a solver's type.")


def declared_solver_type(path: Union[str, "os.PathLike[str]"]) -> str:
    """The solver type a solver file asks for, found without upgrading it (so without logging that twice:
    ``get_solver`` looks here first, then the solver it picks reads the file)."""
    param = read_prototxt(os.fspath(path), caffe_pb2.SolverParameter)
    if param.HasField("solver_type") and not param.HasField("type"):
        return _LEGACY_TYPE[param.solver_type]
    return solver_type(param)


def solver_type(param: "caffe_pb2.SolverParameter") -> str:
    """The registered solver type the parameter asks for (``type``, default "SGD")."""
    if param.type not in SOLVER_TYPES:
        raise ValueError(f"unknown solver type '{param.type}' (known types: {', '.join(sorted(SOLVER_TYPES))})")
    return param.type


def resolve_path(path: str, base_dir: Optional[str], what: str) -> str:
    """``path`` as given if it exists (Caffe opens it from the working directory), else relative to
    ``base_dir``; a file found in neither place is an error naming both."""
    if os.path.isabs(path) or os.path.exists(path) or base_dir is None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what} '{path}' not found")
        return path
    beside = os.path.join(base_dir, path)
    if not os.path.exists(beside):
        raise FileNotFoundError(f"{what} '{path}' not found (looked in the working directory "
                                f"{os.getcwd()} and in {base_dir})")
    return beside


def net_source_for_train(param: "caffe_pb2.SolverParameter", base_dir: Optional[str]) -> NetSource:
    """Where the train net comes from (exactly one of train_net_param, train_net, net_param, net)."""
    given = [name for name in ("train_net_param", "train_net", "net_param", "net") if param.HasField(name)]
    if not given:
        raise ValueError("SolverParameter must specify a train net using one of these fields: "
                         "train_net_param, train_net, net_param, net")
    if len(given) > 1:
        raise ValueError(f"SolverParameter must not contain more than one of these fields specifying a train "
                         f"net: {', '.join(given)}")
    field = given[0]
    net = _net_of(getattr(param, field), field, base_dir)
    return _with_state(net, caffe_pb2.TRAIN, param.train_state if param.HasField("train_state") else None,
                       _origin(param, field))


def net_sources_for_test(param: "caffe_pb2.SolverParameter", base_dir: Optional[str]) -> List[NetSource]:
    """The test nets, in Caffe's order: test_net_param entries, test_net files, then one instance of the
    generic net (net_param or net) for every test_iter left over."""
    if param.HasField("net_param") and param.HasField("net"):
        raise ValueError("SolverParameter: both net_param and net may not be specified")
    has_generic = param.HasField("net_param") or param.HasField("net")
    specific = len(param.test_net_param) + len(param.test_net)
    # With a generic net, extra test_iter entries each ask for one more instance of it.
    if len(param.test_iter) < specific or (not has_generic and len(param.test_iter) != specific):
        raise ValueError(f"test_iter must be specified for each test network ({specific} test nets, "
                         f"{len(param.test_iter)} test_iter)")
    count = len(param.test_iter)
    if param.test_state and len(param.test_state) != count:
        raise ValueError(f"test_state must be unspecified or specified once per test net ({count} test nets, "
                         f"{len(param.test_state)} test_state)")
    if count and param.test_interval <= 0:
        raise ValueError(f"test_interval must be > 0 when there are test nets (got {param.test_interval})")
    nets: List[Union[str, "caffe_pb2.NetParameter"]] = list(param.test_net_param)
    origins = ["test_net_param"] * len(param.test_net_param)
    nets += [_net_of(path, "test_net", base_dir) for path in param.test_net]
    origins += [f"test_net file: {path}" for path in param.test_net]
    if has_generic:
        generic_field = "net_param" if param.HasField("net_param") else "net"
        nets += [_net_of(getattr(param, generic_field), generic_field, base_dir)] * (count - specific)
        origins += [_origin(param, generic_field)] * (count - specific)
    return [_with_state(net, caffe_pb2.TEST, param.test_state[i] if param.test_state else None, origin)
            for i, (net, origin) in enumerate(zip(nets, origins))]


def _origin(param: "caffe_pb2.SolverParameter", field: str) -> str:
    """Caffe's words for a net's source: "net_param" for an inline net, "net file: <path>" for a file."""
    return field if field.endswith("_param") else f"{field} file: {getattr(param, field)}"


def _net_of(value: Union[str, "caffe_pb2.NetParameter"], field: str, base_dir: Optional[str]
            ) -> Union[str, "caffe_pb2.NetParameter"]:
    if isinstance(value, str):
        return resolve_path(value, base_dir, field)
    return value


def _with_state(net: Union[str, "caffe_pb2.NetParameter"], phase: int,
                solver_state: Optional["caffe_pb2.NetState"], origin: str) -> NetSource:
    """Caffe's merge: NetState{phase} <- the net's own state <- the solver's state for this net."""
    own = net.state if isinstance(net, caffe_pb2.NetParameter) else read_prototxt(net, caffe_pb2.NetParameter).state
    state = caffe_pb2.NetState(phase=phase)
    state.MergeFrom(own)
    if solver_state is not None:
        state.MergeFrom(solver_state)
    added = list(solver_state.stage) if solver_state is not None else []
    return NetSource(net, state.phase, state.level, added, origin)
