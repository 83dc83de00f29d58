"""Write a file so that readers only ever see the old or the new content.

Snapshots and generated prototxts are often read by another process (a
watcher, a resumed solver) while they are written; a crash or a full disk in
the middle must not leave a half-written caffemodel that later loads as a
shorter, valid-looking net.  Writing to a temporary file in the same folder
and renaming it over the target gives that guarantee on POSIX and Windows.

A failed write (a full disk) is one OSError naming the target and the cause,
with the temporary file removed. Only a process killed outright (kill -9)
leaves its temporary file behind: hidden, named ``.<target>.<pid>.<hex>.tmp``,
which ``remove_stale_temps`` recognises and clears once that pid is gone.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import List, Union

PathLike = Union[str, "os.PathLike[str]"]


def write_atomically(path: PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (temp file + fsync + os.replace).

    The temporary file is created with mode 0o666 so the process umask, not a
    private 0o600 from ``mkstemp``, decides the final permissions.
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as error:
        raise OSError(error.errno, f"cannot write {target}: {error.strerror}") from None
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError):  # one line naming the target, not a chain of tracebacks
            raise OSError(error.errno, f"cannot write {target}: {error.strerror or error}") from None
        raise


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all is written (unbuffered: an error surfaces here, once, not again at close)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


#: ``write_atomically``'s temporary names: the hidden target name, the writer's pid, 8 hex digits.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on systems where that cannot be asked safely: assume it does)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temps(folder: PathLike) -> List[Path]:
    """Delete the temporary files ``write_atomically`` left in ``folder`` from processes that no longer
    exist (killed mid-write); returns them. Files of running processes are left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not _alive(int(match["pid"])):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed
