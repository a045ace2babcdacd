"""Columnar datasets: Parquet, Arrow IPC files and streams, Feather v2, Hugging Face ``.arrow``.

**Schema check, always, without reading data and without pyarrow.** pyarrow 0.14.0-14.0.0
unpickles the ``ARROW:extension:metadata`` of any field whose ``ARROW:extension:name`` is
``arrow.py_extension_type`` when it reads the file (CVE-2023-47248). The schema sits in the
Parquet footer (Thrift compact protocol; the Arrow schema is the base64 ``ARROW:schema``
key-value entry, an IPC schema message) or in the first message and the footer of an Arrow
IPC file (FlatBuffers). Small readers for both formats walk every field, nested ones included;
a plain byte search of the decoded schemas backs them up. The pickled metadata is handed to the
pickle engine, so its imports and calls are reported too.

**Content (personal data, credentials)** needs pyarrow (the optional ``data`` extra) to decode
pages. It is used only when it is 14.0.1 or newer and the schema declared no pickled type;
otherwise the content check is reported as a Skip (the schema check still ran). Within the
byte budget (``MLSEC_DATA_BUDGET_MB``) every row group / record batch is read; above it,
evenly spaced row groups (or batches) up to the budget, and the coverage is recorded.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from mlsec import __version__
from mlsec.engine import arrow_client, dispatch
from mlsec.engine.context import DeadlineExceeded, Inspection, join_member
from mlsec.engine.hdf5_client import Failure
from mlsec.engine.stream import StreamError, bytes_stream
from mlsec.fsio import open_regular
from mlsec.model import Artifact, Fact, Finding, Skip
from mlsec.registry import ScanContext, register
from mlsec.scanners.data_text import (
    MAX_SAMPLES,
    PII_RULES,
    Coverage,
    Tally,
    _Stat,
    coverage_finding,
    data_budget,
    dataset_facts,
)

PY_EXTENSION = b"arrow.py_extension_type"
EXT_NAME = b"ARROW:extension:name"
EXT_META = b"ARROW:extension:metadata"
MAX_FOOTER = 64 << 20        # a larger Parquet footer is only searched, not parsed
MAX_MESSAGE = 64 << 20       # IPC metadata message size limit
MAX_FIELDS = 100_000
MAX_DEPTH = 64
MAX_MESSAGES = 1_000_000
SAFE_PYARROW = (14, 0, 1)


class Malformed(Exception):
    """The bytes do not follow the format (reported as MLSEC-DATA-015, never raised out)."""


# --- Thrift compact protocol (Parquet footer) -------------------------------------------

class _Thrift:
    """Just enough of the Thrift compact protocol to read Parquet's FileMetaData."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise Malformed("footer ends early")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise Malformed("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def binary(self) -> bytes:
        n = self.varint()
        if n > len(self.data) - self.pos:
            raise Malformed("string runs past the footer")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def fields(self, depth: int) -> Iterator[tuple[int, int]]:
        """(field id, type) of each field of the struct at the current position."""
        if depth > MAX_DEPTH:
            raise Malformed("structures nested too deeply")
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            ftype = head & 0x0F
            delta = head >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            yield fid, ftype

    def list_header(self) -> tuple[int, int]:
        head = self.byte()
        size = head >> 4
        if size == 15:
            size = self.varint()
        if size > len(self.data) - self.pos:
            raise Malformed("list longer than the footer")
        return size, head & 0x0F

    def value(self, ftype: int) -> int | bytes | None:
        """Read a scalar value (ints, binary); booleans come back as 1/0."""
        if ftype in (1, 2):
            return 1 if ftype == 1 else 0
        if ftype == 3:
            return self.byte()
        if ftype in (4, 5, 6):
            return self.zigzag()
        if ftype == 8:
            return self.binary()
        if ftype == 7:
            self.pos += 8
            return None
        raise Malformed(f"unexpected thrift type {ftype}")

    def skip(self, ftype: int, depth: int) -> None:
        if ftype in (1, 2):
            return
        if ftype == 3:
            self.pos += 1
        elif ftype in (4, 5, 6):
            self.varint()
        elif ftype == 7:
            self.pos += 8
        elif ftype == 8:
            n = self.varint()
            self.pos += n
        elif ftype in (9, 10):
            size, etype = self.list_header()
            if etype in (1, 2):
                self.pos += size
            else:
                for _ in range(size):
                    self.skip(etype, depth + 1)
        elif ftype == 11:
            size = self.varint()
            if size:
                kv = self.byte()
                for _ in range(size):
                    self.skip(kv >> 4, depth + 1)
                    self.skip(kv & 0x0F, depth + 1)
        elif ftype == 12:
            for _fid, t in self.fields(depth + 1):
                self.skip(t, depth + 1)
        else:
            raise Malformed(f"unknown thrift type {ftype}")
        if self.pos > len(self.data):
            raise Malformed("value runs past the footer")


