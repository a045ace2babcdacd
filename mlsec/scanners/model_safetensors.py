"""safetensors: validate the header without loading a tensor.

The format is an 8-byte little-endian header length N, N bytes of JSON (tensor name ->
dtype, shape, ``[begin, end)`` offsets into the data section, plus an optional
``__metadata__`` map of strings), then the data section. safetensors cannot run code, which is
why it is the recommended format, but a file can still lie: offsets outside the file or
overlapping (loaders disagree on what they read), a header that is not what the reference
parser accepts, and bytes after the last tensor that no loader looks at — a place to hide a
pickle or an archive that a later tool may pick up. Those bytes are reported, and inspected
when they sniff as a known format.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from mlsec.engine import dispatch
from mlsec.engine.context import Inspection, join_member
from mlsec.engine.stream import Stream, bytes_stream
from mlsec.sniff import HEAD_SIZE, sniff

MAX_HEADER = 100_000_000      # the reference implementation refuses larger headers
PARSE_LIMIT = 32 << 20        # larger (legal) headers are reported, not parsed, to bound memory
MAX_TENSORS_REPORTED = 5      # per problem kind, so a broken file gives a few findings, not thousands

# dtype -> bits per element (safetensors 0.6: sub-byte float formats count in bits).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def _bad(insp: Inspection, member: str | None, key: str, message: str, evidence: dict[str, str] | None = None) -> None:
    insp.add("MLSEC-SAFETENSORS-001", message, key=key, member=member, evidence=evidence)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k[:80]!r}")
        seen[k] = v
    return seen


@dispatch.handles("safetensors")
def inspect_safetensors(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Check the header, the tensor layout and whatever follows the last tensor."""
    if stream.seekable and stream.tell() == 0:
        _as_pickle(stream, insp, member, depth)
    head = stream.read(8)
    total = stream.length
    if len(head) < 8:
        _bad(insp, member, "truncated", f"File ends after {len(head)} bytes, inside the 8-byte header length")
        return
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER or (total is not None and n > total - 8):
        where = f"the file has {total - 8} bytes after it" if total is not None else "the limit is 100 MB"
        _bad(insp, member, "header-length", f"Header length {n} is impossible ({where})",
             {"header_length": str(n)})
        return
    if n > PARSE_LIMIT:
        insp.add("MLSEC-SAFETENSORS-002", f"Header of {n} bytes is larger than mlsec parses ({PARSE_LIMIT}); "
                 "tensors not checked", key="header-too-large", member=member, evidence={"header_length": str(n)})
        return
    raw = stream.read_exact(n)
    if raw is None:
        _bad(insp, member, "truncated", f"File ends inside the {n}-byte header")
        return
    header = _parse(raw, insp, member)
    if header is None:
        return
    data_start = 8 + n
    data_len = None if total is None else total - data_start
    last_end = _check_tensors(header, data_len, insp, member)
    if last_end is None:
        return
    _trailing(stream, insp, member, depth, data_start, last_end, data_len)


