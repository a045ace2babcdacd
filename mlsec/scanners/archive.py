"""Readers for containers: zip (from raw headers), tar, and compressed streams.

Why not ``zipfile``: it rejects entries whose flag bits claim encryption, stops on CRC errors
and trusts the central directory — while PyTorch's loader reads the raw data regardless. Those
differences are known scanner bypasses, so this reader parses headers itself, reads every
entry it can, and reports each inconsistency as a finding instead of giving up.

Every decompressing stream is charged against the artifact's expansion budget and checked
for bomb-like ratios; hitting a limit is a finding and the scan continues.
"""

from __future__ import annotations

import bz2
import io
import itertools
import lzma
import posixpath
import struct
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from mlsec.engine import dispatch
from mlsec.engine.context import Inspection, join_member, random_access
from mlsec.engine.stream import BudgetExceeded, CorruptData, Stream

_READ = 1 << 16


class _Decompressing(io.RawIOBase):
    """File-like view of decompressed data, produced incrementally with bounded output.

    Readers ask for a few bytes at a time (the pickle engine reads opcode by opcode), and a
    decompressor asked for one byte returns one byte per call: that doubled the time of a
    gzipped pickle. zlib streams are therefore decompressed a block ahead. A damaged block must
    not swallow the good bytes before the damage (a hostile pickle right before garbage): the
    decompressor is copied before each call and, on damage, the input is replayed byte by byte
    from the copy (:meth:`_salvage`). Damage and a crossed expansion limit are raised only
    after the bytes produced before them have been read.
    """

    def __init__(self, source: Stream, make: Any, insp: Inspection, label: str, multi: bool) -> None:
        self._src = source
        self._make = make
        self._dec = make()
        self._insp = insp
        self._label = label
        self._multi = multi
        self._pending = b""
        self._in = 0
        self._out = 0
        self._done = False
        self._ready = b""  # produced ahead; bytes before _rpos were read
        self._rpos = 0
        self._error: Exception | None = None  # damage or a limit, raised once _ready is read

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:
        n = _READ if n is None or n < 0 else max(n, 1)
        if self._rpos >= len(self._ready):
            if self._error is not None:
                raise self._error
            self._ready, self._rpos = self._produce(n), 0
        out = self._ready[self._rpos : self._rpos + n]  # an offset, not a re-slice of the rest per read
        self._rpos += len(out)
        return out

    def _produce(self, n: int) -> bytes:
        """Up to ``n`` bytes, or a block of at least ``n`` when reading ahead is safe."""
        while not self._done:
            dec = self._dec
            if dec.eof:
                rest = dec.unused_data + self._pending
                if self._multi and (rest or self._src.peek(1)):
                    self._dec = self._make()  # concatenated members (gzip/bz2/xz allow it)
                    self._pending = rest
                    continue
                self._done = True
                break
            tail = getattr(dec, "unconsumed_tail", b"")  # zlib keeps input it had no room for
            if tail:
                chunk = tail
            elif self._pending:
                chunk, self._pending = self._pending, b""
            elif getattr(dec, "needs_input", True):  # bz2/lzma may still hold output
                chunk = self._src.read(_READ)
                self._in += len(chunk)
            else:
                chunk = b""
            saved = dec.copy() if hasattr(dec, "copy") else None  # zlib: damage can be salvaged
            ahead = saved is not None and n < _READ
            try:
                out = dec.decompress(chunk, _READ if ahead else n)
            except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
                if saved is None:
                    raise CorruptData(f"{self._label}: {exc}") from None
                out = self._salvage(saved, chunk)  # the bytes before the damage; the error after them
            if out:
                self._out += len(out)
                limits = self._insp.limits
                if self._out > limits.ratio_floor and self._out > limits.max_ratio * max(self._in, 1):
                    self._error = BudgetExceeded(
                        f"{self._label}: expands more than {limits.max_ratio}x "
                        f"({self._in} compressed bytes gave over {self._out})"
                    )
                return out
            if self._error is not None:
                raise self._error  # damage right at the start of this block: nothing to hand out
            if not chunk and not dec.eof:
                raise CorruptData(f"{self._label}: compressed stream ends early")
        return b""

    def _salvage(self, dec: Any, chunk: bytes) -> bytes:
        """Replay ``chunk`` one input byte at a time from before the failed call: every byte
        inflated before the damage is kept (a payload just before garbage is still read), and
        the damage is raised once they have been read."""
        good = bytearray()
        for i in range(len(chunk)):
            try:
                good += dec.decompress(chunk[i : i + 1])
            except zlib.error as exc:
                self._error = CorruptData(f"{self._label}: {exc}")
                break
            if len(good) > self._insp.limits.keep_bytes:
                self._error = CorruptData(f"{self._label}: damaged compressed data")
                break
        else:
            self._error = CorruptData(f"{self._label}: damaged compressed data")
        self._done = True
        return bytes(good)


