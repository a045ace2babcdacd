"""Waivers and inline ignores (mlsec/suppress.py), and how the real policy judges what they claim.

Findings are constructed directly (rule ids from the catalog); inline ignores are read from real
text files written by the tests.
"""

from __future__ import annotations

import datetime as dt
import functools
import textwrap
from pathlib import Path

import pytest

from mlsec import catalog, config, policy, suppress
from mlsec.model import (
    Artifact,
    ArtifactKind,
    Decision,
    Finding,
    Location,
    ScanResult,
    Severity,
    Suppressed,
    Suppression,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
RULE = "MLSEC-PICKLE-003"  # MEDIUM
OTHER = "MLSEC-PICKLE-002"  # HIGH


@functools.lru_cache(maxsize=1)
def shipped() -> tuple[policy.PolicySet, config.StageConfig]:
    policies = policy.load()
    return policies, config.load(policies.defaults())


def test_rule_ids_used_here_are_catalogued() -> None:
    rules = catalog.rules()
    assert {RULE, OTHER} <= set(rules)
    assert rules[RULE].severity == Severity.MEDIUM and rules[OTHER].severity == Severity.HIGH


def finding(rule: str = RULE, path: str = "models/m.pkl", key: str = "k", line: int | None = None,
            end_line: int | None = None, severity: Severity | None = None) -> Finding:
    sev = severity if severity is not None else catalog.rules()[rule].severity
    return Finding(rule, sev, f"{rule} in {path}", path, "test", Location(line=line, end_line=end_line), key=key)


def scan_result(*findings: Finding, artifacts: tuple[Artifact, ...] = ()) -> ScanResult:
    arts = artifacts or tuple(Artifact(p, ArtifactKind.MODEL, "pickle", 1, "ab" * 32)
                              for p in sorted({f.path for f in findings}))
    return ScanResult("test", arts, tuple(findings))


def waiver(wid: str = "W-1", rules: tuple[str, ...] = (), paths: tuple[str, ...] = (),
           fingerprints: tuple[str, ...] = (), stages: tuple[str, ...] = (), last_day: dt.date = dt.date(2027, 1, 31),
           reason: str = "accepted", owner: str = "ml-platform") -> suppress.Waiver:
    ends = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return suppress.Waiver(wid, rules, paths, fingerprints, stages, ends, last_day.isoformat(), reason, owner, 1)


def judged(outcome: suppress.Outcome, stage: str) -> Decision:
    policies, stages = shipped()
    pin = policy.build_input(outcome.result, stage=stage, now=NOW, waivers=outcome.waivers, notes=outcome.notes)
    return policy.evaluate(policies, stages, pin)


# -- loading ----------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "waivers.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_load_the_documented_format(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        waivers:
          - id: W-2026-014
            match:
              rule: MLSEC-PICKLE-001
              paths: ["models/legacy/**"]
              fingerprint: 3f9a
            stages: [Dev, staging]
            expires: 2027-01-31
            reason: "  replaced by the ONNX export in Q1 "
            owner: ml-platform@example.com
            ticket: SEC-12
          - id: 15
            match: {rule: [MLSEC-PICKLE-*, MLSEC-TORCH-001]}
            expires: 2027-01-31T12:00:00Z
            approved_by: security-team
            vex: {status: not_affected, justification: code_not_reachable}
    """)
    first, second = suppress.load_waivers(path)
    assert first.id == "W-2026-014" and first.line == 3 and second.line == 13
    assert first.rules == ("MLSEC-PICKLE-001",) and first.paths == ("models/legacy/**",)
    assert first.fingerprints == ("3f9a",) and first.stages == ("dev", "staging")
    assert first.reason == "replaced by the ONNX export in Q1" and first.owner == "ml-platform@example.com"
    # A date waiver applies through that whole day (UTC).
    assert first.expires == dt.datetime(2027, 2, 1, tzinfo=dt.UTC) and first.expires_text == "2027-01-31"
    assert not first.expired(dt.datetime(2027, 1, 31, 23, 59, 59, tzinfo=dt.UTC))
    assert first.expired(dt.datetime(2027, 2, 1, tzinfo=dt.UTC))
    assert second.id == "15" and second.rules == ("MLSEC-PICKLE-*", "MLSEC-TORCH-001")
    assert second.owner == "security-team" and second.reason == "" and second.stages == ()
    assert second.expires == dt.datetime(2027, 1, 31, 12, tzinfo=dt.UTC)
    assert second.vex == (("justification", "code_not_reachable"), ("status", "not_affected"))
    assert second.expired(dt.datetime(2027, 1, 31, 12, tzinfo=dt.UTC))
    assert not second.expired(dt.datetime(2027, 1, 31, 11, 59, tzinfo=dt.UTC))


def test_quoted_dates_and_times_with_offsets(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        waivers:
          - {id: A, match: {rule: X}, expires: "2027-01-31"}
          - {id: B, match: {rule: X}, expires: "2027-01-31T10:00:00+02:00"}
          - {id: C, match: {rule: X}, expires: "2027-01-31T08:00:00Z"}
    """)
    a, b, c = suppress.load_waivers(path)
    assert a.expires == dt.datetime(2027, 2, 1, tzinfo=dt.UTC)
    assert b.expires == c.expires == dt.datetime(2027, 1, 31, 8, tzinfo=dt.UTC)


