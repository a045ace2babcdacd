"""The command line: exit codes, JSON contract, display filter versus gate, rules commands."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlsec.cli import main
from tests.conftest import FIXTURES, REPO

HOSTILE = FIXTURES / "demo" / "models" / "churn_model.pkl"


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_demo_audit_blocks_with_a_table() -> None:
    code, out = invoke("scan", str(FIXTURES), "--no-cache")
    assert code == 1
    assert "CRITICAL" in out and "churn_model.pkl" in out and "MLSEC-PICKLE-001" in out


def test_clean_scan_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    code, out = invoke("scan", str(tmp_path))
    assert code == 0 and "No findings" in out


def test_json_contract(tmp_path: Path) -> None:
    out_file = tmp_path / "r.json"
    code, _ = invoke("scan", str(HOSTILE), "--format", "json", "-o", str(out_file), "-q")
    assert code == 1
    doc = json.loads(out_file.read_text())
    assert doc["schema_version"] == 1 and list(doc)[0] == "schema_version"
    (f,) = doc["findings"]
    assert f["rule_id"] == "MLSEC-PICKLE-001" and f["severity"] == "critical"
    assert f["path"] == "churn_model.pkl" and f["location"]["offset"] > 0
    assert len(f["fingerprint"]) == 64 and f["evidence"]["global"] == "posix.system"
    assert doc["artifacts"][0]["sha256"] and doc["summary"]["by_severity"]["critical"] == 1


def test_output_is_deterministic() -> None:
    a = invoke("scan", str(FIXTURES), "--format", "json", "-q")[1]
    b = invoke("scan", str(FIXTURES), "--format", "json", "-q", "--jobs", "2")[1]
    assert a == b


@pytest.mark.parametrize("second", [["--no-cache", "--jobs", "1"], ["--jobs", "2"]])
def test_every_output_is_byte_identical_across_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     second: list[str]) -> None:
    """Same input, same bytes: JSON, SARIF, GitLab, markdown, JUnit, GitHub and the ML-BOM, whether the
    second run scans again or is answered from the memo, with one worker or two."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    outs = []
    for run, extra in enumerate((["--jobs", "1"], second)):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        formats = [a for fmt in ("json", "sarif", "gitlab", "markdown", "junit", "github")
                   for a in ("--format", f"{fmt}:{folder / fmt}")]
        code, _ = invoke("scan", str(FIXTURES / "demo"), *formats, "--bom", str(folder / "bom"), "--reproducible",
                         "-q", *extra)
        assert code == 1  # the demo's hostile model
        outs.append({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    assert sorted(outs[0]) == ["bom", "github", "gitlab", "json", "junit", "markdown", "sarif"]
    for name in outs[0]:
        assert outs[0][name] == outs[1][name], f"{name} differs between runs"


def test_severity_filters_display_but_not_the_gate(tmp_path: Path) -> None:
    code, out = invoke("scan", str(HOSTILE), "--severity", "critical", "--format", "json", "-q")
    assert code == 1 and len(json.loads(out)["findings"]) == 1
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02cmypkg\nThing\n.")  # MEDIUM only
    code, out = invoke("scan", str(tmp_path), "--severity", "high", "--format", "json", "-q")
    assert code == 0 and json.loads(out)["findings"] == []
    code, _ = invoke("scan", str(tmp_path), "--fail-on", "medium", "-q")
    assert code == 1


def test_exit_zero_hides_findings_but_not_incomplete_scans(tmp_path: Path) -> None:
    assert invoke("scan", str(HOSTILE), "--exit-zero", "-q")[0] == 0
    big = tmp_path / "slow.pkl"
    # 4M tiny opcodes: far beyond a 1 s budget for a pure-Python engine.
    big.write_bytes(b"\x80\x02]" + b"N\x94a" * 4_000_000 + b".")
    code, out = invoke("scan", str(big), "--timeout", "1", "--exit-zero", "--format", "json", "-q")
    assert code == 3
    assert "DeadlineExceeded" in json.loads(out)["errors"][0]["message"]


def test_usage_errors_exit_two(tmp_path: Path) -> None:
    assert invoke("scan", str(tmp_path / "missing"))[0] == 2
    assert invoke("scan", str(tmp_path), "--fail-on", "severe")[0] == 2
    assert invoke("rules", "explain", "NOPE-1")[0] == 2


def test_rules_list_and_explain() -> None:
    code, out = invoke("rules", "list")
    assert code == 0 and "MLSEC-PICKLE-001" in out and "critical" in out
    code, out = invoke("rules", "explain", "mlsec-pickle-004")
    assert code == 0 and "CWE-502" in out and "Fix:" in out


def test_console_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "MLSEC_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "mlsec", "scan", str(HOSTILE), "--format", "json", "-q"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["findings"][0]["rule_id"] == "MLSEC-PICKLE-001"
    assert proc.stderr == ""


@pytest.mark.parametrize("engine_args", [("--engine", "mlsec", "--engine", "modelscan"), ("--engine", "modelscan")])
def test_modelscan_second_opinion(engine_args: tuple[str, ...]) -> None:
    pytest.importorskip("modelscan")
    code, out = invoke("scan", str(HOSTILE), *engine_args, "--format", "json", "-q")
    assert code == 1
    scanners = {f["scanner"] for f in json.loads(out)["findings"]}
    # With both engines the duplicate from modelscan is dropped; alone, modelscan reports it.
    assert scanners == ({"mlsec-models"} if "mlsec" in engine_args else {"modelscan"})
