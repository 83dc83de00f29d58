"""Caffe's key-value databases (``caffe::db``): LMDB through ``lmdb``, LevelDB through ``plyvel``.

Readers walk the records in key order, as Caffe's cursors do (``convert_imageset`` keys are
``%08d_<path>``, so that is list order), and can start over at the first record when they run out, as
the Data layer does. Writers collect puts and commit them in batches of 1000, growing an LMDB's map
when it fills (Caffe's DoubleMapSize); a new database is built under a temporary name next to its
destination and renamed into place when complete, so a crash never leaves a half-written database
that reads as a shorter valid one.
"""
from __future__ import annotations

import os
import secrets
import shutil
import threading
import weakref
from typing import Iterator, List, Optional, Tuple

from netspec import glog

#: Caffe's DataParameter.DB enum values, by name as the tools' ``--backend`` flag spells them.
BACKENDS = {"leveldb": 0, "lmdb": 1}
TITLES = {"leveldb": "LevelDB", "lmdb": "LMDB"}
COMMIT_EVERY = 1000

Record = Tuple[bytes, bytes]


def backend_name(value: object) -> str:
    """``"lmdb"`` or ``"leveldb"`` from a DataParameter enum value or a tool's flag; ValueError otherwise."""
    for name, number in BACKENDS.items():
        if value == number or value == name:
            return name
    raise ValueError(f"unknown database backend {value!r}; Caffe knows lmdb and leveldb")


class DatabaseReader:
    """One LMDB or LevelDB opened for reading. Readers of one database share one handle: LMDB forbids
    opening an environment twice in a process and LevelDB locks its folder, while a train and a test
    net commonly read the same database."""

    def __init__(self, source: str, backend: object) -> None:
        self.source = source
        self.backend = backend_name(backend)
        self.title = TITLES[self.backend]
        self._shared: Optional[_Shared] = _acquire((self.backend, os.path.realpath(source)), source)
        _log_opened(self.backend, source)

    def read(self, after: Optional[bytes], count: int) -> List[Record]:
        """The ``count`` records that follow key ``after`` (None: from the first) in key order, starting over
        at the first after the last, as the Data layer reads (Caffe: "Restarting data prefetching from
        start"); ValueError when the database holds no records. No cursor outlives a call, so nothing is
        left open between batches, across threads or at garbage collection."""
        records = self._scan(after, count)
        while len(records) < count:
            more = self._scan(None, count - len(records))
            if not more:
                raise ValueError(f"{self.title} database '{self.source}' holds no records")
            records += more
        return records

    def records(self, chunk: int = COMMIT_EVERY) -> Iterator[Record]:
        """Every ``(key, value)`` once, in key order."""
        after = None
        while True:
            records = self._scan(after, chunk)
            yield from records
            if len(records) < chunk:
                return
            after = records[-1][0]

    def _scan(self, after: Optional[bytes], count: int) -> List[Record]:
        """Up to ``count`` records with keys after ``after`` (None: from the first), without wrapping."""
        try:
            return self._scan_unchecked(after, count)
        except _backend_errors() as err:
            raise ValueError(f"{self.title} database '{self.source}' is damaged: {_reason(err)}") from None

    def _scan_unchecked(self, after: Optional[bytes], count: int) -> List[Record]:
        records: List[Record] = []
        if self.backend == "lmdb":
            with self._shared.handle.begin(buffers=False) as txn:
                cursor = txn.cursor()
                ok = cursor.first() if after is None else cursor.set_range(after)
                if ok and after is not None and cursor.key() == after:
                    ok = cursor.next()
                while ok and len(records) < count:
                    records.append(cursor.item())
                    ok = cursor.next()
        else:
            with self._shared.handle.iterator() as iterator:
                if after is not None:
                    iterator.seek(after)
                for key, value in iterator:
                    if len(records) == count:
                        break
                    if key != after:
                        records.append((key, value))
        return records

    def close(self) -> None:
        """Let go of the database (closed when no other reader holds it)."""
        self._shared = None


class _Shared:
    """An open database handle shared by readers; closed by its own deallocation once no reader holds it
    (plain reference counting: no finalizer that could run, and take a lock, in the middle of another
    reader's set-up)."""
    __slots__ = ("handle", "__weakref__")

    def __init__(self, handle) -> None:
        self.handle = handle


_OPEN: "weakref.WeakValueDictionary[Tuple[str, str], _Shared]" = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()


def _acquire(key: Tuple[str, str], source: str) -> _Shared:
    with _OPEN_LOCK:
        shared = _OPEN.get(key)
        if shared is None:
            shared = _Shared(_open_lmdb(source) if key[0] == "lmdb" else _open_leveldb(source))
            _OPEN[key] = shared
        return shared


