"""Write a file so that readers only ever see the old or the new content.

Snapshots and generated prototxts are often read by another process (a
watcher, a resumed solver) while they are written; a crash or a full disk in
the middle must not leave a half-written caffemodel that later loads as a
shorter, valid-looking net.  Writing to a temporary file in the same folder
and renaming it over the target gives that guarantee on POSIX and Windows.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Union

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
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
