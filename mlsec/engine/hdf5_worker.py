"""The isolated HDF5 reader: a child process that opens HDF5 files with h5py and reads root attributes.

libhdf5 is a large C library. A crafted ``.h5`` that makes it crash (SIGSEGV) or loop would take
the whole scan down with it if it ran inside mlsec's own process, so mlsec never loads it there:
:mod:`mlsec.engine.hdf5_client` starts this module as a separate interpreter, once, and sends it
one request per HDF5 file. If this process dies or hangs, the parent reports that file and starts
a new one for the next; the scan goes on.

This module is deliberately self-contained: the standard library at import time, h5py when the
loop starts, and nothing from mlsec. It runs as a script (``python -I <this file>``) with isolated
mode, so neither the scanned directory (the working directory) nor this file's own directory is
on ``sys.path``: a ``numpy.py`` planted in a scanned repository is never imported, and the
sibling ``pickle.py`` never shadows the standard library's.

Protocol (stdin/stdout pipes, the parent is the only peer). Every message is one *frame*:
``>II`` (header length, blob length), a UTF-8 JSON header, then the blob bytes. Nothing is ever
pickled. The child first sends a hello frame (``{"ready": true, "h5py": ...}``, or ``ready``
false and ``error`` when h5py cannot be imported). Then, per request, an *acknowledgement*
(``ACK``, an empty frame) as soon as the request has been read, before the file is touched: it
tells a crash on this file apart from a death that merely happened before it (the parent only
blames the file when the child dies after the acknowledgement). Then the reply.

* request header: ``attrs`` (root attribute names), ``max_storage`` (largest attribute storage
  read), ``max_value`` (bytes of a value sent back; longer values are cut, which the parent
  sees as "too large"), ``timeout`` (seconds; a backstop alarm here), and either ``path``,
  ``offset``, ``length``, ``dev``, ``ino`` (a window of a regular file; the identity must match
  the file the parent opened) or no ``path`` and the file's bytes as the blob;
* reply header: ``{"open_error": text}`` or ``{"attrs": [...]}``, one entry per requested name
  with ``status`` ``absent`` / ``value`` (``size`` bytes of the blob, in request order) /
  ``shape`` (``count`` elements, ``storage`` bytes) / ``error`` (``error`` text) / ``type``
  (``type`` name of a non-string value).

The parent formats every message; this side only reports facts.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import sys
from typing import Any, BinaryIO

FRAME = struct.Struct(">II")     # header length, blob length
ACK = FRAME.pack(0, 0)           # "request received": sent before the file is touched
MAX_HEADER = 1 << 20             # bytes of JSON header accepted, either direction
MAX_REQUEST_BLOB = 1 << 31       # bytes of file content accepted in one request
MAX_TEXT = 1000                  # characters of an error text sent back (the parent cuts further)
ALARM_GRACE = 10                 # seconds past the parent's timeout before this process kills itself


def encode_frame(header: dict[str, Any], blob: bytes = b"") -> bytes:
    """One protocol frame: lengths, JSON header, blob."""
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return FRAME.pack(len(text), len(blob)) + text + blob


class FileWindow(io.RawIOBase):
    """Seekable read-only file object over ``[base, base+size)`` of another file object.

    h5py's file-object driver (and py7zr, through the parent's subclass) read through it: an
    HDF5 file stored inside a zip is read in place, and no read goes past the window's end even
    when a hostile header asks for more.
    """

    def __init__(self, raw: BinaryIO, base: int, size: int) -> None:
        self._raw, self._base, self._size, self._pos = raw, base, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        """Never more than what is left: callers may ask for sizes read from hostile headers."""
        left = max(0, self._size - self._pos)
        n = left if n is None or n < 0 else min(n, left)
        self._raw.seek(self._base + self._pos)
        data = self._raw.read(n)
        self._pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        n = max(0, min(len(buf), self._size - self._pos))
        if not n:
            return 0
        self._raw.seek(self._base + self._pos)
        data = self._raw.read(n)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)


# ---------------------------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------------------------

def _read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``, or None at end of file (the parent closed the pipe or died)."""
    parts: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 20]):]


def _read_request(fd: int) -> tuple[dict[str, Any], bytes] | None:
    head = _read_exact(fd, FRAME.size)
    if head is None:
        return None
    hlen, blen = FRAME.unpack(head)
    if hlen > MAX_HEADER or blen > MAX_REQUEST_BLOB:
        return None  # not the parent talking: stop
    text = _read_exact(fd, hlen)
    blob = _read_exact(fd, blen) if text is not None else None
    if text is None or blob is None:
        return None
    header = json.loads(text)
    return (header, blob) if isinstance(header, dict) else None


