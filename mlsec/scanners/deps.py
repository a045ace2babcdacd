"""The dependency scanner: manifests and lockfiles -> Packages, known vulnerabilities, supply-chain findings.

For each dependency file it yields the declared or locked packages (``Package``, for the
ML-BOM and for :func:`mlsec.deps.resolved_versions`), MLSEC-DEP-001 for every advisory in the
offline store that applies, the supply-chain findings of :mod:`mlsec.deps.supply_chain`, and
parse problems as findings. Without a usable advisory database it says so with a
``no-advisory-db`` Skip per file that has dependencies (never a silent "no vulnerabilities");
a stale database adds MLSEC-DEP-003. ``--online`` (``ScanContext.online``) also asks
pip-audit's service, and dependencies it could not check become Skips.

Not cacheable: the output depends on the advisory database and on included files, not only on
the artifact's bytes. Parsing and matching a typical manifest takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from mlsec import __version__, catalog
from mlsec.deps import Dependency, Manifest, package_of
from mlsec.model import Artifact, ArtifactKind, Finding, Location, Package, Severity, Skip
from mlsec.registry import ScanContext, register
from mlsec.scanmemo import Scope

if TYPE_CHECKING:
    from mlsec.deps.advisories import AdvisoryStore, DbInfo
    from mlsec.deps.match import Match

NAME = "mlsec-deps"


@register
class DependencyScanner:
    """Dependency files: requirements, pyproject, setup.cfg, poetry/uv/Pipfile/pylock locks, environment.yml."""

    name = NAME
    version = f"{__version__}+1"

    def context_scope(self, artifact: Artifact) -> Scope:
        """The advisory database and the day (its age is reported); includes are noted reads."""
        return Scope.DATABASE

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Dependency artifacts whose name selects a reader."""
        from mlsec.deps.manifests import format_of

        return artifact.kind == ArtifactKind.DEPENDENCIES and format_of(artifact.path) is not None

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip | Package]:
        """Parse, inventory, match and check one dependency file."""
        from mlsec.deps import advisories, manifests

        manifest = manifests.parse(artifact.fs_path, artifact.path)
        for other in manifest.read_files:
            ctx.note_read(other)
        store, db_info = advisories.open_store()
        yield from analyse(manifest, store=store, db_info=db_info, online=bool(getattr(ctx, "online", False)),
                           online_service=str(getattr(ctx, "online_service", "pypi")))


def analyse(manifest: Manifest, *, store: AdvisoryStore | None, db_info: DbInfo, online: bool = False,
            online_service: str = "pypi", osv_url: str | None = None) -> Iterator[Finding | Skip | Package]:
    """Everything the scanner reports for one parsed manifest (public for tests and other callers)."""
    from mlsec.deps import supply_chain
    from mlsec.deps.match import advisory_name, match_all
    path = manifest.path
    for problem in manifest.problems:
        rule = "MLSEC-DEP-011" if problem.fatal else "MLSEC-DEP-012"
        yield _finding(rule, path, problem.message, f"{problem.code}|{problem.message}", problem.report_line,
                       (("code", problem.code), ("file", problem.source)))
    if not manifest.parsed:
        return

    pins = supply_chain.constraint_pins(manifest)
    deps: list[Dependency] = []
    for dep in manifest.dependencies:
        if dep.constraint:
            continue
        if not dep.version and not dep.url and dep.name in pins:
            dep = replace(dep, version=pins[dep.name].version)
        deps.append(dep)
    seen_packages: set[Package] = set()
    for dep in manifest.dependencies:
        if dep.constraint or not dep.name or (dep.url and "://" not in dep.url and not dep.version):
            continue
        pkg = package_of(dep)
        if pkg not in seen_packages:
            seen_packages.add(pkg)
            yield pkg

    matchable = [d for d in deps if advisory_name(d)]
    matches: list[Match] = []
    if store is not None:
        matches += match_all(matchable, store)
        if db_info.stale and matchable:
            yield _finding("MLSEC-DEP-003", path,
                           f"advisory database is {db_info.age_days} days old (limit {db_info.max_age_days}): "
                           "vulnerabilities published since are not reported",
                           "advisory-db-stale", None,
                           (("age_days", str(db_info.age_days)), ("data_date", db_info.data_date),
                            ("max_age_days", str(db_info.max_age_days)), ("source", db_info.source)))
    if online and matchable:
        from mlsec.deps import online as online_service_mod

        result = online_service_mod.audit(matchable, service=online_service, osv_url=osv_url)
        known = {(m.dependency, a) for m in matches for a in (m.advisory.id, *m.advisory.aliases)}
        for m in result.matches:
            if not {(m.dependency, a) for a in (m.advisory.id, *m.advisory.aliases)} & known:
                matches.append(m)
        for dep, reason in result.skipped:
            yield Skip(path, f"{dep.display} was not checked online ({result.service}): {reason}", "online-skipped")
    elif store is None and matchable:
        # One line per manifest, so no database path here (`mlsec db info` shows it).
        why = f"advisory database unusable: {db_info.problem}" if db_info.problem else "no advisory database"
        n = len(matchable)
        yield Skip(path, f"{n} dependenc{'y was' if n == 1 else 'ies were'} NOT checked for known vulnerabilities "
                         f"({why}; `mlsec db update --from PATH_OR_URL` or --online) [MLSEC-DEP-002]",
                   "no-advisory-db")

    seen_keys: set[str] = set()
    for m in matches:
        finding = _vulnerability(path, m)
        if finding.key not in seen_keys:
            seen_keys.add(finding.key)
            yield finding
    for issue in supply_chain.check(manifest):
        if issue.key in seen_keys:
            continue
        seen_keys.add(issue.key)
        yield _finding(issue.rule_id, path, issue.message, issue.key, issue.line, issue.evidence, issue.severity)