def test_an_empty_file_has_no_waivers(tmp_path: Path) -> None:
    assert suppress.load_waivers(write(tmp_path, "")) == ()
    assert suppress.load_waivers(write(tmp_path, "version: 1\nwaivers: []\n")) == ()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (("waivers:\n  - id: A\n    match: {rule: X}\n    expires: 2027-01-31\n  - id: A\n    match: {rule: Y}\n"
          "    expires: 2027-01-31\n"), 5, "duplicate waiver id 'A' (first at line 2)"),
        ("waivers:\n  - id: A\n    match: {rule: X}\n", 2, "missing required key 'expires'"),
        ("waivers:\n  - id: A\n    expires: 2027-01-31\n", 2, "missing required key 'match'"),
        ("waivers:\n  - id: ''\n    match: {rule: X}\n    expires: 2027-01-31\n", 2, "waiver id is empty"),
        ("waivers:\n  - id: A\n    match: {rule: X}\n    expires: [2027]\n", 4, "expected a single value"),
        ("waivers:\n  - id: A\n    match: {rule: X}\n    expires: 2027-01-31\n    reason: [a, b]\n", 5,
         "expected a single value"),
        ("waivers:\n  - id: A\n    match: {rule: X}\n    expires: 2027-01-31\n    reason: true\n", 5,
         "reason must be text"),
        ("waivers:\n  - id: A\n    match: rule\n    expires: 2027-01-31\n", 3, "match must be a mapping"),
        ("waivers:\n  - id: A\n    match: {rule: X}\n    expires: 2027-01-31\n  - just text\n", 5,
         "a waiver must be a mapping"),
        (("waivers:\n  - id: A\n    match: {rule: X}\n    expires: 2027-01-31\n  - id: B\n    match: {rule: X}\n"
          "    expires: !!python/name:os.system\n"), 7, "invalid YAML"),
        ("waivers:\n  - id: A\n\tmatch: {rule: X}\n", 3, "invalid YAML"),
        ("a: 1\n---\nb: 2\n", 2, "another document"),
    ],
)
def test_invalid_files_name_the_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(suppress.WaiverError) as err:
        suppress.load_waivers(path)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert fragment in str(err.value)


def test_unreadable_waivers_files(tmp_path: Path) -> None:
    with pytest.raises(suppress.WaiverError, match="cannot read"):
        suppress.load_waivers(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"waivers:\n  - id: caf\xe9\n")
    with pytest.raises(suppress.WaiverError, match=r"latin1\.yaml:1: not UTF-8"):
        suppress.load_waivers(bad)


def test_impossible_unquoted_date_is_a_waiver_error(tmp_path: Path) -> None:
    path = write(tmp_path, "waivers:\n  - id: A\n    match: {rule: X}\n    expires: 2027-02-30\n")
    with pytest.raises(suppress.WaiverError) as err:
        suppress.load_waivers(path)
    assert str(err.value).startswith(f"{path}:4: ")


