"""Walk the paths to scan and decide what each file is.

Rules, in the spirit of Trivy and bandit: directories are walked without following directory
symlinks (so symlink loops cannot happen); ``.git``, virtualenvs and tool caches are skipped;
``.gitignore`` files (nested ones too) and ``--exclude`` globs are honoured; file symlinks are
followed to regular files only. Everything not scanned is *reported*: Git-LFS pointers (the
model is not here, so it is not clean either), unreadable files, broken links, special files.
The format comes from the leading bytes (see :mod:`mlsec.sniff`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlsec.fsio import open_regular
from mlsec.model import ArtifactKind, Skip, clean_text

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec
from mlsec.sniff import (
    ARCHIVE_FORMATS,
    DATA_FORMATS,
    HEAD_SIZE,
    MODEL_FORMATS,
    hinted,
    manifest_format,
    sniff,
)

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".tox", ".nox",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv", "venv", ".eggs"})

_CODE_EXT = {".py": ArtifactKind.CODE, ".pyi": ArtifactKind.CODE, ".ipynb": ArtifactKind.NOTEBOOK}
_DATA_EXT = (".csv", ".tsv", ".jsonl", ".parquet", ".arrow", ".feather", ".avro", ".orc")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A regular file to hash and scan."""

    path: str          # repo-relative POSIX path (reports)
    fs_path: str       # where to open it here
    size: int
    mtime_ns: int
    inode: int
    format: str
    kind: ArtifactKind
    ctime_ns: int = 0


class KnownFormat(Protocol):
    """A format learnt by an earlier run (see :mod:`mlsec.scanmemo`), trusted while unchanged."""

    @property
    def identity(self) -> tuple[int, int, int, int]: ...  # size, mtime_ns, inode, ctime_ns

    @property
    def format(self) -> str: ...

    @property
    def kind(self) -> ArtifactKind: ...


def classify(rel: str, fmt: str) -> ArtifactKind:
    """Kind of artifact from its content format first, then its name."""
    name = rel.rsplit("/", 1)[-1].lower()
    if fmt in MODEL_FORMATS:
        return ArtifactKind.MODEL
    if fmt in DATA_FORMATS:
        return ArtifactKind.DATASET
    if fmt == "zip" and name.endswith((".pt", ".pth", ".bin", ".ckpt", ".npz", ".keras", ".pkl", ".joblib")):
        return ArtifactKind.MODEL
    if fmt in ARCHIVE_FORMATS:
        return ArtifactKind.ARCHIVE
    for ext, kind in _CODE_EXT.items():
        if name.endswith(ext):
            return kind
    if manifest_format(rel) is not None:
        return ArtifactKind.DEPENDENCIES
    if name.endswith(_DATA_EXT):
        return ArtifactKind.DATASET
    return ArtifactKind.OTHER


def _read_head(fs_path: str) -> bytes:
    with open_regular(fs_path) as fh:
        return fh.read(HEAD_SIZE)


def _spec(lines: Iterable[str]) -> GitIgnoreSpec:
    # pathspec is imported on first use: most single-file scans need no ignore rules.
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


class _Ignores:
    """Stack of .gitignore specs, each anchored at its directory, plus --exclude globs."""

    def __init__(self, excludes: Sequence[str]) -> None:
        self._exclude = _spec(excludes) if excludes else None
        self._specs: dict[str, GitIgnoreSpec] = {}

    def load(self, dir_rel: str, dir_fs: str) -> None:
        path = os.path.join(dir_fs, ".gitignore")
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                self._specs[dir_rel] = _spec(fh)
        except OSError:
            pass

    def ignored(self, rel: str, is_dir: bool) -> bool:
        probe = rel + "/" if is_dir else rel
        if self._exclude is not None and self._exclude.match_file(probe):
            return True
        for base, spec in self._specs.items():
            if base == "" or rel.startswith(base + "/"):
                sub = probe[len(base) + 1 :] if base else probe
                if spec.match_file(sub):
                    return True
        return False


