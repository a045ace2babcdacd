"""Output formats, one per module; FORMATS is the closed list the CLI offers."""

from __future__ import annotations

from collections.abc import Callable

from mlsec.model import ScanResult, Severity
from mlsec.report import json as json_report
from mlsec.report import table as table_report

Renderer = Callable[[ScanResult, Severity, bool], str]

FORMATS: dict[str, Renderer] = {
    "json": json_report.render,
    "table": table_report.render,
}
