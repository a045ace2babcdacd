"""The policy engine (mlsec/policy.py on the real regopy), stage settings, and the regopy pitfalls.

Every evaluation here runs the shipped Rego on a fresh regopy interpreter; nothing is mocked.
The shipped table-driven cases (policies/tests/*.yaml) run here as well as in `mlsec policy test`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlsec import config, gate, policy, policy_test
from mlsec.cli import EXIT_BLOCKED, EXIT_INCOMPLETE, EXIT_PASS, decision_exit_code
from mlsec.model import (
    Artifact,
    ArtifactKind,
    Decision,
    ErrorRecord,
    Finding,
    ScanResult,
    Severity,
    Skip,
    Suppressed,
    Suppression,
)

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SHIPPED = policy.default_dir()


@functools.lru_cache(maxsize=1)
def shipped() -> tuple[policy.PolicySet, config.StageConfig]:
    policies = policy.load()
    return policies, config.load(policies.defaults())


def finding(rule: str, severity: Severity, path: str = "models/m.pkl", key: str = "", message: str = "msg") -> Finding:
    return Finding(rule, severity, message, path, "mlsec-models", key=key or f"{rule}:{path}")


def model(path: str = "models/m.pkl", sha256: str = "ab" * 32) -> Artifact:
    return Artifact(path, ArtifactKind.MODEL, "pickle", 10, sha256)


def result(*findings: Finding, artifacts: tuple[Artifact, ...] | None = None, **kw: Any) -> ScanResult:
    arts = artifacts if artifacts is not None else tuple(model(p) for p in sorted({f.path for f in findings}))
    return ScanResult("test", arts, tuple(findings), **kw)


def decide(res: ScanResult, stage: str, stages: config.StageConfig | None = None) -> Decision:
    policies, default_stages = shipped()
    cfg = stages or default_stages
    pin = policy.build_input(res, stage=cfg.resolve(stage), now=NOW)
    return policy.evaluate(policies, cfg, pin)


def team_set(tmp_path: Path, files: dict[str, str]) -> policy.PolicySet:
    folder = tmp_path / "team"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return policy.load([folder])


# -- the shipped cases --------------------------------------------------------------------------


_CASES = policy_test.load_cases(SHIPPED)


@pytest.mark.parametrize(("file", "case"), _CASES, ids=[c["name"] for _, c in _CASES])
def test_shipped_policy_case(file: str, case: dict[str, Any]) -> None:
    policies, stages = shipped()
    res = policy_test.run_case(policies, stages, file, case)
    assert res.passed, "\n".join(res.diff)


def test_shipped_cases_cover_every_stage_and_outcome() -> None:
    stages = {shipped()[1].resolve(c["stage"]) for _, c in _CASES}
    outcomes = {c["expect"]["decision"] for _, c in _CASES}
    assert stages == {"dev", "staging", "production"} and outcomes == {"pass", "warn", "block"}


def test_a_flipped_case_fails_with_a_diff() -> None:
    policies, stages = shipped()
    (case,) = [c for _, c in _CASES if c["name"] == "production blocks medium"]
    res = policy_test.run_case(policies, stages, "x.yaml", case | {"expect": {"decision": "warn", "warnings": []}})
    assert not res.passed
    assert res.diff[0] == "decision: expected 'warn'" and res.diff[1].strip() == "got 'block'"


def test_a_case_with_an_unknown_stage_fails_with_an_error() -> None:
    policies, stages = shipped()
    res = policy_test.run_case(policies, stages, "x.yaml", {"name": "n", "stage": "qa", "expect": {"decision": "pass"}})
    assert not res.passed and "unknown stage 'qa'" in res.diff[0]


# -- loading policies ------------------------------------------------------------------------------


def test_shipped_policy_set() -> None:
    policies, stages = shipped()
    assert [Path(n).name for n, _ in policies.modules] == ["gate.rego"]
    assert [Path(n).name for n, _ in policies.data] == ["data.json"]
    assert policies.digest.startswith("sha256:") and policies.digest == policy.load().digest
    assert stages.order == ("dev", "staging", "production")
    assert stages.resolve("champion") == "production" and stages.resolve(" Prod ") == "production"


def test_team_files_add_or_replace_and_change_the_digest(tmp_path: Path) -> None:
    base = policy.load()
    added = team_set(tmp_path, {"extra.rego": "package mlsec.custom.extra\n\nimport rego.v1\n\nwarn := []\n",
                                "notes.txt": "ignored", "tests.yaml": "- ignored"})
    assert sorted(Path(n).name for n, _ in added.modules) == ["extra.rego", "gate.rego"]
    assert added.digest != base.digest
    (tmp_path / "team" / "gate.rego").write_text("package mlsec.gate\n\nimport rego.v1\n\ndecision := {}\n")
    replaced = policy.load([tmp_path / "team"])
    (gate_name,) = [n for n, _ in replaced.modules if n.endswith("gate.rego")]
    assert Path(gate_name).parent == tmp_path / "team"


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"old.rego": "package mlsec.custom.old\n\ndeny[m] { m := 1 }\n"}, "old.rego:1: missing `import rego.v1`"),
        ({"v.rego": "package x\n\n# import rego.v1\n"}, "v.rego:1: missing `import rego.v1`"),
        ({"data.json": '{\n  "mlsec": {\n    "x": 1,,\n  }\n}\n'}, "data.json:3: invalid JSON"),
        ({"data.json": "[1, 2]"}, "data.json:1: a data document must be a JSON object"),
        ({"bad.rego": b"package x\n\nimport rego.v1\n\n# \xff\n".decode("latin-1")}, None),
    ],
)
def test_load_rejects_broken_files(tmp_path: Path, files: dict[str, str], fragment: str | None) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("latin-1") if fragment is None else text.encode())
    with pytest.raises(policy.PolicyError) as err:
        policy.load([folder])
    assert (fragment or "cannot read") in str(err.value)


def test_load_without_any_rego_refuses_to_pass(tmp_path: Path) -> None:
    with pytest.raises(policy.PolicyError, match="no Rego policy found"):
        policy.load([tmp_path], include_default=False)
    with pytest.raises(policy.PolicyError, match="does not exist"):
        policy.load([tmp_path / "missing"])


def test_team_data_json_without_stage_settings_is_a_config_error(tmp_path: Path) -> None:
    policies = team_set(tmp_path, {"data.json": '{"team": {"owners": ["a"]}}'})
    with pytest.raises(config.ConfigError, match="cannot read default stage settings"):
        config.load(policies.defaults())


# -- compile and evaluation errors -----------------------------------------------------------------


BAD_AT_LINE_5 = 'package mlsec.custom.bad\n\nimport rego.v1\n\ndeny contains msg if { msg := := "x" }\n'


def test_compile_error_names_file_line_and_column(tmp_path: Path) -> None:
    policies = team_set(tmp_path, {"bad.rego": BAD_AT_LINE_5})
    with pytest.raises(policy.PolicyError) as err:
        decide_with(policies, result(), "dev")
    first = str(err.value).splitlines()[0]
    assert first.endswith("bad.rego:5:28: Invalid assignment operator")


def test_compile_error_line_is_right_after_non_ascii_text(tmp_path: Path) -> None:
    source = "# Prüfung für Größenänderung: ünïcödé äöü ßßß ééé\n" + BAD_AT_LINE_5
    lines = source.splitlines()
    assert lines[5].startswith("deny contains")  # the error is on line 6 of this file
    policies = team_set(tmp_path, {"bad.rego": source})
    with pytest.raises(policy.PolicyError) as err:
        decide_with(policies, result(), "dev")
    reported = {line.split("bad.rego:")[1].split(":")[0] for line in str(err.value).splitlines() if "bad.rego:" in line}
    assert reported == {"6"}


def decide_with(policies: policy.PolicySet, res: ScanResult, stage: str) -> Decision:
    stages = config.load(policies.defaults())
    return policy.evaluate(policies, stages, policy.build_input(res, stage=stages.resolve(stage), now=NOW))


@pytest.mark.parametrize(
    ("gate_rego", "fragment"),
    [
        ('verdict := "pass"', "undefined"),
        ('decision := "pass"', "must be an object with decision pass|warn|block"),
        ('decision := {"decision": "maybe"}', "must be an object with decision pass|warn|block"),
        ('decision := {"decision": "pass", "violations": [{"rule_id": "X", "reason": "r"}]}',
         "lists violations but decided 'pass'"),
        ('decision := {"decision": "block", "violations": [{"finding": "nope"}]}', "malformed entry"),
        ('decision := {"decision": "block", "violations": [{"rule_id": "X"}]}', "malformed entry"),
        ("decision := x if { x := 1/0 }", "policy evaluation failed"),
        ('decision := {"decision": nosuch.builtin("x")}', "policy evaluation failed"),
        ('decision := {"decision": sprintf("%s", [lower("PASS")]), "n": sprintf("n %s", [lower("X")])}',
         "build strings with concat"),
    ],
)
def test_bad_decisions_fail_closed(tmp_path: Path, gate_rego: str, fragment: str) -> None:
    policies = team_set(tmp_path, {"gate.rego": f"package mlsec.gate\n\nimport rego.v1\n\n{gate_rego}\n"})
    with pytest.raises(policy.PolicyError) as err:
        decide_with(policies, result(finding("MLSEC-PICKLE-003", Severity.MEDIUM)), "dev")
    assert fragment in str(err.value)


def test_a_replacement_gate_may_decide_differently(tmp_path: Path) -> None:
    policies = team_set(tmp_path, {"gate.rego": (
        "package mlsec.gate\n\nimport rego.v1\n\n"
        'decision := {"decision": "block", "violations": [{"rule_id": "TEAM", "artifact": "a", "reason": '
        'concat("", ["stage ", input.stage])}]}\n'
    )})
    d = decide_with(policies, result(), "champion")
    assert d.decision == "block" and [(v.rule_id, v.reason) for v in d.violations] == [("TEAM", "stage production")]


# -- the decision ------------------------------------------------------------------------------------


def test_decision_record_fields() -> None:
    res = result(finding("MLSEC-PICKLE-002", Severity.HIGH, message="Calls evil.f"),
                 finding("MLSEC-PICKLE-003", Severity.MEDIUM, "models/n.pkl"))
    d = decide(res, "challenger")
    assert d.stage == "staging" and d.decision == "block" and not d.allow
    (v,) = d.violations
    assert (v.rule_id, v.artifact, v.severity, v.count, v.policy) == (
        "MLSEC-PICKLE-002", "models/m.pkl", "high", 1, "mlsec.gate.severity")
    assert v.reason == "MLSEC-PICKLE-002: 1 high finding(s) in models/m.pkl: Calls evil.f (staging blocks at high)"
    (w,) = d.warnings
    assert w.rule_id == "MLSEC-PICKLE-003" and w.artifact == "models/n.pkl"
    doc = d.to_dict()
    assert doc["schema"] == "mlsec.policy-decision/v1" and doc["evaluated_at"] == "2026-06-01T00:00:00+00:00"
    # The digest covers the policies *and* the stage settings they ran with.
    assert doc["policy"]["digest"].startswith("sha256:") and doc["policy"]["digest"] != shipped()[0].digest
    json.dumps(doc)  # JSON-ready


def test_findings_are_aggregated_per_rule_and_artifact() -> None:
    fs = [finding("MLSEC-PICKLE-003", Severity.MEDIUM, key=f"k{i}") for i in range(5)]
    fs.append(finding("MLSEC-PICKLE-003", Severity.HIGH, key="worst", message="the worst one"))
    fs.append(finding("MLSEC-PICKLE-010", Severity.INFO))
    pin = policy.build_input(result(*fs), stage="production", now=NOW)
    (entry,) = pin.doc["findings"]
    assert entry["count"] == 6 and entry["severity"] == "high" and entry["rank"] == 3 and entry["id"] == "f1"
    assert len(entry["fingerprints"]) == policy.MAX_FINGERPRINTS
    assert pin.messages["f1"] == "the worst one"
    assert pin.doc["summary"]["by_severity"]["info"] == 1 and pin.doc["summary"]["findings"] == 7
    (v,) = decide(result(*fs), "production").violations
    assert v.count == 6 and v.reason.startswith("MLSEC-PICKLE-003: 6 high finding(s) in models/m.pkl: the worst one")


def test_input_document_shape() -> None:
    sup = Suppressed(finding("MLSEC-PICKLE-002", Severity.HIGH, "models/w.pkl"),
                     Suppression("waiver", "W-1", "legacy", "ml-platform", "2027-01-31", ("staging",)))
    res = result(finding("MLSEC-PICKLE-003", Severity.MEDIUM), suppressed=(sup,),
                 errors=(ErrorRecord("models/x.pkl", "mlsec-models", "boom"),),
                 skipped=(Skip("models/big.bin", "Git LFS pointer", "lfs-pointer"),))
    doc = policy.build_input(res, stage="staging", from_stage="dev", now=NOW, bom={"models": []}).doc
    assert doc["schema"] == "mlsec.policy-input/v1" and doc["stage"] == "staging" and doc["from"] == "dev"
    assert doc["now"] == "2026-06-01T00:00:00+00:00" and doc["now_ns"] == int(NOW.timestamp()) * 10**9
    (s,) = doc["suppressed"]
    assert s["waiver"] == {"id": "W-1", "source": "waiver", "owner": "ml-platform", "reason": "legacy",
                           "expires": "2027-01-31", "stages": ["staging"]}
    assert doc["errors"] == [{"path": "models/x.pkl", "scanner": "mlsec-models", "message": "boom"}]
    assert doc["skipped"] == [{"path": "models/big.bin", "code": "lfs-pointer", "reason": "Git LFS pointer"}]
    assert doc["bom"] == {"models": []} and doc["summary"]["suppressed"] == 1
    assert {e["id"] for e in doc["findings"]}.isdisjoint({e["id"] for e in doc["suppressed"]})


def test_now_in_another_timezone_is_normalised_to_utc() -> None:
    later = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert policy.build_input(result(), stage="dev", now=later).doc["now"] == "2026-06-01T00:00:00+00:00"


def test_input_cap_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "MAX_INPUT_ENTRIES", 3)
    fs = [finding("MLSEC-PICKLE-003", Severity.MEDIUM, f"m{i}.pkl") for i in range(4)]
    with pytest.raises(policy.PolicyError, match="exceed the policy input cap"):
        policy.build_input(result(*fs), stage="dev", now=NOW)


def test_same_input_same_decision_and_digests() -> None:
    fs = [finding("MLSEC-PICKLE-003", Severity.MEDIUM, f"models/m{i}.pkl") for i in range(3)]
    a = decide(result(*fs), "production")
    b = decide(result(*reversed(fs)), "production")
    assert a == b and a.to_dict() == b.to_dict()
    assert a.input_digest.startswith("sha256:") and len(a.input_digest) == 7 + 64
    c = decide(result(*fs[:2]), "production")
    assert c.input_digest != a.input_digest and c.policy_digest == a.policy_digest


def test_production_requires_hashes_and_complete_scans() -> None:
    res = result(artifacts=(model("models/nohash.pkl", sha256=""), model("models/ok.pkl")),
                 skipped=(Skip("models/big.bin", "Git LFS pointer", "lfs-pointer"),))
    d = decide(res, "production")
    assert d.decision == "block"
    assert sorted(v.rule_id for v in d.violations) == ["MLSEC-GATE-HASH", "MLSEC-GATE-SKIPPED"]
    (h,) = [v for v in d.violations if v.rule_id == "MLSEC-GATE-HASH"]
    assert h.artifact == "models/nohash.pkl" and h.reason == "model models/nohash.pkl has no SHA-256"
    d = decide(res, "staging")
    assert d.decision == "warn" and [w.rule_id for w in d.warnings] == ["MLSEC-GATE-SKIPPED"]


@pytest.mark.parametrize(("stage", "outcome", "where"),
                         [("dev", "warn", "warnings"), ("staging", "block", "violations"),
                          ("production", "block", "violations")])
def test_scanner_errors_per_stage(stage: str, outcome: str, where: str) -> None:
    res = result(artifacts=(model(),), errors=(ErrorRecord("models/m.pkl", "mlsec-models", "TimeoutError: 300 s"),))
    d = decide(res, stage)
    assert d.decision == outcome
    (v,) = getattr(d, where)
    assert v.rule_id == "MLSEC-GATE-ERROR"
    assert v.reason == "scanner mlsec-models could not complete on models/m.pkl: TimeoutError: 300 s"
    assert d.errors == ("models/m.pkl: mlsec-models: TimeoutError: 300 s",)


# -- exit codes for incomplete scans --------------------------------------------------------------


@pytest.mark.parametrize(("stage", "need_complete"), [("dev", False), ("staging", True), ("production", True),
                                                       ("champion", True), (None, True)])
def test_requires_completeness_per_stage(tmp_path: Path, stage: str | None, need_complete: bool) -> None:
    (tmp_path / ".git").mkdir()
    prepared = gate.prepare(gate.Settings(stage=stage, start=tmp_path, now=NOW))
    assert gate.requires_completeness(prepared) is need_complete


def test_decision_exit_codes_with_an_incomplete_scan(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    res = result(finding("MLSEC-PICKLE-002", Severity.HIGH),
                 errors=(ErrorRecord("models/x.pkl", "mlsec-models", "DeadlineExceeded"),))
    codes = {}
    for stage in ("dev", "staging"):
        prepared = gate.prepare(gate.Settings(stage=stage, start=tmp_path, now=NOW))
        suppressed_result, decision, _, _ = gate.decide(prepared, res)
        assert decision is not None
        codes[stage] = decision_exit_code(suppressed_result, decision, gate.requires_completeness(prepared), False)
        # --exit-zero never hides an incomplete scan
        assert decision_exit_code(suppressed_result, decision, True, True) == EXIT_INCOMPLETE
    assert codes == {"dev": EXIT_PASS, "staging": EXIT_INCOMPLETE}
    complete = result(finding("MLSEC-PICKLE-002", Severity.HIGH))
    d = decide(complete, "staging")
    assert decision_exit_code(complete, d, True, False) == EXIT_BLOCKED
    assert decision_exit_code(complete, d, True, True) == EXIT_PASS


# -- stage configuration ------------------------------------------------------------------------------


def test_config_from_mlsec_toml_and_pyproject(tmp_path: Path) -> None:
    policies, _ = shipped()
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.mlsec.stages.staging]\nblock_at = "critical"\naliases = ["qa"]\n')
    cfg = config.load(policies.defaults(), tmp_path)
    assert cfg.resolve("qa") == "staging" and cfg.stages["staging"]["block_rank"] == int(Severity.CRITICAL)
    assert cfg.source.endswith("pyproject.toml")
    with pytest.raises(config.ConfigError, match="choose from dev, staging, production"):
        cfg.resolve("challenger")
    (tmp_path / "mlsec.toml").write_text('[stages.production]\nblock_at = "high"\n')
    cfg = config.load(policies.defaults(), tmp_path)  # mlsec.toml wins in the same folder
    assert "qa" not in cfg.aliases and cfg.resolve("challenger") == "staging"
    assert cfg.stages["production"]["block_rank"] == int(Severity.HIGH) and cfg.source.endswith("mlsec.toml")
    assert cfg.stages["staging"]["block_rank"] == int(Severity.HIGH)


def test_config_order_and_new_stages(tmp_path: Path) -> None:
    policies, _ = shipped()
    cfg_file = tmp_path / "m.toml"
    cfg_file.write_text('order = ["dev", "canary", "staging", "production"]\n[stages.canary]\nwarn_at = "high"\n')
    cfg = config.load(policies.defaults(), explicit=cfg_file)
    assert cfg.order == ("dev", "canary", "staging", "production")
    canary = cfg.stages["canary"]
    assert canary["block_rank"] == int(Severity.MEDIUM) and canary["warn_rank"] == int(Severity.HIGH)
    assert canary["aliases"] == [] and canary["require_hashes"] is True
    cfg_file.write_text('order = ["dev", "nope"]\n')
    with pytest.raises(config.ConfigError, match="order names unknown stages: nope"):
        config.load(policies.defaults(), explicit=cfg_file)


def test_with_overrides_recomputes_ranks() -> None:
    _, stages = shipped()
    out = config.with_overrides(stages, {"stages": {"dev": {"block_at": "medium"}}}, "case")
    assert out.stages["dev"]["block_rank"] == int(Severity.MEDIUM)
    assert stages.stages["dev"]["block_rank"] == int(Severity.CRITICAL)  # the base is not modified
    with pytest.raises(config.ConfigError, match="unknown setting 'blok_at'"):
        config.with_overrides(stages, {"stages": {"dev": {"blok_at": "low"}}}, "case")


# -- property: the default gate blocks exactly at the stage's threshold --------------------------------


def test_gate_blocks_exactly_at_the_stage_threshold() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    policies, base = shipped()
    names = ["dev", "staging", "production", *sorted(base.aliases)]
    levels = ["low", "medium", "high", "critical"]

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(
        stage=st.sampled_from(names),
        severities=st.lists(st.sampled_from(list(Severity)), max_size=4),
        block_at=st.none() | st.sampled_from(levels),
        warn_at=st.none() | st.sampled_from(levels),
    )
    def check(stage: str, severities: list[Severity], block_at: str | None, warn_at: str | None) -> None:
        canonical = base.resolve(stage)
        overrides = {k: v for k, v in (("block_at", block_at), ("warn_at", warn_at)) if v is not None}
        stages = config.with_overrides(base, {"stages": {canonical: overrides}}, "property") if overrides else base
        block_rank = stages.stages[canonical]["block_rank"]
        warn_rank = stages.stages[canonical]["warn_rank"]
        fs = [finding(f"MLSEC-PICKLE-00{i + 1}", sev, f"models/m{i}.pkl") for i, sev in enumerate(severities)]
        d = policy.evaluate(policies, stages, policy.build_input(result(*fs), stage=canonical, now=NOW))
        listed = [f for f in fs if f.severity >= policy.POLICY_FLOOR]  # INFO never warns or blocks
        blocking = sorted(f.rule_id for f in listed if int(f.severity) >= block_rank)
        warning = sorted(f.rule_id for f in listed if warn_rank <= int(f.severity) < block_rank)
        assert sorted(v.rule_id for v in d.violations) == blocking
        assert sorted(v.rule_id for v in d.warnings) == warning
        assert d.decision == ("block" if blocking else "warn" if warning else "pass")
        assert d.stage == canonical

    check()


def test_default_thresholds() -> None:
    """The documented defaults: dev blocks CRITICAL, staging HIGH+, production MEDIUM+."""
    _, stages = shipped()
    assert {s: Severity(stages.stages[s]["block_rank"]) for s in stages.order} == {
        "dev": Severity.CRITICAL, "staging": Severity.HIGH, "production": Severity.MEDIUM}
    for sev in Severity:
        for stage, floor in (("dev", Severity.CRITICAL), ("staging", Severity.HIGH), ("production", Severity.MEDIUM)):
            d = decide(result(finding("MLSEC-PICKLE-003", sev)), stage)
            assert (d.decision == "block") is (sev >= floor), (stage, sev)


# -- regopy 1.5.2 regressions (each should fail the day an upgrade fixes the bug) -----------------------


def _query(src: str, query: str = "data.t.x", doc: Any = None, **flags: Any) -> Any:
    from regopy import Interpreter, LogLevel

    rego = Interpreter()
    rego.log_level = LogLevel.NONE
    for name, value in flags.items():
        setattr(rego, name, value)
    rego.add_module("t.rego", "package t\n\nimport rego.v1\n\n" + src + "\n")
    if doc is not None:
        rego.set_input_term(json.dumps(doc, ensure_ascii=False))
    out = rego.query(query)
    assert out.ok(), str(out)
    expressions = out[0].expressions if len(out) else []
    return expressions[0] if expressions else None


@pytest.mark.parametrize("builtin", ['lower("AB")', 'upper("q")', 'concat("", ["q"])', "format_int(3, 10)",
                                     "upper(input.s)"])
def test_regopy_sprintf_keeps_quotes_around_a_builtin_result(builtin: str) -> None:
    """`sprintf("... %s ...", [builtin(...)])` renders the string with its quotes: unparsable output."""
    with pytest.raises(ValueError):  # json.JSONDecodeError from regopy's Output
        _query(f'x := sprintf("model %s!", [{builtin}])', doc={"s": "p"})
    # concat, the workaround used by the shipped policies, is fine with the same values
    assert _query(f'x := concat("", ["model ", {builtin}, "!"])', doc={"s": "p"}).startswith("model ")
    # and plain input strings under %s are not affected
    assert _query('x := sprintf("model %s!", [input.s])', doc={"s": "p"}) == "model p!"


def test_regopy_upper_mangles_escaped_characters() -> None:
    """upper()/lower() work on the JSON-escaped text: a newline becomes `\\N` and the output is unparsable."""
    assert _query("x := upper(input.s)", doc={"s": "plain"}) == "PLAIN"
    with pytest.raises(ValueError):
        _query("x := upper(input.s)", doc={"s": "two\nlines"})


ODD = ['we"ird', "back\\slash", "new\nline", "tab\tx", "ctl\x01x", "esc\x1b[31m", "ü", "☃ 𝄞", "\u2028", "\\u0041", "a/b"]


@pytest.mark.parametrize("text", ODD)
def test_regopy_concat_round_trips_odd_strings(text: str) -> None:
    doc = {"s": text}
    assert _query('x := concat("", ["<", input.s, ">"])', doc=doc) == f"<{text}>"
    assert _query('x := {"r": concat("", ["p: ", input.s]), "raw": input.s}', doc=doc) == {"r": f"p: {text}", "raw": text}


def test_gate_reasons_built_by_rego_round_trip_odd_strings() -> None:
    name = 'models/we"ird\\name ü\nline ☃.bin'
    res = result(artifacts=(model("models/ok.pkl"),), skipped=(Skip(name, 'said "no"\\', "lfs-pointer"),))
    (v,) = decide(res, "production").violations
    assert v.artifact == name and v.reason == f'{name} was not scanned (lfs-pointer): said "no"\\'


def test_regopy_prints_compile_errors_to_stdout_at_the_default_log_level() -> None:
    """Why mlsec sets LogLevel.NONE: without it a broken policy writes to fd 1 (see test_gate_cli)."""
    code = (
        "from regopy import Interpreter, RegoError\n"
        "r = Interpreter()\n"
        "try:\n"
        "    r.add_module('bad.rego', 'package t\\n\\nimport rego.v1\\n\\nx := := 1\\n')\n"
        "except RegoError:\n"
        "    pass\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "bad.rego" in proc.stdout


def test_regopy_accepts_v0_bodies_silently_with_object_semantics() -> None:
    """Why mlsec requires `import rego.v1`: `deny[msg] { ... }` parses, but as an object, not a set."""
    from regopy import Interpreter, LogLevel

    rego = Interpreter()
    rego.log_level = LogLevel.NONE
    rego.add_module("v0.rego", 'package t\n\ndeny[msg] {\n\tmsg := "x"\n}\n')
    assert rego.query("data.t.deny")[0].expressions[0] == {"x": True}


def test_regopy_with_input_as_crashes_the_process() -> None:
    """Why policy tests are data, not `with input as` Rego tests: the engine segfaults."""
    code = (
        "import json\n"
        "from regopy import Interpreter, LogLevel\n"
        "r = Interpreter(); r.log_level = LogLevel.NONE\n"
        "r.add_module('t.rego', 'package t\\n\\nimport rego.v1\\n\\nk := input.k\\nx := data.cfg[k]\\n\\n"
        "test_x if {\\n\\tx == 1 with input as {\"k\": \"a\"}\\n}\\n')\n"
        "r.add_data_json(json.dumps({'cfg': {'a': 1}}))\n"
        "r.set_input_term(json.dumps({'k': 'a'}))\n"
        "print(r.query('data.t.test_x'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stdout, proc.stderr)


def test_regopy_rfc3339_rejects_z_and_semver_misorders_prereleases() -> None:
    """Why Python computes times and versions: both builtins are wrong on 1.5.2."""
    assert _query('x := time.parse_rfc3339_ns("2026-01-31T00:00:00+00:00")') == 1769817600 * 10**9
    assert _query('x := time.parse_rfc3339_ns("2026-01-31T00:00:00Z")') is None  # undefined
    assert _query('x := semver.compare("1.0.0-rc1", "1.0.0")') == 1  # should be -1


def test_stage_settings_change_the_policy_digest(tmp_path: Path) -> None:
    from mlsec import config as cfg

    policies, stages = shipped()
    res = result(finding("MLSEC-PICKLE-003", Severity.MEDIUM))
    looser = cfg.with_overrides(stages, {"stages": {"production": {"block_at": "high"}}}, "test")
    a = policy.evaluate(policies, stages, policy.build_input(res, stage="production", now=NOW))
    b = policy.evaluate(policies, looser, policy.build_input(res, stage="production", now=NOW))
    assert a.decision == "block" and b.decision != "block"
    assert a.policy_digest != b.policy_digest