def _read_attr(h5py: Any, handle: Any, name: str, max_storage: int, max_value: int) -> tuple[dict[str, Any], bytes]:
    """One root attribute, size-checked before it is read (the checks mlsec always made)."""
    try:
        if name not in handle.attrs:
            return {"name": name, "status": "absent"}, b""
        aid = h5py.h5a.open(handle.id, name.encode())
        count = 1
        for d in aid.shape or ():
            count *= d
        storage = aid.get_storage_size()
        if count != 1 or storage > max_storage:
            return {"name": name, "status": "shape", "count": int(count), "storage": int(storage)}, b""
        value = handle.attrs[name]
        if hasattr(value, "reshape") and getattr(value, "size", 0) == 1:
            value = value.reshape(-1)[0]
    except Exception as exc:  # noqa: BLE001 - damaged attribute messages raise from deep inside h5py
        return {"name": name, "status": "error", "error": str(exc)[:MAX_TEXT]}, b""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, bytes):
        data = bytes(value)
    else:
        return {"name": name, "status": "type", "type": type(value).__name__}, b""
    data = data[:max_value]
    return {"name": name, "status": "value", "size": len(data)}, data


def handle_request(h5py: Any, header: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
    """Open the file with h5py and read the requested attributes: reply header and blob."""
    path = header.get("path")
    if path is None:
        return _read_file(h5py, io.BytesIO(blob), header)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if (st.st_dev, st.st_ino) != (header.get("dev"), header.get("ino")):
                return {"open_error": "the file was replaced while it was being scanned"}, b""
            window = FileWindow(fh, int(header.get("offset", 0)), int(header.get("length", 0)))
            return _read_file(h5py, window, header)
    except OSError as exc:  # the path itself (h5py's own errors are caught in _read_file)
        return {"open_error": str(exc)[:MAX_TEXT]}, b""


def _read_file(h5py: Any, source: io.RawIOBase | io.BytesIO, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    names = [str(n) for n in header.get("attrs", [])]
    max_storage, max_value = int(header.get("max_storage", 0)), int(header.get("max_value", 0))
    try:
        handle = h5py.File(source, "r")
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, ValueError and more for damaged files
        return {"open_error": str(exc)[:MAX_TEXT]}, b""
    entries, blobs = [], []
    with handle:
        for name in names:
            entry, data = _read_attr(h5py, handle, name, max_storage, max_value)
            entries.append(entry)
            blobs.append(data)
    return {"attrs": entries}, b"".join(blobs)


def _harden() -> None:
    """Process settings that keep a crash or an interrupt contained to this child.

    Ctrl-C goes to the whole terminal process group: the parent handles it and closes our pipe,
    so an interrupt must not look like a crash on the file being read. A crash on a hostile file
    must not write a core dump (possibly gigabytes) into the scanned directory.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass


def _silence(fds: tuple[int, ...]) -> None:
    """Point ``fds`` at the null device: libhdf5's diagnostics go nowhere, never into the protocol."""
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(null, fd)
    os.close(null)


def main() -> int:
    """Serve requests on stdin/stdout until the parent closes stdin."""
    _harden()
    proto_in, proto_out = sys.stdin.fileno(), os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print can no longer corrupt a frame
    try:
        import h5py

        hello: dict[str, Any] = {"ready": True, "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version}
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError when libhdf5 itself fails to load
        hello = {"ready": False, "error": f"{type(exc).__name__}: {exc}"[:MAX_TEXT]}
    # stderr stays the parent's pipe until here (a failed start is explained there), then goes.
    _silence((sys.stdout.fileno(), sys.stderr.fileno()))
    try:
        _write_all(proto_out, encode_frame(hello))
        if not hello["ready"]:
            return 1
        while True:
            request = _read_request(proto_in)
            if request is None:
                return 0
            header, blob = request
            _write_all(proto_out, ACK)  # from here on, a death is this file's doing
            # A backstop: if the parent is gone (killed) while libhdf5 hangs, the default SIGALRM
            # action ends this process instead of leaving a spinning orphan.
            signal.alarm(int(float(header.get("timeout", 60))) + ALARM_GRACE)
            try:
                reply, data = handle_request(h5py, header, blob)
            except Exception as exc:  # noqa: BLE001 - never let one file end the worker
                reply, data = {"open_error": f"{type(exc).__name__}: {exc}"[:MAX_TEXT]}, b""
            signal.alarm(0)
            _write_all(proto_out, encode_frame(reply, data))
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the parent went away


if __name__ == "__main__":
    sys.exit(main())
