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
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec.engine import arrow_worker
from mlsec.engine.hdf5_client import (
    Failure,
    HDF5Reader,
    SharedWorker,
    _Garbage,
)
from mlsec.engine.hdf5_worker import encode_frame

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

    WHAT = "Arrow sampler"

    def __init__(self, command: Sequence[str] | None = None) -> None:
        super().__init__(command if command is not None else default_command())

    def read(self, request: Any, timeout: float) -> Any:  # the HDF5 request format does not apply
        raise NotImplementedError("use sample()")

    def sample(self, request: dict[str, Any], timeout: float) -> SampleReply | Failure:
        """Send one file to the child and wait at most ``timeout`` seconds for its tallies."""
        return self._request(encode_frame({**request, "timeout": timeout}), MAX_REPLY, _parse, timeout)

    def _not_ready(self, hello: dict[str, Any]) -> Failure:
        """pyarrow does not import in the child: the content is skipped (reported), not sampled."""
        detail = str(hello.get("error", "pyarrow cannot be imported"))[:300]
        return Failure("unavailable", f"pyarrow cannot be imported in the sampler process ({detail})")


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

_SHARED: SharedWorker[ArrowSampler] = SharedWorker(ArrowSampler)


def shared() -> ArrowSampler:
    """The sampler every Parquet/Arrow file of this process goes through (created on first use)."""
    return _SHARED.get()


def set_shared(sampler: ArrowSampler | None) -> ArrowSampler | None:
    """Install another sampler (tests; embedders); returns the previous one, not closed. In-process only."""
    return _SHARED.set(sampler)


def worker_pid() -> int | None:
    """Process id of the shared sampler's current child, if one is running."""
    return _SHARED.pid()
