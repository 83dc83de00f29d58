"""Caffe's three upgrade tools: read an old net or solver, upgrade it as Caffe would, write the new format.

``upgrade_net_proto_text IN OUT``, ``upgrade_net_proto_binary IN OUT`` and ``upgrade_solver_proto_text IN
OUT`` take Caffe's positional arguments, log Caffe's glog lines (the tools set alsologtostderr, so every
line reaches stderr) and exit as Caffe's do: 1 with the usage line on a wrong argument count, 2 when the
input does not parse, otherwise 0, or 1 when the upgrade had problems (dropped V0 fields); a file already
current is written back unchanged after "File already in latest proto format". Text is written as
Caffe's C++ TextFormat prints it (``lr_mult: 1``; protobuf's default upb backend prints like the C++
library), binary as Caffe serializes it; the output file appears atomically.

Where Caffe aborts (a missing input file, a net with both ``layer`` and ``layers``, a solver with both
``solver_type`` and ``type``, an output it cannot write), these tools print the reason on one line, then
Caffe's error line where it has one, write nothing and exit 2 (input) or 1 (upgrade, output) instead
of dumping core.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

from google.protobuf.message import Message

from netspec import caffe_pb2, glog
from netspec.atomic import write_atomically
from netspec.caffemodel import read_caffemodel
from netspec.prototxt import read_prototxt
from netspec.upgrade import needs_upgrade, upgrade_net_as_needed
from solvers.parameters import upgrade_solver_type


@dataclass(frozen=True)
class UpgradeTool:
    """One tool: its name and usage, what it reads (text or binary, which message), how it upgrades."""
    name: str
    arguments: str
    message: str
    form: str
    read: Callable[[str], Message]
    needs_upgrade: Callable[[Message], bool]
    upgrade: Callable[[Message, str], Tuple[Message, bool]]
    serialize: Callable[[Message], bytes]
    #: The line of the tool's final LOG(INFO) in its .cpp (48 in the binary tool, 49 in the others).
    wrote_line: int = 49

    def main(self, argv: Optional[Sequence[str]] = None) -> int:
        """Run the tool on ``argv`` (default: the command line); returns the exit status."""
        args = list(sys.argv[1:] if argv is None else argv)
        with glog.google_logging(alsologtostderr=True):
            return self._run(args)

    def _run(self, args: Sequence[str]) -> int:
        where = f"{self.name}.cpp"
        if len(args) != 2:
            glog.error(f"{where}:22", "Usage: %s %s", self.name, self.arguments)
            return 1
        source, target = args
        try:
            message = self.read(source)
        except (ValueError, OSError) as err:
            print(err, file=sys.stderr)
            glog.error(f"{where}:30", "Failed to parse input %s file as %s: %s", self.form, self.message, source)
            return 2
        success = True
        if self.needs_upgrade(message):
            try:
                message, success = self.upgrade(message, source)
            except ValueError as err:
                print(err, file=sys.stderr)
                return 1
            if not success:
                glog.error(f"{where}:39", "Encountered error(s) while upgrading prototxt; see details above.")
        else:
            glog.error(f"{where}:43", "File already in latest proto format: %s", source)
        try:
            write_atomically(target, self.serialize(message))
        except OSError as err:
            print(err, file=sys.stderr)
            return 1
        glog.info(f"{where}:{self.wrote_line}", "Wrote upgraded %s %s proto to %s", self.message, self.form, target)
        return 0 if success else 1


def _upgrade_solver(param: "caffe_pb2.SolverParameter", source: str) -> Tuple["caffe_pb2.SolverParameter", bool]:
    upgraded = caffe_pb2.SolverParameter()
    upgraded.CopyFrom(param)
    upgrade_solver_type(upgraded, source)
    return upgraded, True


def _caffe_text(message: Message) -> bytes:
    return str(message).encode("utf-8")


NET_TEXT = UpgradeTool("upgrade_net_proto_text", "v0_net_proto_file_in net_proto_file_out", "NetParameter", "text",
                       lambda path: read_prototxt(path, caffe_pb2.NetParameter), needs_upgrade,
                       upgrade_net_as_needed, _caffe_text)
NET_BINARY = UpgradeTool("upgrade_net_proto_binary", "v0_net_proto_file_in net_proto_file_out", "NetParameter",
                         "binary", read_caffemodel, needs_upgrade, upgrade_net_as_needed,
                         lambda message: message.SerializeToString(), wrote_line=48)
SOLVER_TEXT = UpgradeTool("upgrade_solver_proto_text", "old_solver_proto_file_in solver_proto_file_out",
                          "SolverParameter", "text", lambda path: read_prototxt(path, caffe_pb2.SolverParameter),
                          lambda param: param.HasField("solver_type"), _upgrade_solver, _caffe_text)
