"""The policy gate from the command line: `mlsec gate`, `mlsec scan --stage`, `mlsec policy test`.

Hostile samples are written by the tests into a temporary git repository root (``.git`` stops
the lookup of ``mlsec.toml`` and ``.mlsec/waivers.yaml`` there). Everything runs the real
pipeline and the real regopy engine; subprocesses are used only where fd-level stdout matters.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlsec.cli import main
from tests.conftest import REPO

# HIGH MLSEC-PICKLE-002: an unknown callable is called (mymodule.evil_func('x')).
A_PKL = b"\x80\x02cmymodule\nevil_func\nX\x01\x00\x00\x00x\x85R."
# MEDIUM MLSEC-PICKLE-003: an unknown global is only imported (mymodule.Thing).
B_PKL = b"\x80\x02cmymodule\nThing\nq\x00."
CLEAN_PKL = pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)

SHIPPED_POLICIES = REPO / "policies"

FORMATS_POLICY = """\
package mlsec.custom.formats

import rego.v1

deny contains msg if {
\tinput.stage == "production"
\tsome a in input.artifacts
\ta.format == "pickle"
\tmsg := concat("", ["pickle model not allowed in production: ", a.path])
}
"""


# -- helpers -------------------------------------------------------------------------------------


def invoke(*args: object) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def gate(root: Path, stage: str, *args: object) -> tuple[int, dict[str, Any] | None, str]:
    """`mlsec gate ROOT --stage STAGE --format json -q ...`: (code, parsed report or None, stderr)."""
    code, out, err = invoke("gate", root, "--stage", stage, "--format", "json", "-q", *args)
    return code, (json.loads(out) if out.strip() else None), err


def scan(root: Path, *args: object) -> tuple[int, dict[str, Any], str]:
    """`mlsec scan ROOT --format json -q ...`: (code, parsed report, stderr)."""
    code, out, err = invoke("scan", root, "--format", "json", "-q", *args)
    return code, json.loads(out), err


def rule_ids(verdicts: list[dict[str, Any]]) -> list[str]:
    return sorted(v["rule_id"] for v in verdicts)


def write_waivers(root: Path, *entries: dict[str, Any]) -> Path:
    """Write ``.mlsec/waivers.yaml`` from waiver dicts (defaults: owner, reason, far expiry)."""
    full = [{"expires": "2099-12-31", "owner": "ml-platform@example.com", "reason": "accepted risk"} | e
            for e in entries]
    full = [{k: v for k, v in e.items() if v is not None} for e in full]
    path = root / ".mlsec" / "waivers.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"version": 1, "waivers": full}, sort_keys=False), encoding="utf-8")
    return path


def write_text_waivers(root: Path, text: str) -> Path:
    path = root / ".mlsec" / "waivers.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def policy_dir(base: Path, files: dict[str, str]) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text, encoding="utf-8")
    return base


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository root holding the two hostile samples."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "models" / "a.pkl").write_bytes(A_PKL)
    (root / "models" / "b.pkl").write_bytes(B_PKL)
    return root


def test_samples_have_the_expected_findings(repo: Path) -> None:
    code, doc, _ = scan(repo)
    assert code == 1
    got = sorted((f["path"], f["rule_id"], f["severity"]) for f in doc["findings"])
    assert got == [("models/a.pkl", "MLSEC-PICKLE-002", "high"), ("models/b.pkl", "MLSEC-PICKLE-003", "medium")]


# -- 1. one fixture set, three stages ------------------------------------------------------------


def test_same_fixtures_pass_dev_and_are_blocked_at_staging_and_production(repo: Path) -> None:
    code, doc, _ = gate(repo, "dev")
    assert code == 0 and doc is not None
    dec = doc["decision"]
    assert dec["decision"] == "warn" and dec["allow"] is True and dec["violations"] == []
    assert rule_ids(dec["warnings"]) == ["MLSEC-PICKLE-002"]

    code, doc, _ = gate(repo, "staging")
    assert code == 1 and doc is not None
    dec = doc["decision"]
    assert dec["decision"] == "block" and dec["allow"] is False
    assert rule_ids(dec["violations"]) == ["MLSEC-PICKLE-002"]
    assert rule_ids(dec["warnings"]) == ["MLSEC-PICKLE-003"]

    code, doc, _ = gate(repo, "production")
    assert code == 1 and doc is not None
    assert rule_ids(doc["decision"]["violations"]) == ["MLSEC-PICKLE-002", "MLSEC-PICKLE-003"]
    assert all("production blocks at medium" in v["reason"] for v in doc["decision"]["violations"])


@pytest.mark.parametrize(("alias", "canonical", "code"),
                         [("champion", "production", 1), ("PROD", "production", 1), ("challenger", "staging", 1),
                          ("development", "dev", 0)])
def test_default_stage_aliases(repo: Path, alias: str, canonical: str, code: int) -> None:
    got, doc, _ = gate(repo, alias)
    assert got == code and doc is not None and doc["decision"]["stage"] == canonical


def test_table_output_states_the_decision_and_its_reasons(repo: Path) -> None:
    code, out, _ = invoke("gate", repo, "--stage", "staging")
    assert code == 1
    assert "Policy decision for staging: BLOCK" in out
    assert "blocks  MLSEC-PICKLE-002" in out and "warns  MLSEC-PICKLE-003" in out


def test_exit_zero_turns_a_block_into_zero(repo: Path) -> None:
    code, doc, _ = gate(repo, "production", "--exit-zero")
    assert code == 0 and doc is not None and doc["decision"]["decision"] == "block"


# -- 2. waiver expiry ------------------------------------------------------------------------------


def test_waiver_passes_staging_through_its_expiry_day_then_stops_with_a_named_warning(repo: Path) -> None:
    write_waivers(repo, {"id": "W-2026-014", "match": {"rule": "MLSEC-PICKLE-002"}, "expires": "2027-01-31"})

    for now in ("2027-01-31", "2027-01-31T23:59:59Z"):
        code, doc, _ = gate(repo, "staging", "--now", now)
        assert code == 0, now
        assert doc is not None
        dec = doc["decision"]
        assert dec["decision"] == "warn" and dec["violations"] == []
        assert [w["waiver_id"] for w in dec["waived"]] == ["W-2026-014"]
        assert [s["path"] for s in doc["suppressed"]] == ["models/a.pkl"]
        assert not any(w["rule_id"] == "MLSEC-WAIVER-EXPIRED" for w in dec["warnings"])

    code, doc, _ = gate(repo, "staging", "--now", "2027-02-01")
    assert code == 1 and doc is not None
    dec = doc["decision"]
    assert rule_ids(dec["violations"]) == ["MLSEC-PICKLE-002"] and dec["waived"] == []
    assert doc["suppressed"] == []
    (expired,) = [w for w in dec["warnings"] if w["rule_id"] == "MLSEC-WAIVER-EXPIRED"]
    assert "W-2026-014" in expired["reason"] and "2027-01-31" in expired["reason"]


def test_expired_waiver_warning_appears_in_the_table_too(repo: Path) -> None:
    write_waivers(repo, {"id": "W-OLD", "match": {"rule": "MLSEC-PICKLE-003"}, "expires": "2026-01-01"})
    code, out, _ = invoke("gate", repo, "--stage", "dev", "--now", "2026-06-01")
    assert code == 0
    assert "waiver W-OLD expired on 2026-01-01" in out


# -- 3. waiver requirements per stage -------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "reason", "production_code", "complaint"),
    [
        ("ml-platform", None, 1, "waiver W-3 has no reason"),
        (None, "legacy model, replaced in Q1", 1, "waiver W-3 has no owner"),
        ("ml-platform", "legacy model, replaced in Q1", 0, None),
    ],
)
def test_waiver_owner_and_reason_are_required_at_production_only(
    repo: Path, owner: str | None, reason: str | None, production_code: int, complaint: str | None
) -> None:
    entry: dict[str, Any] = {"id": "W-3", "match": {"rule": "MLSEC-PICKLE-*"}, "owner": owner, "reason": reason}
    write_waivers(repo, entry)

    code, doc, _ = gate(repo, "staging", "--now", "2026-06-01")
    assert code == 0 and doc is not None
    assert doc["decision"]["decision"] == "pass"
    assert sorted(w["artifact"] for w in doc["decision"]["waived"]) == ["models/a.pkl", "models/b.pkl"]

    code, doc, _ = gate(repo, "production", "--now", "2026-06-01")
    assert code == production_code and doc is not None
    dec = doc["decision"]
    if complaint is None:
        assert dec["decision"] == "pass" and len(dec["waived"]) == 2
    else:
        assert rule_ids(dec["violations"]) == ["MLSEC-PICKLE-002", "MLSEC-PICKLE-003"]
        assert all(complaint in v["reason"] and v["policy"] == "mlsec.gate.waivers" for v in dec["violations"])
        assert dec["waived"] == []
    # Suppressed findings stay visible whatever the policy thinks of the waiver.
    assert sorted(s["path"] for s in doc["suppressed"]) == ["models/a.pkl", "models/b.pkl"]


# -- 4. broken policies fail closed, with file:line, and nothing on stdout --------------------------


def _subprocess_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MLSEC_CACHE_DIR": str(tmp_path / "cache-sub")}


def test_broken_rego_exits_2_with_file_and_line_and_a_clean_stdout(repo: Path, tmp_path: Path) -> None:
    bad = policy_dir(tmp_path / "team", {"bad.rego": (
        "package mlsec.custom.bad\n"
        "\n"
        "import rego.v1\n"
        'deny contains msg if { msg := := "x" }\n'
    )})
    for fmt in ("table", "json"):
        proc = subprocess.run(
            [sys.executable, "-m", "mlsec", "gate", str(repo), "--stage", "dev", "--policy", str(bad), "--format", fmt],
            check=False, capture_output=True, text=True, env=_subprocess_env(tmp_path), cwd=tmp_path, timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "", f"engine output leaked onto stdout: {proc.stdout!r}"
        assert "bad.rego:4:" in proc.stderr
        assert "Invalid assignment operator" in proc.stderr and "Traceback" not in proc.stderr


def test_broken_rego_is_reported_before_scanning(repo: Path, tmp_path: Path) -> None:
    """A policy that does not compile is exit 2 at every stage, never a silent pass."""
    bad = policy_dir(tmp_path / "team", {"bad.rego": "package mlsec.custom.bad\n\nimport rego.v1\n\ndeny contains msg if {\n"})
    for stage in ("dev", "production"):
        code, doc, err = gate(repo, stage, "--policy", bad)
        assert code == 2 and doc is None
        assert "bad.rego:" in err


def test_rego_print_does_not_corrupt_json_stdout(repo: Path, tmp_path: Path) -> None:
    team = policy_dir(tmp_path / "team", {"debug.rego": (
        "package mlsec.custom.debug\n\nimport rego.v1\n\n"
        'warn contains msg if {\n\tprint("debugging the gate")\n\tmsg := "debug warning"\n}\n'
    )})
    proc = subprocess.run(
        [sys.executable, "-m", "mlsec", "gate", str(repo), "--stage", "dev", "--policy", str(team), "--format", "json",
         "-q"],
        check=False, capture_output=True, text=True, env=_subprocess_env(tmp_path), cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert "debug warning" in [w["reason"] for w in doc["decision"]["warnings"]]


def test_policy_without_rego_v1_import_is_refused(repo: Path, tmp_path: Path) -> None:
    team = policy_dir(tmp_path / "team", {"old.rego": 'package mlsec.custom.old\n\ndeny[msg] {\n\tmsg := "x"\n}\n'})
    code, doc, err = gate(repo, "dev", "--policy", team)
    assert code == 2 and doc is None
    assert "old.rego:1:" in err and "import rego.v1" in err


def test_replacement_gate_without_a_decision_rule_is_undefined_exit_2(repo: Path, tmp_path: Path) -> None:
    team = policy_dir(tmp_path / "team", {"gate.rego": "package mlsec.gate\n\nimport rego.v1\n\nverdict := \"pass\"\n"})
    code, doc, err = gate(repo, "dev", "--policy", team)
    assert code == 2 and doc is None
    assert "undefined" in err and "data.mlsec.gate.decision" in err


def test_replacement_gate_with_a_malformed_decision_is_exit_2(repo: Path, tmp_path: Path) -> None:
    team = policy_dir(tmp_path / "team", {"gate.rego": "package mlsec.gate\n\nimport rego.v1\n\ndecision := \"pass\"\n"})
    code, doc, err = gate(repo, "dev", "--policy", team)
    assert code == 2 and doc is None and "decision" in err


def test_engine_error_in_a_team_policy_is_exit_2(repo: Path, tmp_path: Path) -> None:
    """A rule with two values is an evaluation error: fail closed."""
    team = policy_dir(tmp_path / "team", {"conflict.rego": (
        "package mlsec.custom.conflict\n\nimport rego.v1\n\nlimit := 1 if input.stage\nlimit := 2 if input.stage\n\n"
        'deny contains msg if {\n\tlimit > 0\n\tmsg := "over"\n}\n'
    )})
    code, doc, err = gate(repo, "dev", "--policy", team)
    assert code == 2 and doc is None and "policy evaluation failed" in err


def test_sprintf_corruption_in_a_team_policy_fails_closed(repo: Path, tmp_path: Path) -> None:
    """rego-cpp 1.5.2 quotes a builtin's result under %s; mlsec must not pass on the garbled answer."""
    team = policy_dir(tmp_path / "team", {"fmt.rego": (
        "package mlsec.custom.fmt\n\nimport rego.v1\n\n"
        'deny contains msg if {\n\tsome a in input.artifacts\n\tmsg := sprintf("model %s", [upper(a.path)])\n}\n'
    )})
    code, doc, err = gate(repo, "dev", "--policy", team)
    assert code == 2 and doc is None
    assert "concat" in err


