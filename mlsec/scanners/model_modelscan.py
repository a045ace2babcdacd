"""modelscan as an opt-in second opinion (``--engine modelscan``).

Why opt-in: modelscan reads whole pickles into memory and trusts ``zipfile``; on a 1 GiB
plain pickle it holds the tensor bytes (≈1 GiB RSS) and more than doubles mlsec's time (see
the README's benchmark table), beyond the 10 % budget for an always-on engine. When asked
for, it runs in-process on the artifact; its issues become MLSEC-MODELSCAN-001 findings with
modelscan's own severity, and the pipeline drops those that repeat a global mlsec already
reported. modelscan's own errors are reported as skips of the second opinion (mlsec's engine
still covered the file), and a hang is bounded by the artifact timeout.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator
from typing import Any

from mlsec.model import Artifact, ArtifactKind, Finding, Location, Severity, Skip
from mlsec.registry import ScanContext, register

_SEVERITY = {"LOW": Severity.LOW, "MEDIUM": Severity.MEDIUM, "HIGH": Severity.HIGH, "CRITICAL": Severity.CRITICAL}


def available() -> bool:
    """True when the modelscan package can be imported."""
    try:
        import modelscan.modelscan  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return False
    return True


def _run_modelscan(path: str) -> tuple[list[Any], list[Any]]:
    from modelscan.modelscan import ModelScan

    logging.getLogger("modelscan").setLevel(logging.CRITICAL)
    scanner = ModelScan()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        scanner.scan(path)
    return list(scanner.issues.all_issues), list(scanner.errors)


@register
class ModelscanAdapter:
    """Runs modelscan on model-like artifacts when ``modelscan`` is among the engines."""

    name = "modelscan"
    version = "0.8.8+1"

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Model and archive artifacts, only when explicitly requested."""
        return "modelscan" in ctx.engines and artifact.kind in (ArtifactKind.MODEL, ArtifactKind.ARCHIVE)

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        """Run modelscan in a worker thread bounded by the artifact timeout."""
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = _run_modelscan(artifact.fs_path)
            except Exception as exc:  # noqa: BLE001 - surfaced below as this scanner's failure
                box["error"] = exc

        thread = threading.Thread(target=work, name="modelscan", daemon=True)
        thread.start()
        thread.join(ctx.limits.timeout)
        if thread.is_alive():
            raise TimeoutError(f"modelscan did not finish within {ctx.limits.timeout:g}s")
        if "error" in box:
            raise box["error"]
        issues, errors = box["result"]
        for issue in issues:
            details = issue.details
            module, operator = str(getattr(details, "module", "?")), str(getattr(details, "operator", "?"))
            source = str(getattr(details, "source", ""))
            member = source.split(":", 1)[1] if ":" in source else None
            severity = _SEVERITY.get(getattr(issue.severity, "name", ""), Severity.HIGH)
            yield Finding(
                rule_id="MLSEC-MODELSCAN-001",
                severity=severity,
                message=f"modelscan: unsafe operator {module}.{operator}",
                path=artifact.path,
                scanner=self.name,
                location=Location(member=member),
                key=f"modelscan {member or ''} {module}.{operator}",
                evidence=(("global", f"{module}.{operator}"), ("modelscan_severity", severity.label)),
            )
        for err in errors:
            message = getattr(err, "message", None) or str(err)
            yield Skip(artifact.path, f"modelscan could not scan it: {message}"[:300], "second-opinion-error")
