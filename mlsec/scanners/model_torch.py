"""PyTorch checkpoint layouts: zip (any folder name), TorchScript, legacy sequence, legacy tar.

``torch.load`` unpickles ``<folder>/data.pkl`` of a zip whatever the folder is called, and the
storages it references live in ``<folder>/data/<key>`` as raw bytes. Only the pickles can run
code, so raw storages are not sniffed (random tensor bytes can look like anything); instead
their presence and sizes are checked against the persistent ids the pickle declares.

The legacy (``_use_new_zipfile_serialization=False``) file is five pickles — magic number,
protocol version, sys_info, the object, the sorted storage keys — followed by each storage as
an 8-byte element count and raw data. The legacy tar (PyTorch < 0.4) has members ``sys_info``,
``pickle``, ``storages`` and ``tensors``, the last two mixing pickles with raw records.
"""

from __future__ import annotations

import posixpath
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from mlsec.engine.context import Inspection
from mlsec.engine.pickle import Container, Global
from mlsec.engine.stream import Stream

ELEMENT_SIZE = {
    "FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
    "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
}

_SKIP_MEMBERS = re.compile(r"^(version|byteorder|\.data/.*|\.format_version|\.storage_alignment|data/\d+.*)$")


def storage_records(pids: list[Any]) -> dict[str, tuple[int | None, int | None]]:
    """``{key: (element size, element count)}`` from ``('storage', type, key, location, numel)`` ids."""
    out: dict[str, tuple[int | None, int | None]] = {}
    for pid in pids:
        if not isinstance(pid, Container) or len(pid.items) < 5 or pid.items[0] != "storage":
            continue
        stype, key, numel = pid.items[1], pid.items[2], pid.items[4]
        if not isinstance(key, str):
            continue
        elem = ELEMENT_SIZE.get(stype.name) if isinstance(stype, Global) else None
        out[key] = (elem, numel if isinstance(numel, int) else None)
    return out


