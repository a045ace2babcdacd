"""Output formats, one per module; FORMATS is the closed list the CLI offers."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from mlsec.model import ScanResult, Severity

Renderer = Callable[[ScanResult, Severity, bool], str]

# Format name -> module with a ``render(result, min_severity, color) -> str``. Modules are
# imported on use: the table needs rich, which costs more start-up than a warm scan.
FORMATS: dict[str, str] = {
    "json": "mlsec.report.json",
    "table": "mlsec.report.table",
}


def renderer(fmt: str) -> Renderer:
    """The render function of one output format."""
    render: Renderer = importlib.import_module(FORMATS[fmt]).render
    return render