def test_a_missing_policy_path_is_a_usage_error(repo: Path, tmp_path: Path) -> None:
    code, _, _ = gate(repo, "dev", "--policy", tmp_path / "no-such-dir")
    assert code == 2


# -- 5. team policies -----------------------------------------------------------------------------


def test_team_deny_rule_blocks_a_clean_pickle_at_production_not_at_staging(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "models" / "clean.pkl").write_bytes(CLEAN_PKL)
    team = policy_dir(tmp_path / "team", {"formats.rego": FORMATS_POLICY})

    code, doc, _ = gate(root, "production")
    assert code == 0 and doc is not None and doc["decision"]["decision"] == "pass"  # clean without the team rule

    code, doc, _ = gate(root, "production", "--policy", team)
    assert code == 1 and doc is not None
    (v,) = doc["decision"]["violations"]
    assert v["reason"] == "pickle model not allowed in production: models/clean.pkl"
    assert v["policy"] == "mlsec.custom.formats" and v["rule_id"] == "custom.formats"
    assert any(f.endswith("formats.rego") for f in doc["decision"]["policy"]["files"])

    code, doc, _ = gate(root, "staging", "--policy", team)
    assert code == 0 and doc is not None and doc["decision"]["decision"] == "pass"


def test_team_policy_may_be_a_single_file_and_may_warn(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "m.pkl").write_bytes(CLEAN_PKL)
    rule = tmp_path / "naming.rego"
    rule.write_text(
        "package mlsec.custom.naming\n\nimport rego.v1\n\n"
        "warn contains item if {\n\tsome a in input.artifacts\n\tnot startswith(a.path, \"models/\")\n"
        '\titem := {"rule_id": "TEAM-NAMING", "artifact": a.path, "reason": concat("", [a.path, " is outside models/"])}\n}\n',
        encoding="utf-8",
    )
    code, doc, _ = gate(root, "production", "--policy", rule)
    assert code == 0 and doc is not None
    dec = doc["decision"]
    assert dec["decision"] == "warn"
    assert [(w["rule_id"], w["artifact"], w["reason"]) for w in dec["warnings"]] == [
        ("TEAM-NAMING", "m.pkl", "m.pkl is outside models/")]


