"""ONNX models, parsed from the protobuf wire format (no ``onnx`` package, no external data read).

``onnx.load`` follows ``external_data`` locations relative to the model and reads them; a
location that is absolute, climbs out with ``..``, or goes through a symlink makes the loader
read (and a converter later write) files outside the model directory. This reader walks the
``ModelProto`` once, skipping tensor bytes with seeks, and reports:

* external-data locations that escape the model directory (CRITICAL; symlinks are checked by
  :class:`OnnxDirectoryScanner`, which needs the file system and is therefore not cached);
* tensors whose declared sizes disagree with their bytes or their external-data window;
* custom operator domains (they need a native custom-op library at run time), Python-calling
  operators, training information and model-local functions (noted).

The wire-format reader here is shared with the TensorFlow SavedModel reader: protobuf is
self-delimiting, so a reader that knows only the field numbers it cares about can skip every
other field, and all lengths are checked against the enclosing message before anything is read.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

from mlsec import __version__
from mlsec.engine import dispatch
from mlsec.engine.context import Inspection
from mlsec.engine.stream import Stream, StreamError, file_stream
from mlsec.fsio import open_regular
from mlsec.model import Artifact, Finding, Severity, Skip
from mlsec.registry import ScanContext, register

# ---------------------------------------------------------------------------------------------
# protobuf wire format
# ---------------------------------------------------------------------------------------------

_CHUNK = 1 << 16
VARINT, I64, LEN, I32 = 0, 1, 2, 5


class ProtoError(Exception):
    """The bytes are not a well-formed protobuf message (truncated, bad lengths, bad tags)."""


class WireReader:
    """Buffered, forward-only reader of protobuf primitives over a :class:`Stream`.

    ``Stream.read`` of one byte is a system call on a file; protobuf is mostly one-byte
    varints, so this keeps a 64 KiB window and only goes back to the stream for more or to
    skip large fields (tensor bytes) without reading them.
    """

    def __init__(self, stream: Stream) -> None:
        self._s = stream
        self._buf = b""
        self._i = 0
        self._pos = 0
        remaining = stream.remaining()
        self.size: int | None = None if remaining is None else remaining

    def tell(self) -> int:
        """Bytes consumed so far."""
        return self._pos

    def _ensure(self, n: int) -> bool:
        while len(self._buf) - self._i < n:
            chunk = self._s.read(max(_CHUNK, n))
            if not chunk:
                return False
            self._buf = self._buf[self._i :] + chunk
            self._i = 0
        return True

    def at_end(self) -> bool:
        """True when no byte is left."""
        return not self._ensure(1)

    def varint(self) -> int:
        """An unsigned varint (at most 10 bytes)."""
        result = shift = 0
        for _ in range(10):
            if not self._ensure(1):
                raise ProtoError(f"truncated varint at offset {self._pos}")
            b = self._buf[self._i]
            self._i += 1
            self._pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result & 0xFFFFFFFFFFFFFFFF
            shift += 7
        raise ProtoError(f"varint longer than 10 bytes at offset {self._pos}")

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (callers bound ``n`` first)."""
        if not self._ensure(n):
            raise ProtoError(f"truncated: {n} bytes wanted at offset {self._pos}")
        out = self._buf[self._i : self._i + n]
        self._i += n
        self._pos += n
        return out

    def skip(self, n: int) -> None:
        """Advance ``n`` bytes without keeping them."""
        avail = len(self._buf) - self._i
        if n <= avail:
            self._i += n
        else:
            self._buf, self._i = b"", 0
            if self._s.skip(n - avail) != n - avail:
                raise ProtoError(f"truncated: {n} bytes to skip at offset {self._pos}")
        self._pos += n


