"""Whole-file outcomes of the previous run, reused while nothing they depend on has changed.

The result cache (:mod:`mlsec.resultcache`) saves the *scanning*: it is keyed by content, so it
still costs a hash, one lookup per scanner and the import of every scanner to know its version.
On a re-run over an unchanged tree (a CI retry, ``pre-commit run --all-files``) those fixed
costs are most of the time. This memo keeps, per scan configuration, the complete outcome of
every file of the last run — artifact, findings, skips, packages, facts — keyed by the file's
identity (size, mtime, inode and ctime: ctime cannot be set back by ``touch``), so an unchanged
file costs one ``stat``: no open, no sniff, no hash, no scanner import.

What an outcome may depend on, and how a change is noticed:

* the file itself: its identity above;
* everything global — mlsec's code, rules and policies, the Python and installed packages
  (``sys.path`` folders), the scan options, ``MLSEC_*`` variables, the working folder: part of
  the memo's key, so any change starts from an empty memo (runs over different roots share it);
* other files: scanners that read more than their file note each file or folder they read
  (a requirements file's ``-r`` includes, a dataset card next to a loading script) with its
  identity at that moment, and the outcome stands only while all of them are unchanged
  (absent ones still absent);
* wider settings, per :class:`Scope`: the config files (``mlsec.toml``, ``pyproject.toml``)
  from each scanned file up to the root for ``cache_salt`` scanners (the project's bandit
  selection); the advisory database's identity and the day for dependency manifests.
  Scanners that are not ``cacheable`` and do not declare their scope (HF model folders, ONNX
  external data, SavedModel assets) are run every time.

Outcomes with errors are never kept (a failed scan is retried), nor anything from ``--online``
runs. The memo is plain JSON written atomically; anything unexpected in it is a miss.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from mlsec import __version__
from mlsec.model import Artifact, ArtifactKind, Fact, Finding, Package, Skip

_FORMAT = 1
_MAX_ENTRIES = 200_000  # files remembered per working folder and configuration
_CONFIG_NAMES = ("mlsec.toml", "pyproject.toml")

Identity = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns


def identity(st: os.stat_result) -> Identity:
    """What must be unchanged for a file's previous outcome to stand."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


class Known(NamedTuple):
    """What the previous run learnt about one file without scanning it: its sniffed format.

    A NamedTuple, not a dataclass: one is built per file of the tree before anything else runs.
    """

    identity: Identity
    format: str
    kind: ArtifactKind


_KINDS = {k.value: k for k in ArtifactKind}  # a dict lookup: ArtifactKind(value) costs 10x more


class Remembered(NamedTuple):
    """A file's whole outcome from the previous run (one per file of an unchanged tree)."""

    artifact: Artifact
    items: tuple[Finding | Skip | Package | Fact, ...]
    ran: tuple[tuple[str, str], ...]
    scope: int
    reads: tuple[tuple[str, Identity | None], ...]


def _stat_line(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\0-"
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}"


def _code_identity(h: Any) -> None:
    """mlsec's own files, rules and policies (an edited scanner or rule must not be answered
    from the memo), and the folders of installed packages (installing pyarrow changes output)."""
    package = os.path.dirname(os.path.abspath(__file__))
    # rules/ and policies/: inside the package when installed (_data), beside it in a checkout.
    data = [] if os.path.isdir(os.path.join(package, "_data")) else [
        os.path.join(os.path.dirname(package), name) for name in ("rules", "policies")]
    for folder in (package, *data):
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if not name.endswith((".pyc", ".pyo")):
                    h.update(_stat_line(os.path.join(dirpath, name)).encode("utf-8", "surrogateescape"))
    for entry in sys.path:  # site-packages only: sys.path[0] is the (changing) script or work folder
        if os.path.basename(entry) in ("site-packages", "dist-packages"):
            h.update(_stat_line(entry).encode("utf-8", "surrogateescape"))