def decompressed(source: Stream, insp: Inspection, make: Any, label: str, multi: bool = False) -> Stream:
    """A non-seekable Stream of the decompressed content of ``source``."""
    raw = _Decompressing(source, make, insp, label, multi)
    return Stream(raw, seekable=False, budget=insp)  # type: ignore[arg-type]


_CODECS: dict[str, tuple[Any, bool]] = {
    "gzip": (lambda: zlib.decompressobj(31), True),
    "zlib": (lambda: zlib.decompressobj(), False),
    "bz2": (bz2.BZ2Decompressor, True),
    "xz": (lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), True),
    "lzma": (lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE), False),
}


@dispatch.handles(*_CODECS)
def inspect_compressed(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Decompress (streaming) and inspect the content."""
    from mlsec.sniff import HEAD_SIZE, sniff

    fmt = sniff(stream.peek(HEAD_SIZE))
    make, multi = _CODECS[fmt]
    label = join_member(member, fmt)
    inner = decompressed(stream, insp, make, label, multi)
    guarded(lambda: dispatch.inspect(inner, insp, label, depth + 1), insp, label)


@dispatch.handles("zstd", "lz4")
def inspect_unsupported_codec(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Compression we cannot decode without optional packages: say so, never pass as clean."""
    from mlsec.sniff import HEAD_SIZE, sniff

    fmt = sniff(stream.peek(HEAD_SIZE))
    insp.add(
        "MLSEC-ARCHIVE-006",
        f"{fmt} compressed content cannot be inspected (decoder not available)",
        key=f"codec {fmt}",
        member=member,
        evidence={"format": fmt},
    )


def guarded(fn: Any, insp: Inspection, label: str) -> None:
    """Run a nested inspection; decompression damage and bombs become findings."""
    try:
        fn()
    except BudgetExceeded as exc:
        insp.add("MLSEC-ARCHIVE-001", f"Decompression stopped: {exc}", key=f"bomb {label}", member=label)
    except CorruptData as exc:
        insp.add("MLSEC-ARCHIVE-002", f"Corrupt compressed data: {exc}", key=f"corrupt {label}", member=label)


# ---------------------------------------------------------------------------------------------
# zip
# ---------------------------------------------------------------------------------------------


@dataclass
class ZipEntry:
    """One entry as the central directory (or a local header, as a fallback) describes it."""

    name: str
    flags: int
    method: int
    csize: int
    usize: int
    local_offset: int
    data_offset: int = -1


def escapes(name: str) -> bool:
    """An archive member name that extraction would place outside its folder: absolute, a drive
    letter, or a ``..`` part (with either slash: extractors on Windows take both)."""
    norm = name.replace("\\", "/")
    return norm.startswith("/") or ".." in norm.split("/") or (len(norm) > 1 and norm[1] == ":")


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if tag != 1:
            continue
        vals = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
        it = iter(vals)
        if usize == 0xFFFFFFFF:
            usize = next(it, usize)
        if csize == 0xFFFFFFFF:
            csize = next(it, csize)
        if offset == 0xFFFFFFFF:
            offset = next(it, offset)
    return usize, csize, offset


def _central_directory(raw: BinaryIO, size: int, limit: int) -> tuple[list[ZipEntry], int] | None:
    """Up to ``limit`` entries from the central directory and the count its end record
    declares, or None when it cannot be found or read.

    The directory is read in 1 MiB chunks and parsing stops at the limit: a zip of millions of
    tiny entries costs no more memory than one of ``limit`` entries.
    """
    tail_len = min(size, 65_557)
    raw.seek(size - tail_len)
    tail = raw.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    (_, _, _, _, total, cd_size, cd_offset, _) = struct.unpack_from("<4sHHHHIIH", tail, at)
    eocd_abs = size - tail_len + at
    loc = tail.rfind(b"PK\x06\x07", 0, at)
    if loc >= 0 and (total == 0xFFFF or cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF):
        (z64_offset,) = struct.unpack_from("<Q", tail, loc + 8)
        raw.seek(z64_offset)
        rec = raw.read(56)
        if rec[:4] == b"PK\x06\x06" and len(rec) == 56:
            total, cd_size, cd_offset = struct.unpack_from("<QQQ", rec, 32)
    if cd_offset + cd_size > eocd_abs + 1 or cd_size > 1 << 31:
        return None
    entries: list[ZipEntry] = []
    raw.seek(cd_offset)
    left, buf, pos = cd_size, b"", 0

    def fill(need: int) -> bool:
        nonlocal buf, pos, left
        while len(buf) - pos < need and left > 0:
            chunk = raw.read(min(1 << 20, left))
            if not chunk:
                left = 0
                break
            left -= len(chunk)
            buf, pos = buf[pos:] + chunk, 0
        return len(buf) - pos >= need

    while len(entries) < limit and fill(46) and buf[pos : pos + 4] == b"PK\x01\x02":
        flags, method = struct.unpack_from("<HH", buf, pos + 8)
        csize, usize, nlen, xlen, clen = struct.unpack_from("<IIHHH", buf, pos + 20)
        (loff,) = struct.unpack_from("<I", buf, pos + 42)
        if not fill(46 + nlen + xlen + clen):
            break
        name = buf[pos + 46 : pos + 46 + nlen].decode("utf-8", "replace")
        extra = buf[pos + 46 + nlen : pos + 46 + nlen + xlen]
        usize, csize, loff = _zip64_extra(extra, usize, csize, loff)
        entries.append(ZipEntry(name, flags, method, csize, usize, loff))
        pos += 46 + nlen + xlen + clen
    return (entries, total) if entries or total == 0 else None


def _local_scan(raw: BinaryIO, size: int, limit: int) -> list[ZipEntry]:
    """Fallback: walk local file headers from the start (no central directory)."""
    entries: list[ZipEntry] = []
    pos = 0
    while pos + 30 <= size and len(entries) < limit:
        raw.seek(pos)
        head = raw.read(30)
        if head[:4] != b"PK\x03\x04":
            break
        flags, method = struct.unpack_from("<HH", head, 6)
        csize, usize, nlen, xlen = struct.unpack_from("<IIHH", head, 18)
        name = raw.read(nlen).decode("utf-8", "replace")
        extra = raw.read(xlen)
        usize, csize, _ = _zip64_extra(extra, usize, csize, 0)
        data = pos + 30 + nlen + xlen
        entries.append(ZipEntry(name, flags, method, csize, usize, pos, data))
        if flags & 0x08 and csize == 0:
            break  # streamed entry with unknown size: cannot find the next header reliably
        pos = data + csize
    return entries


def _member_stream(stream: Stream, insp: Inspection, entry: ZipEntry, label: str) -> Stream | None:
    window = stream.window(entry.data_offset, entry.csize)
    if entry.method == 0:
        return window
    codecs = {
        8: lambda: zlib.decompressobj(-15),
        12: bz2.BZ2Decompressor,
        14: None,
    }
    if entry.method == 8 or entry.method == 12:
        return decompressed(window, insp, codecs[entry.method], label)
    if entry.method == 14:
        # zip's LZMA: 2-byte version, 2-byte properties size, properties, raw LZMA1 data.
        head = window.read(4)
        if len(head) < 4:
            return None
        psize = struct.unpack_from("<H", head, 2)[0]
        props = window.read(psize)
        try:
            filters = [lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)]  # type: ignore[attr-defined]
        except Exception:
            return None
        return decompressed(window, insp, lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters), label)
    return None


