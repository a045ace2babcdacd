"""The isolated Arrow sampler: a child process that reads Parquet / Arrow IPC *content* with pyarrow.

pyarrow is C++ and trusts the files it reads: a crafted file that makes it crash (SIGSEGV,
SIGBUS) or loop would take the whole scan down with it if it ran inside mlsec's own process.
So :mod:`mlsec.scanners.data_parquet` never decodes pages in-process: it sends one request per
file to this process (through :mod:`mlsec.engine.arrow_client`), which runs the scanner's own
sampling functions (``sample_parquet``, ``sample_ipc``: pyarrow plus mlsec's personal-data,
credential and formula detectors) and sends back only counts, coverage and *masked* samples
(the :class:`~mlsec.scanners.data_text.Tally` statistics, never the raw key names it keeps).
If this process dies or hangs, the parent reports that file and starts a new one for the next.

Imports: this file runs as a script (``python -I <this file>``). Isolated mode keeps the scanned
directory (the working directory), this file's directory and ``PYTHON*`` variables off
``sys.path``. Unlike the HDF5 reader, this child needs mlsec itself (the detectors live there):
the parent directory of the very ``mlsec`` package this file belongs to is put on ``sys.path``
explicitly, only while ``mlsec`` is imported (its submodules are then found through the
package's own ``__path__``), after pyarrow was imported, so nothing else can be shadowed by it.

Protocol: the frames, hello and acknowledgement of :mod:`mlsec.engine.hdf5_worker` (``>II``
lengths, JSON header, blob; nothing is ever pickled). Hello: ``{"ready": true, "pyarrow": v}``
or ``ready`` false and ``error``. Request header: ``format`` (``parquet`` / ``arrow``),
``path``, ``dev``, ``ino`` (the identity of the file the parent opened), ``is_file``,
``batches``, ``budget``, ``bytes_total``, ``rows_total``, ``remaining`` (seconds left of the
artifact's time budget) and ``timeout`` (a backstop alarm here). Reply: header ``{"ok": true}``
and a JSON blob ``{"tally": ..., "coverage": ..., "error": [type, text] | null,
"deadline": bool, "unexpected": text | null}``, or header ``{"replaced": true}`` and no blob.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

MAX_TEXT = 64 << 10      # characters of an exception text sent back
ALARM_GRACE = 10         # seconds past the parent's timeout before this process kills itself


def mlsec_root() -> str:
    """The directory that holds the ``mlsec`` package this file is part of."""
    return str(Path(__file__).resolve().parents[2])


def _import_mlsec() -> None:
    """Import mlsec from :func:`mlsec_root` (already imported when run by ``-c`` under a test hook)."""
    if "mlsec" in sys.modules:
        return
    root = mlsec_root()
    sys.path.insert(0, root)
    try:
        import mlsec  # noqa: F401
    finally:
        if sys.path and sys.path[0] == root:
            del sys.path[0]


class _Clock:
    """The artifact's time budget, as :class:`~mlsec.engine.context.Inspection` enforces it."""

    def __init__(self, remaining: float, exc: type[Exception]) -> None:
        self._deadline = time.monotonic() + remaining
        self._exc = exc

    def check_time(self) -> None:
        if time.monotonic() > self._deadline:
            raise self._exc("deadline")


def handle_request(header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Sample one file with the scanner's own functions: reply header and JSON blob."""
    import pyarrow as pa

    from mlsec.engine.context import DeadlineExceeded
    from mlsec.scanners import data_parquet as dp
    from mlsec.scanners.data_text import Coverage, Tally

    path = str(header["path"])
    try:
        st = os.stat(path)
    except OSError:
        pass  # reported below, where pyarrow fails to open it, as it would have in-process
    else:
        if (st.st_dev, st.st_ino) != (header.get("dev"), header.get("ino")):
            return {"replaced": True}, b""
    tally = Tally()
    rows_total = header.get("rows_total")
    cov = Coverage(bytes_total=int(header["bytes_total"]), rows_total=rows_total if isinstance(rows_total, int) else None)
    clock = _Clock(float(header.get("remaining", 300.0)), DeadlineExceeded)
    budget = int(header["budget"])
    body: dict[str, Any] = {"error": None, "deadline": False, "unexpected": None}
    try:
        if header.get("format") == "parquet":
            dp.sample_parquet(path, budget, tally, cov, clock)  # type: ignore[arg-type]
        else:
            dp.sample_ipc(path, bool(header.get("is_file")), int(header.get("batches", 0)), budget, tally, cov,
                          clock)  # type: ignore[arg-type]
    except DeadlineExceeded:
        body["deadline"] = True
    except (pa.ArrowException, OSError, ValueError) as exc:
        body["error"] = [type(exc).__name__, str(exc)[:MAX_TEXT]]
    except Exception as exc:  # noqa: BLE001 - reported by the parent as a scanner error, as in-process
        body["unexpected"] = f"{type(exc).__name__}: {exc}"[:MAX_TEXT]
    body["tally"] = dp.tally_to_json(tally)
    body["coverage"] = dp.coverage_to_json(cov)
    return {"ok": True}, json.dumps(body, separators=(",", ":")).encode("utf-8")


def main() -> int:
    """Serve requests on stdin/stdout until the parent closes stdin."""
    proto_in, proto_out = sys.stdin.fileno(), os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print can no longer corrupt a frame
    try:
        import pyarrow

        hello: dict[str, Any] = {"ready": True, "pyarrow": pyarrow.__version__}
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError when a shared library fails to load
        hello = {"ready": False, "error": f"{type(exc).__name__}: {exc}"[:1000]}
    _import_mlsec()  # a failure here ends the child before its hello: the parent reads stderr
    from mlsec.engine import hdf5_worker
    from mlsec.engine.hdf5_worker import ACK, encode_frame

    hdf5_worker._harden()
    if hello["ready"]:
        from mlsec.scanners import data_parquet  # noqa: F401 - loaded once, before any file

    hdf5_worker._silence((sys.stdout.fileno(), sys.stderr.fileno()))
    try:
        hdf5_worker._write_all(proto_out, encode_frame(hello))
        if not hello["ready"]:
            return 1
        while True:
            request = hdf5_worker._read_request(proto_in)
            if request is None:
                return 0
            header, _blob = request
            hdf5_worker._write_all(proto_out, ACK)  # from here on, a death is this file's doing
            signal.alarm(int(float(header.get("timeout", 300))) + ALARM_GRACE)
            try:
                reply, data = handle_request(header)
            except Exception as exc:  # noqa: BLE001 - never let one file end the worker
                body: dict[str, Any] = {"error": None, "deadline": False, "unexpected": f"{type(exc).__name__}: {exc}"[:MAX_TEXT],
                        "tally": [], "coverage": None}
                reply, data = {"ok": True}, json.dumps(body).encode("utf-8")
            signal.alarm(0)
            hdf5_worker._write_all(proto_out, encode_frame(reply, data))
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the parent went away


if __name__ == "__main__":
    sys.exit(main())
