"""The one adapter to pip-audit's vulnerability services, used only with an explicit ``--online``.

pip-audit has no public API (every module is ``_``-prefixed; maintainers call it CLI-first), so
everything it is used for sits in this file and a pip-audit release that moves things breaks
only here. What pip-audit gets wrong for a gate is fixed here too: when it cannot ask (network
down, package not on PyPI, a range instead of a version), pip-audit skips the dependency and
still says "No known vulnerabilities found"; this adapter returns every such dependency as
skipped, with the reason, and the scanner reports them as Skips, never as clean.

Services: ``pypi`` (pip-audit's default: PyPI's JSON API per version) or ``osv``
(``osv_url`` may point to any OSV-compatible endpoint, e.g. a local mirror).
Results carry no CVSS vector, so their severity is HIGH (MAL-* CRITICAL), as documented for
MLSEC-DEP-001.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlsec.deps import Dependency
from mlsec.deps.advisories import Advisory
from mlsec.deps.match import Match, advisory_name, severity_of

PIP_AUDIT_PIN = "pip-audit==2.10.1"


@dataclass(frozen=True, slots=True)
class OnlineResult:
    """Matches found by the service and the dependencies it could not check (with why)."""

    matches: tuple[Match, ...]
    skipped: tuple[tuple[Dependency, str], ...]
    service: str


def available() -> bool:
    """True when pip-audit can be imported."""
    try:
        import pip_audit._service  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return False
    return True


def audit(deps: Iterable[Dependency], *, service: str = "pypi", osv_url: str | None = None,
          timeout: int = 15, cache_dir: Path | None = None) -> OnlineResult:
    """Ask pip-audit's ``service`` about every pinned dependency; everything else is skipped."""
    deps = list(deps)
    if not available():
        reason = f"--online needs pip-audit ({PIP_AUDIT_PIN}, the 'online' extra); it is not installed"
        return OnlineResult((), tuple((d, reason) for d in deps), service)
    from packaging.version import InvalidVersion, Version
    from pip_audit._service.interface import ResolvedDependency

    svc = _service(service, osv_url, timeout, cache_dir)
    matches: list[Match] = []
    skipped: list[tuple[Dependency, str]] = []
    answers: dict[tuple[str, str], list[tuple[Advisory, tuple[str, ...]]] | str] = {}
    down = ""
    for dep in deps:
        name = advisory_name(dep)
        if not name or not dep.version:
            skipped.append((dep, "not pinned to one version: the online service needs an exact version"))
            continue
        try:
            version = Version(dep.version)
        except InvalidVersion:
            skipped.append((dep, f"version {dep.version!r} is not a PEP 440 version"))
            continue
        key = (name, dep.version)
        if key not in answers:
            answers[key] = down or _query(svc, ResolvedDependency(name=name, version=version))
            if isinstance(answers[key], str) and str(answers[key]).startswith("service unreachable"):
                down = str(answers[key])  # do not wait for a timeout once per dependency
        answer = answers[key]
        if isinstance(answer, str):
            skipped.append((dep, answer))
            continue
        for adv, fixed in answer:
            matches.append(Match(dep, adv, fixed, severity_of(adv), name))
    return OnlineResult(tuple(matches), tuple(skipped), service)


def _service(service: str, osv_url: str | None, timeout: int, cache_dir: Path | None) -> object:
    from pip_audit._service import OsvService, PyPIService

    if cache_dir is None:
        from mlsec.hashing import cache_dir as base

        cache_dir = base() / "pip-audit"
    if service == "osv":
        return OsvService(cache_dir=cache_dir, timeout=timeout, osv_url=osv_url or OsvService.DEFAULT_OSV_URL)
    if service == "pypi":
        return PyPIService(cache_dir=cache_dir, timeout=timeout)
    raise ValueError(f"unknown online service {service!r} (choose pypi or osv)")


def _query(svc: object, spec: object) -> list[tuple[Advisory, tuple[str, ...]]] | str:
    """Advisories for one resolved dependency, or the reason it could not be checked."""
    from pip_audit._service.interface import ServiceError

    try:
        dep, results = svc.query(spec)  # type: ignore[attr-defined]
    except (ConnectionError, ServiceError, OSError) as exc:
        return f"service unreachable or failing: {type(exc).__name__}: {exc}"[:300]
    except Exception as exc:  # noqa: BLE001 - requests and JSON errors: the dependency was not checked
        return f"service unreachable or failing: {type(exc).__name__}: {exc}"[:300]
    if dep.is_skipped():
        return str(getattr(dep, "skip_reason", "skipped by the service"))
    out = []
    for result in results:
        ids = sorted({str(result.id), *(str(a) for a in result.aliases)})
        primary = min(ids, key=_id_preference)  # pip-audit may promote the CVE; the OSV id names the record
        adv = Advisory(id=primary, aliases=tuple(i for i in ids if i != primary),
                       summary=str(result.description)[:300])
        out.append((adv, tuple(str(v) for v in result.fix_versions)))
    return out


def _id_preference(advisory_id: str) -> tuple[int, str]:
    """OSV database ids first (PYSEC, MAL, GHSA, others), CVE last, as the offline store names them."""
    order = ("PYSEC-", "MAL-", "GHSA-")
    rank = next((i for i, p in enumerate(order) if advisory_id.startswith(p)), 4 if advisory_id.startswith("CVE-") else 3)
    return rank, advisory_id