def test_a_same_named_team_file_replaces_the_shipped_gate(repo: Path, tmp_path: Path) -> None:
    team = policy_dir(tmp_path / "team", {"gate.rego": (
        "package mlsec.gate\n\nimport rego.v1\n\n"
        'decision := {"decision": "pass", "violations": [], "warnings": [], "waived": []}\n'
    )})
    code, doc, _ = gate(repo, "production", "--policy", team)
    assert code == 0 and doc is not None and doc["decision"]["decision"] == "pass"
    files = doc["decision"]["policy"]["files"]
    assert [f for f in files if f.endswith("gate.rego")] == [str(team / "gate.rego")]


def test_team_deny_object_without_reason_does_not_pass_silently(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "m.pkl").write_bytes(CLEAN_PKL)
    team = policy_dir(tmp_path / "team", {"objs.rego": (
        "package mlsec.custom.objs\n\nimport rego.v1\n\n"
        'deny contains item if {\n\tsome a in input.artifacts\n\titem := {"rule_id": "TEAM-1", "artifact": a.path}\n}\n'
    )})
    code, _, _ = gate(root, "production", "--policy", team)
    assert code in (1, 2)


def test_team_boolean_deny_does_not_pass_silently(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "m.pkl").write_bytes(CLEAN_PKL)
    team = policy_dir(tmp_path / "team", {"nopickle.rego": (
        "package mlsec.custom.nopickle\n\nimport rego.v1\n\n"
        'deny if {\n\tsome a in input.artifacts\n\ta.format == "pickle"\n}\n'
    )})
    code, _, _ = gate(root, "production", "--policy", team)
    assert code in (1, 2)


