"""Match dependencies against the advisory store (PEP 440 with ``packaging``), and rate the matches.

A pinned version is affected when it is in the advisory's listed ``versions`` (compared in
canonical form) **or** inside one of its ECOSYSTEM intervals, walked with
``packaging.version.Version``. Measured on the PyPA database the two agree for 99.97 % of
(advisory, version) pairs; the union covers data quirks both ways, and a version that does
not parse (legacy strings) falls back to the list alone.

A range (``>=1.2``, a bare name, a Poetry ``^1.2 || ^2``) is affected when some version it
allows is affected. Candidates are the versions the advisory itself names (listed versions
and interval bounds) plus the range's own bounds; the first one allowed *and* affected is
kept as the example in the evidence. Such matches are MEDIUM: the range permits a vulnerable
version, it does not prove one is installed.

Severity (documented in ``rules/catalog/deps.toml``, MLSEC-DEP-001):
  * ``MAL-*`` (OpenSSF malicious packages) -> CRITICAL, pinned or not;
  * a CVSS v3.x or v2 vector -> its base score: >= 9.0 CRITICAL, >= 7.0 HIGH, >= 4.0 MEDIUM,
    otherwise LOW (the NVD bands). CVSS v4 vectors are kept as evidence but not scored;
  * else the advisory's own word (GHSA ``database_specific.severity``: CRITICAL, HIGH,
    MODERATE/MEDIUM, LOW);
  * else HIGH;
  * a range match is at most MEDIUM (MAL-* excepted).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlsec.deps import Dependency
from mlsec.deps.advisories import Advisory, AdvisoryStore, Affected, Interval
from mlsec.model import Severity

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version


@dataclass(frozen=True, slots=True)
class Match:
    """One advisory that applies to one dependency."""

    dependency: Dependency
    advisory: Advisory
    fixed: tuple[str, ...]
    severity: Severity
    package: str            # the PyPI name matched (differs from the dependency's for conda renames)
    in_range: bool = False  # matched through an allowed range, not an exact version
    example: str = ""       # for range matches: an affected version the range allows


@functools.lru_cache(maxsize=65536)
def _version(text: str) -> Version | None:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


@functools.lru_cache(maxsize=8192)
def _canonical(text: str) -> str:
    from mlsec.deps.advisories import _canonical as canon

    return canon(text)


def _in_interval(v: Version, interval: Interval) -> bool | None:
    """True/False, or None when a bound does not parse (then only the listed versions decide)."""
    low = _version(interval.introduced) if interval.introduced not in ("", "0") else None
    if interval.introduced not in ("", "0") and low is None:
        return None
    if low is not None and v < low:
        return False
    if not interval.end_kind:
        return True
    high = _version(interval.end)
    if high is None:
        return None
    return v <= high if interval.end_kind == "last_affected" else v < high


def affects(entry: Affected, version: str) -> bool:
    """Whether ``version`` (exact) is affected by ``entry``."""
    if _canonical(version) in entry.versions:
        return True
    v = _version(version)
    if v is None:
        return False
    if v.local and _canonical(v.public) in entry.versions:
        return True
    return any(_in_interval(v, i) for i in entry.intervals)


@functools.lru_cache(maxsize=4096)
def _ranges(specifier: str) -> tuple[SpecifierSet, ...] | None:
    """A specifier (with Poetry-style ``||`` alternatives) as SpecifierSets; None when it does not parse."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return tuple(SpecifierSet(part.strip()) for part in specifier.split("||"))
    except InvalidSpecifier:
        return None


def _allowed(ranges: tuple[SpecifierSet, ...], version: str) -> bool:
    v = _version(version)
    return v is not None and any(s.contains(v) for s in ranges)


def range_example(entry: Affected, specifier: str) -> str:
    """An affected version the range allows, or "" (also "" when the range does not parse)."""
    ranges = _ranges(specifier)
    if ranges is None:
        return ""
    candidates = set(entry.versions)
    for interval in entry.intervals:
        candidates.add(interval.introduced)
        if interval.end_kind == "last_affected":
            candidates.add(interval.end)
    for spec_set in ranges:
        for spec in spec_set:
            candidates.add(spec.version.rstrip(".*"))
    parsed = [(v, c) for c in candidates if (v := _version(c)) is not None]
    for _, candidate in sorted(parsed):  # by version, then text: deterministic among equal versions
        if candidate == "0":
            continue
        if _allowed(ranges, candidate) and affects(entry, candidate):
            return candidate
    return ""


# -- severity ------------------------------------------------------------------------------------