def _open_lmdb(source: str):
    import lmdb
    if not os.path.isdir(source):
        raise ValueError(f"cannot open LMDB '{source}': {_missing(source)}")
    try:
        env = lmdb.open(source, readonly=True, lock=True, create=False)
    except lmdb.Error as err:
        # read-only media: Caffe built with ALLOW_LMDB_NOLOCK retries without the lock file the same way
        if not os.path.isfile(os.path.join(source, "data.mdb")) or os.access(source, os.W_OK):
            raise ValueError(f"cannot open LMDB '{source}': {err}") from None
        env = lmdb.open(source, readonly=True, lock=False, create=False)
    # a truncated data.mdb would kill the process with SIGBUS at the first read of a missing page
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.path.getsize(os.path.join(source, "data.mdb"))
    if size < needed:
        env.close()
        raise ValueError(f"LMDB '{source}' is truncated: its data.mdb holds {size} bytes, its pages need {needed}")
    return env


def _open_leveldb(source: str):
    import plyvel
    if not os.path.isdir(source):
        raise ValueError(f"cannot open LevelDB '{source}': {_missing(source)}")
    try:
        return plyvel.DB(source, create_if_missing=False)
    except plyvel.Error as err:
        hint = " (the folder holds an LMDB)" if os.path.isfile(os.path.join(source, "data.mdb")) else ""
        raise ValueError(f"cannot open LevelDB '{source}': {_reason(err)}{hint}") from None


def _backend_errors() -> tuple:
    """The exceptions LMDB and LevelDB raise on a damaged database."""
    import lmdb
    import plyvel
    return lmdb.Error, plyvel.Error


def _reason(err: Exception) -> str:
    """A backend's error as text (plyvel gives LevelDB's status as bytes)."""
    return err.args[0].decode("utf-8", "replace") if err.args and isinstance(err.args[0], bytes) else str(err)


def _log_opened(backend: str, source: str) -> None:
    """Caffe's line for every database it opens."""
    if backend == "lmdb":
        glog.info("db_lmdb.cpp:35", "Opened lmdb %s", source)
    else:
        glog.info("db_leveldb.cpp:18", "Opened leveldb %s", source)


def _missing(source: str) -> str:
    where = "" if os.path.isabs(source) else f" (relative to the working directory {os.getcwd()})"
    return ("not a directory" if os.path.exists(source) else "no such directory") + where


class DatabaseWriter:
    """A new database at ``path``, filled with ``put`` and made visible at ``close`` (a context manager:
    an exception inside removes the partial database)."""

    def __init__(self, path: str, backend: object) -> None:
        self.path = os.path.normpath(path)
        self.backend = backend_name(backend)
        self.title = TITLES[self.backend]
        if os.path.lexists(self.path):
            raise ValueError(f"cannot create {self.title} '{path}': it already exists")
        parent = os.path.dirname(os.path.abspath(self.path))
        self._temp = os.path.join(parent, f".{os.path.basename(self.path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        self._pending: List[Record] = []
        self._lmdb_env = None
        self._leveldb = None
        try:
            if self.backend == "lmdb":
                import lmdb
                os.mkdir(self._temp)
                self._lmdb_env = lmdb.open(self._temp, lock=False)
            else:
                import plyvel
                # Caffe's LevelDB options for new databases
                self._leveldb = plyvel.DB(self._temp, create_if_missing=True, error_if_exists=True,
                                          block_size=65536, write_buffer_size=268435456, max_open_files=100)
        except OSError as err:
            raise ValueError(f"cannot create {self.title} '{path}': {err.strerror or err}") from None
        _log_opened(self.backend, path)

    def put(self, key: bytes, value: bytes) -> None:
        self._pending.append((key, value))
        if len(self._pending) >= COMMIT_EVERY:
            self.commit()

    def commit(self) -> None:
        """Write the pending records in one transaction."""
        if self._lmdb_env is not None:
            import lmdb
            while True:
                try:
                    with self._lmdb_env.begin(write=True) as txn:
                        for key, value in self._pending:
                            txn.put(key, value)
                    break
                except lmdb.MapFullError:
                    self._lmdb_env.set_mapsize(self._lmdb_env.info()["map_size"] * 2)
        elif self._pending:
            with self._leveldb.write_batch() as batch:
                for key, value in self._pending:
                    batch.put(key, value)
        self._pending = []

    def close(self) -> None:
        """Commit what is pending and move the database to its name."""
        self.commit()
        self._close_handles()
        if os.path.lexists(self.path):
            self.discard()
            raise ValueError(f"cannot create {self.title} '{self.path}': it appeared while being written")
        os.rename(self._temp, self.path)

    def discard(self) -> None:
        """Drop the partial database."""
        self._close_handles()
        shutil.rmtree(self._temp, ignore_errors=True)

    def _close_handles(self) -> None:
        if self._lmdb_env is not None:
            self._lmdb_env.close()
            self._lmdb_env = None
        if self._leveldb is not None:
            self._leveldb.close()
            self._leveldb = None

    def __enter__(self) -> "DatabaseWriter":
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