@dispatch.handles("zip")
def inspect_zip(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Inspect every zip entry that can be located, from the raw headers."""
    from mlsec.scanners import model_keras, model_torch

    if not stream.seekable:
        # A zip inside a compressed stream: zip needs random access. Keep it in memory when small.
        buffered = random_access(stream, insp, member, "Zip archive", "zip-in-stream")
        if buffered is None:
            return
        stream = buffered
    elif stream.tell():
        # The zip follows other data (a pickle, a stub): its offsets count from where it starts.
        stream = stream.window(stream.tell(), stream.remaining() or 0)
    raw, base, size = stream.raw, stream.absolute_start, stream.length or 0
    view = _Window(raw, base, size)
    found = _central_directory(view, size, insp.limits.max_members + 1)  # type: ignore[arg-type]
    declared = found[1] if found is not None else 0
    entries = found[0] if found is not None else None
    if entries is None:
        entries = _local_scan(view, size, insp.limits.max_members + 1)  # type: ignore[arg-type]
        insp.add(
            "MLSEC-ARCHIVE-002",
            f"Zip central directory missing or unreadable; read {len(entries)} entries from local headers",
            key="no-central-directory",
            member=member,
        )
    if len(entries) > insp.limits.max_members:
        insp.add(
            "MLSEC-ARCHIVE-004",
            f"Zip has more than {insp.limits.max_members} entries; only the first were inspected",
            key="max-members",
            member=member,
            evidence={"declared_entries": str(declared)} if declared > insp.limits.max_members else {},
        )
        entries = entries[: insp.limits.max_members]
    _check_entries(view, size, entries, insp, member)
    torch_layout = model_torch.TorchZip.detect(entries)
    keras_layout = torch_layout is None and model_keras.is_keras_zip([e.name for e in entries])
    for entry in entries:
        insp.check_time()
        if entry.data_offset < 0 or entry.name.endswith("/"):
            continue
        label = join_member(member, entry.name)
        if torch_layout is not None and not torch_layout.should_inspect(entry.name):
            continue
        inner = _member_stream(stream, insp, entry, label)
        if inner is None:
            insp.add(
                "MLSEC-ARCHIVE-006",
                f"Entry {entry.name} uses compression method {entry.method} or encryption; content not inspected",
                key=f"method {entry.name}",
                member=member,
                evidence={"entry": entry.name, "method": str(entry.method)},
            )
            continue
        if torch_layout is not None and entry.name.endswith(".pkl"):
            guarded(lambda: model_torch.inspect_data_pickle(torch_layout, inner, insp, label, depth + 1), insp, label)
        elif keras_layout and entry.name == "config.json":
            guarded(lambda: model_keras.inspect_keras_config(inner, insp, label, depth + 1), insp, label)
        else:
            guarded(lambda: dispatch.inspect(inner, insp, label, depth + 1, entry.name), insp, label)
    if torch_layout is not None:
        torch_layout.finish(stream, insp, member, depth)


class _Window:
    """Random-access view of a stream's bytes (zip needs to seek around)."""

    def __init__(self, raw: BinaryIO, base: int, size: int) -> None:
        self._raw, self._base, self._size, self._pos = raw, base, size, 0

    def seek(self, pos: int) -> None:
        self._pos = max(0, min(pos, self._size))

    def read(self, n: int) -> bytes:
        n = max(0, min(n, self._size - self._pos))
        self._raw.seek(self._base + self._pos)
        data = self._raw.read(n)
        self._pos += len(data)
        return data


def _check_entries(view: _Window, size: int, entries: list[ZipEntry], insp: Inspection, member: str | None) -> None:
    """Resolve each entry's data offset from its local header and report inconsistencies."""
    seen: dict[str, int] = {}
    spans: list[tuple[int, int, str]] = []
    for entry in entries:
        name = entry.name
        if name in seen:
            insp.add("MLSEC-ARCHIVE-005", f"Duplicate zip entry name {name!r}", key=f"dup {name}", member=member)
        seen[name] = 1
        if escapes(name):
            insp.add(
                "MLSEC-ARCHIVE-003",
                f"Zip entry {name!r} escapes the extraction directory",
                key=f"slip {name}",
                member=member,
            )
        if entry.data_offset < 0:
            view.seek(entry.local_offset)
            head = view.read(30)
            if len(head) < 30 or head[:4] != b"PK\x03\x04":
                insp.add(
                    "MLSEC-ARCHIVE-002",
                    f"Zip entry {name!r}: local header missing at offset {entry.local_offset}",
                    key=f"nolocal {name}",
                    member=member,
                )
                continue
            _lflags, lmethod = struct.unpack_from("<HH", head, 6)
            nlen, xlen = struct.unpack_from("<HH", head, 26)
            lname = view.read(nlen).decode("utf-8", "replace")
            entry.data_offset = entry.local_offset + 30 + nlen + xlen
            if lname != name or lmethod != entry.method:
                insp.add(
                    "MLSEC-ARCHIVE-005",
                    f"Zip entry {name!r}: local header says {lname!r} (method {lmethod}), central says method {entry.method}",
                    key=f"mismatch {name}",
                    member=member,
                )
        if entry.flags & 0x1:
            insp.add(
                "MLSEC-ARCHIVE-005",
                f"Zip entry {name!r} has the encryption flag set; read as plain data (loaders ignore the flag)",
                key=f"encflag {name}",
                member=member,
                evidence={"entry": name, "flags": hex(entry.flags)},
            )
        if entry.data_offset + entry.csize > size:
            insp.add(
                "MLSEC-ARCHIVE-002",
                f"Zip entry {name!r} runs past the end of the archive",
                key=f"trunc {name}",
                member=member,
            )
            entry.csize = max(0, size - entry.data_offset)
        spans.append((entry.data_offset, entry.data_offset + entry.csize, name))
    spans.sort()
    for (s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
        if s2 < e1 and e1 > s1:
            insp.add(
                "MLSEC-ARCHIVE-005",
                f"Zip entries {n1!r} and {n2!r} overlap (a zip-bomb and scanner-evasion technique)",
                key=f"overlap {n1} {n2}",
                member=member,
            )
            break


# ---------------------------------------------------------------------------------------------
# tar
# ---------------------------------------------------------------------------------------------


class _StreamFile(io.RawIOBase):
    """Adapter: a Stream as the minimal file object tarfile's streaming mode needs."""

    def __init__(self, stream: Stream) -> None:
        self._s = stream

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._s.read(n if n is not None and n >= 0 else 1 << 20)

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


@dispatch.handles("tar")
def inspect_tar(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Inspect tar members in order (streaming mode: works inside compressed streams too)."""
    from mlsec.scanners import model_torch

    count = 0
    names: list[str] = []
    try:
        with tarfile.open(fileobj=_StreamFile(stream), mode="r|") as tar:
            for info in tar:
                insp.check_time()
                count += 1
                if count > insp.limits.max_members:
                    insp.add(
                        "MLSEC-ARCHIVE-004",
                        f"Tar has more than {insp.limits.max_members} members; the rest was not inspected",
                        key="max-members",
                        member=member,
                    )
                    return
                name = info.name
                names.append(name)
                if escapes(name):
                    insp.add("MLSEC-ARCHIVE-003", f"Tar member {name!r} escapes the extraction directory",
                             key=f"slip {name}", member=member)
                if info.issym() or info.islnk():
                    target = info.linkname
                    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                    if target.startswith("/") or resolved.startswith(".."):
                        insp.add(
                            "MLSEC-ARCHIVE-003",
                            f"Tar link {name!r} points outside the archive ({target!r})",
                            key=f"link {name}",
                            member=member,
                        )
                    continue
                if not info.isfile():
                    continue
                fh = tar.extractfile(info)
                if fh is None:
                    continue
                label = join_member(member, name)
                inner = Stream(fh, seekable=False)  # type: ignore[arg-type]
                if model_torch.is_legacy_tar_member(name):
                    guarded(lambda: model_torch.inspect_legacy_tar_member(name, inner, insp, label, depth + 1), insp, label)
                else:
                    guarded(lambda: dispatch.inspect(inner, insp, label, depth + 1, name), insp, label)
    except tarfile.TarError as exc:
        insp.add("MLSEC-ARCHIVE-002", f"Tar archive is corrupt: {exc}", key="tar-corrupt", member=member)
    except (EOFError, OSError) as exc:
        insp.add("MLSEC-ARCHIVE-002", f"Tar archive is truncated: {exc}", key="tar-truncated", member=member)