# -- matching -------------------------------------------------------------------------------------


def test_rule_globs_paths_and_fingerprints() -> None:
    a = finding(OTHER, "models/a.pkl")
    b = finding(RULE, "models/b.pkl")
    c = finding(RULE, "other/c.pkl")
    res = scan_result(a, b, c)

    def claimed(w: suppress.Waiver) -> list[str]:
        out = suppress.apply(res, [w], stage=None, now=NOW)
        assert len(out.result.findings) + len(out.result.suppressed) == 3  # nothing is dropped
        return sorted(s.finding.path for s in out.result.suppressed)

    assert claimed(waiver(rules=("MLSEC-PICKLE-*",))) == ["models/a.pkl", "models/b.pkl", "other/c.pkl"]
    assert claimed(waiver(rules=("mlsec-pickle-*",))) == claimed(waiver(rules=("MLSEC-PICKLE-*",)))  # ids ignore case
    assert claimed(waiver(rules=(OTHER, "MLSEC-NUMPY-*"))) == ["models/a.pkl"]
    assert claimed(waiver(paths=("models/**",))) == ["models/a.pkl", "models/b.pkl"]
    assert claimed(waiver(paths=("*.pkl", "!models/*"))) == ["other/c.pkl"]
    assert claimed(waiver(rules=(RULE,), paths=("models/",))) == ["models/b.pkl"]
    assert claimed(waiver(fingerprints=(c.fingerprint,))) == ["other/c.pkl"]
    assert claimed(waiver(rules=(OTHER,), fingerprints=(c.fingerprint,))) == []


def test_fingerprint_pins_one_finding_among_many_at_the_same_site() -> None:
    one = finding(RULE, key="GLOBAL mymodule.Thing")
    two = finding(RULE, key="GLOBAL mymodule.Other")
    out = suppress.apply(scan_result(one, two), [waiver(fingerprints=(two.fingerprint,))], stage="staging", now=NOW)
    assert [s.finding.key for s in out.result.suppressed] == ["GLOBAL mymodule.Other"]
    assert [f.key for f in out.result.findings] == ["GLOBAL mymodule.Thing"]
    assert out.waivers[0].matched == 1


def test_stages_expiry_and_statuses() -> None:
    res = scan_result(finding(RULE))
    dev_only = waiver("W-DEV", rules=(RULE,), stages=("dev",))
    old = waiver("W-OLD", rules=(RULE,), last_day=dt.date(2026, 5, 31))

    out = suppress.apply(res, [dev_only, old], stage="staging", now=NOW)
    assert out.result.suppressed == () and len(out.result.findings) == 1
    by_id = {s.waiver.id: s for s in out.waivers}
    assert (by_id["W-DEV"].applies_to_stage, by_id["W-DEV"].expired, by_id["W-DEV"].matched) == (False, False, 1)
    assert (by_id["W-OLD"].applies_to_stage, by_id["W-OLD"].expired, by_id["W-OLD"].matched) == (True, True, 1)

    out = suppress.apply(res, [dev_only, old], stage="dev", now=NOW)
    assert [s.suppression.waiver_id for s in out.result.suppressed] == ["W-DEV"]

    out = suppress.apply(res, [old, dev_only], stage=None, now=NOW)  # plain scan: every live waiver
    assert [s.suppression.waiver_id for s in out.result.suppressed] == ["W-DEV"]

    out = suppress.apply(res, [old], stage=None, now=dt.datetime(2026, 5, 31, 23, 59, tzinfo=dt.UTC))
    assert [s.suppression.waiver_id for s in out.result.suppressed] == ["W-OLD"]


def test_earlier_waivers_win_and_suppressions_carry_the_waiver() -> None:
    first = waiver("W-A", rules=(RULE,), reason="first", stages=("staging",))
    second = waiver("W-B", paths=("models/**",), reason="second")
    out = suppress.apply(scan_result(finding(RULE)), [first, second], stage="staging", now=NOW)
    (s,) = out.result.suppressed
    assert s.suppression == Suppression("waiver", "W-A", "first", "ml-platform", "2027-01-31", ("staging",))
    assert {w.waiver.id: w.matched for w in out.waivers} == {"W-A": 1, "W-B": 0}