# -- 6. mlsec policy test -------------------------------------------------------------------------


def test_policy_test_passes_on_the_shipped_cases() -> None:
    cases = yaml.safe_load((SHIPPED_POLICIES / "tests" / "gate.yaml").read_text())
    code, out, _ = invoke("policy", "test", SHIPPED_POLICIES)
    assert code == 0, out
    assert f"{len(cases)} passed, 0 failed" in out and "FAIL" not in out
    code, out, _ = invoke("policy", "test")  # the default folder is the shipped one
    assert code == 0 and f"{len(cases)} passed" in out
    code, out, _ = invoke("policy", "test", SHIPPED_POLICIES, "-v")
    assert code == 0 and out.count("PASS  gate.yaml: ") == len(cases)


def test_policy_test_reports_a_wrong_case_with_a_readable_diff(tmp_path: Path) -> None:
    cases = yaml.safe_load((SHIPPED_POLICIES / "tests" / "gate.yaml").read_text())
    (case,) = [c for c in cases if c["name"] == "staging blocks high and warns on medium"]
    flipped = dict(case, name="flipped: staging lets high through", expect={"decision": "pass", "violations": []})
    (tmp_path / "team" / "tests").mkdir(parents=True)
    (tmp_path / "team" / "tests" / "cases.yaml").write_text(yaml.safe_dump([case, flipped]), encoding="utf-8")

    code, out, _ = invoke("policy", "test", tmp_path / "team")
    assert code == 1
    assert "FAIL  cases.yaml: flipped: staging lets high through" in out
    assert "FAIL  cases.yaml: staging blocks high" not in out
    lines = [line.strip() for line in out.splitlines()]
    assert "decision: expected 'pass'" in lines and "got 'block'" in lines
    assert "violations: expected []" in lines and "got ['MLSEC-PICKLE-002']" in lines
    assert "1 passed, 1 failed" in out


def test_policy_test_runs_team_policies_with_their_own_cases(tmp_path: Path) -> None:
    team = policy_dir(tmp_path / "team", {"formats.rego": FORMATS_POLICY})
    (team / "tests").mkdir()
    (team / "tests" / "formats.yaml").write_text(textwrap.dedent("""\
        - name: pickle blocked in production
          stage: production
          input: {artifacts: [{path: models/m.pkl, format: pickle}]}
          expect: {decision: block, violations: [custom.formats]}
        - name: pickle fine in staging
          stage: staging
          input: {artifacts: [{path: models/m.pkl, format: pickle}]}
          expect: {decision: pass, violations: []}
    """), encoding="utf-8")
    code, out, _ = invoke("policy", "test", team)
    assert code == 0, out
    assert "2 passed, 0 failed" in out


def test_policy_test_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = invoke("policy", "test", empty)
    assert code == 2 and "no test cases" in err

    broken = tmp_path / "broken"
    (broken / "tests").mkdir(parents=True)
    (broken / "tests" / "x.yaml").write_text("- name: no stage\n  expect: {decision: pass}\n")
    code, _, err = invoke("policy", "test", broken)
    assert code == 2 and "x.yaml" in err and "case 1" in err


def _broken_policy_folder(tmp_path: Path) -> Path:
    folder = policy_dir(tmp_path / "badrego", {"bad.rego": "package mlsec.custom.bad\n\nimport rego.v1\n\nx := := 1\n"})
    (folder / "tests").mkdir()
    (folder / "tests" / "x.yaml").write_text("- {name: n, stage: dev, expect: {decision: pass}}\n")
    return folder


def test_policy_test_with_a_non_compiling_policy_fails_with_file_and_line(tmp_path: Path) -> None:
    code, out, err = invoke("policy", "test", _broken_policy_folder(tmp_path))
    assert code != 0
    assert "bad.rego:5:" in out + err and "0 passed" not in err


def test_policy_test_with_a_non_compiling_policy_is_exit_2(tmp_path: Path) -> None:
    code, _, err = invoke("policy", "test", _broken_policy_folder(tmp_path))
    assert code == 2 and "bad.rego:5:" in err


# -- 7a. invalid waivers files ---------------------------------------------------------------------

