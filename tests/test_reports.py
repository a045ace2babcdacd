"""Report formats: schema validity (SARIF against the official schema, GitLab's required
fields), escaping of hostile names, and golden files for every format.

Goldens are rendered from a scan of files written here (one finding of each severity, a waived
one, a Git-LFS skip, a damaged pickle) plus one scanner error, with the clock fixed. Rewrite them
after an intended change with ``MLSEC_UPDATE_GOLDEN=1 pytest tests/test_reports.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from mlsec import gate
from mlsec.model import Decision, ErrorRecord, ScanResult, Severity
from mlsec.pipeline import Options, run
from mlsec.report import FORMATS, renderer
from tests.conftest import SHARED

GOLDEN = Path(__file__).parent / "golden"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 123\n"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScanResult, Decision]:
    root = tmp_path_factory.mktemp("scenario")
    models = root / "models"
    models.mkdir()
    (models / "hostile.pkl").write_bytes(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.")
    (models / "custom.pkl").write_bytes(b"\x80\x02cmymodule\nevil_func\nX\x01\x00\x00\x00x\x85R.")
    (models / "import.pkl").write_bytes(b"\x80\x02cmymodule\nThing\nq\x00.")
    (models / "legacy.pkl").write_bytes(b"\x80\x02clegacy\nLoader\nX\x01\x00\x00\x00y\x85R.")
    (models / "broken.pkl").write_bytes(b"\x80\x02]q\x00(K\x01K\x02")
    (models / "big.safetensors").write_bytes(LFS)
    (root / ".git").mkdir()
    waivers = root / "waivers.yaml"
    waivers.write_text(
        "version: 1\nwaivers:\n  - id: W-1\n    match: {rule: MLSEC-PICKLE-002, paths: [models/legacy.pkl]}\n"
        "    expires: 2027-01-31\n    reason: vendor model, sandboxed loader\n    owner: ml-platform\n"
    )
    cwd = Path.cwd()
    os.chdir(root)
    try:
        raw = run(["."], Options(use_cache=False))
    finally:
        os.chdir(cwd)
    raw = dataclasses.replace(raw, errors=(ErrorRecord("models/slow.pkl", "mlsec-models", "DeadlineExceeded: 300 s"),),
                              tool_version="0.0.0-golden", scanners=(("mlsec-models", "0.0.0-golden"),))
    prepared = gate.prepare(gate.Settings(stage="staging", waivers=waivers, now=NOW, start=root))
    result, decision, _, _ = gate.decide(prepared, raw)
    assert decision is not None
    return result, dataclasses.replace(decision, policy_digest="sha256:golden")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_golden(fmt: str, scenario: tuple[ScanResult, Decision], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(NOW.timestamp())))
    result, decision = scenario
    text = renderer(fmt)(result, Severity.INFO, False, decision=decision)
    golden = GOLDEN / f"report.{fmt}"
    if os.environ.get("MLSEC_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"missing {golden}: run with MLSEC_UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8")


def test_scenario_has_every_kind(scenario: tuple[ScanResult, Decision]) -> None:
    result, decision = scenario
    assert {f.severity for f in result.findings} >= {Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM}
    assert [s.suppression.waiver_id for s in result.suppressed] == ["W-1"]
    assert [s.code for s in result.skipped] == ["lfs-pointer"] and result.errors
    assert decision.decision == "block" and decision.waived


def test_sarif_validates_against_the_official_schema(scenario: tuple[ScanResult, Decision]) -> None:
    schema_path = SHARED / "data" / "schemas" / "sarif-schema-2.1.0.json"
    if not schema_path.exists():
        pytest.skip(f"SARIF schema not found at {schema_path}")
    jsonschema = pytest.importorskip("jsonschema")
    result, decision = scenario
    doc = json.loads(renderer("sarif")(result, Severity.INFO, False, decision=decision))
    jsonschema.validate(doc, json.loads(schema_path.read_text()))
    run_ = doc["runs"][0]
    rules = {r["id"]: r for r in run_["tool"]["driver"]["rules"]}
    for res in run_["results"]:
        rule = rules[res["ruleId"]]
        assert float(rule["properties"]["security-severity"]) >= 0 and "security" in rule["properties"]["tags"]
        assert res["partialFingerprints"]["primaryLocationLineHash"]
        assert run_["tool"]["driver"]["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
    suppressed = [r for r in run_["results"] if r.get("suppressions")]
    assert len(suppressed) == 1 and "W-1" in suppressed[0]["suppressions"][0]["justification"]
    assert run_["invocations"][0]["executionSuccessful"] is False  # the scanner error


def test_gitlab_report_has_the_fields_gitlab_requires(scenario: tuple[ScanResult, Decision]) -> None:
    result, _ = scenario
    doc = json.loads(renderer("gitlab")(result, Severity.INFO, False))
    assert doc["version"].startswith("15.")
    scan = doc["scan"]
    for part in ("analyzer", "scanner"):
        assert {"id", "name", "version", "vendor"} <= set(scan[part]) and scan[part]["vendor"]["name"]
    assert scan["type"] == "sast" and scan["status"] in ("success", "failure")
    assert len(scan["start_time"]) == 19 and "." not in scan["start_time"]
    ids = [v["id"] for v in doc["vulnerabilities"]]
    assert len(ids) == len(set(ids)) == len(result.findings)
    for v in doc["vulnerabilities"]:
        assert v["identifiers"] and v["location"]["file"] and v["severity"] in ("Critical", "High", "Medium", "Low", "Info")
        assert {"id", "name", "description", "severity", "location", "identifiers"} <= set(v)


def test_gitlab_ids_are_stable_across_runs(scenario: tuple[ScanResult, Decision]) -> None:
    result, _ = scenario
    first = json.loads(renderer("gitlab")(result, Severity.INFO, False))
    second = json.loads(renderer("gitlab")(result, Severity.INFO, False))
    assert [v["id"] for v in first["vulnerabilities"]] == [v["id"] for v in second["vulnerabilities"]]


def test_junit_is_well_formed_and_counts_failures(scenario: tuple[ScanResult, Decision]) -> None:
    result, decision = scenario
    root = ET.fromstring(renderer("junit")(result, Severity.MEDIUM, False, decision=decision).split("\n", 1)[1])
    suite = root.find("testsuite")
    assert suite is not None
    failing = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert {"models/hostile.pkl", "models/custom.pkl", "policy staging"} <= failing
    assert int(suite.get("failures", "0")) == len(failing) and int(suite.get("errors", "0")) == 1


@pytest.mark.parametrize("fmt", ["markdown", "table", "junit", "sarif", "gitlab", "json", "github"])
def test_hostile_file_names_cannot_inject_markup(fmt: str, tmp_path: Path) -> None:
    name = "x|y`<script>[bold]z\x1b[31m,title=forged::%0A::add-mask::.pkl"
    try:
        (tmp_path / name).write_bytes(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.")
    except OSError:
        pytest.skip("the file system refuses this file name")
    result = run([str(tmp_path)], Options(use_cache=False))
    text = renderer(fmt)(result, Severity.INFO, False)
    assert "\x1b" not in text  # no raw terminal escape reaches a log or a terminal
    if fmt == "markdown":
        assert "<script>" not in text and "x\\|y" in text  # no HTML, and the pipe cannot break the table
    if fmt == "table":
        assert "[bold]z" in text  # shown literally, not read as rich markup
    if fmt == "junit":
        assert ET.fromstring(text.split("\n", 1)[1]).find("testsuite") is not None
    if fmt == "github":  # one command per line; the name cannot start another or add a property
        lines = text.splitlines()
        assert lines and all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)
        for line in lines:  # properties end at the first "::"; the name's colons and commas are escaped there
            props = line.split(" ", 1)[1].split("::", 1)[0]
            assert [p.split("=", 1)[0] for p in props.split(",")] == ["file", "title"]
            assert "%2Ctitle=forged%3A%3A" in props
    if fmt in ("json", "sarif", "gitlab"):
        doc = json.loads(text)  # still valid JSON, and the name survives intact as data
        assert any(name in s for s in _strings(doc))


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_markdown_is_truncated_under_githubs_limit(tmp_path: Path) -> None:
    from mlsec.model import Finding, Location
    from mlsec.report import markdown

    findings = tuple(Finding("MLSEC-PICKLE-003", Severity.MEDIUM, "m" * 280, f"models/m{i:06d}.pkl", "t",
                             Location(offset=i), key=str(i)) for i in range(6000))
    text = markdown.render(ScanResult("t", (), findings), Severity.INFO)
    assert len(text.encode()) <= markdown.LIMIT + 200 and "truncated" in text
