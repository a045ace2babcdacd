"""Output formats, one per module; FORMATS is the closed list the CLI offers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from mlsec.model import ScanResult, Severity

if TYPE_CHECKING:
    from mlsec.verdicts import Decision


class Renderer(Protocol):
    """A report format: the scan result (and the policy decision, when there is one) as text."""

    def __call__(
        self, result: ScanResult, min_severity: Severity, color: bool = ..., decision: Decision | None = ...
    ) -> str: ...

# Format name -> module with a ``render(result, min_severity, color) -> str``. Modules are
# imported on use: the table needs rich, which costs more start-up than a warm scan.
FORMATS: dict[str, str] = {
    "json": "mlsec.report.json",
    "table": "mlsec.report.table",
    "sarif": "mlsec.report.sarif",
    "gitlab": "mlsec.report.gitlab",
    "markdown": "mlsec.report.markdown",
    "junit": "mlsec.report.junit",
    "github": "mlsec.report.github",
}


def renderer(fmt: str) -> Renderer:
    """The render function of one output format."""
    render: Renderer = importlib.import_module(FORMATS[fmt]).render
    return render
