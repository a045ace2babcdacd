"""7z archives (py7zr, optional extra ``mlsec[formats]``), with the zip/tar bomb limits.

Members are decompressed one at a time into a spooled temporary file (memory up to
``keep_bytes``, then disk) and handed back to :mod:`mlsec.engine.dispatch`, so a pickle in a
7z gets the same engine as a bare one. Before anything is decompressed, the sizes the archive
declares are checked against the artifact's expansion budget and the bomb ratio; while
decompressing, every byte is charged against the same budget and each member is cut off at
the size it declared, so a lying header cannot expand further than the checks allowed.
Encrypted archives are reported, never passed as clean. Member names that escape the
extraction directory (absolute, ``..``) and symlinks are reported like zip and tar members.
"""

from __future__ import annotations

import posixpath
import struct
import tempfile
from typing import Any

from mlsec.engine import dispatch
from mlsec.engine.context import DeadlineExceeded, Inspection, join_member, random_access
from mlsec.engine.stream import BudgetExceeded, CorruptData, Stream
from mlsec.scanners.archive import guarded
from mlsec.scanners.model_keras import WindowFile


class _Spool:
    """Py7zIO-compatible writer: spools one member, inspects it when py7zr closes it."""

    def __init__(self, name: str, declared: int, owner: _Extraction) -> None:
        self.name, self.declared, self.owner = name, declared, owner
        self._file = tempfile.SpooledTemporaryFile(max_size=owner.insp.limits.keep_bytes)  # noqa: SIM115
        self._size = 0

    def write(self, data: bytes | bytearray) -> int:
        if self._size + len(data) > self.declared:
            raise BudgetExceeded(f"7z member {self.name!r} expands beyond its declared {self.declared} bytes")
        self.owner.insp.charge(len(data))
        self._size += len(data)
        return self._file.write(data)

    def read(self, size: int | None = None) -> bytes:
        return self._file.read(size if size is not None else -1)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def flush(self) -> None:
        self._file.flush()

    def size(self) -> int:
        return self._size

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        """py7zr finished this member: inspect it now, then free the spool."""
        try:
            self.owner.inspect_member(self.name, self._file, self._size)
        finally:
            self._file.close()


class _Extraction:
    """py7zr WriterFactory: one :class:`_Spool` per member."""

    def __init__(self, insp: Inspection, member: str | None, depth: int, declared: dict[str, int]) -> None:
        self.insp, self.member, self.depth, self.declared = insp, member, depth, declared
        self.deadline: DeadlineExceeded | None = None

    def create(self, filename: str) -> _Spool:
        return _Spool(filename, self.declared.get(filename, 0), self)

    def inspect_member(self, name: str, fh: Any, size: int) -> None:
        if self.deadline is not None:
            return
        label = join_member(self.member, name)
        inner = Stream(fh, start=0, length=size, seekable=True)
        try:
            guarded(lambda: dispatch.inspect(inner, self.insp, label, self.depth + 1, name), self.insp, label)
        except DeadlineExceeded as exc:
            self.deadline = exc


def _report_names(infos: list[Any], insp: Inspection, member: str | None) -> set[str]:
    """Flag escaping names and links; return the names that are safe to hand to py7zr."""
    safe: set[str] = set()
    for info in infos:
        name = str(info.filename)
        norm = name.replace("\\", "/")
        if norm.startswith("/") or ".." in norm.split("/") or (len(norm) > 1 and norm[1] == ":"):
            insp.add("MLSEC-ARCHIVE-003", f"7z member {name!r} escapes the extraction directory (py7zr refuses to "
                     "extract it, so its content was not inspected)",
                     key=f"slip {name}", member=member)
            continue
        if info.is_symlink:
            insp.add("MLSEC-ARCHIVE-003", f"7z member {name!r} is a symbolic link (extraction may write through it)",
                     key=f"link {name}", member=member)
            continue
        if info.is_directory or posixpath.basename(norm) == "":
            continue
        safe.add(name)
    return safe


@dispatch.handles("7z")
def inspect_7z(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """List, check limits, then decompress and inspect each member."""
    try:
        import py7zr
        from py7zr.exceptions import ArchiveError, PasswordRequired
    except ImportError:
        insp.skip("7z content not inspected: py7zr is not installed (pip install 'mlsec[formats]')",
                  "missing-dependency")
        return
    buffered = random_access(stream, insp, member, "7z archive", "7z-in-stream")
    if buffered is None:
        return
    stream = buffered
    packed = stream.length or 0
    try:
        with py7zr.SevenZipFile(WindowFile(stream), mode="r") as archive:  # type: ignore[arg-type]
            if archive.needs_password():
                insp.add("MLSEC-ARCHIVE-006", "7z archive is encrypted; its content cannot be inspected",
                         key="7z-encrypted", member=member)
                return
            infos = archive.list()
            if len(infos) > insp.limits.max_members:
                insp.add("MLSEC-ARCHIVE-004", f"7z has more than {insp.limits.max_members} members; not inspected",
                         key="max-members", member=member, evidence={"members": str(len(infos))})
                return
            declared = {str(i.filename): int(i.uncompressed or 0) for i in infos}
            total = sum(declared.values())
            limits = insp.limits
            if insp.expanded + total > limits.max_expanded or (
                    total > limits.ratio_floor and total > limits.max_ratio * max(packed, 1)):
                insp.add("MLSEC-ARCHIVE-001", f"7z archive declares {total} bytes from {packed} packed bytes "
                         "(over the expansion limits); not decompressed", key="7z-bomb", member=member,
                         evidence={"declared": str(total), "packed": str(packed)})
                return
            targets = _report_names(infos, insp, member)
            if not targets:
                return
            factory = _Extraction(insp, member, depth, declared)
            archive.extract(targets=sorted(targets), factory=factory)
            if factory.deadline is not None:
                raise factory.deadline
    except DeadlineExceeded:
        raise
    except BudgetExceeded as exc:
        insp.add("MLSEC-ARCHIVE-001", f"Decompression stopped: {exc}", key="7z-budget", member=member)
    except PasswordRequired:
        insp.add("MLSEC-ARCHIVE-006", "7z archive is encrypted; its content cannot be inspected",
                 key="7z-encrypted", member=member)
    except (ArchiveError, CorruptData) as exc:
        insp.add("MLSEC-ARCHIVE-002", f"7z archive is corrupt or unsupported: {str(exc)[:160]}",
                 key="7z-corrupt", member=member)
    except (EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, MemoryError,
            OverflowError, struct.error) as exc:
        # py7zr's header parser raises plain exceptions on damaged input.
        insp.add("MLSEC-ARCHIVE-002", f"7z archive is corrupt: {type(exc).__name__}: {str(exc)[:160]}",
                 key="7z-corrupt", member=member)