def discover(paths: Sequence[str | os.PathLike[str]], excludes: Sequence[str] = (),
             use_gitignore: bool = True, known: Mapping[str, KnownFormat] | None = None) -> Iterator[Candidate | Skip]:
    """Yield a Candidate for every file to scan and a Skip for every file that is not scanned.

    ``known`` maps paths (as this walk spells them) to the format an earlier run sniffed; a file whose size,
    mtime, inode and ctime are unchanged is not opened again (a re-run of an unchanged tree
    then costs one ``stat`` per file).
    """
    known = known or {}
    for root in paths:
        root_path = Path(root)
        try:
            st = os.stat(root_path)
        except OSError as exc:
            yield Skip(path=clean_text(root_path.as_posix()), reason=f"cannot access: {exc.strerror}", code="unreadable")
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root_path, excludes, use_gitignore, known)
        else:
            yield from _file(root_path.name if root_path.is_absolute() else root_path.as_posix(), str(root_path),
                             known)


def _file(rel: str, fs_path: str, known: Mapping[str, KnownFormat]) -> Iterator[Candidate | Skip]:
    rel = clean_text(rel)  # the reported name; fs_path keeps the real bytes
    try:
        st = os.stat(fs_path)  # follows a file symlink; ELOOP for a symlink loop
    except OSError as exc:
        code = "symlink-loop" if exc.errno == 40 else "broken-link" if os.path.islink(fs_path) else "unreadable"
        yield Skip(path=rel, reason=f"cannot stat: {exc.strerror}", code=code)
        return
    if not stat.S_ISREG(st.st_mode):
        kind = "fifo" if stat.S_ISFIFO(st.st_mode) else "device or special file"
        yield Skip(path=rel, reason=f"not a regular file ({kind})", code="special-file")
        return
    seen = known.get(fs_path) if known else None
    if seen is not None and seen.identity == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns):
        yield Candidate(rel, fs_path, st.st_size, st.st_mtime_ns, st.st_ino, seen.format, seen.kind, st.st_ctime_ns)
        return
    try:
        head = _read_head(fs_path)
    except OSError as exc:
        yield Skip(path=rel, reason=f"cannot read: {exc.strerror}", code="unreadable")
        return
    fmt = hinted(sniff(head), rel)
    if fmt == "lfs-pointer":
        yield Skip(path=rel, reason="Git LFS pointer: the real file is not checked out, so it was not scanned",
                   code="lfs-pointer")
        return
    yield Candidate(rel, fs_path, st.st_size, st.st_mtime_ns, st.st_ino, fmt, classify(rel, fmt), st.st_ctime_ns)


def _walk(root: Path, excludes: Sequence[str], use_gitignore: bool,
          known: Mapping[str, KnownFormat]) -> Iterator[Candidate | Skip]:
    ignores = _Ignores(excludes)
    root_fs = str(root)
    prefix = "" if root.is_absolute() or root.as_posix() == "." else root.as_posix().rstrip("/")
    unlistable: list[OSError] = []
    for dir_fs, dirnames, filenames in os.walk(root_fs, followlinks=False, onerror=unlistable.append):
        yield from _unlistable(unlistable, root_fs, prefix)
        dir_rel = os.path.relpath(dir_fs, root_fs).replace(os.sep, "/")
        dir_rel = "" if dir_rel == "." else dir_rel
        if use_gitignore:
            ignores.load(dir_rel, dir_fs)
        keep = []
        for d in sorted(dirnames):
            rel = f"{dir_rel}/{d}" if dir_rel else d
            full = os.path.join(dir_fs, d)
            if d in SKIP_DIRS or os.path.exists(os.path.join(full, "pyvenv.cfg")) or ignores.ignored(rel, True):
                continue
            if os.path.islink(full):
                yield Skip(path=clean_text(_join(prefix, rel)), reason="symlink to a directory is not followed", code="dir-symlink")
                continue
            if not os.access(full, os.R_OK | os.X_OK):
                yield Skip(path=clean_text(_join(prefix, rel)), reason="directory is not readable", code="unreadable")
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = f"{dir_rel}/{name}" if dir_rel else name
            if name == ".gitignore" or ignores.ignored(rel, False):
                continue
            yield from _file(_join(prefix, rel), os.path.join(dir_fs, name), known)
    yield from _unlistable(unlistable, root_fs, prefix)


def _unlistable(errors: list[OSError], root_fs: str, prefix: str) -> Iterator[Skip]:
    """Folders os.walk could not list (it only tells its onerror callback): reported, not lost."""
    while errors:
        exc = errors.pop(0)
        where = os.fspath(exc.filename) if exc.filename is not None else root_fs
        rel = os.path.relpath(where, root_fs).replace(os.sep, "/")
        path = (prefix or ".") if rel == "." else _join(prefix, rel)
        yield Skip(path=clean_text(path), reason=f"directory cannot be listed: {exc.strerror}", code="unreadable")


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel
