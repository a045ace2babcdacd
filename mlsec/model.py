"""Core data types shared by every stage of the pipeline.

Everything here is a frozen dataclass or an enum, so that each stage (discover, scan, suppress,
policy, report) can only hand new values forward, never mutate what an earlier stage produced.
All types know how to turn themselves into plain JSON-ready dicts; reports build on that.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlsec.verdicts import Suppressed

SCHEMA_VERSION = 1


def clean_text(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN``.

    File names and archive member names need not be UTF-8; Python carries such bytes as lone
    surrogates (``os.fsdecode``, tarfile), which no UTF-8 report can encode. Every name that
    enters a finding, skip or artifact goes through here, so every output format stays valid.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:  # bytes smuggled in by surrogateescape: show them as the bytes they were
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # other lone surrogates (from JSON \\ud800 escapes, say)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Severity(enum.IntEnum):
    """Finding severity. Ordered, so thresholds are plain comparisons."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """Lower-case name used in every machine-readable output."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse a severity name case-insensitively; raise ValueError naming the valid choices."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (choose from {choices})") from None


class ArtifactKind(enum.StrEnum):
    """The four kinds of ML artifact (plus notebooks and a catch-all for what we only hash)."""

    CODE = "code"
    NOTEBOOK = "notebook"
    DEPENDENCIES = "dependencies"
    DATASET = "dataset"
    MODEL = "model"
    ARCHIVE = "archive"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Artifact:
    """One file that was discovered and hashed.

    ``path`` is repo-relative POSIX (stable across machines, used in every report);
    ``fs_path`` is where to open it on this machine and never leaves the process.
    """

    path: str
    kind: ArtifactKind
    format: str
    size: int
    sha256: str
    fs_path: str = field(default="", compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (without the machine-local ``fs_path``)."""
        return {
            "path": self.path,
            "kind": self.kind.value,
            "format": self.format,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class Location:
    """Where inside an artifact a finding points.

    Text formats use lines; binary formats use a byte ``offset``; ``member`` is the chain of
    container members (``archive.zip!model/data.pkl``); ``pointer`` names something finer
    (an opcode index, a tensor, a JSON pointer).
    """

    line: int | None = None
    end_line: int | None = None
    column: int | None = None
    offset: int | None = None
    member: str | None = None
    pointer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, omitting unset fields."""
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}

    def describe(self) -> str:
        """Short human form, e.g. ``archive/data.pkl, offset 183``."""
        parts = [self.member or ""]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        if self.pointer:
            parts.append(self.pointer)
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in one artifact.

    ``key`` is the stable identity of the problem inside the artifact (for example
    ``"GLOBAL posix.system"`` or a member name) and never a line number or byte offset, so the
    fingerprint survives unrelated edits. ``evidence`` is a sorted tuple of short strings
    meant for humans; it must never contain raw secret or dataset values.
    """

    rule_id: str
    severity: Severity
    message: str
    path: str
    scanner: str
    location: Location = Location()
    key: str = ""
    evidence: tuple[tuple[str, str], ...] = ()

    @property
    def fingerprint(self) -> str:
        """sha256(rule, path, key): stable across runs and line moves."""
        raw = "\0".join((self.rule_id, self.path, self.key or self.message))
        return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()

    def sort_key(self) -> tuple[Any, ...]:
        """Deterministic report order: worst first, then by place."""
        loc = self.location
        return (
            -int(self.severity),
            self.path,
            loc.member or "",
            loc.line or 0,
            loc.offset or 0,
            self.rule_id,
            self.key,
            self.message,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as documented in the README (schema_version 1)."""
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.label,
            "path": self.path,
            "message": self.message,
            "location": self.location.to_dict(),
            "scanner": self.scanner,
            "evidence": dict(self.evidence),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True, slots=True)
class Skip:
    """An artifact (or part of one) that was deliberately not scanned, and why.

    Skips are first-class results: a skipped model is never reported as clean.
    """

    path: str
    reason: str
    code: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "code": self.code, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """A scanner that could not complete on an artifact (a tool bug, a timeout).

    Hostile input is never an ErrorRecord: it is a Finding. Errors make the scan incomplete
    (exit 3) because the artifact may still hide something.
    """

    path: str
    scanner: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "scanner": self.scanner, "message": self.message}


@dataclass(frozen=True, slots=True)
class Package:
    """A dependency declared by a manifest or lockfile: a BOM ``library`` and an advisory key.

    Scanners of dependency files yield these next to their findings. ``version`` is the exact
    pinned version, or "" when only a range is declared (``specifier`` keeps the range).
    """

    name: str
    version: str
    path: str
    ecosystem: str = "pypi"
    specifier: str = ""
    direct: bool = True

    @property
    def purl(self) -> str:
        """Package URL (``pkg:pypi/name@version``); names are PEP 503-normalized by the scanner."""
        base = f"pkg:{self.ecosystem}/{self.name}"
        return f"{base}@{self.version}" if self.version else base

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "version": self.version,
            "purl": self.purl,
            "path": self.path,
            "ecosystem": self.ecosystem,
            "specifier": self.specifier,
            "direct": self.direct,
        }


@dataclass(frozen=True, slots=True)
class Fact:
    """A neutral observation about an artifact that is not a problem in itself.

    Examples: a dataset's row count or the kinds of personal data it contains, a model's
    licence or architecture. The ML-BOM and the policy input read them; reports do not.
    ``name`` is a dotted key (``dataset.sensitive_kinds``); ``value`` is always a string.
    """

    path: str
    name: str
    value: str
    scanner: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "name": self.name, "value": self.value, "scanner": self.scanner}


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Everything a scan produced, sorted, ready for the BOM, suppression, policy and reports."""

    tool_version: str
    artifacts: tuple[Artifact, ...]
    findings: tuple[Finding, ...]
    skipped: tuple[Skip, ...] = ()
    errors: tuple[ErrorRecord, ...] = ()
    scanners: tuple[tuple[str, str], ...] = ()
    packages: tuple[Package, ...] = ()
    facts: tuple[Fact, ...] = ()
    suppressed: tuple[Suppressed, ...] = ()
    schema_version: int = SCHEMA_VERSION

    @property
    def complete(self) -> bool:
        """True when every scanner finished on every artifact."""
        return not self.errors

    def max_severity(self) -> Severity | None:
        """Worst severity among findings, or None when there are none."""
        return max((f.severity for f in self.findings), default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: an object with ``schema_version`` first, all lists sorted."""
        counts = {s.label: 0 for s in Severity}
        for f in self.findings:
            counts[f.severity.label] += 1
        return {
            "schema_version": self.schema_version,
            "tool": {"name": "mlsec", "version": self.tool_version},
            "scanners": [{"name": n, "version": v} for n, v in self.scanners],
            "summary": {
                "artifacts": len(self.artifacts),
                "findings": len(self.findings),
                "suppressed": len(self.suppressed),
                "by_severity": counts,
                "skipped": len(self.skipped),
                "errors": len(self.errors),
            },
            "artifacts": [a.to_dict() for a in self.artifacts],
            "findings": [f.to_dict() for f in self.findings],
            "suppressed": [s.to_dict() for s in self.suppressed],
            "skipped": [s.to_dict() for s in self.skipped],
            "errors": [e.to_dict() for e in self.errors],
            "packages": [p.to_dict() for p in self.packages],
            "facts": [f.to_dict() for f in self.facts],
        }


_VERDICT_TYPES = frozenset({"Suppression", "Suppressed", "Verdict", "Waived", "Decision"})


def __getattr__(name: str) -> Any:
    """The suppression and policy types live in :mod:`mlsec.verdicts`, loaded when first used
    (a clean re-run never needs them); ``from mlsec.model import Decision`` keeps working."""
    if name in _VERDICT_TYPES:
        from mlsec import verdicts

        return getattr(verdicts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