def test_apply_keeps_earlier_suppressions_and_sorts() -> None:
    earlier = Suppressed(finding(OTHER, "models/z.pkl"), Suppression("waiver", "BASE", "baseline"))
    res = ScanResult("test", (), (finding(RULE, "models/a.pkl"),), suppressed=(earlier,))
    out = suppress.apply(res, [waiver(rules=(RULE,))], stage=None, now=NOW)
    assert [s.suppression.waiver_id for s in out.result.suppressed] == ["BASE", "W-1"]  # HIGH sorts first
    assert res.findings and res.suppressed == (earlier,)  # the input is untouched (frozen data)


def test_expired_waiver_is_named_in_a_policy_warning() -> None:
    res = scan_result(finding(RULE))
    out = suppress.apply(res, [waiver("W-OLD", rules=(RULE,), last_day=dt.date(2026, 1, 31))], stage="dev", now=NOW)
    d = judged(out, "dev")
    (w,) = [w for w in d.warnings if w.rule_id == "MLSEC-WAIVER-EXPIRED"]
    assert w.reason == "waiver W-OLD expired on 2026-01-31 and no longer applies (1 matching finding(s))"
    assert d.waived == ()


# -- inline ignores -----------------------------------------------------------------------------------


@pytest.fixture
def train_py(tmp_path: Path) -> Artifact:
    path = tmp_path / "train.py"
    path.write_text(
        "import pickle\n"  # 1
        f"x = 1  # mlsec: ignore[{RULE}] trusted internal file\n"  # 2
        f"y = 2  # mlsec: ignore[{RULE}]\n"  # 3
        f"z = 3  # mlsec: ignore[{OTHER}] only the other rule\n"  # 4
        f"w = 4  #mlsec:ignore[ {OTHER.lower()} , {RULE} ]   both, lower case\n"  # 5
        "v = (\n"  # 6
        "    5,\n"  # 7
        "    6)  # mlsec: ignore[MLSEC-PICKLE-*] a glob on the last line\n",  # 8
        encoding="utf-8",
    )
    return Artifact("src/train.py", ArtifactKind.CODE, "python", path.stat().st_size, "cd" * 32, str(path))


def inline(train: Artifact, *findings: Finding, stage: str | None = "dev") -> suppress.Outcome:
    return suppress.apply(ScanResult("test", (train,), tuple(findings)), [], stage=stage, now=NOW)


def test_inline_ignore_with_a_reason_is_honoured(train_py: Artifact) -> None:
    out = inline(train_py, finding(RULE, "src/train.py", line=2))
    assert out.result.findings == ()
    (s,) = out.result.suppressed
    assert s.suppression.source == "inline" and s.suppression.reason == "trusted internal file"
    assert s.suppression.waiver_id == "inline:src/train.py:2"
    assert out.notes == ()


def test_inline_ignore_without_a_reason_is_not_honoured_and_noted(train_py: Artifact) -> None:
    out = inline(train_py, finding(RULE, "src/train.py", line=3))
    assert out.result.suppressed == () and len(out.result.findings) == 1
    (note,) = out.notes
    assert (note.kind, note.path, note.line) == ("inline-ignore-without-reason", "src/train.py", 3)
    assert note.message == "src/train.py:3: inline ignore without a reason is not honoured"
    d = judged(out, "dev")
    assert [w.rule_id for w in d.warnings] == ["MLSEC-WAIVER-INVALID"] and d.warnings[0].reason == note.message


def test_inline_ignore_for_another_rule_does_not_apply(train_py: Artifact) -> None:
    out = inline(train_py, finding(RULE, "src/train.py", line=4), finding(OTHER, "src/train.py", line=4))
    assert [f.rule_id for f in out.result.findings] == [RULE]
    assert [s.finding.rule_id for s in out.result.suppressed] == [OTHER]