@dataclass
class ParquetFooter:
    """What mlsec reads from a Parquet footer."""

    num_rows: int | None = None
    columns: list[str] = field(default_factory=list)   # top-level column names
    metadata: list[tuple[bytes, bytes]] = field(default_factory=list)
    created_by: str = ""


def parse_footer(data: bytes) -> ParquetFooter:
    """Parse FileMetaData: schema names, row count, key-value metadata (row groups skipped)."""
    t = _Thrift(data)
    out = ParquetFooter()
    elements: list[tuple[str, int]] = []  # (name, num_children)
    for fid, ftype in t.fields(0):
        if fid == 2 and ftype == 9:
            size, etype = t.list_header()
            if etype != 12:
                raise Malformed("schema is not a list of structs")
            for _ in range(size):
                name, children = "", 0
                for sfid, stype in t.fields(1):
                    if sfid == 4 and stype == 8:
                        name = t.binary().decode("utf-8", "replace")
                    elif sfid == 5 and stype == 5:
                        value = t.value(stype)
                        children = value if isinstance(value, int) else 0
                    else:
                        t.skip(stype, 2)
                elements.append((name, children))
        elif fid == 3 and ftype == 6:
            rows = t.value(ftype)
            out.num_rows = rows if isinstance(rows, int) else None
        elif fid == 5 and ftype == 9:
            size, etype = t.list_header()
            if etype != 12:
                raise Malformed("key_value_metadata is not a list of structs")
            for _ in range(size):
                key, val = b"", b""
                for kfid, ktype in t.fields(1):
                    if kfid == 1 and ktype == 8:
                        key = t.binary()
                    elif kfid == 2 and ktype == 8:
                        val = t.binary()
                    else:
                        t.skip(ktype, 2)
                out.metadata.append((key, val))
        elif fid == 6 and ftype == 8:
            out.created_by = t.binary().decode("utf-8", "replace")[:200]
        else:
            t.skip(ftype, 1)
    out.columns = _top_level(elements)
    return out


def _top_level(elements: list[tuple[str, int]]) -> list[str]:
    """Names of the root's direct children in Parquet's flattened (depth-first) schema list."""
    if not elements:
        return []
    names = []
    i = 1
    for _ in range(max(0, elements[0][1])):
        if i >= len(elements):
            break
        names.append(elements[i][0])
        # Skip this child's whole subtree.
        pending = 1
        while pending and i < len(elements):
            pending += elements[i][1] - 1
            i += 1
    return names


# --- FlatBuffers (Arrow IPC schema) -----------------------------------------------------