def memo_key(settings: str) -> str:
    """Digest of everything global that outcomes depend on (see the module docstring).

    Not the roots: a pre-commit hook scans a different list of files on every commit, and one
    memo per working folder and configuration lets those runs share (and not pile up files).
    """
    h = hashlib.sha256()
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("MLSEC_"))
    head = [_FORMAT, __version__, sys.version, os.getcwd(), settings, env]
    h.update(json.dumps(head).encode("ascii"))
    _code_identity(h)
    return h.hexdigest()


class Scope(enum.IntFlag):
    """What an outcome depends on besides its file and the files its scanners noted as read.

    ``SETTINGS``: the project configuration (``cache_salt`` scanners: the bandit selection).
    ``DATABASE``: the advisory database and the day (its age is reported). Scanners that are
    not ``cacheable`` must say what they depend on (``context_scope``) and note every other
    file or folder they read (``ScanContext.note_read``); those that do not are not memoized.
    """

    FILE = 0
    SETTINGS = 1
    DATABASE = 2


_SETTINGS, _DATABASE = int(Scope.SETTINGS), int(Scope.DATABASE)


class Context(NamedTuple):
    """Signatures of the run's settings and database, taken once per run."""

    settings: str
    database: str

    def signature(self, scope: int) -> str:
        """What must equal the remembered value for an outcome of ``scope`` to stand."""
        scope = int(scope)  # plain int arithmetic: IntFlag operators build enum members
        return ((self.settings if scope & _SETTINGS else "") + "/"
                + (self.database if scope & _DATABASE else ""))


def context(roots: Sequence[str], files: Iterable[str], advisory_db: str) -> Context:
    """The config files (``mlsec.toml``, ``pyproject.toml``) in every folder from each scanned
    file up to the filesystem root, and the advisory database's identity plus the day."""
    folders: set[str] = set()
    for path in (*roots, *files):
        here = os.path.dirname(os.path.abspath(path))
        while here not in folders:
            folders.add(here)
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
    settings = hashlib.sha256()
    for folder in sorted(folders):
        for name in _CONFIG_NAMES:
            settings.update(_stat_line(os.path.join(folder, name)).encode("utf-8", "surrogateescape"))
    database = _stat_line(advisory_db) + "\0" + time.strftime("%Y-%m-%d", time.gmtime())
    return Context(settings.hexdigest(), hashlib.sha256(database.encode("utf-8", "surrogateescape")).hexdigest())


def read_identity(path: str) -> Identity | None:
    """Identity of a file or folder a scanner read (None: it was absent, which matters too)."""
    try:
        return identity(os.stat(path))
    except OSError:
        return None


def _encode(artifact: Artifact, items: Sequence[Finding | Skip | Package | Fact], ran: Sequence[tuple[str, str]],
            scope: int, reads: Sequence[tuple[str, Identity | None]], ident: Identity, ctx: Context) -> dict[str, Any]:
    from mlsec.resultcache import encode_item

    return {"id": list(ident), "path": artifact.path, "kind": artifact.kind.value, "format": artifact.format,
            "size": artifact.size, "sha256": artifact.sha256, "scope": int(scope), "ctx": ctx.signature(scope),
            "reads": [[p, list(i) if i is not None else None] for p, i in reads],
            "ran": [list(p) for p in ran], "items": [_with_path(encode_item(i), i.path, artifact.path) for i in items]}


def _ident(raw: Any) -> Identity | None:
    """An identity read back from JSON (a list of four integers, or null)."""
    if raw is None:
        return None
    a, b, c, d = (int(x) for x in raw)
    return (a, b, c, d)


def _with_path(encoded: dict[str, Any], path: str, own: str) -> dict[str, Any]:
    """Items about another file (a package of an included requirements file) keep their path."""
    return encoded if path == own else {**encoded, "at": path}


