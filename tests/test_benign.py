"""Real files written by real libraries must come out clean (nothing at MEDIUM or above).

The files under fixtures/benign were made by fixtures/make_fixtures.py with torch, scikit-learn,
joblib, pandas and NumPy; a false positive here is exactly what would make users switch the
scanner off.
"""

from __future__ import annotations

import pytest

from mlsec.model import Severity
from tests.conftest import FIXTURES, at_least, scan_path

BENIGN = FIXTURES / "benign"
FILES = sorted(p for p in BENIGN.rglob("*") if p.is_file() and p.suffix not in (".md", ".txt"))


def test_fixture_set_is_complete() -> None:
    """The committed set covers every family the issue names (guards against a partial regeneration)."""
    families = {p.parent.name for p in FILES}
    assert {"torch", "sklearn", "pandas", "numpy", "plain"} <= families
    assert len(FILES) >= 35


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(BENIGN).as_posix())
def test_benign_file_has_no_medium_or_higher(path) -> None:  # type: ignore[no-untyped-def]
    result = scan_path(path)
    assert [f.message for f in at_least(result, Severity.MEDIUM)] == []
    assert result.errors == ()
    assert result.skipped == ()
    (artifact,) = result.artifacts
    assert artifact.format in {"pickle", "zip", "numpy", "gzip", "bz2", "xz", "lzma", "zlib"}
    assert len(artifact.sha256) == 64


def test_whole_benign_tree_in_parallel_matches_serial() -> None:
    serial = scan_path(BENIGN, jobs=1)
    parallel = scan_path(BENIGN, jobs=2)
    assert serial.to_dict() == parallel.to_dict()
    assert not at_least(serial, Severity.MEDIUM)


def test_torch_plain_pickle_payload_is_scanned_as_nested_checkpoint() -> None:
    """pickle.dumps(tensor) embeds a legacy torch save in bytes; the engine must look inside."""
    result = scan_path(BENIGN / "torch" / "tensor_plain.pkl")
    (finding,) = [f for f in result.findings if f.rule_id == "MLSEC-PICKLE-010"]
    assert "torch.storage._load_from_bytes" in finding.message


def test_torchscript_code_is_noted_low() -> None:
    result = scan_path(BENIGN / "torch" / "scripted.pt")
    assert {f.rule_id: f.severity for f in result.findings} == {"MLSEC-TORCH-002": Severity.LOW}