def _finding(rule_id: str, path: str, message: str, key: str, line: int | None,
             evidence: tuple[tuple[str, str], ...], severity: Severity | None = None) -> Finding:
    rule = catalog.rules()[rule_id]  # KeyError here is a bug: every rule must be catalogued
    return Finding(rule_id=rule_id, severity=rule.severity if severity is None else severity, message=message,
                   path=path, scanner=NAME, location=Location(line=line), key=key,
                   evidence=tuple(sorted((k, v) for k, v in evidence if v)))


def _vulnerability(path: str, m: Match) -> Finding:
    """MLSEC-DEP-001 with the evidence contract the ML-BOM reads."""
    from mlsec.deps.supply_chain import declared_in

    dep, adv = m.dependency, m.advisory
    aliases = ", ".join(a for a in adv.aliases if a != adv.id)
    fixed = ", ".join(m.fixed)
    summary = adv.summary or "no summary in the advisory"
    also = f" ({aliases})" if aliases else ""
    fix_text = f"; fixed in {fixed}" if fixed else "; no fixed version known"
    if m.in_range:
        message = (f"{dep.name}{dep.specifier or ' (any version)'} allows {m.example}, affected by {adv.id}{also}: "
                   f"{summary}{fix_text}")
    else:
        message = f"{dep.name} {dep.version} is affected by {adv.id}{also}: {summary}{fix_text}"
    evidence = [
        ("advisory", adv.id), ("aliases", ",".join(a for a in adv.aliases if a != adv.id)),
        ("package", dep.name), ("version", dep.version), ("purl", dep.purl), ("fixed", ",".join(m.fixed)),
        ("summary", summary),
    ]
    if adv.cvss:
        evidence.append(("cvss", adv.cvss))
    if adv.severity_text:
        evidence.append(("severity", adv.severity_text))
    if m.in_range:
        evidence += [("range", dep.specifier or "*"), ("example", m.example)]
    if m.package != dep.name:
        evidence.append(("matched_as", f"pypi:{m.package}"))
    declared = declared_in(dep)
    if declared:
        evidence.append(("declared_in", declared))
    key = f"{dep.ecosystem}:{dep.name}@{dep.version or dep.specifier or '*'}|{adv.id}"
    catalog.rules()["MLSEC-DEP-001"]  # KeyError here is a bug: the rule must be catalogued
    return Finding(rule_id="MLSEC-DEP-001", severity=m.severity, message=message[:600], path=path, scanner=NAME,
                   location=Location(line=dep.report_line), key=key,
                   evidence=tuple(sorted((k, v) for k, v in evidence if v or k == "version")))
