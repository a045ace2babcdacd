"""Talk to the isolated HDF5 reader (:mod:`mlsec.engine.hdf5_worker`): one child per process, reused.

Why a child process: h5py drives libhdf5, a large C library, and a crafted file that crashes or
hangs it would end or freeze the whole scan if it ran in mlsec's process. Why a *persistent*
child: starting an interpreter and importing h5py costs about a quarter of a second, which a
repository with hundreds of ``.h5`` files should pay once, not per file.

What can go wrong, and what the caller gets back (never an exception):

* the child dies while it holds a request (a signal, an exit, a closed pipe) or sends a reply
  that breaks the protocol: :class:`Failure` ``crash`` -- libhdf5 crashed on that file. The
  child is reaped and the next request starts a fresh one;
* no reply within the timeout: :class:`Failure` ``timeout``; the child is killed and reaped;
* the child died while idle (between files; e.g. the OOM killer): it is restarted silently, as
  the file about to be sent cannot be the cause. The child acknowledges each request before it
  touches the file; one that dies before acknowledging is replaced and the request retried
  once, for the same reason. Only a death after the acknowledgement is blamed on the file;
* h5py cannot be imported in the child, or the child cannot start: :class:`Failure`
  ``missing-h5py`` / ``unavailable``, remembered for the life of the reader (retrying per
  file would only multiply the cost of a broken installation).

Threads: requests are serialized by a lock (the pipeline scans in one thread per process;
library users may call from several). Processes: a ``fork`` (``--jobs`` on Linux forks the
pool's workers) makes the new process forget the parent's child instead of sharing its pipes;
each process starts its own. Shutdown: the child is stopped at interpreter exit; it also exits
by itself when its stdin reaches end of file, i.e. whenever its parent goes away.

Waiting uses ``select.poll`` on the pipes (POSIX), so no thread is ever left blocked on a dead
or hung child.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from mlsec.engine import hdf5_worker
from mlsec.engine.hdf5_worker import ACK, FRAME, MAX_HEADER, encode_frame

REQUEST_TIMEOUT = 30.0   # seconds for one file (the artifact's own time budget may cut it shorter)
START_TIMEOUT = 60.0     # seconds for the child to start and import h5py (a cold disk can be slow)
STOP_TIMEOUT = 2.0       # seconds for the child to exit once its stdin is closed, before a kill
_STATUSES = frozenset({"absent", "value", "shape", "error", "type"})

FailureKind = Literal["crash", "timeout", "unavailable", "missing-h5py"]


@dataclass(frozen=True, slots=True)
class Request:
    """Which root attributes to read, and from what: a window of a file on disk, or bytes.

    ``identity`` is ``(st_dev, st_ino)`` of the file the parent opened: the child reads the file
    by path and refuses another file found under that path (a swap in between would make the
    result describe bytes that were never hashed).
    """

    attrs: tuple[str, ...]
    max_storage: int              # largest attribute storage read (bytes)
    max_value: int                # bytes of a value sent back; longer values arrive cut to this
    path: str | None = None
    offset: int = 0
    length: int = 0
    identity: tuple[int, int] = (0, 0)
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Attribute:
    """What the child found for one attribute (``status`` says which fields mean something)."""

    name: str
    status: Literal["absent", "value", "shape", "error", "type"]
    value: bytes = b""            # status "value"
    count: int = 0                # status "shape": elements
    storage: int = 0              # status "shape": bytes of storage
    detail: str = ""              # status "error": exception text; "type": the value's type name


@dataclass(frozen=True, slots=True)
class Reply:
    """The child's answer: the file would not open (``open_error``), or one entry per attribute."""

    attrs: tuple[Attribute, ...] = ()
    open_error: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """No answer about the file: why (``kind``) and a human-readable ``detail``."""

    kind: FailureKind
    detail: str


class _Timeout(Exception):
    pass


class _Dead(Exception):
    pass


class _Garbage(Exception):
    pass