def test_inline_ignore_lists_globs_spans_and_case(train_py: Artifact) -> None:
    out = inline(
        train_py,
        finding(RULE, "src/train.py", line=5, key="a"),
        finding(OTHER, "src/train.py", line=5, key="b"),
        finding(RULE, "src/train.py", line=6, end_line=8, key="c"),  # the comment is on the last line of the span
        finding(RULE, "src/train.py", line=1, key="d"),  # no comment on line 1
        finding(RULE, "src/train.py", key="e"),  # no line: inline ignores cannot apply
    )
    assert sorted(f.key for f in out.result.findings) == ["d", "e"]
    got = {s.finding.key: (s.suppression.waiver_id, s.suppression.reason) for s in out.result.suppressed}
    assert got == {
        "a": ("inline:src/train.py:5", "both, lower case"),
        "b": ("inline:src/train.py:5", "both, lower case"),
        "c": ("inline:src/train.py:8", "a glob on the last line"),
    }


def test_inline_ignores_need_a_readable_file_among_the_artifacts(tmp_path: Path, train_py: Artifact) -> None:
    elsewhere = finding(RULE, "src/other.py", line=2)  # not an artifact of this result
    assert inline(train_py, elsewhere).result.suppressed == ()
    gone = Artifact("src/train.py", ArtifactKind.CODE, "python", 1, "", str(tmp_path / "deleted.py"))
    assert inline(gone, finding(RULE, "src/train.py", line=2)).result.suppressed == ()


def test_inline_ignores_with_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "win.py"
    path.write_bytes(b"a = 1\r\nb = 2  # mlsec: ignore[MLSEC-PICKLE-003] windows file\r\n")
    art = Artifact("win.py", ArtifactKind.CODE, "python", 1, "", str(path))
    (s,) = inline(art, finding(RULE, "win.py", line=2)).result.suppressed
    assert s.suppression.reason == "windows file"


@pytest.mark.parametrize(("stage", "outcome"), [("dev", "pass"), ("staging", "pass"), ("production", "block")])
def test_inline_suppression_is_judged_per_stage(train_py: Artifact, stage: str, outcome: str) -> None:
    out = inline(train_py, finding(RULE, "src/train.py", line=2), stage=stage)
    assert len(out.result.suppressed) == 1 and out.result.findings == ()  # suppressed everywhere...
    d = judged(out, stage)
    assert d.decision == outcome  # ...but production does not accept inline ignores
    if outcome == "block":
        (v,) = d.violations
        assert v.rule_id == RULE and v.policy == "mlsec.gate.waivers"
        assert v.reason.endswith("(suppression not accepted: inline ignores are not accepted at this stage)")
        assert d.waived == ()
    else:
        assert [(w.waiver_id, w.source) for w in d.waived] == [("inline:src/train.py:2", "inline")]


def test_an_unsuppressed_medium_finding_blocks_production_the_same_way(train_py: Artifact) -> None:
    plain = judged(suppress.apply(scan_result(finding(RULE, "src/train.py", line=1)), [], stage="production",
                                  now=NOW), "production")
    inline_ignored = judged(inline(train_py, finding(RULE, "src/train.py", line=2), stage="production"), "production")
    assert plain.decision == inline_ignored.decision == "block"
    assert [v.rule_id for v in plain.violations] == [v.rule_id for v in inline_ignored.violations] == [RULE]


def test_a_valid_waiver_still_applies_at_production_when_the_line_also_has_an_inline_ignore(train_py: Artifact) -> None:
    res = ScanResult("test", (train_py,), (finding(RULE, "src/train.py", line=2),))
    out = suppress.apply(res, [waiver("W-PROD", rules=(RULE,))], stage="production", now=NOW)
    assert judged(out, "production").decision == "pass"


def test_waiver_requirements_are_judged_by_the_policy() -> None:
    res = scan_result(finding(RULE))
    for owner, reason, production in (("o", "r", "pass"), ("", "r", "block"), ("o", "", "block")):
        out = suppress.apply(res, [waiver("W-X", rules=(RULE,), owner=owner, reason=reason)], stage=None, now=NOW)
        assert judged(out, "staging").decision == "pass"
        assert judged(out, "production").decision == production, (owner, reason)
