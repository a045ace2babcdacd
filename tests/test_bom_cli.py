"""The ML-BOM through the command line: `mlsec bom`, `scan --bom`, and the policy reading it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mlsec import bom
from mlsec.cli import main
from tests.conftest import FIXTURES


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def test_bom_command_writes_a_valid_reproducible_bom(tmp_path: Path, monkeypatch: object) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert invoke("bom", FIXTURES / "demo", "-o", a, "--reproducible", "-q")[0] == 0
    assert invoke("bom", FIXTURES / "demo", "-o", b, "--reproducible", "-q")[0] == 0
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert bom.validate(doc, "1.6") == []
    refs = {c["bom-ref"] for c in doc["components"]}
    assert "model:models/churn_model.pkl" in refs
    vulns = doc["vulnerabilities"]
    assert any(v["affects"][0]["ref"] == "model:models/churn_model.pkl" for v in vulns)


def test_bom_to_stdout_and_spec_1_7() -> None:
    code, out = invoke("bom", FIXTURES / "hf_model", "--spec-version", "1.7", "-q")
    assert code == 0
    doc = json.loads(out)
    assert doc["specVersion"] == "1.7" and bom.validate(doc, "1.7") == []
    model = next(c for c in doc["components"] if c["type"] == "machine-learning-model")
    assert model["modelCard"] and model["pedigree"]["ancestors"]


def test_scan_with_bom_keeps_the_scan_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "bom.json"
    code, _ = invoke("scan", FIXTURES / "demo", "--bom", out, "-q", "--format", "json")
    assert code == 1  # the hostile demo model still blocks the scan
    assert bom.validate(json.loads(out.read_text()), "1.6") == []


def test_production_can_require_model_cards_from_the_bom(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "mlsec.toml").write_text("[stages.production]\nrequire_model_card = true\n")
    (repo / "model.pkl").write_bytes(b"\x80\x02}q\x00.")  # benign, but no model card
    code, out = invoke("gate", repo, "--stage", "production", "--format", "json", "-q")
    doc = json.loads(out)
    assert code == 1
    assert [v["rule_id"] for v in doc["decision"]["violations"]] == ["MLSEC-GATE-MODELCARD"]
    code, out = invoke("gate", FIXTURES / "hf_model", "--stage", "staging", "--format", "json", "-q")
    assert code == 0, out
