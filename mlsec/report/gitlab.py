"""GitLab security report (SAST flavour, schema 15.x) for ``artifacts: reports: sast:``.

GitLab validates reports against the schema version they declare and drops invalid ones, so
every required field is filled: ``scan.analyzer`` and ``scan.scanner`` with vendor, times without
fractions of a second, and per vulnerability a *stable* id (from our fingerprint, never a random
uuid, so the dashboard does not see "new" findings on every pipeline), at least one identifier,
and a location. Suppressed findings are left out: GitLab has no field for a waiver.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from typing import TYPE_CHECKING, Any

from mlsec import __version__, catalog
from mlsec.model import Finding, ScanResult, Severity

if TYPE_CHECKING:
    from mlsec.verdicts import Decision

SCHEMA_VERSION = "15.0.7"
SEVERITY = {Severity.CRITICAL: "Critical", Severity.HIGH: "High", Severity.MEDIUM: "Medium",
            Severity.LOW: "Low", Severity.INFO: "Info"}
_NS = uuid.UUID("6f1d5c3e-8a0b-4e55-9d7e-3b8f3f9c2a10")


def _timestamp() -> str:
    """Now, or ``SOURCE_DATE_EPOCH`` for reproducible reports."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch and epoch.isdigit() else dt.datetime.now(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def _vulnerability(f: Finding) -> dict[str, Any]:
    rule = catalog.rules().get(f.rule_id)
    identifiers = [{"type": "mlsec", "name": f.rule_id, "value": f.rule_id}]
    if rule is not None:
        identifiers += [{"type": "cwe", "name": f"CWE-{c}", "value": str(c),
                         "url": f"https://cwe.mitre.org/data/definitions/{c}.html"} for c in rule.cwe]
    aliases = dict(f.evidence).get("aliases", "")
    identifiers += [{"type": "cve" if a.startswith("CVE-") else "ghsa", "name": a, "value": a}
                    for a in aliases.split(",") if a.strip().startswith(("CVE-", "GHSA-"))]
    where = f.location.describe()
    location: dict[str, Any] = {"file": f.path}
    if f.location.line is not None:
        location["start_line"] = f.location.line
        location["end_line"] = f.location.end_line or f.location.line
    else:
        location["start_line"] = 1
    description = f.message + (f" ({where})" if where else "")
    return {
        "id": str(uuid.uuid5(_NS, f.fingerprint)),
        "name": rule.title if rule else f.rule_id,
        "description": description[:15000],
        "severity": SEVERITY[f.severity],
        "solution": rule.remediation if rule else "",
        "location": location,
        "identifiers": identifiers,
        "details": {"evidence": {"name": "Evidence", "type": "list",
                                 "items": [{"type": "text", "value": f"{k}: {v}"} for k, v in f.evidence]}}
        if f.evidence else {},
    }


def render(result: ScanResult, min_severity: Severity, color: bool = False, decision: Decision | None = None) -> str:
    """The report, findings at or above ``min_severity``, sorted for stable diffs."""
    stamp = _timestamp()
    vendor = {"name": "mlsec"}
    doc = {
        "version": SCHEMA_VERSION,
        "schema": f"https://gitlab.com/gitlab-org/security-products/security-report-schemas/-/raw/v{SCHEMA_VERSION}/dist/sast-report-format.json",
        "scan": {
            "analyzer": {"id": "mlsec", "name": "mlsec", "version": __version__, "vendor": vendor},
            "scanner": {"id": "mlsec", "name": "mlsec", "version": __version__, "vendor": vendor},
            "type": "sast",
            "start_time": stamp,
            "end_time": stamp,
            "status": "failure" if result.errors else "success",
        },
        "vulnerabilities": [_vulnerability(f) for f in result.findings if f.severity >= min_severity],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
