"""JUnit XML: one test case per scanned artifact, failed when it has findings at the threshold.

CI systems without a security dashboard (Jenkins, Azure DevOps, GitLab's test tab) understand
JUnit; an artifact that "fails" lists its findings. With a policy decision, the threshold is the
decision itself (one extra case, ``policy``), otherwise ``min_severity``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from mlsec.model import ScanResult, Severity

if TYPE_CHECKING:
    from mlsec.verdicts import Decision


def _clean(text: str) -> str:
    """XML 1.0 cannot carry most control characters, even escaped."""
    return "".join(ch if ch in "\t\n\r" or ord(ch) >= 0x20 else "\ufffd" for ch in text)


def render(result: ScanResult, min_severity: Severity, color: bool = False, decision: Decision | None = None) -> str:
    """A ``testsuites`` document."""
    by_path: dict[str, list[str]] = {a.path: [] for a in result.artifacts}
    for f in result.findings:
        if f.severity >= min_severity:
            by_path.setdefault(f.path, []).append(f"[{f.severity.label}] {f.rule_id}: {f.message}")
    errors = {e.path: f"{e.scanner}: {e.message}" for e in result.errors}
    skipped = {s.path: s.reason for s in result.skipped}
    suites = ET.Element("testsuites", name="mlsec")
    suite = ET.SubElement(suites, "testsuite", name="mlsec")
    failures = error_count = skip_count = 0
    for path in sorted(set(by_path) | set(skipped) | set(errors)):
        case = ET.SubElement(suite, "testcase", classname="mlsec", name=_clean(path))
        if path in errors:
            error_count += 1
            ET.SubElement(case, "error", message=_clean(errors[path]))
        elif by_path.get(path):
            failures += 1
            fail = ET.SubElement(case, "failure", message=_clean(by_path[path][0][:200]))
            fail.text = _clean("\n".join(by_path[path]))
        elif path in skipped:
            skip_count += 1
            ET.SubElement(case, "skipped", message=_clean(skipped[path]))
    if decision is not None:
        case = ET.SubElement(suite, "testcase", classname="mlsec.policy", name=f"policy {decision.stage}")
        if not decision.allow:
            failures += 1
            fail = ET.SubElement(case, "failure", message=f"blocked for {decision.stage}")
            fail.text = _clean("\n".join(v.reason for v in decision.violations))
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", str(error_count))
    suite.set("skipped", str(skip_count))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