_V3 = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_V2 = {
    "AV": {"L": 0.395, "A": 0.646, "N": 1.0},
    "AC": {"H": 0.35, "M": 0.61, "L": 0.71},
    "Au": {"M": 0.45, "S": 0.56, "N": 0.704},
    "C": {"N": 0.0, "P": 0.275, "C": 0.660},
}


def _roundup(x: float) -> float:
    """CVSS v3.1 Roundup (the spec's integer version, immune to float noise)."""
    n = round(x * 100000)
    return n / 100000.0 if n % 10000 == 0 else (math.floor(n / 10000) + 1) / 10.0


def cvss_score(vector: str) -> float | None:
    """Base score of a CVSS v3.x or v2 vector; None for v4 or anything malformed."""
    parts = dict(p.split(":", 1) for p in vector.strip().split("/") if ":" in p)
    try:
        if vector.startswith("CVSS:3"):
            scope_changed = parts["S"] == "C"
            pr = {"N": 0.85, "L": 0.68 if scope_changed else 0.62, "H": 0.5 if scope_changed else 0.27}[parts["PR"]]
            c, i, a = (_V3["C"][parts[k]] for k in ("C", "I", "A"))
            iss = 1 - (1 - c) * (1 - i) * (1 - a)
            impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if scope_changed else 6.42 * iss
            exploit = 8.22 * _V3["AV"][parts["AV"]] * _V3["AC"][parts["AC"]] * pr * _V3["UI"][parts["UI"]]
            if impact <= 0:
                return 0.0
            return _roundup(min(1.08 * (impact + exploit), 10) if scope_changed else min(impact + exploit, 10))
        if vector.startswith("CVSS:4"):
            return None
        if "Au" in parts:
            c, i, a = (_V2["C"][parts[k]] for k in ("C", "I", "A"))
            impact = 10.41 * (1 - (1 - c) * (1 - i) * (1 - a))
            exploit = 20 * _V2["AV"][parts["AV"]] * _V2["AC"][parts["AC"]] * _V2["Au"][parts["Au"]]
            f = 0.0 if impact == 0 else 1.176
            return round((0.6 * impact + 0.4 * exploit - 1.5) * f, 1)
    except KeyError:
        return None
    return None


_WORDS = {"CRITICAL": Severity.CRITICAL, "HIGH": Severity.HIGH, "MODERATE": Severity.MEDIUM,
          "MEDIUM": Severity.MEDIUM, "LOW": Severity.LOW}


def severity_of(advisory: Advisory, *, in_range: bool = False) -> Severity:
    """The finding severity for an advisory (see the module docstring for the mapping)."""
    if advisory.id.startswith("MAL-"):
        return Severity.CRITICAL
    score = cvss_score(advisory.cvss) if advisory.cvss else None
    if score is not None:
        sev = (Severity.CRITICAL if score >= 9.0 else Severity.HIGH if score >= 7.0
               else Severity.MEDIUM if score >= 4.0 else Severity.LOW)
    else:
        sev = _WORDS.get(advisory.severity_text.upper(), Severity.HIGH)
    return min(sev, Severity.MEDIUM) if in_range else sev


# -- matching ------------------------------------------------------------------------------------


def advisory_name(dep: Dependency) -> str:
    """The PyPI name to look advisories up under, or "" when the dependency cannot be matched.

    Unmatchable: conda packages without an obvious PyPI twin, nameless entries, VCS checkouts
    and local or URL entries whose version is unknown (their version is whatever the ref holds).
    """
    name = dep.pypi_name if dep.ecosystem == "conda" else dep.name if dep.ecosystem == "pypi" else ""
    if not name:
        return ""
    if dep.url and not dep.version:
        return ""
    from mlsec.deps.manifests import normalize

    return normalize(name)


def match(dep: Dependency, store: AdvisoryStore) -> list[Match]:
    """Every advisory that applies to ``dep`` (exactly, or through its allowed range)."""
    name = advisory_name(dep)
    if not name:
        return []
    out = []
    for entry in store.affected(name):
        if dep.version:
            if affects(entry, dep.version):
                out.append(Match(dep, entry.advisory, entry.fixed, severity_of(entry.advisory), name))
        else:
            example = range_example(entry, dep.specifier)
            if example:
                out.append(Match(dep, entry.advisory, entry.fixed, severity_of(entry.advisory, in_range=True), name,
                                 in_range=True, example=example))
    return out


def match_all(deps: Iterable[Dependency], store: AdvisoryStore) -> list[Match]:
    """Matches for many dependencies (one lookup per distinct package, cached by the store)."""
    return [m for dep in deps for m in match(dep, store)]
