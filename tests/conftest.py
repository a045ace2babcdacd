"""Shared test helpers: scan files written by the tests themselves, through the real pipeline."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsec.model import Finding, ScanResult, Severity
from mlsec.pipeline import Options, run

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's cache directory from tests."""
    monkeypatch.setenv("MLSEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@contextlib.contextmanager
def installed_worker(client: Any, fresh: Any) -> Iterator[Any]:
    """Make ``fresh`` the shared worker of ``client`` (hdf5_client, arrow_client) for one test,
    then stop it — resuming it first if the test left it SIGSTOPped — and put the old one back."""
    previous = client.set_shared(fresh)
    try:
        yield fresh
    finally:
        if fresh.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(fresh.pid, signal.SIGCONT)
        fresh.close()
        client.set_shared(previous)


def scan_path(path: str | os.PathLike[str], **options: object) -> ScanResult:
    """Run the real pipeline on a path with default options (overridable)."""
    return run([str(path)], Options(**options))  # type: ignore[arg-type]


def scan_bytes(tmp_path: Path, name: str, data: bytes, **options: object) -> ScanResult:
    """Write ``data`` to ``tmp_path/name`` and scan that one file."""
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return scan_path(target, **options)


def worst(result: ScanResult) -> Severity | None:
    """Highest severity in a result (None when clean)."""
    return result.max_severity()


def rules_of(result: ScanResult) -> set[str]:
    """Rule ids present in a result."""
    return {f.rule_id for f in result.findings}


def globals_of(result: ScanResult) -> set[str]:
    """``module.name`` of every pickle global reported."""
    return {dict(f.evidence)["global"] for f in result.findings if "global" in dict(f.evidence)}


def at_least(result: ScanResult, severity: Severity) -> list[Finding]:
    """Findings at or above ``severity``."""
    return [f for f in result.findings if f.severity >= severity]