@dataclass
class TorchZip:
    """A zip recognized as a PyTorch checkpoint or TorchScript archive."""

    prefix: str
    sizes: dict[str, int]
    code_members: list[str] = field(default_factory=list)
    pids: list[Any] = field(default_factory=list)

    @classmethod
    def detect(cls, entries: list[Any]) -> TorchZip | None:
        """Recognize the layout from entry names (``<folder>/data.pkl``)."""
        for e in entries:
            parts = e.name.split("/")
            if len(parts) == 2 and parts[1] in ("data.pkl", "constants.pkl"):
                prefix = parts[0]
                sizes = {x.name[len(prefix) + 1 :]: x.usize for x in entries if x.name.startswith(prefix + "/")}
                return cls(prefix, sizes)
        return None

    def relative(self, name: str) -> str | None:
        return name[len(self.prefix) + 1 :] if name.startswith(self.prefix + "/") else None

    def should_inspect(self, name: str) -> bool:
        """Raw storages and bookkeeping members are not content; everything else is inspected."""
        rel = self.relative(name)
        if rel is None:
            return True
        if rel.startswith("code/") and not rel.endswith(".debug_pkl"):
            self.code_members.append(rel)
            return False
        return not _SKIP_MEMBERS.match(rel)

    def record(self, pids: list[Any]) -> None:
        """Persistent ids seen in ``data.pkl`` (for the storage check)."""
        self.pids.extend(pids)

    def finish(self, stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
        """Check referenced storages exist with enough bytes; note TorchScript code."""
        for key, (elem, numel) in sorted(storage_records(self.pids).items()):
            size = self.sizes.get(f"data/{key}")
            if size is None:
                insp.add(
                    "MLSEC-TORCH-001",
                    f"data.pkl references storage {key!r} but {self.prefix}/data/{key} is missing",
                    key=f"missing-storage {key}",
                    member=member,
                )
            elif elem is not None and numel is not None and size < elem * numel:
                insp.add(
                    "MLSEC-TORCH-001",
                    f"Storage {key!r} holds {size} bytes but data.pkl declares {numel} x {elem}",
                    key=f"short-storage {key}",
                    member=member,
                )
        if self.code_members:
            insp.add(
                "MLSEC-TORCH-002",
                f"TorchScript archive with {len(self.code_members)} code members (compiled and run by torch.jit.load)",
                key="torchscript-code",
                member=member,
                evidence={"code_members": ", ".join(sorted(self.code_members)[:10])},
            )


def inspect_data_pickle(torch_zip: TorchZip | None, stream: Stream, insp: Inspection, label: str, depth: int) -> None:
    """Run the pickle reader on a checkpoint's pickle and keep its persistent ids."""
    from mlsec.scanners.model_pickle import inspect_pickle

    infos = inspect_pickle(stream, insp, label, depth)
    if torch_zip is not None:
        for info in infos:
            torch_zip.record(info.persistent_ids)


def inspect_legacy_sequence(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """After the magic-number pickle: four more pickles, then the raw storages."""
    from mlsec.scanners.model_pickle import inspect_trailing, run_pickle

    infos = []
    for _ in range(4):
        info = run_pickle(stream, insp, member, depth)
        if not info.stopped:
            return
        infos.append(info)
    records = storage_records(infos[2].persistent_ids)
    for key in sorted(records):
        elem, numel = records[key]
        offset = stream.tell()
        head = stream.read_exact(8)
        if head is None:
            insp.add("MLSEC-TORCH-001", f"Legacy checkpoint truncated before storage {key!r}",
                     key="legacy-truncated", member=member, offset=offset)
            return
        (count,) = struct.unpack("<q", head)
        if elem is None or count < 0 or (numel is not None and count != numel):
            insp.add(
                "MLSEC-TORCH-001",
                f"Legacy storage {key!r} record says {count} elements, the pickle declared {numel}",
                key=f"legacy-storage {key}",
                member=member,
                offset=offset,
            )
            return
        if stream.skip(count * elem) != count * elem:
            insp.add("MLSEC-TORCH-001", f"Legacy checkpoint truncated inside storage {key!r}",
                     key="legacy-truncated", member=member, offset=offset)
            return
    if not stream.at_end():
        inspect_trailing(stream, insp, member, depth)


def is_legacy_tar_member(name: str) -> bool:
    """Members of the legacy tar layout that mix pickles with raw records."""
    return posixpath.basename(name) in ("storages", "tensors")


def inspect_legacy_tar_member(name: str, stream: Stream, insp: Inspection, label: str, depth: int) -> None:
    """``storages``: count, then (key, location, type) pickle + raw data; ``tensors``: count, then records."""
    from mlsec.scanners.model_pickle import run_pickle

    first = run_pickle(stream, insp, label, depth)
    count = first.result
    if not first.stopped:
        return
    if not isinstance(count, int) or not 0 <= count <= insp.limits.max_members:
        insp.add("MLSEC-TORCH-001", f"Legacy tar member {name!r} has an invalid record count", key=f"count {name}", member=label)
        return
    storages = posixpath.basename(name) == "storages"
    for _ in range(count):
        info = run_pickle(stream, insp, label, depth)
        if not info.stopped:
            return
        if storages:
            args = info.result.items if isinstance(info.result, Container) else []
            stype = args[2] if len(args) > 2 else None
            elem = ELEMENT_SIZE.get(stype.name) if isinstance(stype, Global) else None
            head = stream.read_exact(8)
            if elem is None or head is None:
                insp.add("MLSEC-TORCH-001", "Legacy tar storage record is unreadable", key="storage-record", member=label)
                return
            size = struct.unpack("<q", head)[0] * elem
            if size < 0 or stream.skip(size) != size:
                insp.add("MLSEC-TORCH-001", "Legacy tar storage data is truncated", key="storage-data", member=label)
                return
        else:
            head = stream.read_exact(8)
            if head is None:
                return
            ndim = struct.unpack("<i", head[:4])[0]
            if not 0 <= ndim <= 64 or stream.skip(16 * ndim + 8) != 16 * ndim + 8:
                insp.add("MLSEC-TORCH-001", "Legacy tar tensor record is unreadable", key="tensor-record", member=label)
                return
    if not stream.at_end():
        from mlsec.scanners.model_pickle import inspect_trailing

        inspect_trailing(stream, insp, label, depth)

