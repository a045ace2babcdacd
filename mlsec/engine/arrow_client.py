"""Talk to the isolated Arrow sampler (:mod:`mlsec.engine.arrow_worker`): one child per process, reused.

Same design, and the same process management, as the HDF5 reader (:mod:`mlsec.engine.hdf5_client`;
read its module documentation): a lazily started persistent child, requests serialized by a
lock, acknowledgement before the file is touched (only a death after it is blamed on the file),
a timeout after which the child is killed and reaped, a silent restart of a child that died
while idle, a fork-safe and exit-safe life cycle. :class:`ArrowSampler` subclasses
:class:`~mlsec.engine.hdf5_client.HDF5Reader` for all of that and replaces only the exchange
(request and reply format) and the start-up messages.

The caller gets a :class:`SampleReply` or a :class:`~mlsec.engine.hdf5_client.Failure`
(``crash``, ``timeout``, ``unavailable``), never an exception.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec.engine import arrow_worker
from mlsec.engine.hdf5_client import (
    START_TIMEOUT,
    Failure,
    HDF5Reader,
    _Dead,
    _describe,
    _finish,
    _Garbage,
    _read_exact,
    _receive,
    _send,
    _Timeout,
)
from mlsec.engine.hdf5_worker import ACK, FRAME, encode_frame

REQUEST_TIMEOUT = 600.0  # seconds for one file at most (the artifact's time budget usually cuts it shorter)
GRACE = 5.0              # seconds past the artifact's remaining budget for the child's own deadline reply
MAX_REPLY = 64 << 20     # bytes of reply body accepted (counts and masked samples: far less in practice)


@dataclass(frozen=True, slots=True)
class SampleReply:
    """The child's answer: the decoded JSON body, or ``replaced`` (the path holds another file)."""

    body: dict[str, Any]
    replaced: bool = False


def default_command() -> tuple[str, ...]:
    """This interpreter, isolated mode (``-B`` when bytecode writing is off), the worker's file."""
    flags = ("-I", "-B") if sys.flags.dont_write_bytecode else ("-I",)
    return (sys.executable, *flags, str(Path(arrow_worker.__file__).resolve()))


class ArrowSampler(HDF5Reader):
    """A lazily started, reused child process that samples Parquet/Arrow content (see the module doc)."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        super().__init__(command if command is not None else default_command())

    def read(self, request: Any, timeout: float) -> Any:  # the HDF5 request format does not apply
        raise NotImplementedError("use sample()")

    def sample(self, request: dict[str, Any], timeout: float) -> SampleReply | Failure:
        """Send one file to the child and wait at most ``timeout`` seconds for its tallies."""
        frame = encode_frame({**request, "timeout": timeout})
        with self._lock:
            for _attempt in range(2):
                proc = self._running()
                if isinstance(proc, Failure):
                    return proc
                outcome = self._exchange_sample(proc, frame, timeout)
                if outcome is not None:
                    return outcome
            return Failure("unavailable", "the Arrow sampler process exited twice before it took a request")

    def _exchange_sample(self, proc: subprocess.Popen[bytes], frame: bytes,
                         timeout: float) -> SampleReply | Failure | None:
        """One request/reply; None when the child died before it took the request (retry)."""
        assert proc.stdin is not None and proc.stdout is not None
        out, into = proc.stdin.fileno(), proc.stdout.fileno()
        deadline = time.monotonic() + max(timeout, 0.001)
        try:
            _send(out, frame, deadline)
            if _read_exact(into, FRAME.size, deadline) != ACK:
                raise _Garbage("no acknowledgement")
            self._busy = True  # from here on, the child holds the file
            header, blob = _receive(into, deadline, MAX_REPLY)
            return _parse(header, blob)
        except _Timeout:
            self._stop(kill=True)
            return Failure("timeout", f"gave no answer within {timeout:g}s")
        except _Dead:
            if not self._busy:
                self._stop(kill=True)
                return None
            return Failure("crash", _describe(self._stop(kill=False)))
        except _Garbage as exc:
            self._stop(kill=True)
            return Failure("crash", f"sent a malformed reply ({exc})")
        finally:
            self._busy = False

    def _start(self) -> subprocess.Popen[bytes] | Failure:
        """Start a child and wait for its hello; a failed start is remembered for the reader's life."""
        try:
            proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, bufsize=0, close_fds=True)
        except (OSError, ValueError) as exc:
            self._unavailable = Failure("unavailable", f"cannot start {self.command[0]!r}: {exc}")
            return self._unavailable
        self._starts += 1
        self._install_exit_hooks()
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        try:
            hello, _ = _receive(proc.stdout.fileno(), time.monotonic() + START_TIMEOUT, 0)
        except (_Timeout, _Dead, _Garbage) as exc:
            returncode, tail = _finish(proc, graceful=False, kill=isinstance(exc, _Timeout | _Garbage))
            why = "did not start in time" if isinstance(exc, _Timeout) else _describe(returncode)
            self._unavailable = Failure("unavailable", f"the Arrow sampler process {why}{tail}")
            return self._unavailable
        proc.stderr.close()  # the child has pointed its stderr at the null device
        if hello.get("ready") is not True:
            _finish(proc, graceful=True)
            detail = str(hello.get("error", "pyarrow cannot be imported"))[:300]
            self._unavailable = Failure("unavailable", f"pyarrow cannot be imported in the sampler process ({detail})")
            return self._unavailable
        self._proc = proc
        return proc


def _parse(header: dict[str, Any], blob: bytes) -> SampleReply:
    """Check the reply's shape (its content is checked by the scanner); anything else is garbage."""
    if header.get("replaced") is True and not blob:
        return SampleReply({}, replaced=True)
    if header.get("ok") is not True:
        raise _Garbage("unexpected reply header")
    try:
        body = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Garbage("reply body is not JSON") from exc
    if not isinstance(body, dict):
        raise _Garbage("reply body is not an object")
    return SampleReply(body)


# ---------------------------------------------------------------------------------------------
# The process-wide sampler
# ---------------------------------------------------------------------------------------------

_shared: ArrowSampler | None = None
_shared_lock = threading.Lock()


def shared() -> ArrowSampler:
    """The sampler every Parquet/Arrow file of this process goes through (created on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ArrowSampler()
        return _shared


def set_shared(sampler: ArrowSampler | None) -> ArrowSampler | None:
    """Install another sampler (tests; embedders); returns the previous one, not closed. In-process only."""
    global _shared
    with _shared_lock:
        previous, _shared = _shared, sampler
        return previous


def worker_pid() -> int | None:
    """Process id of the shared sampler's current child, if one is running."""
    sampler = _shared
    return sampler.pid if sampler is not None else None