class _FlatBuffer:
    """Bounds-checked access to FlatBuffers tables, strings and vectors."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _unpack(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise Malformed("flatbuffer offset out of range")
        value: int = struct.unpack_from(fmt, self.data, pos)[0]
        return value

    def root(self) -> int:
        return self._unpack("<I", 0)

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, or None if absent."""
        vtable = table - self._unpack("<i", table)
        vt_size = self._unpack("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        off = self._unpack("<H", vtable + slot)
        return table + off if off else None

    def ref(self, pos: int) -> int:
        return pos + self._unpack("<I", pos)

    def table(self, table: int, index: int) -> int | None:
        pos = self.field(table, index)
        return None if pos is None else self.ref(pos)

    def string(self, table: int, index: int) -> bytes | None:
        pos = self.field(table, index)
        if pos is None:
            return None
        start = self.ref(pos)
        n = self._unpack("<I", start)
        if start + 4 + n > len(self.data):
            raise Malformed("flatbuffer string out of range")
        return self.data[start + 4:start + 4 + n]

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(count, position of the first element) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        start = self.ref(pos)
        count = self._unpack("<I", start)
        if count > len(self.data):
            raise Malformed("flatbuffer vector out of range")
        return count, start + 4

    def tables(self, table: int, index: int) -> Iterator[int]:
        count, first = self.vector(table, index)
        for i in range(count):
            yield self.ref(first + 4 * i)

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self.field(table, index)
        return default if pos is None else self._unpack(fmt, pos)


@dataclass(frozen=True, slots=True)
class ArrowField:
    """A schema field (dotted path for nested fields) and its custom metadata."""

    path: str
    metadata: tuple[tuple[bytes, bytes], ...]

    def get(self, key: bytes) -> bytes | None:
        for k, v in self.metadata:
            if k == key:
                return v
        return None


def _key_values(fb: _FlatBuffer, table: int, index: int) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for kv in fb.tables(table, index):
        out.append((fb.string(kv, 0) or b"", fb.string(kv, 1) or b""))
    return tuple(out)


def schema_fields(fb: _FlatBuffer, schema: int) -> tuple[list[ArrowField], tuple[tuple[bytes, bytes], ...]]:
    """Every field of an Arrow Schema table (recursively) and the schema-level metadata."""
    out: list[ArrowField] = []
    stack: list[tuple[int, str, int]] = [(t, "", 0) for t in reversed(list(fb.tables(schema, 1)))]
    while stack:
        table, parent, depth = stack.pop()
        if len(out) >= MAX_FIELDS or depth > MAX_DEPTH:
            raise Malformed("schema has too many fields or nests too deeply")
        raw = fb.string(table, 0) or b""
        name = "".join(ch if ch.isprintable() else "?" for ch in raw.decode("utf-8", "replace"))[:64] or "?"
        path = f"{parent}.{name}" if parent else name
        out.append(ArrowField(path, _key_values(fb, table, 6)))
        children = list(fb.tables(table, 5))
        stack.extend((c, path, depth + 1) for c in reversed(children))
    return out, _key_values(fb, schema, 2)


@dataclass
class IpcMessage:
    """One IPC message header: its type, the header table, and where its body ends."""

    header_type: int
    fb: _FlatBuffer
    header: int | None
    end: int


def read_message(fh: IO[bytes], pos: int, size: int) -> IpcMessage | None:
    """Read the encapsulated message at ``pos`` (None at end-of-stream)."""
    fh.seek(pos)
    prefix = fh.read(8)
    if len(prefix) < 4:
        return None
    if prefix[:4] == b"\xff\xff\xff\xff":
        if len(prefix) < 8:
            return None
        (length,) = struct.unpack("<i", prefix[4:8])
        meta = pos + 8
    else:  # pre-0.15 format: no continuation marker
        (length,) = struct.unpack("<i", prefix[:4])
        meta = pos + 4
    if length == 0:
        return None
    if length < 0 or length > MAX_MESSAGE or meta + length > size:
        raise Malformed(f"IPC message of {length} bytes at offset {pos} does not fit the file")
    fh.seek(meta)
    fb = _FlatBuffer(fh.read(length))
    msg = fb.root()
    body = fb.scalar(msg, 3, "<q")
    if body < 0 or meta + length + body > size:
        raise Malformed(f"IPC message body at offset {pos} runs past the end of the file")
    return IpcMessage(fb.scalar(msg, 1, "<B"), fb, fb.table(msg, 2), meta + length + body)


@dataclass
class SchemaCheck:
    """Where schemas were found, the fields that declare the pickled type, and rows/columns."""

    hits: list[tuple[str, ArrowField | None]] = field(default_factory=list)  # (source, field)
    problems: list[str] = field(default_factory=list)
    rows: int | None = None
    columns: int | None = None
    batches: int = 0


def check_schema_bytes(data: bytes, source: str, check: SchemaCheck) -> int | None:
    """Inspect one serialized Schema message (as in Parquet's ARROW:schema); return #top fields."""
    if data[:4] == b"\xff\xff\xff\xff":
        data = data[8:]
    elif len(data) >= 4:
        data = data[4:]
    top = _check_message_schema(_FlatBuffer(data), source, check, raw=data)
    return top


def _check_message_schema(fb: _FlatBuffer, source: str, check: SchemaCheck, raw: bytes) -> int | None:
    try:
        msg = fb.root()
        if fb.scalar(msg, 1, "<B") != 1:
            raise Malformed("first message is not a schema")
        schema = fb.table(msg, 2)
        if schema is None:
            raise Malformed("schema message without a schema")
        return _check_schema_table(fb, schema, source, check, raw)
    except Malformed as exc:
        check.problems.append(f"{source}: {exc}")
        if PY_EXTENSION in raw:
            check.hits.append((source, None))
        return None


def _check_schema_table(fb: _FlatBuffer, schema: int, source: str, check: SchemaCheck, raw: bytes) -> int:
    fields, schema_meta = schema_fields(fb, schema)
    found = False
    for f in fields:
        if f.get(EXT_NAME) == PY_EXTENSION or any(PY_EXTENSION in v for _k, v in f.metadata):
            check.hits.append((source, f))
            found = True
    if not found and (PY_EXTENSION in raw or any(PY_EXTENSION in v for _k, v in schema_meta)):
        check.hits.append((source, None))  # named somewhere the walk does not look: still report
    return sum(1 for _ in fb.tables(schema, 1))


def check_parquet(fh: IO[bytes], size: int, check: SchemaCheck) -> ParquetFooter | None:
    """Read the footer and inspect the Arrow schema it carries."""
    if size < 12:
        check.problems.append("file too short for a Parquet footer")
        return None
    fh.seek(size - 8)
    tail = fh.read(8)
    (flen,) = struct.unpack("<I", tail[:4])
    if tail[4:] == b"PARE":
        check.problems.append("encrypted footer: the schema cannot be checked")
        return None
    if tail[4:] != b"PAR1":
        check.problems.append("no PAR1 magic at the end (truncated or not Parquet)")
        return None
    if flen > size - 12:
        check.problems.append(f"footer length {flen} does not fit the file")
        return None
    fh.seek(size - 8 - flen)
    raw = fh.read(min(flen, MAX_FOOTER))
    footer: ParquetFooter | None = None
    if flen > MAX_FOOTER:
        check.problems.append(f"footer of {flen} bytes is larger than {MAX_FOOTER}; only searched")
    else:
        try:
            footer = parse_footer(raw)
        except Malformed as exc:
            check.problems.append(f"footer: {exc}")
    schemas = [v for k, v in footer.metadata if k == b"ARROW:schema"] if footer else []
    # Also every ARROW:schema value the raw bytes hold (a second copy the parser did not keep).
    schemas.extend(_raw_kv_values(raw, b"ARROW:schema"))
    seen: set[bytes] = set()
    for value in schemas:
        if value in seen:
            continue
        seen.add(value)
        try:
            decoded = base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError):
            check.problems.append("ARROW:schema is not base64")
            continue
        check_schema_bytes(decoded, "Parquet footer ARROW:schema", check)
    if PY_EXTENSION in raw and not check.hits:
        check.hits.append(("Parquet footer", None))
    if footer is not None:
        check.rows = footer.num_rows
        check.columns = len(footer.columns)
    return footer


