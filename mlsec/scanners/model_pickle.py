"""Reader for bare pickle streams (``.pkl``, ``.pt`` pickles, pandas pickles, pickled datasets).

A file may hold several pickles back to back (``pickle.dump`` called repeatedly; PyTorch's
legacy format), and loaders that call ``pickle.load`` in a loop run all of them, so the reader
keeps going after STOP. Bytes that follow and are not a pickle are sniffed: a hidden zip or
compressed stream is inspected as a nested artifact, anything else is reported as trailing data.
"""

from __future__ import annotations

from mlsec.engine import dispatch
from mlsec.engine.context import Inspection, join_member
from mlsec.engine.pickle import PickleInfo, PickleMachine, looks_like_pickle
from mlsec.engine.stream import Stream, bytes_stream
from mlsec.sniff import HEAD_SIZE, sniff, tar_checksum_ok

# PyTorch's legacy (non-zip) serialization starts with a pickled magic number.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def scan_payloads(stream: Stream, insp: Inspection, info: PickleInfo, member: str | None, depth: int) -> None:
    """Inspect bytes handed to deserializing callables (e.g. ``torch.storage._load_from_bytes``)."""
    for func, blob in info.payloads:
        label = join_member(member, f"@{blob.offset}:{func.qualname}")
        insp.add(
            "MLSEC-PICKLE-010",
            f"{func.qualname} deserializes an embedded {blob.length}-byte payload; scanned as {label}",
            key=f"payload {func.qualname} {blob.offset}",
            member=member,
            offset=blob.offset,
            evidence={"callable": func.qualname, "length": str(blob.length), "offset": str(blob.offset)},
        )
        if blob.data is not None:
            dispatch.inspect(bytes_stream(blob.data), insp, label, depth + 1)
        elif stream.seekable:
            dispatch.inspect(stream.window(blob.offset, blob.length), insp, label, depth + 1)
        else:
            insp.add(
                "MLSEC-SCAN-001",
                f"Embedded {blob.length}-byte payload of {func.qualname} too large to inspect in a compressed stream",
                key=f"payload-unscanned {blob.offset}",
                member=member,
                offset=blob.offset,
            )


def run_pickle(
    stream: Stream, insp: Inspection, member: str | None, depth: int, hooks: dict | None = None
) -> PickleInfo:
    """Run the engine on one pickle at the current position and scan its nested payloads."""
    from mlsec.scanners.model_joblib import build_hooks

    machine = PickleMachine(stream, insp, member=member, build_hooks=hooks if hooks is not None else build_hooks(depth))
    info = machine.run()
    scan_payloads(stream, insp, info, member, depth)
    return info


@dispatch.handles("pickle")
def inspect_pickle(stream: Stream, insp: Inspection, member: str | None, depth: int) -> list[PickleInfo]:
    """Inspect every pickle in the stream, then whatever follows the last one."""
    from mlsec.scanners import model_torch

    infos: list[PickleInfo] = []
    if stream.tell() == 0 and stream.seekable and tar_checksum_ok(stream.peek(512)):
        # A pickle/tar polyglot: pickle.load runs the pickle, tarfile extracts the members.
        # Read it both ways (the window shares the file; this stream is not moved).
        dispatch.run_format("tar", stream.window(0, stream.length or 0), insp, member, depth)
    while True:
        info = run_pickle(stream, insp, member, depth)
        infos.append(info)
        count = len(infos)
        if not info.stopped:
            return infos  # damage or a limit: already reported; what follows is not trustworthy
        if count == 1 and info.result == TORCH_LEGACY_MAGIC:
            model_torch.inspect_legacy_sequence(stream, insp, member, depth)
            return infos
        if stream.at_end():
            return infos
        if count >= insp.limits.max_pickles:
            insp.add(
                "MLSEC-PICKLE-009",
                f"More than {insp.limits.max_pickles} pickles in one stream; the rest was not inspected",
                key="max-pickles",
                member=member,
                offset=stream.tell(),
            )
            return infos
        if not looks_like_pickle(stream.peek(HEAD_SIZE)):
            inspect_trailing(stream, insp, member, depth)
            return infos


def inspect_trailing(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Report (and, when it is a known container, inspect) data after the last pickle."""
    offset = stream.tell()
    fmt = sniff(stream.peek(HEAD_SIZE))
    label = join_member(member, f"@{offset}")
    if fmt not in ("text", "binary", "empty"):
        dispatch.inspect(stream, insp, label, depth + 1)
    stream.skip(1 << 62)
    size = stream.tell() - offset
    if size:
        insp.add(
            "MLSEC-PICKLE-007",
            f"{size} bytes of {fmt} data follow the last pickle (offset {offset})",
            key="trailing",
            member=member,
            offset=offset,
            evidence={"offset": str(offset), "trailing_bytes": str(size), "trailing_format": fmt},
        )

