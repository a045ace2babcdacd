"""JSON report: the machine-readable contract (``schema_version`` 1), sorted and deterministic."""

from __future__ import annotations

import json

from mlsec.model import ScanResult, Severity


def render(result: ScanResult, min_severity: Severity, color: bool = False) -> str:
    """The full ScanResult, with findings below ``min_severity`` left out of ``findings``."""
    doc = result.to_dict()
    doc["findings"] = [f.to_dict() for f in result.findings if f.severity >= min_severity]
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
