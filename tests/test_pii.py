"""Personal-data detectors: each kind found with its validator, look-alikes rejected, values masked.

The end-to-end test at the bottom writes datasets full of personal data and credentials, runs the
real CLI in every output format, and checks that no raw value appears anywhere: not in reports,
not in the result cache.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlsec.cli import main
from mlsec.detect.pii import find_pii, iban_ok, luhn_ok, mask, ssn_ok
from mlsec.report import FORMATS


def kinds(text: str) -> list[tuple[str, str]]:
    return [(h.kind, text[h.start:h.end]) for h in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("mail jane.doe@example.com today", "email", "jane.doe@example.com"),
        ("x:bob+tag@mail.co.uk.", "email", "bob+tag@mail.co.uk"),
        ("visa 4111 1111 1111 1111 ok", "credit_card", "4111 1111 1111 1111"),
        ("mc 5500-0000-0000-0004", "credit_card", "5500-0000-0000-0004"),
        ("amex 3782 822463 10005", "credit_card", "3782 822463 10005"),
        ("bare 4012888888881881 end", "credit_card", "4012888888881881"),
        ("ssn 123-45-6789.", "us_ssn", "123-45-6789"),
        ("ssn 772 81 1234 x", "us_ssn", "772 81 1234"),
        ("iban DE89 3704 0044 0532 0130 00 AND more", "iban", "DE89 3704 0044 0532 0130 00"),
        ("iban GB82WEST12345698765432", "iban", "GB82WEST12345698765432"),
        ("iban NL91ABNA0417164300.", "iban", "NL91ABNA0417164300"),
        ("from 81.2.69.160 at noon", "ip_address", "81.2.69.160"),
        ("v6 2a00:1450:4001:82b::200e", "ip_address", "2a00:1450:4001:82b::200e"),
        ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
        ("call +1 (415) 555-2671", "phone", "+1 (415) 555-2671"),
        ("call (415) 555-2671", "phone", "(415) 555-2671"),
        ("call 415-555-2671", "phone", "415-555-2671"),
        ("call +4915123456789", "phone", "+4915123456789"),
    ],
)
def test_each_kind_is_found_with_a_masked_value(text: str, kind: str, value: str) -> None:
    (hit,) = find_pii(text)
    assert (hit.kind, text[hit.start:hit.end]) == (kind, value)
    assert value not in hit.masked and hit.masked.endswith(f"({len(value)} chars)")
    assert 2 <= len(hit.masked.split("…")[0]) <= 4


@pytest.mark.parametrize(
    "text",
    [
        "icon@2x.png and style@media.css",                 # file names, not addresses
        "a..b@c.com",                                      # consecutive dots in the local part
        "4111 1111 1111 1112",                             # Luhn fails
        "1234 5678 9012 3452",                             # Luhn passes, no issuer starts with 1
        "order 1000000000000000",
        "4111111111111111x and x4111111111111111",         # glued to letters: an identifier
        "000-12-3456 666-12-3456 912-12-3456",             # invalid SSN areas
        "123-00-4567 123-45-0000 078-05-1120 219-09-9999",  # group 00, serial 0000, voided numbers
        "123-45.6789 123456789",                           # mixed separators, bare run
        "DE89 3704 0044 0532 0130 01",                     # mod-97 fails
        "DE89370400440532013000XYZ",                       # too long for Germany
        "10.0.0.1 192.168.1.1 127.0.0.1 203.0.113.5 224.0.0.1 100.64.1.1",  # not global
        "version 1.2.3.4 and 999.1.1.1 and 01.2.3.4",     # version number, out of range, octal-looking
        "fe80::1 ::1 2001:db8::1 std::map a::b 12:30:45",  # not global unicast / not addresses
        "-12.5 +3 2023-10-12 12:30:45 +12 +123456",        # numbers, dates, short codes
        "+3 2023-10-12 12",                                # a sign before a date is not Belgium's +32
        "4155552671 and 911-555-1234 and 415-155-2671",    # bare run, N11 area, exchange starting with 1
        "415-555.2671",                                    # mixed separators
    ],
)
def test_look_alikes_are_rejected(text: str) -> None:
    assert kinds(text) == []


def test_validators() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # wrong length for GB
    assert ssn_ok("123", "45", "6789")
    assert not any(ssn_ok(a, g, s) for a, g, s in [("000", "45", "6789"), ("666", "45", "6789"),
                                                   ("900", "45", "6789"), ("999", "45", "6789"),
                                                   ("123", "00", "6789"), ("123", "45", "0000")])


def test_overlaps_keep_the_most_specific_kind() -> None:
    text = "pay DE89 3704 0044 0532 0130 00 or mail jane@example.com"
    assert [k for k, _v in kinds(text)] == ["iban", "email"]
    text = "card 4111 1111 1111 1111"  # not also a phone or an SSN
    assert kinds(text) == [("credit_card", "4111 1111 1111 1111")]


def test_mask_keeps_a_short_prefix_and_the_length() -> None:
    assert mask("jane.doe@example.com") == "jane…(20 chars)"
    assert mask("123-45-6789") == "12…(11 chars)"
    assert mask("a@b.co") == "a@…(6 chars)"


def test_many_hits_and_hostile_runs_stay_linear() -> None:
    dense = "\n".join(f"u{i}@mail.example.org +44 20 7946 {i % 10000:04d}" for i in range(20_000))
    hits = find_pii(dense)
    assert len(hits) == 40_000
    # Long digit runs, separators and '@' storms give no hits (and finish: no backtracking blow-up).
    assert find_pii("1" * 200_000) == []
    assert find_pii("+1 " * 50_000 + "x") == []
    assert find_pii("@" * 100_000 + "a" * 1000) == []
    assert find_pii(("a" * 70 + "@") * 2000) == []


# --- end to end: nothing leaks ----------------------------------------------------------

RAW = {
    "email": "jane.doe@example.com",
    "phone": "+44 20 7946 0958",
    "card": "4111 1111 1111 1111",
    "ssn": "123-45-6789",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ip": "81.2.69.160",
    "hf_token": "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
    "aws_key": "AKIA" + "Z7Q4XK2PLMR3TWBS",
}


def _write_sensitive_datasets(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "people.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "contact", "note", "secret"])
        for i in range(5):
            w.writerow([i, RAW["email"], f"card {RAW['card']} ssn {RAW['ssn']}", f"token={RAW['hf_token']}"])
        w.writerow([9, RAW["phone"], f"iban {RAW['iban']} ip {RAW['ip']}", f"aws_access_key_id={RAW['aws_key']}"])
    with (root / "chat.jsonl").open("w") as fh:
        for _ in range(3):
            fh.write(json.dumps({RAW["email"]: "key is an address", "text": f"reach me at {RAW['phone']}",
                                 "log": f"HF_TOKEN={RAW['hf_token']}"}) + "\n")
    # A headerless CSV: the first row is data, and must not become column names in the report.
    with (root / "headerless.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([[RAW["email"], RAW["ssn"]], ["x@example.org", "234-56-7890"]])


def _outputs(tmp_path: Path, target: Path) -> dict[str, str]:
    runner = CliRunner()
    out = {}
    for fmt in sorted(FORMATS):
        dest = tmp_path / f"report.{fmt}"
        res = runner.invoke(main, ["scan", str(target), "--format", fmt, "-o", str(dest), "--severity", "info",
                                   "--exit-zero"], catch_exceptions=False, env={"COLUMNS": "400"})
        assert res.exit_code == 0, res.output
        out[fmt] = dest.read_text(encoding="utf-8") + res.output
    return out


def test_no_raw_value_appears_in_any_output_format_or_the_cache(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_sensitive_datasets(data)
    outputs = _outputs(tmp_path, data)
    assert {"json", "table"} <= set(outputs)
    doc = json.loads((tmp_path / "report.json").read_text())
    rules = {f["rule_id"] for f in doc["findings"]}
    assert {"MLSEC-DATA-004", "MLSEC-DATA-005", "MLSEC-DATA-006", "MLSEC-DATA-007"} <= rules
    # Counts per kind and column, masked samples only.
    by = {(f["path"].rsplit("/", 1)[-1], f["evidence"]["kind"], f["evidence"]["column"]): f for f in doc["findings"]
          if "kind" in f["evidence"]}
    assert by[("people.csv", "email", "contact")]["evidence"]["count"] == "5"
    assert by[("people.csv", "credit_card", "note")]["evidence"]["masked_samples"] == "4111…(19 chars)"
    assert by[("people.csv", "huggingface-token", "secret")]["severity"] == "high"
    assert ("chat.jsonl", "email", "(key names)") in by
    assert by[("headerless.csv", "email", "column 1")]["evidence"]["count"] == "2"
    values = list(RAW.values()) + [RAW["card"].replace(" ", ""), RAW["iban"].replace(" ", ""), "234-56-7890",
                                   "x@example.org"]
    for fmt, text in outputs.items():
        for value in values:
            assert value not in text, f"{value!r} leaked into the {fmt} report"
    # The result cache holds findings too: it must not hold the values either.
    cache = Path(os.environ["MLSEC_CACHE_DIR"])
    blobs = b"".join(p.read_bytes() for p in cache.rglob("*") if p.is_file())
    assert blobs, "the result cache was not written"
    for value in values:
        assert value.encode() not in blobs
