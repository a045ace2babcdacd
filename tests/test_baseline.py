"""``scan --baseline REPORT``: findings already in an earlier JSON report are suppressed (and
shown as such), so only new ones decide the exit code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlsec.cli import main

HOSTILE = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."
OTHER = b"\x80\x02csubprocess\ncall\nX\x02\x00\x00\x00id\x85R."


def _scan(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["scan", *args, "-q"], catch_exceptions=False)
    return res.exit_code, res.output


def test_only_new_findings_count(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "old.pkl").write_bytes(HOSTILE)
    (project / "ok.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    baseline = tmp_path / "baseline.json"
    assert _scan(str(project), "--format", "json", "-o", str(baseline))[0] == 1
    # Nothing new: the old finding is reported as suppressed and the scan passes.
    code, out = _scan(str(project), "--baseline", str(baseline), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["findings"] == []
    (s,) = doc["suppressed"]
    assert s["path"] == "old.pkl" and s["suppression"]["source"] == "baseline"
    assert s["suppression"]["waiver_id"] == "baseline:baseline.json"
    # A new hostile file fails the scan; the old one stays suppressed.
    (project / "new.pkl").write_bytes(OTHER)
    code, out = _scan(str(project), "--baseline", str(baseline), "--format", "json")
    doc = json.loads(out)
    assert code == 1
    assert [f["path"] for f in doc["findings"]] == ["new.pkl"]
    assert [s["path"] for s in doc["suppressed"]] == ["old.pkl"]


def test_a_changed_file_with_the_same_finding_stays_suppressed(tmp_path: Path) -> None:
    """Fingerprints hold no line or offset: editing around a finding keeps it baselined."""
    (tmp_path / "m.pkl").write_bytes(HOSTILE)
    baseline = tmp_path.parent / f"{tmp_path.name}-baseline.json"
    _scan(str(tmp_path), "--format", "json", "-o", str(baseline))
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02N0" + HOSTILE[2:])  # shifted offsets, same global
    code, out = _scan(str(tmp_path), "--baseline", str(baseline), "--format", "json")
    assert code == 0 and json.loads(out)["findings"] == []


def test_unusable_baselines_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(HOSTILE)
    not_json = tmp_path / "b.txt"
    not_json.write_text("hello")
    other_json = tmp_path / "b.json"
    other_json.write_text(json.dumps({"version": "2.1.0", "runs": []}))  # a SARIF file, say
    for bad, why in ((not_json, "not JSON"), (other_json, "not an mlsec JSON report"),
                     (tmp_path / "missing.json", "cannot read")):
        code, out = _scan(str(tmp_path / "m.pkl"), "--baseline", str(bad))
        assert code == 2 and why in out


def test_baseline_and_stage_do_not_mix(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(HOSTILE)
    baseline = tmp_path / "base.json"
    _scan(str(tmp_path / "m.pkl"), "--format", "json", "-o", str(baseline))
    code, out = _scan(str(tmp_path / "m.pkl"), "--baseline", str(baseline), "--stage", "dev")
    assert code == 2 and "waivers" in out


def test_baseline_from_the_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.pkl").write_bytes(HOSTILE)
    _scan(str(tmp_path / "m.pkl"), "--format", "json", "-o", str(tmp_path / "base.json"))
    (tmp_path / "pyproject.toml").write_text('[tool.mlsec]\nbaseline = "base.json"\n')
    monkeypatch.chdir(tmp_path)
    code, out = _scan("m.pkl", "--format", "json")
    assert code == 0 and json.loads(out)["suppressed"][0]["suppression"]["source"] == "baseline"