def fields(r: WireReader, end: int | None) -> Iterator[tuple[int, int, int]]:
    """Yield ``(field number, wire type, value)`` up to offset ``end`` (None: end of stream).

    For length-delimited fields ``value`` is the length; whatever part of it the caller does not
    consume (by reading, skipping or descending) is skipped before the next field, so callers
    only handle the fields they know.
    """
    while True:
        pos = r.tell()
        if end is None:
            if r.at_end():
                return
        elif pos == end:
            return
        elif pos > end:
            raise ProtoError(f"field overruns its message at offset {pos}")
        key = r.varint()
        fno, wt = key >> 3, key & 7
        if fno == 0:
            raise ProtoError(f"field number 0 at offset {pos}")
        if wt == VARINT:
            yield fno, wt, r.varint()
        elif wt == I64:
            yield fno, wt, int.from_bytes(r.read(8), "little")
        elif wt == I32:
            yield fno, wt, int.from_bytes(r.read(4), "little")
        elif wt == LEN:
            n = r.varint()
            limit = end if end is not None else (r.size if r.size is not None else None)
            if limit is not None and n > limit - r.tell():
                raise ProtoError(f"field {fno} declares {n} bytes but only {limit - r.tell()} remain")
            target = r.tell() + n
            yield fno, wt, n
            done = r.tell()
            if done > target:
                raise ProtoError(f"field {fno} read past its end at offset {done}")
            if done < target:
                r.skip(target - done)
        else:
            raise ProtoError(f"unsupported wire type {wt} (field {fno}) at offset {pos}")


def text(r: WireReader, n: int, cap: int = 4096) -> str:
    """A string field, truncated to ``cap`` bytes (the rest is skipped)."""
    data = r.read(min(n, cap))
    return data.decode("utf-8", "replace")


def signed(v: int) -> int:
    """Two's-complement int64 from a varint."""
    return v - (1 << 64) if v >= 1 << 63 else v


def packed_varints(r: WireReader, n: int, out: list[int], cap: int) -> None:
    """Append the varints of a packed repeated field (keeps at most ``cap``)."""
    end = r.tell() + n
    while r.tell() < end:
        v = signed(r.varint())
        if len(out) < cap:
            out.append(v)
    if r.tell() != end:
        raise ProtoError("packed field overruns its length")


# ---------------------------------------------------------------------------------------------
# ONNX model walk
# ---------------------------------------------------------------------------------------------

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
                              "com.microsoft", "com.microsoft.nchwc", "com.microsoft.mlfeaturizers",
                              "org.pytorch.aten", "com.ms.internal.nhwc"})
# Operators that call back into Python functions registered in the loading process.
PYTHON_OPS = frozenset({"PyOp", "PyOpFunc", "PythonOp", "PyFunc", "PythonOpGrad"})
# TensorProto.data_type -> bits per element (0: variable-size, e.g. strings).
_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 8: 0, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
         14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2}
_MAX_GRAPH_DEPTH = 32
_MAX_DIMS = 64


@dataclass
class ExternalRef:
    """One tensor stored outside the model file."""

    tensor: str
    location: str
    offset: int | None
    length: int | None
    expected: int | None  # bytes implied by dims x data type


@dataclass
class OnnxInfo:
    """What the walk found (facts and inputs for the file-system checks)."""

    producer: str = ""
    external: list[ExternalRef] = field(default_factory=list)
    domains: set[str] = field(default_factory=set)
    local_functions: set[tuple[str, str]] = field(default_factory=set)