def _raw_kv_values(raw: bytes, key: bytes) -> list[bytes]:
    """Values of compact-protocol KeyValue structs with this key, found by a byte search."""
    out: list[bytes] = []
    marker = b"\x18" + bytes([len(key)]) + key + b"\x18"
    start = raw.find(marker)
    while start >= 0 and len(out) < 16:
        t = _Thrift(raw)
        t.pos = start + len(marker)
        try:
            out.append(t.binary())
        except Malformed:
            pass
        start = raw.find(marker, start + 1)
    return out


def check_ipc(fh: IO[bytes], size: int, check: SchemaCheck, deadline: Inspection | None = None) -> bool:
    """Inspect the schema message(s) of an Arrow IPC file or stream and count rows.

    Returns True for the file format (``ARROW1`` magic), False for a stream.
    """
    fh.seek(0)
    head = fh.read(8)
    is_file = head[:6] == b"ARROW1"
    pos = 8 if is_file else 0
    limit = size
    if is_file:
        fh.seek(max(0, size - 10))
        tail = fh.read(10)
        if len(tail) == 10 and tail[4:] == b"ARROW1":
            (flen,) = struct.unpack("<i", tail[:4])
            if 0 < flen <= min(MAX_MESSAGE, size - 18):
                fh.seek(size - 10 - flen)
                raw = fh.read(flen)
                fb = _FlatBuffer(raw)
                try:
                    schema = fb.table(fb.root(), 1)
                    if schema is None:
                        raise Malformed("footer without a schema")
                    _check_schema_table(fb, schema, "Arrow file footer", check, raw)
                except Malformed as exc:
                    check.problems.append(f"Arrow file footer: {exc}")
                    if PY_EXTENSION in raw:
                        check.hits.append(("Arrow file footer", None))
                limit = size - 10 - flen
            else:
                check.problems.append(f"Arrow file footer length {flen} does not fit the file")
        else:
            check.problems.append("no ARROW1 magic at the end (truncated file)")
    try:
        first = read_message(fh, pos, limit)
    except Malformed as exc:
        check.problems.append(str(exc))
        return is_file
    if first is None:
        check.problems.append("no schema message")
        return is_file
    fb = first.fb
    raw = fb.data
    try:
        if first.header_type != 1 or first.header is None:
            raise Malformed("first message is not a schema")
        check.columns = _check_schema_table(fb, first.header, "Arrow IPC schema message", check, raw)
    except Malformed as exc:
        check.problems.append(f"Arrow IPC schema message: {exc}")
        if PY_EXTENSION in raw:
            check.hits.append(("Arrow IPC schema message", None))
    # Count rows: walk the message headers, seeking over bodies.
    rows = 0
    pos = first.end
    for _ in range(MAX_MESSAGES):
        if deadline is not None:
            deadline.check_time()
        try:
            msg = read_message(fh, pos, limit)
        except Malformed as exc:
            check.problems.append(str(exc))
            return is_file
        if msg is None:
            break
        if msg.header_type == 3 and msg.header is not None:
            try:
                rows += msg.fb.scalar(msg.header, 0, "<q")
            except Malformed as exc:
                check.problems.append(f"record batch: {exc}")
                return is_file
            check.batches += 1
        pos = msg.end
        if pos + 4 > limit:
            break
    check.rows = rows
    return is_file


# --- content with pyarrow --------------------------------------------------------------

def safe_pyarrow(version: str) -> bool:
    """Is this pyarrow version fixed for CVE-2023-47248 (14.0.1 or later)?"""
    parts = []
    for piece in version.split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits) if digits else 0)
    return tuple(parts) >= SAFE_PYARROW


def pyarrow_status() -> tuple[Any, str]:
    """(pyarrow module or None, reason it cannot be used)."""
    try:
        import pyarrow
    except ImportError:
        return None, "pyarrow is not installed (pip install 'mlsec[data]')"
    if not safe_pyarrow(pyarrow.__version__):
        return None, f"pyarrow {pyarrow.__version__} is vulnerable to CVE-2023-47248; content not read with it"
    return pyarrow, ""


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n)``, first and last included."""
    if k >= n:
        return list(range(n))
    if k <= 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _string_columns(pa: Any, schema: Any) -> list[str]:
    """Top-level columns that hold text somewhere (strings, lists/structs of strings)."""

    def has_text(t: Any, depth: int = 0) -> bool:
        types = pa.types
        if types.is_string(t) or types.is_large_string(t) or getattr(types, "is_string_view", lambda _t: False)(t):
            return True
        if types.is_dictionary(t):
            return has_text(t.value_type, depth + 1)
        if depth < 8 and (types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t)):
            return has_text(t.value_type, depth + 1)
        if depth < 8 and types.is_struct(t):
            return any(has_text(t.field(i).type, depth + 1) for i in range(t.num_fields))
        return False

    return [f.name for f in schema if has_text(f.type)]


def _texts(pa: Any, pc: Any, name: str, arr: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(column path, string array) pairs inside ``arr`` (lists flattened, structs by field)."""
    t = arr.type
    types = pa.types
    if types.is_dictionary(t):
        yield from _texts(pa, pc, name, arr.dictionary_decode(), depth)
    elif types.is_string(t) or types.is_large_string(t) or getattr(types, "is_string_view", lambda _t: False)(t):
        yield name, arr if types.is_large_string(t) else arr.cast(pa.large_string())
    elif depth < 8 and (types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t)):
        yield from _texts(pa, pc, name, arr.flatten(), depth + 1)
    elif depth < 8 and types.is_struct(t):
        for i in range(t.num_fields):
            yield from _texts(pa, pc, f"{name}.{t.field(i).name}", pc.struct_field(arr, [i]), depth + 1)


def _large_string_scalar(pa: Any, data: bytes) -> Any:
    """A large_string scalar built from buffers: ``pa.scalar``/``pa.array`` on Python values would
    make pyarrow try to import pandas (it probes for pandas objects), which mlsec never needs."""
    offsets = pa.py_buffer(struct.pack("<qq", 0, len(data)))
    return pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])[0]


def _scan_batch(pa: Any, pc: Any, tally: Tally, batch: Any) -> int:
    """Scan the text columns of one record batch; return the characters scanned."""
    # pyarrow trusts the offsets and buffer sizes of what it read: an IPC batch whose string
    # offsets point past its data buffer crashed the process (SIGBUS) in pc.binary_join below.
    # Full validation raises ArrowInvalid instead (reported as MLSEC-DATA-015 by the caller).
    batch.validate(full=True)
    scanned = 0
    empty, newline = _large_string_scalar(pa, b""), _large_string_scalar(pa, b"\n")
    for name, column in zip(batch.schema.names, batch.columns):
        for path, arr in _texts(pa, pc, name, column):
            if len(arr) == 0:
                continue
            # One string per column and batch, joined in C (batches hold at most 65536 rows).
            values = arr.fill_null(empty)
            offsets = pa.Array.from_buffers(pa.int32(), 2, [None, pa.py_buffer(struct.pack("<ii", 0, len(values)))])
            lists = pa.ListArray.from_arrays(offsets, values)
            joined = pc.binary_join(lists, newline)[0].as_py()
            if joined:
                scanned += len(joined)
                tally.scan_column(tally.column_name(path), (joined,), None)
    return scanned


def sample_parquet(path: str, budget: int, tally: Tally, cov: Coverage, insp: Inspection) -> None:
    """Read all row groups within the budget, else evenly spaced ones up to it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    md = pf.metadata
    columns = _string_columns(pa, pf.schema_arrow)
    n = md.num_row_groups
    sizes = [md.row_group(i).total_byte_size for i in range(n)]
    total = sum(sizes)
    cov.rows_total = md.num_rows
    if not columns or n == 0:
        cov.bytes_scanned = cov.bytes_total  # no text at all: nothing left unread
        cov.rows_scanned = md.num_rows
        return
    if total <= budget:
        chosen = list(range(n))
    else:
        k = max(1, int(budget / (total / n)))
        chosen = _spread(n, k)
    scanned = rows = 0
    compressed_read = 0
    complete = True
    for i in chosen:
        rg = md.row_group(i)
        per_row = max(1, rg.total_byte_size // max(1, rg.num_rows))
        batch_rows = max(64, min(65536, (4 << 20) // per_row))
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[i], columns=columns,
                                     use_threads=False):
            insp.check_time()
            scanned += _scan_batch(pa, pc, tally, batch)
            rows += batch.num_rows
            if scanned >= budget:
                complete = False
                break
        compressed_read += sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
        if scanned >= budget:
            break
    cov.rows_scanned = rows
    if complete and len(chosen) == n:
        cov.bytes_scanned = cov.bytes_total
    else:
        cov.bytes_scanned = min(cov.bytes_total - 1, compressed_read)


def sample_ipc(path: str, is_file: bool, batches: int, budget: int, tally: Tally, cov: Coverage,
               insp: Inspection) -> None:
    """Read all record batches within the budget, else evenly spaced ones up to it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    source = pa.memory_map(path, "r")
    try:
        size = cov.bytes_total
        if batches and size > budget:
            wanted = set(_spread(batches, max(1, int(batches * budget / size))))
        else:
            wanted = None
        reader = pa.ipc.open_file(source) if is_file else pa.ipc.open_stream(source)
        columns = set(_string_columns(pa, reader.schema))
        scanned = rows = 0
        stopped = False
        count = reader.num_record_batches if is_file else None
        indices = range(count) if count is not None else None

        def batches_iter() -> Iterator[tuple[int, Any]]:
            if indices is not None:
                for i in indices:
                    if wanted is None or i in wanted:
                        yield i, reader.get_batch(i)
            else:
                for i, b in enumerate(reader):
                    if wanted is None or i in wanted:
                        yield i, b

        for _i, batch in batches_iter():
            insp.check_time()
            if columns:
                keep = [j for j, name in enumerate(batch.schema.names) if name in columns]
                scanned += _scan_batch(pa, pc, tally, batch.select(keep))
            rows += batch.num_rows
            if scanned >= budget:
                stopped = True
                break
        cov.rows_scanned = rows
        if wanted is None and not stopped:
            cov.bytes_scanned = size
        else:
            cov.bytes_scanned = min(size - 1, int(size * rows / max(1, cov.rows_total or rows)))
    finally:
        source.close()


# --- the scanner -----------------------------------------------------------------------

@register
class DataColumnarScanner:
    """Pickled Arrow extension types (CVE-2023-47248) and sensitive content in Parquet/Arrow."""

    name = "mlsec-data-columnar"
    cacheable = True  # depends on the bytes, the budget (in the version) and pyarrow's presence

    @property
    def version(self) -> str:
        """Scanner version, byte budget and whether content can be read (they change results)."""
        pa, _why = pyarrow_status()
        return f"{__version__}+data1;budget={data_budget()};content={'yes' if pa else 'no'}"

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Parquet and Arrow IPC (file, stream, Feather v2) artifacts."""
        return artifact.format in ("parquet", "arrow")

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip | Fact]:
        """Schema check from the footer/schema bytes; then content when pyarrow can be used."""
        insp = Inspection(path=artifact.path, scanner=self.name, limits=ctx.limits)
        check = SchemaCheck()
        cov = Coverage(bytes_total=artifact.size)
        tally = Tally()
        error: Exception | None = None
        with open_regular(artifact.fs_path) as fh:
            st = os.fstat(fh.fileno())
            size = st.st_size
            if artifact.format == "arrow" and fh.read(4) == b"FEA1":
                # Feather v1 predates Arrow IPC (and extension types): nothing of this kind to check.
                yield Skip(artifact.path, "Feather v1 (legacy) file: not read", "unsupported-format")
                return
            cov.bytes_total = size
            is_file = False
            try:
                if artifact.format == "parquet":
                    check_parquet(fh, size, check)
                else:
                    is_file = check_ipc(fh, size, check, insp)
            except DeadlineExceeded as exc:
                error = exc
            self._report_schema(check, insp, artifact.format)
        cov.rows_total = check.rows
        if error is None:
            error = self._content(artifact, check, is_file, tally, cov, insp, (st.st_dev, st.st_ino))
        yield from insp.findings
        yield from tally.findings(artifact.path, self.name, cov)
        yield from insp.skips
        if cov.bytes_scanned and not cov.complete:
            yield coverage_finding(artifact.path, self.name, cov)
        yield from dataset_facts(artifact.path, self.name, tally, cov, rows=check.rows, columns=check.columns)
        if error is not None:
            raise error

    def _report_schema(self, check: SchemaCheck, insp: Inspection, fmt: str) -> None:
        inspected: set[bytes] = set()  # the same pickle in two schema copies is inspected once
        for source, fld in check.hits:
            where = fld.path if fld is not None else "(not attributable to a field)"
            payload = fld.get(EXT_META) if fld is not None else None
            evidence = {"source": source, "field": where, "extension": PY_EXTENSION.decode()}
            if payload is not None:
                evidence["pickle_bytes"] = str(len(payload))
            insp.add(
                "MLSEC-DATA-001",
                f"Field {where!r} declares the Python-pickled extension type arrow.py_extension_type "
                f"({source}): pyarrow < 14.0.1 unpickles it on read (CVE-2023-47248)",
                key=f"py_extension_type {where}",
                pointer=where,
                evidence=evidence,
            )
            if payload and payload not in inspected:
                inspected.add(payload)
                label = join_member(source, f"{where}!ARROW:extension:metadata")
                try:
                    dispatch.inspect(bytes_stream(payload), insp, label, 1)
                except StreamError as exc:
                    insp.add("MLSEC-ARCHIVE-002", f"Unreadable extension payload: {exc}", key=f"payload {where}",
                             member=label)
        for problem in check.problems[:5]:
            insp.add(
                "MLSEC-DATA-015",
                f"Malformed {fmt} metadata: {problem}",
                key=f"malformed {problem.split(':')[0]}",
                evidence={"problem": problem},
            )

    def _content(self, artifact: Artifact, check: SchemaCheck, is_file: bool, tally: Tally, cov: Coverage,
                 insp: Inspection, identity: tuple[int, int]) -> Exception | None:
        pa, why = pyarrow_status()
        if check.hits:
            insp.skip("content not read: the schema declares a pickled extension type", "unsafe-to-read")
            return None
        if check.problems:
            insp.skip("content not read: the metadata is malformed", "malformed")
            return None
        if pa is None:
            insp.skip(f"content (personal data, credentials) not scanned: {why}; the schema was checked",
                      "optional-dependency")
            return None
        try:
            insp.check_time()
        except DeadlineExceeded as exc:
            return exc
        # pyarrow runs in the isolated sampler process: a file that crashes or hangs it is reported
        # and the scan goes on (see mlsec.engine.arrow_client).
        remaining = max(0.001, insp.limits.timeout - (time.monotonic() - insp.started))
        timeout = min(arrow_client.REQUEST_TIMEOUT, remaining + arrow_client.GRACE)
        request = {
            "format": artifact.format, "path": os.path.abspath(artifact.fs_path),
            "dev": identity[0], "ino": identity[1], "is_file": is_file, "batches": check.batches,
            "budget": data_budget(), "bytes_total": cov.bytes_total, "rows_total": cov.rows_total,
            "remaining": remaining,
        }
        outcome = arrow_client.shared().sample(request, timeout)
        if isinstance(outcome, Failure):
            _sampler_failed(outcome, insp, timeout)
            return None
        if outcome.replaced:
            insp.skip("content not read: the file was replaced while it was being scanned", "file-changed")
            return None
        try:
            body = outcome.body
            error, deadline, unexpected = body.get("error"), body.get("deadline"), body.get("unexpected")
            if body.get("coverage") is not None:
                coverage_from_json(body["coverage"], cov)
            tally_from_json(body.get("tally"), tally)
            if error is not None and not (isinstance(error, list) and len(error) == 2
                                          and all(isinstance(e, str) for e in error)):
                raise ValueError("bad error")
            if not isinstance(deadline, bool) or not (unexpected is None or isinstance(unexpected, str)):
                raise ValueError("bad status")
        except (ValueError, TypeError, KeyError) as exc:
            _sampler_failed(Failure("crash", f"sent a malformed reply ({exc})"), insp, timeout)
            arrow_client.shared().close()
            return None
        if deadline:
            return DeadlineExceeded(f"inspection exceeded {insp.limits.timeout:g}s")
        if error is not None:
            insp.add("MLSEC-DATA-015", f"Content could not be decoded: {error[0]}: {error[1]}",
                     key="content-undecodable", evidence={"error": error[0]})
        if unexpected is not None:
            raise RuntimeError(f"Arrow sampler: {unexpected}")
        return None


def _sampler_failed(failure: Failure, insp: Inspection, timeout: float) -> None:
    """No answer about the content: a crash is HIGH, a hang a time limit, an unusable sampler a skip."""
    if failure.kind == "crash":
        insp.add("MLSEC-DATA-016", f"pyarrow crashed on this file: the isolated Arrow sampler process "
                 f"{failure.detail}; its content was not scanned", key="arrow-crash",
                 evidence={"reader": "pyarrow (isolated process)", "outcome": failure.detail})
    elif failure.kind == "timeout":
        insp.add("MLSEC-SCAN-001", f"Arrow sampler gave no answer within {timeout:g}s (the file may hang pyarrow); "
                 "its content was not scanned", key="arrow-timeout",
                 evidence={"timeout_seconds": f"{timeout:g}", "transient": "true"})
    else:
        insp.skip(f"content (personal data, credentials) not scanned: {failure.detail}; the schema was checked",
                  "reader-unavailable")


# --- results across the process boundary ------------------------------------------------

_COVERAGE_INTS = ("bytes_scanned", "bytes_total", "rows_scanned")


def coverage_to_json(cov: Coverage) -> dict[str, Any]:
    """Every field of a :class:`Coverage` (plain JSON values)."""
    return {"bytes_scanned": cov.bytes_scanned, "bytes_total": cov.bytes_total, "rows_scanned": cov.rows_scanned,
            "rows_total": cov.rows_total, "rows_estimated": cov.rows_estimated, "note": cov.note}


def coverage_from_json(data: Any, cov: Coverage) -> None:
    """Set ``cov`` from :func:`coverage_to_json` output; ValueError/TypeError on anything else."""
    if not isinstance(data, dict):
        raise TypeError("coverage is not an object")
    for name in _COVERAGE_INTS:
        if type(data[name]) is not int or data[name] < 0:
            raise ValueError(f"bad coverage {name}")
    rows_total = data["rows_total"]
    if rows_total is not None and type(rows_total) is not int:
        raise ValueError("bad coverage rows_total")
    if not isinstance(data["rows_estimated"], bool) or not isinstance(data["note"], str):
        raise TypeError("bad coverage flags")
    for name in _COVERAGE_INTS:
        setattr(cov, name, data[name])
    cov.rows_total, cov.rows_estimated, cov.note = rows_total, data["rows_estimated"], data["note"]


def tally_to_json(tally: Tally) -> list[list[Any]]:
    """The statistics of a :class:`Tally`: counts, first line, masked samples, formula functions.

    Only what the findings and facts are built from; never ``sensitive_names`` (raw key names).
    """
    return [[cat, kind, column, st.count, st.line, list(st.samples), sorted(st.extra)]
            for (cat, kind, column), st in tally.stats.items()]


def tally_from_json(data: Any, tally: Tally) -> None:
    """Add :func:`tally_to_json` output to ``tally``'s statistics; ValueError/TypeError on anything else."""
    if not isinstance(data, list):
        raise TypeError("tally is not a list")
    for entry in data:
        if not isinstance(entry, list) or len(entry) != 7:
            raise ValueError("bad tally entry")
        cat, kind, column, count, line, samples, extra = entry
        if not (isinstance(cat, str) and isinstance(kind, str) and isinstance(column, str)):
            raise TypeError("bad tally key")
        if (cat == "pii" and kind not in PII_RULES) or (cat == "formula" and kind not in ("formula", "dde")) \
                or cat not in ("pii", "secret", "formula"):
            raise ValueError(f"unknown tally kind {cat}/{kind}")
        if type(count) is not int or count < 1 or not (line is None or type(line) is int):
            raise ValueError("bad tally count")
        if not (isinstance(samples, list) and len(samples) <= MAX_SAMPLES and all(isinstance(x, str) for x in samples)):
            raise ValueError("bad tally samples")
        if not (isinstance(extra, list) and len(extra) <= 8 and all(isinstance(x, str) for x in extra)):
            raise ValueError("bad tally extra")
        tally.stats[(cat, kind, column)] = _Stat(count=count, line=line, samples=samples, extra=set(extra))
