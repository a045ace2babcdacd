"""NumPy ``.npy`` files (and ``.npz`` members, which reach here through the zip reader).

The header is a Python dict literal (parsed with ``ast.literal_eval``, which evaluates literals
only). Arrays with an object dtype are stored as a pickle, which ``np.load`` with ``allow_pickle`` set
runs: that pickle goes through the engine. Fixed-size arrays must have exactly
``prod(shape) * itemsize`` bytes after the header; anything else is reported, since extra bytes
can carry a payload for a loader that reads past the array.
"""

from __future__ import annotations

import ast
import re
import struct
from typing import Any

from mlsec.engine import dispatch
from mlsec.engine.context import Inspection, join_member
from mlsec.engine.stream import Stream

_MAX_HEADER = 1 << 20
_CODE = re.compile(r"^[<>|=]?([a-zA-Z])(\d*)")


def descr_info(descr: Any) -> tuple[int, bool] | None:
    """(itemsize, has_object) for a .npy ``descr`` (a dtype string or a structured field list)."""
    if isinstance(descr, str):
        m = _CODE.match(descr)
        if not m:
            return None
        letter, digits = m.groups()
        if letter == "O":
            return 8, True
        if letter in "Mm":
            return 8, False
        if letter in "?b" and not digits:
            return 1, False
        if not digits:
            return None
        size = int(digits)
        return (size * 4 if letter == "U" else size), False
    if isinstance(descr, list):
        total, has_obj = 0, False
        for field in descr:
            if not isinstance(field, tuple) or len(field) < 2:
                return None
            sub = descr_info(field[1])
            if sub is None:
                return None
            count = 1
            if len(field) > 2 and isinstance(field[2], tuple):
                for dim in field[2]:
                    count *= dim if isinstance(dim, int) else 1
            total += sub[0] * count
            has_obj = has_obj or sub[1]
        return total, has_obj
    return None


@dispatch.handles("numpy")
def inspect_npy(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Validate the header, then inspect the object pickle or check the data size."""
    from mlsec.scanners.model_pickle import inspect_pickle

    magic = stream.read(8)
    major = magic[6] if len(magic) > 6 else 0
    size_fmt = "<H" if major == 1 else "<I"
    raw_len = stream.read_exact(struct.calcsize(size_fmt))
    if raw_len is None or major not in (1, 2, 3):
        _bad(insp, member, f"unsupported .npy version {major}")
        return
    (hlen,) = struct.unpack(size_fmt, raw_len)
    if hlen > _MAX_HEADER:
        _bad(insp, member, f"header of {hlen} bytes (limit {_MAX_HEADER})")
        return
    header = stream.read_exact(hlen)
    if header is None:
        _bad(insp, member, "file ends inside the header")
        return
    try:
        meta = ast.literal_eval(header.decode("latin-1" if major < 3 else "utf-8").strip())
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        _bad(insp, member, "header is not a dict literal")
        return
    if not isinstance(meta, dict) or not {"descr", "shape"} <= set(meta):
        _bad(insp, member, "header lacks descr/shape")
        return
    info = descr_info(meta["descr"])
    shape = meta["shape"]
    if info is None or not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        _bad(insp, member, f"unreadable dtype {meta['descr']!r} or shape {shape!r}")
        return
    itemsize, has_object = info
    if has_object:
        insp.add(
            "MLSEC-NUMPY-001",
            "Object-dtype array: loading needs allow_pickle; its pickle is inspected",
            key="object-array",
            member=member,
            evidence={"descr": str(meta["descr"])[:80], "shape": str(shape)[:80]},
        )
        inspect_pickle(stream, insp, join_member(member, "object-array"), depth + 1)
        return
    count = 1
    for dim in shape:
        count *= dim
    expected = count * itemsize
    got = stream.skip(expected)
    if got < expected:
        _bad(insp, member, f"data truncated: {got} of {expected} bytes")
        return
    if not stream.at_end():
        extra_at = stream.tell()
        extra = stream.skip(1 << 62)
        _bad(insp, member, f"{extra} unexpected bytes after the array data (offset {extra_at})")


def _bad(insp: Inspection, member: str | None, why: str) -> None:
    insp.add("MLSEC-NUMPY-002", f"Malformed .npy: {why}", key="npy-malformed", member=member, evidence={"problem": why})
