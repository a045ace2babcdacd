"""SHA-256 of artifacts: streamed once, and remembered across runs.

Hashing a multi-GB model is the floor of a scan's cost (every byte must be read), so the
digest is cached by (absolute path, size, mtime, inode, ctime): re-scanning an unchanged checkpoint
costs a stat, not a read. The cache is a small SQLite file under the user cache directory
(``MLSEC_CACHE_DIR`` overrides it); any cache problem silently falls back to hashing.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import sqlite3

from mlsec.fsio import open_regular

_BUF = 1 << 20
_MIN_CACHED = 1 << 20  # small files are cheaper to hash than to look up


def cache_dir() -> Path:
    """Where mlsec keeps caches (``MLSEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlsec``)."""
    env = os.environ.get("MLSEC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlsec"


def advisory_db_path() -> Path:
    """The offline advisory database: ``MLSEC_ADVISORY_DB``, else ``advisories.sqlite`` in the cache directory."""
    env = os.environ.get("MLSEC_ADVISORY_DB")
    return Path(env) if env else cache_dir() / "advisories.sqlite"


def sha256_file(path: str) -> str:
    """Stream the file through SHA-256 in reused buffers (flat memory).

    Big files are read and hashed at the same time: a second thread hashes one buffer while
    this one reads the next (both release the GIL), so hashing a multi-GB model costs about
    the larger of the two instead of their sum.
    """
    with open_regular(path, buffering=0) as fh:
        raw = cast(io.FileIO, fh)  # unbuffered: readinto straight into our buffers
        if os.fstat(raw.fileno()).st_size < _OVERLAP_FROM:
            h = hashlib.sha256()
            buf = bytearray(_BUF)
            view = memoryview(buf)
            while n := raw.readinto(buf):
                h.update(view[:n])
            return h.hexdigest()
        return _sha256_overlapped(raw)


_OVERLAP_FROM = 32 << 20  # below this, a thread costs more than it saves
_CHUNK = 4 << 20


def _sha256_overlapped(raw: io.FileIO) -> str:
    import queue
    import threading

    h = hashlib.sha256()
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
    for _ in range(3):
        free.put(bytearray(_CHUNK))
    failure: list[BaseException] = []

    def hasher() -> None:
        try:
            while (item := full.get()) is not None:
                buf, n = item
                h.update(memoryview(buf)[:n])
                free.put(buf)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the reading thread
            failure.append(exc)
            free.put(bytearray(_CHUNK))  # never leave the reader waiting

    worker = threading.Thread(target=hasher, name="mlsec-sha256", daemon=True)
    worker.start()
    try:
        while not failure:
            buf = free.get()
            n = raw.readinto(buf)
            if not n:
                break
            full.put((buf, n))
    finally:
        full.put(None)
        worker.join()
    if failure:
        raise failure[0]
    return h.hexdigest()


class HashCache:
    """Digest cache keyed by file identity; ``enabled=False`` makes it a pass-through."""

    def __init__(self, enabled: bool = True) -> None:
        import sqlite3  # here: a run answered from the memo opens no database

        self._db: sqlite3.Connection | None = None
        if enabled:
            try:
                directory = cache_dir()
                directory.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(directory / "hashes.sqlite", timeout=5)
                # ctime too: content swapped in with the old mtime put back (touch -d) changes it.
                self._db.execute("CREATE TABLE IF NOT EXISTS h2 (path TEXT PRIMARY KEY, size INT, mtime INT, "
                                 "inode INT, ctime INT, sha256 TEXT)")
            except (OSError, sqlite3.Error):
                self._db = None

    def digest(self, fs_path: str, size: int, mtime_ns: int, inode: int, ctime_ns: int) -> str:
        """Cached digest when the file identity matches, else hash and remember."""
        import sqlite3

        key = os.fsencode(os.path.abspath(fs_path))  # bytes: file names need not be valid UTF-8
        if self._db is None or size < _MIN_CACHED:
            return sha256_file(fs_path)
        try:
            row = self._db.execute("SELECT size, mtime, inode, ctime, sha256 FROM h2 WHERE path = ?", (key,)).fetchone()
            if row is not None and tuple(row[:4]) == (size, mtime_ns, inode, ctime_ns):
                return str(row[4])
        except sqlite3.Error:
            return sha256_file(fs_path)
        digest = sha256_file(fs_path)
        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO h2 VALUES (?, ?, ?, ?, ?, ?)",
                                 (key, size, mtime_ns, inode, ctime_ns, digest))
        except sqlite3.Error:
            pass
        return digest

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