class ScanMemo:
    """The memo of one scan configuration; a disabled or unreadable memo answers nothing."""

    def __init__(self, key: str | None) -> None:
        self._file: Path | None = None
        self._old: dict[str, dict[str, Any]] = {}
        self._new: dict[str, dict[str, Any]] = {}
        self._changed = False
        self._stats: dict[str, Identity | None] = {}
        if key is None:
            return
        from mlsec.hashing import cache_dir

        self._file = cache_dir() / "memo" / f"{key}.json"
        try:
            doc = json.loads(self._file.read_bytes())
            if isinstance(doc, dict) and doc.get("format") == _FORMAT and isinstance(doc.get("files"), dict):
                self._old = doc["files"]
        except (OSError, ValueError):
            self._old = {}

    def known(self) -> dict[str, Known]:
        """Sniffed formats of the files seen last time, for discovery to trust when unchanged.

        Files are known by the path discovery gives them (relative to the working folder when
        the roots are): the working folder and the roots are part of the memo's key."""
        out: dict[str, Known] = {}
        for fs_path, entry in self._old.items():
            try:
                ident = tuple(int(x) for x in entry["id"])
                if len(ident) == 4:
                    out[fs_path] = Known((ident[0], ident[1], ident[2], ident[3]), str(entry["format"]),
                                         _KINDS[entry["kind"]])
            except (KeyError, TypeError, ValueError):
                continue
        return out

    def get(self, fs_path: str, rel: str, ident: Identity, ctx: Context) -> Remembered | None:
        """The previous outcome of this file when it still stands, else None."""
        entry = self._old.get(fs_path)
        if entry is None:
            return None
        try:
            if tuple(entry["id"]) != ident or entry["path"] != rel:
                return None
            scope = int(entry["scope"])
            if entry["ctx"] != ctx.signature(scope):
                return None
            for path, ident_then in entry["reads"]:
                if self._read_identity(path) != _ident(ident_then):
                    return None
            from mlsec.resultcache import decode_item

            artifact = Artifact(rel, _KINDS[entry["kind"]], entry["format"], int(entry["size"]),
                                entry["sha256"], fs_path)
            items = tuple(decode_item(x, x.get("at", rel)) for x in entry["items"])
            ran = tuple((str(a), str(b)) for a, b in entry["ran"])
        except (KeyError, TypeError, ValueError):
            return None
        self._new[fs_path] = entry
        reads = tuple((str(p), _ident(i)) for p, i in entry["reads"])
        return Remembered(artifact, items, ran, scope, reads)

    def _read_identity(self, path: str) -> Identity | None:
        """read_identity once per path and run: the files of a folder all noted the folder."""
        if path not in self._stats:
            self._stats[path] = read_identity(path)
        return self._stats[path]

    def put(self, fs_path: str, ident: Identity, artifact: Artifact, items: Sequence[Finding | Skip | Package | Fact],
            ran: Sequence[tuple[str, str]], scope: int, reads: Sequence[tuple[str, Identity | None]],
            ctx: Context) -> None:
        """Remember a complete outcome (callers never pass one with errors or unmemoizable scanners)."""
        if self._file is None or not artifact.sha256:
            return
        self._new[fs_path] = _encode(artifact, items, ran, scope, reads, ident, ctx)
        self._changed = True

    def save(self) -> None:
        """Add this run's outcomes to the memo, when it learnt anything.

        Entries of files this run did not see are kept (another run's roots), up to
        ``_MAX_ENTRIES``; past that, only this run's are. An entry of a deleted file is never
        matched again (a new file at that path has another inode or ctime).
        """
        if self._file is None or not self._changed:
            return
        files = {**self._old, **self._new}
        if len(files) > _MAX_ENTRIES:
            files = self._new
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_name(f".{self._file.name}.{os.getpid()}.tmp")
            # ASCII JSON: undecodable file names (surrogate escapes) survive the round trip.
            tmp.write_text(json.dumps({"format": _FORMAT, "files": files}, separators=(",", ":")),
                           encoding="ascii")
            os.replace(tmp, self._file)
        except OSError:
            pass
