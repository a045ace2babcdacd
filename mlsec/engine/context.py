"""Per-artifact inspection state: limits, deadline, expansion budget and the findings sink.

Format readers call each other recursively (a pickle in a zip in a tar.gz); they share one
:class:`Inspection` per artifact so that the limits hold for the artifact as a whole, not per
layer. This object is private to one scan of one artifact; what leaves it is frozen Findings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mlsec.engine.stream import BudgetExceeded, Stream, bytes_stream
from mlsec.limits import Limits
from mlsec.model import Finding, Location, Severity, Skip, clean_text


class DeadlineExceeded(Exception):
    """Raised when the artifact's time budget is used up (cooperative timeout)."""


@dataclass
class Inspection:
    """Collects findings for one artifact and enforces its limits."""

    path: str
    scanner: str
    limits: Limits = field(default_factory=Limits)
    started: float = field(default_factory=time.monotonic)
    expanded: int = 0
    findings: list[Finding] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    _seen: set[tuple[str, str, str | None]] = field(default_factory=set)

    def add(
        self,
        rule_id: str,
        message: str,
        *,
        key: str,
        severity: Severity | None = None,
        member: str | None = None,
        offset: int | None = None,
        pointer: str | None = None,
        evidence: dict[str, str] | None = None,
    ) -> None:
        """Record a finding; the same (rule, key, member) is only reported once per artifact."""
        from mlsec import catalog  # here: a run answered from the memo never builds a finding

        rule = catalog.rules()[rule_id]  # KeyError here is a bug: every rule must be catalogued
        member = clean_text(member) if member is not None else None  # names from archives: any bytes
        message, key = clean_text(message), clean_text(key)
        ident = (rule_id, key, member)
        if ident in self._seen:
            return
        self._seen.add(ident)
        self.findings.append(
            Finding(
                rule_id=rule_id,
                severity=rule.severity if severity is None else severity,
                message=message,
                path=self.path,
                scanner=self.scanner,
                location=Location(offset=offset, member=member, pointer=pointer),
                key=f"{member or ''}|{key}",
                evidence=tuple(sorted((k, clean_text(v)) for k, v in (evidence or {}).items())),
            )
        )

    def skip(self, reason: str, code: str) -> None:
        """Record that part of the artifact was not inspected."""
        self.skips.append(Skip(path=self.path, reason=clean_text(reason), code=code))

    def charge(self, nbytes: int) -> None:
        """Account decompressed bytes against the artifact's budget (see Stream)."""
        self.expanded += nbytes
        if self.expanded > self.limits.max_expanded:
            raise BudgetExceeded(f"more than {self.limits.max_expanded} bytes decompressed")

    def check_time(self) -> None:
        """Raise DeadlineExceeded once the artifact's time budget is spent."""
        if time.monotonic() - self.started > self.limits.timeout:
            raise DeadlineExceeded(f"inspection exceeded {self.limits.timeout:g}s")


def join_member(parent: str | None, name: str) -> str:
    """Member chain notation: ``outer.zip!inner/data.pkl``."""
    return name if not parent else f"{parent}!{name}"


def random_access(stream: Stream, insp: Inspection, member: str | None, what: str, key: str) -> Stream | None:
    """A seekable view of ``stream`` for formats that need random access (zip, 7z, HDF5).

    A stream inside a compressed container cannot seek: it is kept in memory when it fits in
    ``limits.keep_bytes``, otherwise the limit is reported (MLSEC-SCAN-001) and None returned.
    """
    if stream.seekable:
        return stream
    data = stream.read(insp.limits.keep_bytes + 1)
    if len(data) > insp.limits.keep_bytes:
        insp.add("MLSEC-SCAN-001", f"{what} inside a compressed stream is too large to inspect in memory",
                 key=key, member=member)
        return None
    return bytes_stream(data)
