"""Route a byte stream to the reader for its format, recursively.

Containers (zip, tar, 7z, gzip, joblib, PyTorch, NumPy) hold other formats; every reader hands
its members back here, so a pickle inside a zip inside a tar.gz gets the same engine as a bare
pickle, and one depth limit holds for the whole chain. Readers register themselves with
:func:`handles`; the modules that define them are imported once, on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from mlsec.engine.context import Inspection
from mlsec.engine.stream import Stream
from mlsec.sniff import HEAD_SIZE, hinted, sniff

Handler = Callable[[Stream, Inspection, "str | None", int], object]

_HANDLERS: dict[str, Handler] = {}

# Modules that register format readers (one format family per file).
_READER_MODULES = (
    "mlsec.scanners.model_pickle",
    "mlsec.scanners.model_joblib",
    "mlsec.scanners.model_numpy",
    "mlsec.scanners.model_torch",
    "mlsec.scanners.archive",
    "mlsec.scanners.archive_7z",
    "mlsec.scanners.model_keras",
    "mlsec.scanners.model_savedmodel",
    "mlsec.scanners.model_onnx",
    "mlsec.scanners.model_safetensors",
    "mlsec.scanners.model_gguf",
)
_loaded = False


H = TypeVar("H", bound=Handler)


def handles(*formats: str) -> Callable[[H], H]:
    """Decorator: register a reader for sniffed format names."""

    def deco(fn: H) -> H:
        for fmt in formats:
            if fmt in _HANDLERS:
                raise ValueError(f"two readers registered for format {fmt!r}")
            _HANDLERS[fmt] = fn
        return fn

    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in _READER_MODULES:
            importlib.import_module(mod)
        _loaded = True


def formats() -> frozenset[str]:
    """Formats that have a reader."""
    _load()
    return frozenset(_HANDLERS)


def inspect(stream: Stream, insp: Inspection, member: str | None, depth: int, name: str = "") -> str:
    """Sniff ``stream`` and run the matching reader; return the format name used.

    ``name`` (the file or member name) only breaks ties when the bytes are not recognized.
    """
    _load()
    insp.check_time()
    head = stream.peek(HEAD_SIZE)
    fmt = hinted(sniff(head), name)
    if fmt == "pickle" and stream.seekable and safetensors_shaped(head):
        # A safetensors header length whose low byte is a pickle opcode (0x80 for 128, 384...)
        # sniffs as pickle; read such files both ways so the safetensors checks are not skipped.
        run_format("safetensors", stream.window(stream.tell(), stream.remaining() or 0), insp, member, depth)
    run_format(fmt, stream, insp, member, depth)
    return fmt


def safetensors_shaped(head: bytes) -> bool:
    """An 8-byte little-endian length (at most 100 MB, within ``head``'s file) then ``{"``."""
    if len(head) < 10 or head[8:10] != b'{"':
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= 100_000_000


def run_format(fmt: str, stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Run the reader for ``fmt`` on ``stream`` (no sniffing; for polyglots read two ways)."""
    _load()
    handler = _HANDLERS.get(fmt)
    if handler is None:
        return
    if depth > insp.limits.max_depth:
        insp.add(
            "MLSEC-ARCHIVE-004",
            f"Nesting deeper than {insp.limits.max_depth} levels; {fmt} content not inspected",
            key=f"depth {member}",
            member=member,
            evidence={"depth": str(depth), "format": fmt},
        )
        return
    handler(stream, insp, member, depth)