def default_command() -> tuple[str, ...]:
    """The child's command line: this interpreter, isolated mode, the worker module's file.

    Isolated mode (``-I``) keeps the scanned directory (our working directory), the worker's own
    directory and ``PYTHON*`` variables off the child's import path. As it also ignores
    ``PYTHONDONTWRITEBYTECODE``, that setting is passed on as ``-B`` (a read-only scan writes no
    ``.pyc`` files). The file is run by path rather than ``-m``: the worker needs only the
    standard library and h5py, so this also works when mlsec itself is importable only through
    the parent's ``sys.path``.
    """
    flags = ("-I", "-B") if sys.flags.dont_write_bytecode else ("-I",)
    return (sys.executable, *flags, str(Path(hdf5_worker.__file__).resolve()))


def h5py_installed() -> bool:
    """Whether h5py can be found here (the child may still fail to import it: see ``missing-h5py``)."""
    try:
        return importlib.util.find_spec("h5py") is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Pipe I/O with deadlines
# ---------------------------------------------------------------------------------------------

def _wait(fd: int, events: int, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Timeout
    poller = select.poll()
    poller.register(fd, events)
    if not poller.poll(max(1, int(remaining * 1000))):
        raise _Timeout


def _send(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, select.POLLOUT, deadline)
        try:
            view = view[os.write(fd, view[: 1 << 16]):]
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _Dead from exc


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < n:
        _wait(fd, select.POLLIN, deadline)
        try:
            chunk = os.read(fd, min(n - len(out), 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise _Dead
        out += chunk
    return bytes(out)


def _receive(fd: int, deadline: float, blob_limit: int) -> tuple[dict[str, Any], bytes]:
    """One frame; lengths beyond what the request allows are garbage, not something to allocate."""
    hlen, blen = FRAME.unpack(_read_exact(fd, FRAME.size, deadline))
    if hlen > MAX_HEADER or blen > blob_limit:
        raise _Garbage(f"frame of {hlen} + {blen} bytes")
    try:
        header = json.loads(_read_exact(fd, hlen, deadline))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Garbage("header is not JSON") from exc
    if not isinstance(header, dict):
        raise _Garbage("header is not an object")
    return header, _read_exact(fd, blen, deadline)


def _parse_reply(header: dict[str, Any], blob: bytes, request: Request) -> Reply:
    """Check the reply against the request; anything unexpected is garbage (a corrupted child)."""
    if "open_error" in header:
        if not isinstance(header["open_error"], str) or blob:
            raise _Garbage("bad open_error")
        return Reply(open_error=header["open_error"])
    entries = header.get("attrs")
    if not isinstance(entries, list) or len(entries) != len(request.attrs):
        raise _Garbage("attribute list does not match the request")
    attrs: list[Attribute] = []
    pos = 0
    for name, entry in zip(request.attrs, entries):
        if not isinstance(entry, dict) or entry.get("name") != name or entry.get("status") not in _STATUSES:
            raise _Garbage(f"bad entry for {name}")
        status = entry["status"]
        if status == "value":
            size = entry.get("size")
            if not isinstance(size, int) or not 0 <= size <= request.max_value or pos + size > len(blob):
                raise _Garbage(f"bad size for {name}")
            attrs.append(Attribute(name, status, value=blob[pos:pos + size]))
            pos += size
        elif status == "shape":
            count, storage = entry.get("count"), entry.get("storage")
            if not isinstance(count, int) or not isinstance(storage, int):
                raise _Garbage(f"bad shape for {name}")
            attrs.append(Attribute(name, status, count=count, storage=storage))
        elif status in ("error", "type"):
            detail = entry.get(status)
            if not isinstance(detail, str):
                raise _Garbage(f"bad {status} for {name}")
            attrs.append(Attribute(name, status, detail=detail))
        else:
            attrs.append(Attribute(name, status))
    if pos != len(blob):
        raise _Garbage("blob longer than its values")
    return Reply(attrs=tuple(attrs))


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


# ---------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------

_READERS: weakref.WeakSet[HDF5Reader] = weakref.WeakSet()


T = TypeVar("T")


class HDF5Reader:
    """A lazily started, reused child process that reads HDF5 root attributes (see the module doc).

    The process management (start, hello, acknowledged requests, timeouts, restarts, exit and
    fork hooks) is shared with the Arrow sampler, which subclasses this with its own request.
    """

    WHAT = "HDF5 reader"  # how messages name the child

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self.command: tuple[str, ...] = tuple(command) if command is not None else default_command()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._unavailable: Failure | None = None
        self._busy = False
        self._starts = 0
        self._exit_hooks = False
        _READERS.add(self)

    @property
    def pid(self) -> int | None:
        """Process id of the current child (None before the first request or after a failure)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def busy(self) -> bool:
        """True while the child holds a request (acknowledged it) and its reply is awaited."""
        return self._busy

    @property
    def starts(self) -> int:
        """How many children this reader has started."""
        return self._starts

    def read(self, request: Request, timeout: float) -> Reply | Failure:
        """Send one file to the child and wait at most ``timeout`` seconds for its attributes."""
        frame = encode_frame(self._header(request, timeout), request.data)
        return self._request(frame, len(request.attrs) * request.max_value,
                             lambda header, blob: _parse_reply(header, blob, request), timeout)

    def _request(self, frame: bytes, max_reply: int, parse: Callable[[dict[str, Any], bytes], T],
                 timeout: float) -> T | Failure:
        """One file through the child (started or restarted as needed; a child that died before
        it took the request is replaced once); subclasses for other workers use the same path."""
        with self._lock:
            for _attempt in range(2):
                proc = self._running()
                if isinstance(proc, Failure):
                    return proc
                outcome = self._exchange(proc, frame, max_reply, parse, timeout)
                if outcome is not None:
                    return outcome
            return Failure("unavailable", f"the {self.WHAT} process exited twice before it took a request")

    def _running(self) -> subprocess.Popen[bytes] | Failure:
        """The live child, started (again) when there is none or it died while idle."""
        if self._unavailable is not None:
            return self._unavailable
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        self._stop(kill=True)  # died while idle: not the next file's doing
        return self._start()

    def _exchange(self, proc: subprocess.Popen[bytes], frame: bytes, max_reply: int,
                  parse: Callable[[dict[str, Any], bytes], T], timeout: float) -> T | Failure | None:
        """One request/reply; None when the child died before it took the request (retry)."""
        assert proc.stdin is not None and proc.stdout is not None
        out, into = proc.stdin.fileno(), proc.stdout.fileno()
        deadline = time.monotonic() + max(timeout, 0.001)
        try:
            _send(out, frame, deadline)
            if _read_exact(into, FRAME.size, deadline) != ACK:
                raise _Garbage("no acknowledgement")
            self._busy = True  # from here on, the child holds the file
            header, blob = _receive(into, deadline, max_reply)
            return parse(header, blob)
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

    def close(self) -> None:
        """Stop the child: close its stdin (it exits at end of file), kill it if it lingers, reap it."""
        locked = self._lock.acquire(timeout=STOP_TIMEOUT)
        try:
            proc, self._proc = self._proc, None
            if proc is not None:
                _finish(proc, graceful=True)
        finally:
            if locked:
                self._lock.release()

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _header(request: Request, timeout: float) -> dict[str, Any]:
        header: dict[str, Any] = {"attrs": list(request.attrs), "max_storage": request.max_storage,
                                  "max_value": request.max_value, "timeout": timeout}
        if request.path is not None:
            header.update(path=request.path, offset=request.offset, length=request.length,
                          dev=request.identity[0], ino=request.identity[1])
        return header

    def _start(self) -> subprocess.Popen[bytes] | Failure:
        """Start a child and wait for its hello; a failed start is remembered (see the module doc)."""
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
            self._unavailable = Failure("unavailable", f"the {self.WHAT} process {why}{tail}")
            return self._unavailable
        proc.stderr.close()  # the child has pointed its stderr at the null device
        if hello.get("ready") is not True:
            _finish(proc, graceful=True)
            self._unavailable = self._not_ready(hello)
            return self._unavailable
        self._proc = proc
        return proc

    def _not_ready(self, hello: dict[str, Any]) -> Failure:
        """Why a child that started could not serve (its library does not import there)."""
        return Failure("missing-h5py", str(hello.get("error", "h5py cannot be imported"))[:300])

    def _stop(self, kill: bool) -> int | None:
        """Reap the current child (killing it first when ``kill``); its exit status."""
        proc, self._proc = self._proc, None
        return None if proc is None else _finish(proc, graceful=False, kill=kill)[0]

    def _install_exit_hooks(self) -> None:
        """Stop the child at interpreter exit, and at the exit of a multiprocessing worker
        (those leave through ``os._exit``, which skips atexit but runs multiprocessing's finalizers)."""
        if self._exit_hooks:
            return
        self._exit_hooks = True
        ref = weakref.ref(self)
        atexit.register(_close_ref, ref)
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            mp_util.Finalize(None, _close_ref, args=(ref,), exitpriority=10)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's process and pipes (closing only our copies)."""
        self._lock = threading.Lock()
        self._busy = False
        self._exit_hooks = False  # this process exits its own way (a pool worker: os._exit)
        proc, self._proc = self._proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def _finish(proc: subprocess.Popen[bytes], graceful: bool, kill: bool = False) -> tuple[int | None, str]:
    """Reap ``proc`` and close our ends of its pipes: (exit status, last line of its stderr if still open).

    ``graceful``: close stdin first and let it exit at end of file. Otherwise wait for it to exit
    by itself (it just closed its output: it is dying), killing it when ``kill`` or when it
    lingers. Either way the process is reaped: no zombie is left behind.
    """
    if graceful and proc.stdin is not None:
        proc.stdin.close()
    if kill and proc.poll() is None:
        proc.kill()
    try:
        returncode: int | None = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        returncode = None
    tail = ""
    if proc.stderr is not None and not proc.stderr.closed:
        try:
            text = proc.stderr.read(1 << 16) or b""
        except OSError:
            text = b""
        lines = text.decode("utf-8", "replace").strip().splitlines()
        tail = f": {lines[-1][:300]}" if lines else ""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return returncode, tail


def _close_ref(ref: weakref.ref[HDF5Reader]) -> None:
    reader = ref()
    if reader is not None:
        reader.close()


def _after_fork_in_child() -> None:
    for reader in list(_READERS):
        reader._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------------------------
# The process-wide reader
# ---------------------------------------------------------------------------------------------

W = TypeVar("W", bound=HDF5Reader)


class SharedWorker(Generic[W]):
    """The one worker of a kind in this process, created on first use.

    Another may be installed (tests; embedders whose interpreter needs another command line):
    an in-process call only, so nothing outside the process (environment, files, scanned
    content) can choose the command that gets run. The previous worker is returned, not closed.
    """

    def __init__(self, make: Callable[[], W]) -> None:
        self._make = make
        self._worker: W | None = None
        self._lock = threading.Lock()

    def get(self) -> W:
        """The worker every file of its kind goes through."""
        with self._lock:
            if self._worker is None:
                self._worker = self._make()
            return self._worker

    def set(self, worker: W | None) -> W | None:
        """Install ``worker``; return the one it replaces."""
        with self._lock:
            previous, self._worker = self._worker, worker
            return previous

    def pid(self) -> int | None:
        """Process id of the current child, if one is running."""
        worker = self._worker
        return worker.pid if worker is not None else None


_SHARED: SharedWorker[HDF5Reader] = SharedWorker(HDF5Reader)


def shared() -> HDF5Reader:
    """The reader every HDF5 file of this process goes through (created on first use)."""
    return _SHARED.get()


def set_shared(reader: HDF5Reader | None) -> HDF5Reader | None:
    """Install another reader (see :class:`SharedWorker`); returns the previous one, not closed."""
    return _SHARED.set(reader)


def worker_pid() -> int | None:
    """Process id of the shared reader's current child, if one is running."""
    return _SHARED.pid()
