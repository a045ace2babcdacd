"""Table-driven policy tests: ``mlsec policy test [DIR]``.

``opa test``-style ``with input as`` mocks crash regopy 1.5.2, so tests are data: each case is
a (partial) policy input, optional stage-setting overrides, and the expected decision. The
runner fills in the boring parts of the input, evaluates the real policies on a fresh
interpreter, and reports PASS/FAIL with a diff, like a test runner. Cases live in
``DIR/tests/*.yaml`` (or ``.json``); a file holds a list of cases::

    - name: production blocks a medium finding
      stage: production
      input:
        findings: [{rule_id: MLSEC-PICKLE-003, artifact: m.pkl, severity: medium}]
      expect:
        decision: block
        violations: [MLSEC-PICKLE-003]     # rule ids, order-insensitive
        warnings: []                       # optional
        waived: []                         # optional: waiver ids
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec import config, policy
from mlsec.model import Severity
from mlsec.verdicts import Decision

_EXPECT_KEYS = ("decision", "violations", "warnings", "waived")


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: passed, or the differences (or the error) that failed it."""

    file: str
    name: str
    passed: bool
    diff: tuple[str, ...] = ()


def load_cases(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every case under ``folder/tests`` as (file name, case); PolicyError on malformed files."""
    import yaml

    tests = folder / "tests" if (folder / "tests").is_dir() else folder
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(p for p in tests.glob("*") if p.suffix in (".yaml", ".yml", ".json")):
        try:
            text = path.read_text(encoding="utf-8")
            doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise policy.PolicyError(f"{path}: cannot read test cases: {exc}") from None
        cases = doc.get("cases") if isinstance(doc, dict) else doc
        if not isinstance(cases, list):
            raise policy.PolicyError(f"{path}: expected a list of cases")
        for i, case in enumerate(cases, 1):
            if not isinstance(case, dict) or "stage" not in case or "expect" not in case:
                raise policy.PolicyError(f"{path}: case {i} needs at least 'stage' and 'expect'")
            out.append((path.name, case))
    return out


def _finding(raw: dict[str, Any]) -> dict[str, Any]:
    sev = Severity.parse(str(raw.get("severity", "high")))
    return {
        "rule_id": raw.get("rule_id", "TEST-RULE"),
        "artifact": raw.get("artifact", "model.pkl"),
        "scanner": raw.get("scanner", "test"),
        "severity": sev.label,
        "rank": int(sev),
        "count": int(raw.get("count", 1)),
        "fingerprints": list(raw.get("fingerprints", [])),
        "message": raw.get("message", "test finding"),
    } | ({"waiver": _waiver(raw["waiver"])} if "waiver" in raw else {})


def _waiver(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": raw.get("id", "W-TEST"),
        "source": raw.get("source", "waiver"),
        "owner": raw.get("owner", ""),
        "reason": raw.get("reason", ""),
        "expires": str(raw.get("expires", "")),
        "stages": list(raw.get("stages", [])),
    }


def full_input(case: dict[str, Any], stage: str) -> dict[str, Any]:
    """A complete ``mlsec.policy-input/v1`` document from a case's partial input."""
    raw = dict(case.get("input") or {})
    now = str(raw.get("now", "2026-01-01T00:00:00+00:00"))
    when = dt.datetime.fromisoformat(now)
    doc: dict[str, Any] = {
        "schema": policy.INPUT_SCHEMA,
        "stage": stage,
        "from": case.get("from"),
        "now": now,
        "now_ns": int(when.timestamp()) * 1_000_000_000,
        "tool": {"name": "mlsec", "version": "test"},
        "scanners": [],
        "artifacts": [],
        "findings": [],
        "suppressed": [],
        "errors": [],
        "skipped": [],
        "waivers": [],
        "notes": [],
        "summary": {},
    }
    for key, value in raw.items():
        if key == "findings":
            doc[key] = [_finding(f) | {"id": f"f{i}"} for i, f in enumerate(value, 1)]
        elif key == "suppressed":
            doc[key] = [_finding(f | {"waiver": f.get("waiver", {})}) | {"id": f"s{i}"} for i, f in enumerate(value, 1)]
        elif key == "artifacts":
            doc[key] = [{"path": "model.pkl", "kind": "model", "format": "pickle", "sha256": "0" * 64, "size": 1} | a
                        for a in value]
        else:
            doc[key] = value
    return doc


def _got(decision: Decision) -> dict[str, Any]:
    return {
        "decision": decision.decision,
        "violations": sorted(v.rule_id for v in decision.violations),
        "warnings": sorted(v.rule_id for v in decision.warnings),
        "waived": sorted(w.waiver_id for w in decision.waived),
    }


def run_case(policies: policy.PolicySet, stages: config.StageConfig, file: str, case: dict[str, Any]) -> CaseResult:
    """Evaluate one case; any policy error fails the case (it does not stop the run)."""
    name = str(case.get("name", "(unnamed)"))
    try:
        local = stages
        if "config" in case:
            local = config.with_overrides(stages, case["config"], f"{file}: {name}")
        stage = local.resolve(str(case["stage"]))
        decision = policy.evaluate(policies, local, policy.PolicyInput(full_input(case, stage), {}))
    except (policy.PolicyError, config.ConfigError, ValueError, TypeError, KeyError) as exc:
        return CaseResult(file, name, False, (f"error: {exc}",))
    expect = case["expect"]
    unknown = set(expect) - set(_EXPECT_KEYS)
    if unknown:
        return CaseResult(file, name, False, (f"error: unknown expect key(s) {sorted(unknown)} "
                                              f"(known: {', '.join(_EXPECT_KEYS)})",))
    got = _got(decision)
    diff: list[str] = []
    for key in _EXPECT_KEYS:
        if key not in expect:
            continue
        want = expect[key] if key == "decision" else sorted(expect[key] or [])
        if want != got[key]:
            diff.append(f"{key}: expected {want!r}")
            diff.append(f"{' ' * len(key)}       got {got[key]!r}")
            if key != "decision":
                reasons = decision.violations if key == "violations" else decision.warnings
                diff.extend(f"    - {v.rule_id}: {v.reason}" for v in reasons if key != "waived")
    return CaseResult(file, name, not diff, tuple(diff))
