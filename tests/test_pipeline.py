"""Per-artifact isolation: a crashing scanner costs one ErrorRecord, not the scan."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsec import registry
from mlsec.model import Artifact, Finding, Skip
from mlsec.registry import ScanContext
from tests.conftest import scan_path


class _Crashy:
    name = "test-crashy"
    version = "1"

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        return artifact.path.endswith("boom.pkl")

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        yield Skip(artifact.path, "partial work before the crash", "test")
        raise RuntimeError("scanner bug")


@pytest.fixture
def crashy(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.scanners()
    monkeypatch.setitem(registry._REGISTRY, _Crashy.name, _Crashy())


def test_crashing_scanner_gives_error_record_and_scan_goes_on(tmp_path: Path, crashy: None) -> None:
    (tmp_path / "boom.pkl").write_bytes(pickle.dumps([1], protocol=2))
    (tmp_path / "evil.pkl").write_bytes(b"\x80\x02cos\nsystem\n.")
    result = scan_path(tmp_path)
    assert [(e.path, e.scanner) for e in result.errors] == [("boom.pkl", "test-crashy")]
    assert "RuntimeError: scanner bug" in result.errors[0].message
    assert [f.path for f in result.findings] == ["evil.pkl"]
    assert [s.reason for s in result.skipped] == ["partial work before the crash"]
    assert not result.complete


def test_crash_isolation_holds_in_worker_processes(tmp_path: Path, crashy: None) -> None:
    for i in range(4):
        (tmp_path / f"ok{i}.pkl").write_bytes(pickle.dumps(i, protocol=2))
    (tmp_path / "boom.pkl").write_bytes(pickle.dumps([1], protocol=2))
    result = scan_path(tmp_path, jobs=2)
    assert len(result.artifacts) == 5 and [e.path for e in result.errors] == ["boom.pkl"]


def test_unsupported_model_formats_are_reported_as_skipped(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\0" * 32)  # no TFLite reader yet
    result = scan_path(tmp_path)
    assert [(s.path, s.code) for s in result.skipped] == [("m.tflite", "unsupported-format")]
