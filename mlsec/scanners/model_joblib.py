"""joblib's pickle dialect: array bytes and object-array pickles written *inside* the stream.

``joblib.dump`` pickles each NumPy array as a ``NumpyArrayWrapper`` whose BUILD opcode is
followed by the raw array bytes (after an optional alignment pad: one length byte, then that
many 0xFF bytes) — or, for object arrays, by a complete nested pickle (protocol 5) that
``joblib.load`` unpickles with the same unpickler. A plain opcode walker stops at the first
array byte; scanners that do are blind to everything after the first array, and a hostile
object array hides there. These hooks teach the engine the layout (joblib 0.10 – 1.6).

Also handled: joblib's compressed files (plain zlib/gzip/bz2/xz/lzma streams, read by
``archive``), and the legacy ``ZF`` format (joblib < 0.10): ``ZF0x`` + hex length + zlib data.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

from mlsec.engine import dispatch
from mlsec.engine.context import Inspection, join_member
from mlsec.engine.pickle import Call, Container, PickleMachine
from mlsec.engine.stream import Stream

WRAPPERS = (
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
)

_DTYPE_CODE = re.compile(r"^[<>|=]?([a-zA-Z])(\d*)")


def dtype_info(value: Any) -> tuple[int, bool] | None:
    """(itemsize, has_object) of a pickled ``numpy.dtype`` value, or None if unknown.

    A dtype pickles as ``numpy.dtype('f8', False, True)`` plus a BUILD state tuple whose
    index 5 is the element size for flexible types and index 7 the flags (bit 0: holds objects).
    """
    if not isinstance(value, Call) or not isinstance(value.args, Container) or not value.args.items:
        return None
    code = value.args.items[0]
    if not isinstance(code, str):
        return None
    m = _DTYPE_CODE.match(code)
    if not m:
        return None
    letter, digits = m.groups()
    state = value.state.items if isinstance(value.state, Container) else []
    elsize = state[5] if len(state) > 5 and isinstance(state[5], int) else -1
    flags = state[7] if len(state) > 7 and isinstance(state[7], int) else 0
    has_object = letter == "O" or bool(flags & 1)
    if elsize is not None and elsize > 0:
        return elsize, has_object
    if letter in "Mm":
        return 8, has_object
    if digits:
        return int(digits), has_object
    if letter in "?b":
        return 1, has_object
    return None


def _shape_count(value: Any) -> int | None:
    if not isinstance(value, Container) or value.kind != "tuple":
        return None
    if value.count != len(value.items):
        return None
    count = 1
    for dim in value.items:
        if not isinstance(dim, int) or dim < 0:
            return None
        count *= dim
    return count


def build_hooks(depth: int) -> dict[str, Any]:
    """Engine hooks for joblib array wrappers at container depth ``depth``."""

    def after_build(machine: PickleMachine, obj: Call, state: Any) -> None:
        _read_array(machine, state, depth)

    return {name: after_build for name in WRAPPERS}


def _read_array(machine: PickleMachine, state: Any, depth: int) -> None:
    stream, insp, member = machine.stream, machine.insp, machine.member
    fields = state.as_dict() if isinstance(state, Container) and state.kind == "dict" else {}
    info = dtype_info(fields.get("dtype"))
    count = _shape_count(fields.get("shape"))
    offset = stream.tell()
    if info is None or count is None:
        insp.add(
            "MLSEC-PICKLE-005",
            "joblib array wrapper with an unreadable dtype or shape; the inline data cannot be located",
            key=f"joblib-wrapper {offset}",
            member=member,
            offset=offset,
        )
        raise _stop(offset)
    itemsize, has_object = info
    if has_object:
        # A complete nested pickle follows; joblib.load unpickles it in the same process.
        from mlsec.scanners.model_pickle import run_pickle

        nested = run_pickle(stream, insp, join_member(member, f"@{offset}:object-array"), depth + 1)
        if not nested.stopped:
            raise _stop(stream.tell())
        return
    if fields.get("numpy_array_alignment_bytes") is not None:
        pad = stream.read(1)
        if not pad or stream.skip(pad[0]) != pad[0]:
            raise _stop(stream.tell())
    nbytes = count * itemsize
    if stream.skip(nbytes) != nbytes:
        raise _stop(stream.tell(), f"joblib array data truncated ({nbytes} bytes expected)")


def _stop(offset: int, message: str = "joblib inline array data truncated") -> Exception:
    from mlsec.engine.pickle import Damage

    return Damage(message, offset)


@dispatch.handles("joblib-zf")
def inspect_zf(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Legacy joblib ``ZF`` file: ``ZF`` + hex length padded to 19 bytes, then zlib data."""
    from mlsec.scanners.archive import decompressed, guarded

    header = stream.read(2 + 19)
    try:
        int(header[2:].strip(), 16)
    except ValueError:
        insp.add("MLSEC-ARCHIVE-002", "joblib ZF header has no valid length", key="zf-header", member=member)
        return
    label = join_member(member, "zlib")
    inner = decompressed(stream, insp, zlib.decompressobj, label)
    guarded(lambda: dispatch.inspect(inner, insp, label, depth + 1), insp, label)