_HEAD = """\
version: 1
waivers:
  - id: W-1
    match:
      rule: MLSEC-PICKLE-002
    expires: 2027-01-31
"""


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        pytest.param(_HEAD + "  - id: W-2\n    match: {rule: [MLSEC-PICKLE-003\n    expires: 2027-01-31\n", 9,
                     "invalid YAML", id="bad-yaml"),
        pytest.param(_HEAD + "  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n    reason: forever\n", 7,
                     "missing required key 'expires'", id="missing-expires"),
        pytest.param(_HEAD + "  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n    expires: 2027-01-31\n"
                     "    expiry: 2027-01-31\n", 11, "unknown waiver key 'expiry'", id="unknown-key"),
        pytest.param(_HEAD + "  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n      path: models/**\n"
                     "    expires: 2027-01-31\n", 10, "unknown match key 'path'", id="unknown-match-key"),
        pytest.param(_HEAD + "  - id: W-1\n    match:\n      rule: MLSEC-PICKLE-003\n    expires: 2027-01-31\n", 7,
                     "duplicate waiver id 'W-1'", id="duplicate-id"),
        pytest.param(_HEAD + "  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n    expires: next tuesday\n", 10,
                     "is not a date", id="bad-date-text"),
        pytest.param(_HEAD + '  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n    expires: "2027-02-30"\n', 10,
                     "is not a date", id="bad-date-quoted"),
        pytest.param(_HEAD + "  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n    expires: 2027-02-30\n", 10,
                     "2027-02-30", id="bad-date-unquoted-day"),
        pytest.param(_HEAD + "  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n    expires: 2027-13-01\n", 10,
                     "2027-13-01", id="bad-date-unquoted-month"),
        pytest.param(_HEAD + "  - id: W-2\n    match: {}\n    expires: 2027-01-31\n", 8,
                     "match needs at least one", id="empty-match"),
        pytest.param(_HEAD + "  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n    expires: 2027-01-31\n"
                     "    expires: 2028-01-31\n", 11, "duplicate key 'expires'", id="duplicate-key"),
        pytest.param("version: 1\nwaiver: []\n", 2, "unknown top-level key 'waiver'", id="top-level-typo"),
        pytest.param("version: 1\nwaiver:\n  - id: W-1\n", 2, "unknown top-level key 'waiver'", id="top-level-typo-block"),
        pytest.param(_HEAD + "  - id: W-2\n    match:\n      rule: MLSEC-PICKLE-003\n    expires: 2027-01-31\n"
                     "    tickets:\n      - JIRA-1\n", 11, "unknown waiver key 'tickets'", id="unknown-key-block"),
        pytest.param("version: 2\nwaivers: []\n", 1, "unsupported version", id="version"),
    ],
)
def test_invalid_waivers_file_is_exit_2_pointing_at_the_entry(repo: Path, body: str, line: int, message: str) -> None:
    path = write_text_waivers(repo, body)
    for stage_args in (("gate", repo, "--stage", "staging"), ("scan", repo)):
        code, out, err = invoke(*stage_args)
        assert code == 2, err
        assert out == ""
        assert f"{path}:{line}:" in err and message in err


def test_explicit_waivers_file_is_used_and_a_missing_one_is_exit_2(repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump({"version": 1, "waivers": [
        {"id": "W-X", "match": {"rule": "MLSEC-PICKLE-002"}, "expires": "2099-12-31", "reason": "r", "owner": "o"}]}))
    code, doc, _ = gate(repo, "staging", "--waivers", elsewhere)
    assert code == 0 and doc is not None and [w["waiver_id"] for w in doc["decision"]["waived"]] == ["W-X"]
    code, _, err = gate(repo, "staging", "--waivers", tmp_path / "missing.yaml")
    assert code == 2 and "missing.yaml" in err


def test_waivers_file_above_the_repository_root_is_not_read(tmp_path: Path) -> None:
    write_waivers(tmp_path, {"id": "W-OUTSIDE", "match": {"rule": "MLSEC-PICKLE-*"}})
    root = tmp_path / "inner"
    (root / ".git").mkdir(parents=True)
    (root / "b.pkl").write_bytes(B_PKL)
    code, doc, _ = gate(root, "production")
    assert code == 1 and doc is not None and doc["suppressed"] == []


# -- 7b. stages -----------------------------------------------------------------------------------


def test_unknown_stage_is_exit_2_naming_the_choices(repo: Path) -> None:
    code, out, err = invoke("gate", repo, "--stage", "prodution")
    assert code == 2 and out == ""
    assert "unknown stage 'prodution'" in err
    for choice in ("dev", "staging", "production", "champion"):
        assert choice in err
    code, _, err = invoke("scan", repo, "--stage", "qa")
    assert code == 2 and "unknown stage 'qa'" in err
    code, _, err = invoke("gate", repo, "--stage", "staging", "--from", "nowhere")
    assert code == 2 and "unknown stage 'nowhere'" in err


def test_from_stage_is_resolved_and_recorded(repo: Path) -> None:
    code, doc, _ = gate(repo, "champion", "--from", "challenger")
    assert code == 1 and doc is not None
    assert doc["decision"]["from"] == "staging" and doc["decision"]["stage"] == "production"


def test_waiver_naming_an_unknown_stage_is_exit_2(repo: Path) -> None:
    write_waivers(repo, {"id": "W-TYPO", "match": {"rule": "MLSEC-PICKLE-002"}, "stages": ["dev", "staginng"]})
    code, doc, err = gate(repo, "dev")
    assert code == 2 and doc is None
    assert "staginng" in err


def test_waiver_naming_an_unknown_stage_points_at_the_waiver(repo: Path) -> None:
    path = write_text_waivers(repo, """\
        version: 1
        waivers:
          - id: W-TYPO
            match: {rule: MLSEC-PICKLE-002}
            stages: [dev, staginng]
            expires: 2099-12-31
    """)
    code, _, err = gate(repo, "dev")
    assert code == 2
    assert f"{path}:3:" in err or f"{path}:5:" in err
    assert "W-TYPO" in err