def _as_pickle(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Read the file as a pickle too when its first bytes parse as one.

    The 8-byte length can be a pickle prefix (``C`` + a length byte is SHORT_BINBYTES), and a
    chain of such skips through a metadata string can land ``pickle.load`` on a payload in the
    tensor data: the file is then a working pickle and valid safetensors at once. Damage found
    by this reading is expected (most such files are plain safetensors) and not reported.
    """
    from mlsec.engine.pickle import looks_like_pickle

    if not looks_like_pickle(stream.peek(HEAD_SIZE)):
        return
    scratch = Inspection(path=insp.path, scanner=insp.scanner, limits=insp.limits, started=insp.started)
    dispatch.run_format("pickle", stream.window(0, stream.length or 0), scratch, member, depth)
    for finding in scratch.findings:
        if finding.rule_id != "MLSEC-PICKLE-005" and finding not in insp.findings:
            insp.findings.append(finding)


def _parse(raw: bytes, insp: Inspection, member: str | None) -> dict[str, Any] | None:
    if not raw.lstrip(b" ").startswith(b"{"):
        _bad(insp, member, "not-json", "Header is not a JSON object")
        return None
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        _bad(insp, member, "not-utf8", "Header is not valid UTF-8")
        return None
    except (ValueError, RecursionError) as exc:
        _bad(insp, member, "bad-json", f"Header is not valid JSON: {str(exc)[:160]}")
        return None
    if not isinstance(value, dict):
        _bad(insp, member, "not-json", "Header is not a JSON object")
        return None
    meta = value.get("__metadata__")
    if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
        _bad(insp, member, "metadata", "__metadata__ must map strings to strings (the reference parser "
             "rejects anything else)", {"type": type(meta).__name__})
    return value


def _check_tensors(header: dict[str, Any], data_len: int | None, insp: Inspection,
                   member: str | None) -> int | None:
    """Validate every entry; return the end of the data the tensors cover (None when unusable)."""
    spans: list[tuple[int, int, str]] = []
    problems = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        why = _entry_problem(entry, data_len)
        if why:
            problems += 1
            if problems <= MAX_TENSORS_REPORTED:
                _bad(insp, member, f"tensor {name}", f"Tensor {name[:120]!r}: {why}", {"tensor": name[:200]})
            continue
        begin, end = entry["data_offsets"]
        spans.append((begin, end, name))
    if problems > MAX_TENSORS_REPORTED:
        _bad(insp, member, "more-tensors", f"{problems} tensors have invalid entries (first "
             f"{MAX_TENSORS_REPORTED} reported)", {"count": str(problems)})
    spans.sort()
    pos = 0
    reported = 0
    for begin, end, name in spans:
        if begin != pos and reported < MAX_TENSORS_REPORTED:
            reported += 1
            what = "overlaps the previous tensor" if begin < pos else f"leaves a {begin - pos}-byte gap before it"
            _bad(insp, member, f"layout {name}", f"Tensor {name[:120]!r} {what} (offset {begin}, expected {pos})",
                 {"tensor": name[:200], "begin": str(begin), "expected": str(pos)})
        pos = max(pos, end)
    return pos if not problems else None


def _entry_problem(entry: Any, data_len: int | None) -> str:
    if not isinstance(entry, dict):
        return "entry is not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return f"unknown dtype {str(dtype)[:40]!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        return "shape is not a list of non-negative integers"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        return "data_offsets is not a pair of integers"
    begin, end = offsets
    if begin < 0 or end < begin:
        return f"data_offsets [{begin}, {end}] are reversed or negative"
    if data_len is not None and end > data_len:
        return f"data_offsets end at {end}, past the {data_len}-byte data section"
    count = 1
    for d in shape:
        count *= d
    bits = count * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        return f"shape {shape[:8]} x {dtype} needs {bits / 8:g} bytes but the offsets span {end - begin}"
    return ""


def _trailing(stream: Stream, insp: Inspection, member: str | None, depth: int, data_start: int,
              last_end: int, data_len: int | None) -> None:
    """Bytes after the last tensor: reported; inspected when they are a known format."""
    if data_len is not None:
        extra = data_len - last_end
        if extra <= 0:
            return
        offset = data_start + last_end
        if not stream.seekable:
            return
        window = stream.window(offset, extra)
    else:
        stream.skip(last_end)
        blob = stream.read(insp.limits.keep_bytes + 1)
        if not blob:
            return
        extra, offset = len(blob), data_start + last_end
        window = bytes_stream(blob[: insp.limits.keep_bytes])
    fmt = sniff(window.peek(HEAD_SIZE))
    insp.add(
        "MLSEC-SAFETENSORS-003",
        f"{extra} bytes follow the last tensor (no loader reads them); they look like {fmt}",
        key="trailing",
        member=member,
        offset=offset,
        evidence={"bytes": str(extra), "offset": str(offset), "sniffed": fmt},
    )
    if fmt not in ("text", "binary", "empty", "safetensors"):
        dispatch.inspect(window, insp, join_member(member, f"@{offset}"), depth + 1)
