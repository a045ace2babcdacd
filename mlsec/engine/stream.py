"""Bounded, forward-only byte streams for the format readers.

Every reader in mlsec consumes a :class:`Stream`: it can read, peek, and *skip* — and skipping is
what keeps memory flat. A 1 GiB tensor inside a pickle is skipped with a seek on a file, or by
reading and discarding fixed-size chunks on a decompressing stream; it is never materialized.
Streams also count decompressed bytes against the artifact's expansion budget, so a bomb turns
into a finding instead of an outage.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, Protocol

CHUNK = 1 << 20


class StreamError(Exception):
    """A problem with the bytes themselves, raised from inside a stream while a reader reads."""


class BudgetExceeded(StreamError):
    """Raised by a stream when its artifact's expansion budget (or a bomb ratio) is hit."""


class CorruptData(StreamError):
    """Raised by a decompressing stream when the compressed data is damaged."""


class Budget(Protocol):
    """What a stream charges decompressed bytes to (implemented by the inspection context)."""

    def charge(self, nbytes: int) -> None:
        """Account ``nbytes`` of expanded data; raise BudgetExceeded past the limit."""


class Stream:
    """A forward-only view of ``length`` bytes of a binary file object starting at ``start``.

    ``seekable`` says whether skipping may seek; decompressing sources are read and discarded.
    ``budget`` (optional) is charged for every byte produced, for decompressed sources.
    ``origin`` is the absolute offset of this stream within its parent, for evidence.
    """

    def __init__(
        self,
        raw: BinaryIO,
        *,
        start: int = 0,
        length: int | None = None,
        seekable: bool = False,
        budget: Budget | None = None,
    ) -> None:
        self._raw = raw
        self._seekable = seekable
        self._budget = budget
        self._end = None if length is None else start + length
        self._pos = start
        self._start = start
        self._buf = b""
        if seekable and length is None:
            raise ValueError("a seekable stream needs a length")

    # -- positions -----------------------------------------------------------------------------
    def tell(self) -> int:
        """Offset relative to the start of this stream."""
        return self._pos - len(self._buf) - self._start

    @property
    def length(self) -> int | None:
        """Total length when known (files and file windows), else None."""
        return None if self._end is None else self._end - self._start

    def remaining(self) -> int | None:
        """Bytes left when the length is known."""
        return None if self._end is None else self._end - self._pos + len(self._buf)

    @property
    def seekable(self) -> bool:
        """Whether windows of this stream can be re-read (plain files)."""
        return self._seekable

    @property
    def raw(self) -> BinaryIO:
        """The underlying file object (for readers that need random access on seekable files)."""
        return self._raw

    @property
    def absolute_start(self) -> int:
        """Offset of this stream's first byte in the underlying file object."""
        return self._start

    # -- reading -------------------------------------------------------------------------------
    def _fill(self, n: int) -> int:
        want = n - len(self._buf)
        if self._end is not None:
            want = min(want, self._end - self._pos)
        if want <= 0:
            return 0
        if self._seekable:
            # Windows share one file object with their parent: always seek to our own position.
            self._raw.seek(self._pos)
        data = self._raw.read(want)
        if data and self._budget is not None:
            self._budget.charge(len(data))
        self._pos += len(data)
        self._buf += data
        return len(data)

    def read(self, n: int) -> bytes:
        """Read up to ``n`` bytes (fewer only at the end)."""
        while len(self._buf) < n:
            if not self._fill(min(n, len(self._buf) + CHUNK)):
                break
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_exact(self, n: int) -> bytes | None:
        """Read exactly ``n`` bytes, or return None at a premature end."""
        data = self.read(n)
        return data if len(data) == n else None

    def peek(self, n: int) -> bytes:
        """Return the next ``n`` bytes without consuming them."""
        while len(self._buf) < n:
            if not self._fill(n):
                break
        return self._buf[:n]

    def readline(self, limit: int) -> bytes:
        """Read through the next ``\\n`` (included), reading at most ``limit`` bytes."""
        while b"\n" not in self._buf and len(self._buf) < limit:
            if not self._fill(min(limit, len(self._buf) + 4096)):
                break
        idx = self._buf.find(b"\n", 0, limit)
        cut = limit if idx < 0 else idx + 1
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return out

    def skip(self, n: int) -> int:
        """Advance ``n`` bytes without keeping them; return how many were actually skipped."""
        if n <= len(self._buf):
            self._buf = self._buf[n:]
            return n
        done = len(self._buf)
        n -= done
        self._buf = b""
        if self._end is not None:
            n = min(n, self._end - self._pos)
        if self._seekable:
            self._pos += n
            return done + n
        while n > 0:
            chunk = self._raw.read(min(n, CHUNK))
            if not chunk:
                break
            if self._budget is not None:
                self._budget.charge(len(chunk))
            self._pos += len(chunk)
            n -= len(chunk)
            done += len(chunk)
        return done

    def at_end(self) -> bool:
        """True when no byte is left."""
        return not self.peek(1)

    def window(self, offset: int, length: int) -> Stream:
        """A new stream over ``[offset, offset+length)`` of this (seekable) stream."""
        if not self._seekable:
            raise ValueError("window() needs a seekable stream")
        return Stream(self._raw, start=self._start + offset, length=length, seekable=True)


def file_stream(fh: BinaryIO) -> Stream:
    """Stream over a whole regular file opened in binary mode."""
    size = os.fstat(fh.fileno()).st_size
    return Stream(fh, start=0, length=size, seekable=True)


def bytes_stream(data: bytes) -> Stream:
    """Stream over bytes already in memory (small nested payloads)."""
    return Stream(io.BytesIO(data), start=0, length=len(data), seekable=True)