class _Walk:
    def __init__(self, r: WireReader, insp: Inspection, member: str | None) -> None:
        self.r, self.insp, self.member = r, insp, member
        self.info = OnnxInfo()
        self.custom_nodes: dict[str, tuple[str, str]] = {}  # domain -> first (op, node)

    # -- messages --------------------------------------------------------------------------------
    def model(self) -> None:
        r = self.r
        for fno, wt, v in fields(r, None):
            if fno == 2 and wt == LEN:
                self.info.producer = text(r, v, 256)
            elif fno == 7 and wt == LEN:
                self.graph(r.tell() + v, "graph", 0)
            elif fno == 20 and wt == LEN:
                self.note("training", "Model carries training information (TrainingInfoProto: extra graphs run "
                          "by training runtimes)", {"field": "training_info"})
                self.training(r.tell() + v)
            elif fno == 25 and wt == LEN:
                self.function(r.tell() + v)
            elif fno == 8 and wt == LEN:
                self.opset(r.tell() + v)

    def opset(self, end: int) -> None:
        for fno, wt, v in fields(self.r, end):
            if fno == 1 and wt == LEN:
                self.info.domains.add(text(self.r, v, 256))

    def training(self, end: int) -> None:
        for fno, wt, v in fields(self.r, end):
            if fno in (1, 2) and wt == LEN:
                self.graph(self.r.tell() + v, f"training_info.{'initialization' if fno == 1 else 'algorithm'}", 1)

    def function(self, end: int) -> None:
        name = domain = ""
        r = self.r
        for fno, wt, v in fields(r, end):
            if fno == 1 and wt == LEN:
                name = text(r, v, 256)
            elif fno == 10 and wt == LEN:
                domain = text(r, v, 256)
            elif fno == 7 and wt == LEN:
                self.node(r.tell() + v, f"function {name or '?'}", 1)
        self.info.local_functions.add((domain, name))
        self.note(f"function {domain}:{name}", f"Model defines a local function {domain or '(default)'}:{name} "
                  "(its nodes were inspected like the main graph)", {"function": name, "domain": domain})

    def graph(self, end: int, scope: str, depth: int) -> None:
        if depth > _MAX_GRAPH_DEPTH:
            raise ProtoError(f"subgraphs nested deeper than {_MAX_GRAPH_DEPTH} levels")
        r = self.r
        for fno, wt, v in fields(r, end):
            if fno == 1 and wt == LEN:
                self.node(r.tell() + v, scope, depth)
            elif fno == 5 and wt == LEN:
                self.tensor(r.tell() + v, scope)
            elif fno == 15 and wt == LEN:  # SparseTensorProto: values and indices are tensors
                for sfno, swt, sv in fields(r, r.tell() + v):
                    if sfno in (1, 2) and swt == LEN:
                        self.tensor(r.tell() + sv, scope)

    def node(self, end: int, scope: str, depth: int) -> None:
        r = self.r
        name = op = domain = ""
        for fno, wt, v in fields(r, end):
            if fno == 3 and wt == LEN:
                name = text(r, v, 256)
            elif fno == 4 and wt == LEN:
                op = text(r, v, 256)
            elif fno == 7 and wt == LEN:
                domain = text(r, v, 256)
            elif fno == 5 and wt == LEN:
                self.attribute(r.tell() + v, scope, depth)
        if op in PYTHON_OPS:
            self.insp.add(
                "MLSEC-ONNX-003",
                f"Operator {domain or 'ai.onnx'}:{op} (node {name or '?'}) calls a Python function registered in "
                "the loading process",
                key=f"python-op {domain}:{op}",
                member=self.member,
                evidence={"op": op, "domain": domain, "node": name, "scope": scope},
            )
        elif domain not in STANDARD_DOMAINS:
            self.custom_nodes.setdefault(domain, (op, name))

    def attribute(self, end: int, scope: str, depth: int) -> None:
        r = self.r
        for fno, wt, v in fields(r, end):
            if fno == 6 and wt == LEN or fno == 11 and wt == LEN:
                self.graph(r.tell() + v, f"{scope}/subgraph", depth + 1)
            elif fno in (5, 10) and wt == LEN:
                self.tensor(r.tell() + v, scope)

    def tensor(self, end: int, scope: str) -> None:
        r = self.r
        dims: list[int] = []
        dtype = 0
        name = ""
        raw: int | None = None
        location = 0
        ext: dict[str, str] = {}
        for fno, wt, v in fields(r, end):
            if fno == 1:
                if wt == LEN:
                    packed_varints(r, v, dims, _MAX_DIMS + 1)
                elif wt == VARINT and len(dims) <= _MAX_DIMS:
                    dims.append(signed(v))
            elif fno == 2 and wt == VARINT:
                dtype = v
            elif fno == 8 and wt == LEN:
                name = text(r, v, 256)
            elif fno == 9 and wt == LEN:
                raw = v  # skipped, never read
            elif fno == 14 and wt == VARINT:
                location = v
            elif fno == 13 and wt == LEN:
                key = value = ""
                for efno, ewt, ev in fields(r, r.tell() + v):
                    if efno == 1 and ewt == LEN:
                        key = text(r, ev, 256)
                    elif efno == 2 and ewt == LEN:
                        value = text(r, ev, 4096)
                if key:
                    ext[key] = value
        self.check_tensor(name or "?", dims, dtype, raw, location, ext)

    # -- checks ----------------------------------------------------------------------------------
    def check_tensor(self, name: str, dims: list[int], dtype: int, raw: int | None, location: int,
                     ext: dict[str, str]) -> None:
        expected = _expected_bytes(dims, dtype)
        if any(d < 0 for d in dims) or len(dims) > _MAX_DIMS:
            self.size_issue(name, f"tensor {name!r} has invalid dimensions", {"dims": _dims(dims)})
            expected = None
        if raw is not None and expected is not None and raw != expected:
            self.size_issue(name, f"tensor {name!r} holds {raw} bytes but its shape and type need {expected}",
                            {"dims": _dims(dims), "data_type": str(dtype), "raw_bytes": str(raw)})
        if location != 1 and not ext:
            return
        where = ext.get("location", "")
        offset = _int_or_none(ext.get("offset"))
        length = _int_or_none(ext.get("length"))
        if not where:
            self.size_issue(name, f"tensor {name!r} is marked external but names no location", {})
            return
        self.info.external.append(ExternalRef(name, where, offset, length, expected))
        reason = escapes(where)
        if reason:
            self.insp.add(
                "MLSEC-ONNX-001",
                f"External data of tensor {name!r} points outside the model directory ({reason}): {where!r}",
                key=f"external-escape {where}",
                member=self.member,
                evidence={"tensor": name, "location": where, "reason": reason},
            )
        for label, val in (("offset", ext.get("offset")), ("length", ext.get("length"))):
            if val is not None and _int_or_none(val) is None:
                self.size_issue(name, f"tensor {name!r} has a non-numeric external {label} {val!r}", {label: val[:64]})
        if length is not None and expected is not None and length != expected:
            self.size_issue(name, f"tensor {name!r} declares {length} external bytes but its shape and type need "
                            f"{expected}", {"length": str(length), "expected": str(expected), "dims": _dims(dims)})

    def size_issue(self, tensor: str, message: str, evidence: dict[str, str]) -> None:
        self.insp.add("MLSEC-ONNX-002", message[0].upper() + message[1:], key=f"size {tensor}",
                      member=self.member, evidence={"tensor": tensor, **evidence})

    def note(self, key: str, message: str, evidence: dict[str, str]) -> None:
        self.insp.add("MLSEC-ONNX-004", message, key=key, member=self.member, evidence=evidence)

    def finish(self) -> None:
        for domain, (op, node) in sorted(self.custom_nodes.items()):
            if any(d == domain for d, _ in self.info.local_functions):
                continue  # resolved by a function defined in the model itself
            self.insp.add(
                "MLSEC-ONNX-003",
                f"Custom operator domain {domain!r} (e.g. {op} in node {node or '?'}): running the model needs a "
                "native custom-operator library",
                key=f"domain {domain}",
                member=self.member,
                severity=Severity.LOW,
                evidence={"domain": domain, "op": op, "node": node},
            )