def test_waiver_for_dev_only_does_not_apply_at_staging(repo: Path) -> None:
    write_waivers(repo, {"id": "W-DEV", "match": {"rule": "MLSEC-PICKLE-002"}, "stages": ["dev"]})
    code, doc, _ = gate(repo, "staging")
    assert code == 1 and doc is not None
    assert doc["suppressed"] == [] and rule_ids(doc["decision"]["violations"]) == ["MLSEC-PICKLE-002"]
    code, doc, _ = gate(repo, "dev")
    assert code == 0 and doc is not None
    assert [w["waiver_id"] for w in doc["decision"]["waived"]] == ["W-DEV"]


def test_waiver_for_a_canonical_stage_applies_under_its_alias(repo: Path) -> None:
    write_waivers(repo, {"id": "W-PROD", "match": {"rule": "MLSEC-PICKLE-*"}, "stages": ["production"]})
    code, doc, _ = gate(repo, "champion")
    assert code == 0 and doc is not None and doc["decision"]["decision"] == "pass"


def test_waiver_listing_a_stage_alias_applies_at_that_stage(repo: Path) -> None:
    write_waivers(repo, {"id": "W-PROD", "match": {"rule": "MLSEC-PICKLE-*"}, "stages": ["prod"]})
    code, doc, _ = gate(repo, "production")
    assert doc is not None
    assert sorted(s["path"] for s in doc["suppressed"]) == ["models/a.pkl", "models/b.pkl"]
    assert code == 0


# -- 7c. configuration ----------------------------------------------------------------------------


def test_mlsec_toml_can_relax_staging(repo: Path) -> None:
    (repo / "mlsec.toml").write_text('[stages.staging]\nblock_at = "critical"\n')
    code, doc, _ = gate(repo, "staging")
    assert code == 0 and doc is not None
    dec = doc["decision"]
    assert dec["decision"] == "warn" and rule_ids(dec["warnings"]) == ["MLSEC-PICKLE-002", "MLSEC-PICKLE-003"]
    code, doc, _ = gate(repo, "production")  # other stages keep their defaults
    assert code == 1


