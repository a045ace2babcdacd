"""SARIF 2.1.0 for GitHub code scanning (and any SARIF viewer).

What GitHub needs, and why each choice:
* every rule that produced a result is in ``rules[]`` with help text and a string
  ``security-severity`` score, and the ``security`` tag, or the alert has no severity;
* ``partialFingerprints`` are line-independent (our fingerprint), so alerts survive edits and
  re-uploads do not duplicate them;
* binary artifacts (models, datasets) have no lines: the result points at line 1 and the byte
  offset / archive member go into the message and ``properties``;
* suppressed findings are results with ``suppressions[]`` (kind ``external``, the waiver's
  justification), so the review trail stays in the tool;
* ``automationDetails.id`` gives the upload a category, so several mlsec runs don't overwrite
  each other's alerts.
"""

from __future__ import annotations

import json
from typing import Any

from mlsec import __version__, catalog
from mlsec.model import Finding, ScanResult, Severity
from mlsec.verdicts import Decision, Suppressed

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
         Severity.LOW: "note", Severity.INFO: "note"}
SCORE = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5", Severity.LOW: "2.0",
         Severity.INFO: "0.0"}


def _rule(rule_id: str) -> dict[str, Any]:
    rule = catalog.rules().get(rule_id)
    if rule is None:  # a rule from a newer scanner than the catalog: still a valid SARIF rule
        return {"id": rule_id, "shortDescription": {"text": rule_id}, "fullDescription": {"text": rule_id},
                "help": {"text": rule_id}, "properties": {"tags": ["security"]}}
    tags = ["security", *(f"external/cwe/cwe-{c}" for c in rule.cwe)]
    text = f"{rule.help}\n\nFix: {rule.remediation}"
    markdown = f"{rule.help}\n\n**Fix:** {rule.remediation}" + "".join(f"\n\n- <{r}>" for r in rule.references)
    return {
        "id": rule.id,
        "name": "".join(w.capitalize() for w in rule.title.replace("-", " ").split())[:255] or rule.id,
        "shortDescription": {"text": rule.title[:1024]},
        "fullDescription": {"text": rule.help[:1024] or rule.title},
        "help": {"text": text, "markdown": markdown},
        "defaultConfiguration": {"level": LEVEL[rule.severity]},
        "properties": {"tags": tags, "precision": "high", "security-severity": SCORE[rule.severity]},
    }


def _result(f: Finding, index: dict[str, int], suppressed: Suppressed | None = None) -> dict[str, Any]:
    loc = f.location
    where = loc.describe()
    region: dict[str, Any]
    if loc.line is not None:
        region = {"startLine": loc.line, "endLine": loc.end_line or loc.line}
        if loc.column is not None:
            region["startColumn"] = loc.column
    else:
        region = {"startLine": 1, "startColumn": 1, "endLine": 1, "endColumn": 1}
    message = f.message + (f" [{where}]" if where and loc.line is None else "")
    props: dict[str, Any] = {"severity": f.severity.label, "scanner": f.scanner, "security-severity": SCORE[f.severity]}
    props.update({k: v for k, v in (("member", loc.member), ("offset", loc.offset), ("pointer", loc.pointer)) if v is not None})
    if f.evidence:
        props["evidence"] = dict(f.evidence)
    out: dict[str, Any] = {
        "ruleId": f.rule_id,
        "ruleIndex": index[f.rule_id],
        "level": LEVEL[f.severity],
        "message": {"text": message},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.path, "uriBaseId": "%SRCROOT%"},
                                            "region": region}}],
        "partialFingerprints": {"primaryLocationLineHash": f"{f.fingerprint[:16]}:1", "mlsec/v1": f.fingerprint},
        "properties": props,
    }
    if suppressed is not None:
        s = suppressed.suppression
        why = f"{s.waiver_id}: {s.reason or 'no reason given'}" + (f" (until {s.expires})" if s.expires else "")
        out["suppressions"] = [{"kind": "inSource" if s.source == "inline" else "external", "justification": why}]
    return out


def render(result: ScanResult, min_severity: Severity, color: bool = False, decision: Decision | None = None) -> str:
    """One SARIF run with every finding at or above ``min_severity``, suppressed ones marked."""
    shown = [f for f in result.findings if f.severity >= min_severity]
    hidden = [s for s in result.suppressed if s.finding.severity >= min_severity]
    rule_ids = sorted({f.rule_id for f in shown} | {s.finding.rule_id for s in hidden})
    index = {r: i for i, r in enumerate(rule_ids)}
    results = [_result(f, index) for f in shown] + [_result(s.finding, index, s) for s in hidden]
    results.sort(key=lambda r: (r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], r["ruleId"],
                                r["partialFingerprints"]["mlsec/v1"]))
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "mlsec", "semanticVersion": __version__, "version": __version__,
                            "rules": [_rule(r) for r in rule_ids]}},
        "automationDetails": {"id": f"mlsec/{decision.stage if decision else 'scan'}/"},
        "originalUriBaseIds": {"%SRCROOT%": {"uri": "./"}},
        "results": results,
        "invocations": [{
            "executionSuccessful": not result.errors,
            "toolExecutionNotifications": [
                {"level": "error", "message": {"text": f"{e.path}: {e.scanner}: {e.message}"}} for e in result.errors
            ] + [{"level": "note", "message": {"text": f"skipped {s.path}: {s.reason}"}} for s in result.skipped],
        }],
        "properties": {"scanners": [{"name": n, "version": v} for n, v in result.scanners]},
    }
    if decision is not None:
        run["properties"]["decision"] = decision.to_dict()
    doc = {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
