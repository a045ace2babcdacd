"""JSON report: the machine-readable contract (``schema_version`` 1), sorted and deterministic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsec.model import ScanResult, Severity
from mlsec.report.jsontext import dumps

if TYPE_CHECKING:
    from mlsec.verdicts import Decision


def render(
    result: ScanResult, min_severity: Severity, color: bool = False, decision: Decision | None = None
) -> str:
    """The full ScanResult, with findings below ``min_severity`` left out of ``findings``.

    With a policy decision, it is included under ``decision`` (``mlsec.policy-decision/v1``).
    """
    doc = result.to_dict()
    doc["findings"] = [f.to_dict() for f in result.findings if f.severity >= min_severity]
    if decision is not None:
        doc["decision"] = decision.to_dict()
    return dumps(doc) + "\n"