def test_pyproject_tool_mlsec_aliases_and_new_stages(repo: Path) -> None:
    (repo / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "demo"

        [tool.mlsec.stages.staging]
        aliases = ["qa"]

        [tool.mlsec.stages.canary]
        aliases = ["early"]
    """))
    code, doc, _ = gate(repo, "qa")
    assert code == 1 and doc is not None and doc["decision"]["stage"] == "staging"
    # A new stage starts from the strictest shipped one (production blocks MEDIUM).
    code, doc, _ = gate(repo, "early")
    assert code == 1 and doc is not None
    assert doc["decision"]["stage"] == "canary"
    assert rule_ids(doc["decision"]["violations"]) == ["MLSEC-PICKLE-002", "MLSEC-PICKLE-003"]
    code, _, err = gate(repo, "challenger")  # replaced aliases are gone
    assert code == 2 and "unknown stage" in err


def test_pyproject_without_tool_mlsec_is_skipped_for_a_parent_mlsec_toml(repo: Path) -> None:
    (repo / "models" / "pyproject.toml").write_text('[project]\nname = "sub"\n')
    (repo / "mlsec.toml").write_text('[stages.production]\nblock_at = "critical"\n')
    code, doc, _ = gate(repo / "models", "production")
    assert code == 0 and doc is not None and doc["decision"]["decision"] == "warn"


def test_explicit_config_file(repo: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "ci" / "gate.toml"
    cfg.parent.mkdir()
    cfg.write_text('[stages.production]\nblock_at = "critical"\n')
    assert gate(repo, "production")[0] == 1
    code, doc, _ = gate(repo, "production", "--config", cfg)
    assert code == 0 and doc is not None and doc["decision"]["decision"] == "warn"
    # An explicit pyproject.toml is read from its [tool.mlsec] table.
    py = tmp_path / "ci" / "pyproject.toml"
    py.write_text('[tool.mlsec.stages.staging]\nblock_at = "critical"\n')
    assert gate(repo, "staging", "--config", py)[0] == 0
    # --config wins over the project's own file.
    (repo / "mlsec.toml").write_text('[stages.production]\nblock_at = "low"\n')
    assert gate(repo, "production", "--config", cfg)[0] == 0


def test_config_above_the_repository_root_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "mlsec.toml").write_text('[stages.staging]\nblock_at = "critical"\n')
    root = tmp_path / "inner"
    (root / ".git").mkdir(parents=True)
    (root / "a.pkl").write_bytes(A_PKL)
    assert gate(root, "staging")[0] == 1


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('[stages.staging]\nblock_at = "severe"\n', "stages.staging.block_at"),
        ('[stages.staging]\nblock_on = "high"\n', "unknown setting 'block_on'"),
        ("[stages.staging]\nallow_waivers = \"yes\"\n", "stages.staging.allow_waivers has the wrong type"),
        ('[stages.staging]\naliases = ["prod"]\n', "alias 'prod'"),
        ("[stages\n", "mlsec.toml"),
    ],
)
def test_invalid_configuration_is_exit_2(repo: Path, toml: str, fragment: str) -> None:
    (repo / "mlsec.toml").write_text(toml)
    code, doc, err = gate(repo, "staging")
    assert code == 2 and doc is None
    assert fragment in err and "mlsec.toml" in err


def test_invalid_now_is_exit_2(repo: Path) -> None:
    code, _, err = gate(repo, "dev", "--now", "yesterday")
    assert code == 2 and "--now" in err


# -- 7d. JSON output ------------------------------------------------------------------------------


def _check_decision_json(doc: dict[str, Any], stage: str) -> None:
    dec = doc["decision"]
    assert dec["schema"] == "mlsec.policy-decision/v1"
    assert dec["stage"] == stage and dec["decision"] == "block" and dec["allow"] is False
    (v,) = dec["violations"]
    assert v["rule_id"] == "MLSEC-PICKLE-002" and v["artifact"] == "models/a.pkl" and v["severity"] == "high"
    assert v["policy"] == "mlsec.gate.severity" and v["count"] == 1
    assert "models/a.pkl" in v["reason"] and "mymodule.evil_func" in v["reason"]
    assert dec["waived"] == [{"rule_id": "MLSEC-PICKLE-003", "artifact": "models/b.pkl", "waiver_id": "W-B",
                              "source": "waiver", "count": 1, "expires": "2099-12-31"}]
    assert dec["policy"]["digest"].startswith("sha256:") and len(dec["policy"]["digest"]) == 7 + 64
    assert any(f.endswith("gate.rego") for f in dec["policy"]["files"])
    assert dec["input_digest"].startswith("sha256:") and dec["evaluated_at"] == "2026-06-01T00:00:00+00:00"
    (s,) = doc["suppressed"]
    assert s["path"] == "models/b.pkl" and s["rule_id"] == "MLSEC-PICKLE-003" and len(s["fingerprint"]) == 64
    assert s["suppression"] == {"source": "waiver", "waiver_id": "W-B", "reason": "accepted risk",
                                "owner": "ml-platform@example.com", "expires": "2099-12-31", "stages": []}
    assert [f["path"] for f in doc["findings"]] == ["models/a.pkl"]
    assert doc["summary"]["suppressed"] == 1 and doc["summary"]["findings"] == 1


def test_gate_json_contains_the_decision_and_suppressed_findings(repo: Path) -> None:
    write_waivers(repo, {"id": "W-B", "match": {"rule": "MLSEC-PICKLE-003", "paths": ["models/b.pkl"]}})
    code, doc, _ = gate(repo, "staging", "--now", "2026-06-01")
    assert code == 1 and doc is not None
    _check_decision_json(doc, "staging")


def test_scan_with_stage_json_contains_the_decision(repo: Path) -> None:
    write_waivers(repo, {"id": "W-B", "match": {"rule": "MLSEC-PICKLE-003", "paths": ["models/b.pkl"]}})
    code, doc, _ = scan(repo, "--stage", "staging", "--now", "2026-06-01")
    assert code == 1
    _check_decision_json(doc, "staging")
    # Without a stage there is no decision, and --fail-on decides.
    code, doc, _ = scan(repo, "--now", "2026-06-01")
    assert code == 1 and "decision" not in doc


def test_scan_with_stage_uses_the_policy_not_fail_on(repo: Path) -> None:
    assert scan(repo, "--stage", "dev", "--fail-on", "medium")[0] == 0
    assert scan(repo, "--stage", "production", "--fail-on", "critical")[0] == 1


def test_gate_json_to_a_file(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "decision.json"
    code, out, err = invoke("gate", repo, "--stage", "production", "--format", "json", "-o", target)
    assert code == 1 and out == ""
    assert json.loads(target.read_text())["decision"]["decision"] == "block"
    assert "production: BLOCK (2 violations" in err  # the summary goes to stderr


# -- 7e. waivers in a plain scan and matching ------------------------------------------------------


def test_plain_scan_honours_unexpired_waivers_and_fail_on_ignores_suppressed(repo: Path) -> None:
    write_waivers(repo, {"id": "W-A", "match": {"rule": "MLSEC-PICKLE-002"}, "stages": ["production"]})
    code, doc, _ = scan(repo)  # no stage: every unexpired waiver applies
    assert code == 0
    assert [(s["path"], s["suppression"]["waiver_id"]) for s in doc["suppressed"]] == [("models/a.pkl", "W-A")]
    assert scan(repo, "--fail-on", "medium")[0] == 1  # b.pkl is not waived

    write_waivers(repo, {"id": "W-A", "match": {"rule": "MLSEC-PICKLE-002"}},
                  {"id": "W-B", "match": {"rule": "MLSEC-PICKLE-003"}})
    code, doc, _ = scan(repo, "--fail-on", "low")
    assert code == 0 and doc["findings"] == [] and len(doc["suppressed"]) == 2


def test_expired_waivers_do_not_suppress(repo: Path) -> None:
    write_waivers(repo, {"id": "W-A", "match": {"rule": "MLSEC-PICKLE-002"}, "expires": "2026-03-31"})
    code, doc, _ = scan(repo, "--now", "2026-03-31T12:00:00Z")
    assert code == 0 and len(doc["suppressed"]) == 1
    code, doc, _ = scan(repo, "--now", "2026-04-01")
    assert code == 1 and doc["suppressed"] == []


def test_fingerprint_pinned_waiver_matches_only_that_finding(repo: Path) -> None:
    (repo / "models" / "c.pkl").write_bytes(B_PKL)
    _, doc, _ = scan(repo)
    fps = {f["path"]: f["fingerprint"] for f in doc["findings"]}
    assert fps["models/b.pkl"] != fps["models/c.pkl"]
    write_waivers(repo, {"id": "W-PIN", "match": {"fingerprint": fps["models/b.pkl"]}})
    code, doc, _ = scan(repo, "--fail-on", "medium")
    assert code == 1
    assert [s["path"] for s in doc["suppressed"]] == ["models/b.pkl"]
    assert sorted(f["path"] for f in doc["findings"]) == ["models/a.pkl", "models/c.pkl"]
    # A fingerprint and a rule must both match.
    write_waivers(repo, {"id": "W-PIN", "match": {"fingerprint": fps["models/b.pkl"], "rule": "MLSEC-PICKLE-002"}})
    assert scan(repo)[1]["suppressed"] == []


@pytest.mark.parametrize(
    ("match", "suppressed"),
    [
        ({"rule": "MLSEC-PICKLE-*"}, ["models/a.pkl", "models/b.pkl", "other/c.pkl"]),
        ({"rule": ["MLSEC-PICKLE-002", "MLSEC-TORCH-*"]}, ["models/a.pkl"]),
        ({"rule": "MLSEC-TORCH-*"}, []),
        ({"paths": ["models/**"]}, ["models/a.pkl", "models/b.pkl"]),
        ({"paths": "other/"}, ["other/c.pkl"]),
        ({"paths": ["*.pkl", "!models/a.pkl"]}, ["models/b.pkl", "other/c.pkl"]),
        ({"rule": "MLSEC-PICKLE-003", "paths": ["models/**"]}, ["models/b.pkl"]),
    ],
)
def test_rule_and_path_globs(repo: Path, match: dict[str, Any], suppressed: list[str]) -> None:
    (repo / "other").mkdir()
    (repo / "other" / "c.pkl").write_bytes(B_PKL)
    write_waivers(repo, {"id": "W-GLOB", "match": match})
    _, doc, _ = scan(repo)
    assert sorted(s["path"] for s in doc["suppressed"]) == suppressed
    assert sorted(f["path"] for f in doc["findings"]) == sorted(
        {"models/a.pkl", "models/b.pkl", "other/c.pkl"} - set(suppressed))


def test_path_globs_are_repository_relative_when_a_subdirectory_is_scanned(repo: Path) -> None:
    write_waivers(repo, {"id": "W-MODELS", "match": {"paths": ["models/**"]}})
    assert gate(repo, "staging")[0] == 0
    code, doc, _ = gate(repo / "models", "staging")
    assert doc is not None and len(doc["suppressed"]) == 2
    assert code == 0


def test_earlier_waiver_wins_and_the_later_one_is_not_credited(repo: Path) -> None:
    write_waivers(repo, {"id": "W-FIRST", "match": {"rule": "MLSEC-PICKLE-002"}},
                  {"id": "W-SECOND", "match": {"paths": ["models/**"]}})
    _, doc, _ = gate(repo, "staging")
    assert doc is not None
    by_path = {s["path"]: s["suppression"]["waiver_id"] for s in doc["suppressed"]}
    assert by_path == {"models/a.pkl": "W-FIRST", "models/b.pkl": "W-SECOND"}


# -- 7f. incomplete scans ---------------------------------------------------------------------------


def test_incomplete_scan_is_exit_3_at_staging_but_not_at_dev(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    # 4M tiny opcodes: far beyond a 1 s budget (the same honest trigger as tests/test_cli.py).
    (root / "slow.pkl").write_bytes(b"\x80\x02]" + b"N\x94a" * 4_000_000 + b".")

    code, doc, _ = gate(root, "staging", "--timeout", "1", "--exit-zero")
    assert code == 3 and doc is not None
    assert "DeadlineExceeded" in doc["errors"][0]["message"]
    dec = doc["decision"]
    assert dec["decision"] == "block" and rule_ids(dec["violations"]) == ["MLSEC-GATE-ERROR"]
    assert dec["errors"] and "slow.pkl" in dec["errors"][0]

    code, doc, _ = gate(root, "dev", "--timeout", "1")
    assert code == 0 and doc is not None
    assert doc["decision"]["decision"] == "warn"
    assert rule_ids(doc["decision"]["warnings"]) == ["MLSEC-GATE-ERROR"]
    assert "could not complete on slow.pkl" in doc["decision"]["warnings"][0]["reason"]


# -- determinism ----------------------------------------------------------------------------------


def test_same_input_gives_the_same_decision_json_and_digests(repo: Path) -> None:
    write_waivers(repo, {"id": "W-B", "match": {"rule": "MLSEC-PICKLE-003"}, "owner": None})
    first = invoke("gate", repo, "--stage", "production", "--format", "json", "-q", "--now", "2026-06-01")
    second = invoke("gate", repo, "--stage", "production", "--format", "json", "-q", "--now", "2026-06-01")
    assert first == second and first[0] == 1
    a = json.loads(first[1])["decision"]
    later = json.loads(invoke("gate", repo, "--stage", "production", "--format", "json", "-q",
                              "--now", "2026-06-02")[1])["decision"]
    assert later["policy"] == a["policy"]
    assert later["input_digest"] != a["input_digest"]  # `now` is part of the input


# -- 9b. strings with quotes, backslashes, newlines and unicode survive the engine -------------------


def test_odd_file_names_survive_the_whole_gate(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "models").mkdir()
    odd = 'we"ird\\name ü\tx\nline ☃.pkl'
    try:
        (root / "models" / odd).write_bytes(B_PKL)
        (root / "models" / 'lfs "q"\\ ü.bin').write_text(
            "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 12345\n")
    except OSError:
        pytest.skip("the filesystem does not allow such file names")
    team = policy_dir(tmp_path / "team", {"formats.rego": FORMATS_POLICY})
    code, doc, _ = gate(root, "production", "--policy", team)
    assert code == 1 and doc is not None
    reasons = {v["rule_id"]: v["reason"] for v in doc["decision"]["violations"]}
    # Built in Rego with concat from input strings: must come back byte for byte.
    assert reasons["custom.formats"] == f"pickle model not allowed in production: models/{odd}"
    assert reasons["MLSEC-GATE-SKIPPED"].startswith('models/lfs "q"\\ ü.bin was not scanned (lfs-pointer): ')
    # Written by Python from the finding entry.
    assert f"in models/{odd}:" in reasons["MLSEC-PICKLE-003"]
    assert {v["artifact"] for v in doc["decision"]["violations"]} == {f"models/{odd}", 'models/lfs "q"\\ ü.bin', ""}