def _dims(dims: list[int]) -> str:
    return "x".join(str(d) for d in dims[:8]) + ("x..." if len(dims) > 8 else "")


def _int_or_none(text_value: str | None) -> int | None:
    if text_value is None:
        return None
    try:
        value = int(text_value.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _expected_bytes(dims: list[int], dtype: int) -> int | None:
    bits = _BITS.get(dtype)
    if not bits or any(d < 0 for d in dims):
        return None
    count = 1
    for d in dims:
        count *= d
    return (count * bits + 7) // 8


def escapes(location: str) -> str:
    """Why an external-data location leaves the model directory, or "" when it stays inside."""
    loc = location.replace("\\", "/")
    if loc.startswith("/") or (len(loc) > 1 and loc[1] == ":"):
        return "absolute path"
    if "://" in loc or loc.lower().startswith("file:"):
        return "URL"
    if "\0" in loc:
        return "NUL byte in path"
    norm = posixpath.normpath(loc)
    if norm == ".." or norm.startswith("../") or ".." in loc.split("/"):
        return "'..' component"
    return ""


def walk(stream: Stream, insp: Inspection, member: str | None) -> OnnxInfo | None:
    """Walk the model; a malformed protobuf becomes a finding and None is returned."""
    w = _Walk(WireReader(stream), insp, member)
    try:
        w.model()
    except ProtoError as exc:
        insp.add("MLSEC-ONNX-005", f"Malformed ONNX protobuf: {exc}", key="malformed", member=member,
                 evidence={"error": str(exc)[:200]})
        w.finish()
        return None
    w.finish()
    return w.info


@dispatch.handles("onnx")
def inspect_onnx(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Content checks of one ONNX model (file-system checks are in OnnxDirectoryScanner)."""
    if stream.at_end():
        insp.add("MLSEC-ONNX-005", "Empty ONNX file", key="malformed", member=member)
        return
    walk(stream, insp, member)


# ---------------------------------------------------------------------------------------------
# file-system checks (not cached: they depend on files next to the model)
# ---------------------------------------------------------------------------------------------


@register
class OnnxDirectoryScanner:
    """Resolves external-data files next to an ONNX model: symlinks out, missing files, sizes."""

    name = "mlsec-onnx-external"
    version = f"{__version__}+1"
    cacheable = False  # the answer depends on other files in the directory

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """ONNX models on disk."""
        return "mlsec" in ctx.engines and artifact.format == "onnx" and bool(artifact.fs_path)

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        """Re-walk the model quietly, then check each external location on disk."""
        quiet = Inspection(path=artifact.path, scanner=self.name, limits=ctx.limits)
        try:
            with open_regular(artifact.fs_path) as fh:
                info = walk(file_stream(fh), quiet, None)
        except (OSError, StreamError):
            return
        if info is None or not info.external:
            return
        insp = Inspection(path=artifact.path, scanner=self.name, limits=ctx.limits)
        base = os.path.realpath(os.path.dirname(artifact.fs_path))
        for ref in info.external:
            if escapes(ref.location):
                continue  # already CRITICAL from the content check
            _check_on_disk(ref, base, insp)
        yield from insp.findings


def _check_on_disk(ref: ExternalRef, base: str, insp: Inspection) -> None:
    target = os.path.join(base, ref.location)
    real = os.path.realpath(target)
    if os.path.commonpath([real, base]) != base:
        insp.add(
            "MLSEC-ONNX-001",
            f"External data of tensor {ref.tensor!r} ({ref.location!r}) resolves outside the model directory "
            "through a symlink",
            key=f"external-symlink {ref.location}",
            evidence={"tensor": ref.tensor, "location": ref.location, "reason": "symlink"},
        )
        return
    try:
        size = os.stat(real).st_size
    except OSError:
        insp.add("MLSEC-ONNX-002", f"External data file {ref.location!r} of tensor {ref.tensor!r} is missing",
                 key=f"external-missing {ref.location}", severity=Severity.LOW,
                 evidence={"tensor": ref.tensor, "location": ref.location})
        return
    start = ref.offset or 0
    length = ref.length if ref.length is not None else ref.expected
    if start > size or (length is not None and start + length > size):
        insp.add(
            "MLSEC-ONNX-002",
            f"External data of tensor {ref.tensor!r} lies beyond the end of {ref.location!r} ({size} bytes)",
            key=f"external-range {ref.tensor}",
            evidence={"tensor": ref.tensor, "location": ref.location, "offset": str(start),
                      "length": str(length), "file_size": str(size)},
        )
