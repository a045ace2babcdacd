"""ONNX: external data that escapes the model directory, size checks, custom and Python operators.

Hostile models are encoded here with a dozen lines of protobuf wire format (field numbers from
onnx.proto), so the tests need no onnx package; when onnx is installed, one test checks that it
parses these bytes the same way.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from mlsec.model import Severity
from tests.conftest import FIXTURES, at_least, rules_of, scan_bytes, scan_path
from tests.hostile_corpus import pb_int as vi
from tests.hostile_corpus import pb_len as ld
from tests.hostile_corpus import varint

ONNX_DIR = FIXTURES / "formats" / "onnx"


def tensor(name: str, dims: list[int], *, dtype: int = 1, raw: bytes | None = None,
           external: dict[str, str] | None = None) -> bytes:
    out = b"".join(vi(1, d) for d in dims) + vi(2, dtype) + ld(8, name)
    if raw is not None:
        out += ld(9, raw)
    if external is not None:
        out += b"".join(ld(13, ld(1, k) + ld(2, v)) for k, v in external.items()) + vi(14, 1)
    return out


def node(op: str, name: str, *, domain: str = "", inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = ("y",),
         attrs: tuple[bytes, ...] = ()) -> bytes:
    out = b"".join(ld(1, i) for i in inputs) + b"".join(ld(2, o) for o in outputs) + ld(3, name) + ld(4, op)
    out += b"".join(ld(5, a) for a in attrs)
    return out + (ld(7, domain) if domain else b"")


def graph(nodes: tuple[bytes, ...] = (), inits: tuple[bytes, ...] = (), name: str = "g") -> bytes:
    return b"".join(ld(1, n) for n in nodes) + ld(2, name) + b"".join(ld(5, t) for t in inits)


def model(g: bytes, *, extra: bytes = b"", opsets: tuple[tuple[str, int], ...] = (("", 17),)) -> bytes:
    ops = b"".join(ld(8, (ld(1, d) if d else b"") + vi(2, v)) for d, v in opsets)
    return vi(1, 8) + ld(2, "mlsec-tests") + ld(7, g) + ops + extra


def ext_model(location: str, *, length: int | None = 16) -> bytes:
    ext = {"location": location, "offset": "0"} | ({"length": str(length)} if length is not None else {})
    return model(graph((node("Identity", "id", inputs=("W",)),), (tensor("W", [4], external=ext),)))


# -- tests --------------------------------------------------------------------------------------
def test_benign_models_written_by_onnx_are_clean() -> None:
    for path in (ONNX_DIR / "tiny_linear.onnx", ONNX_DIR / "if_subgraph.onnx", ONNX_DIR / "external"):
        result = scan_path(path)
        assert not at_least(result, Severity.LOW) and not result.errors and not result.skipped, path


def test_onnx_parses_the_hand_encoded_models_the_same_way() -> None:
    onnx = pytest.importorskip("onnx")
    m = onnx.ModelProto()
    m.ParseFromString(ext_model("../../etc/passwd"))
    (t,) = m.graph.initializer
    assert t.name == "W" and list(t.dims) == [4] and t.data_location == onnx.TensorProto.EXTERNAL
    assert {e.key: e.value for e in t.external_data}["location"] == "../../etc/passwd"
    assert m.graph.node[0].op_type == "Identity"


@pytest.mark.parametrize(
    ("location", "reason"),
    [("/etc/passwd", "absolute path"), ("../../../home/user/.ssh/id_rsa", "'..' component"),
     ("weights/../../secret.bin", "'..' component"), ("..\\..\\Windows\\win.ini", "'..' component"),
     ("C:\\Windows\\System32\\config\\SAM", "absolute path"), ("file:///etc/shadow", "URL"),
     ("\\\\server\\share\\w.bin", "absolute path")],
    ids=["absolute", "dotdot", "inner-dotdot", "windows-dotdot", "drive", "url", "unc"],
)
def test_external_data_escaping_the_directory_is_critical(tmp_path: Path, location: str, reason: str) -> None:
    result = scan_bytes(tmp_path, "model.onnx", ext_model(location))
    (f,) = [f for f in result.findings if f.rule_id == "MLSEC-ONNX-001"]
    assert f.severity == Severity.CRITICAL
    assert dict(f.evidence) == {"tensor": "W", "location": location, "reason": reason}


def test_external_data_through_a_symlink_out_of_the_directory(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(bytes(64))
    mdir = tmp_path / "model"
    mdir.mkdir()
    (mdir / "model.onnx").write_bytes(ext_model("weights.bin"))
    os.symlink(secret, mdir / "weights.bin")
    result = scan_path(mdir / "model.onnx")
    (f,) = [f for f in result.findings if f.rule_id == "MLSEC-ONNX-001"]
    assert f.severity == Severity.CRITICAL and dict(f.evidence)["reason"] == "symlink"
    assert f.scanner == "mlsec-onnx-external"


def test_external_data_missing_or_out_of_range(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(ext_model("weights.bin"))
    result = scan_path(tmp_path / "model.onnx")
    (f,) = result.findings
    assert f.rule_id == "MLSEC-ONNX-002" and f.severity == Severity.LOW and "missing" in f.message
    (tmp_path / "weights.bin").write_bytes(bytes(8))   # 16 bytes declared
    (f,) = scan_path(tmp_path / "model.onnx").findings
    assert f.rule_id == "MLSEC-ONNX-002" and f.severity == Severity.MEDIUM and "beyond the end" in f.message
    (tmp_path / "weights.bin").write_bytes(bytes(16))
    assert scan_path(tmp_path / "model.onnx").findings == ()


@pytest.mark.parametrize(
    ("t", "fragment"),
    [(tensor("W", [4], raw=bytes(12)), "holds 12 bytes but its shape and type need 16"),
     (tensor("W", [2, -3], raw=bytes(4)), "invalid dimensions"),
     (tensor("W", [4], external={"location": "w.bin", "length": "64"}), "declares 64 external bytes"),
     (tensor("W", [4], external={"location": "w.bin", "offset": "zero"}), "non-numeric external offset"),
     (tensor("W", [4], external={"offset": "0"}), "names no location")],
    ids=["raw-size", "negative-dim", "external-length", "bad-offset", "no-location"],
)
def test_inconsistent_tensor_sizes(tmp_path: Path, t: bytes, fragment: str) -> None:
    result = scan_bytes(tmp_path, "model.onnx", model(graph(inits=(t,))))
    msgs = [f.message for f in result.findings if f.rule_id == "MLSEC-ONNX-002"]
    assert any(fragment in m for m in msgs), msgs


def test_escape_hidden_in_a_subgraph_attribute_is_found(tmp_path: Path) -> None:
    inner = graph(inits=(tensor("deep", [4], external={"location": "/etc/hosts"}),), name="then")
    attr = ld(1, "then_branch") + ld(6, inner) + vi(20, 5)
    data = model(graph((node("If", "branch", inputs=("c",), attrs=(attr,)),)))
    (f,) = [f for f in scan_bytes(tmp_path, "m.onnx", data).findings if f.rule_id == "MLSEC-ONNX-001"]
    assert dict(f.evidence)["tensor"] == "deep"


def test_custom_domains_python_ops_training_and_functions(tmp_path: Path) -> None:
    training = ld(20, ld(1, graph(name="init")))
    function = ld(25, ld(1, "MyFn") + ld(10, "local.fns") + ld(7, node("Relu", "r", inputs=("x",))))
    g = graph((node("Gelu", "g1", domain="acme.ops", inputs=("x",)),
               node("PyOp", "py", domain="ai.onnx.contrib", inputs=("x",)),
               node("MyFn", "call", domain="local.fns", inputs=("x",)),
               node("FusedMatMul", "fm", domain="com.microsoft", inputs=("x",))))
    result = scan_bytes(tmp_path, "m.onnx", model(g, extra=training + function))
    by = {(f.rule_id, f.severity, dict(f.evidence).get("domain", "")) for f in result.findings}
    assert ("MLSEC-ONNX-003", Severity.LOW, "acme.ops") in by
    assert ("MLSEC-ONNX-003", Severity.HIGH, "ai.onnx.contrib") in by
    assert not any(d in ("local.fns", "com.microsoft") for r, _, d in by if r == "MLSEC-ONNX-003")
    notes = [f.message for f in result.findings if f.rule_id == "MLSEC-ONNX-004"]
    assert len(notes) == 2 and all(f.severity == Severity.INFO for f in result.findings if f.rule_id == "MLSEC-ONNX-004")


@pytest.mark.parametrize(
    "data",
    [ld(7, b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\x7f"),   # node length 2^63-ish
     vi(1, 8) + varint(7 << 3 | 2) + varint(1 << 63),          # graph length 2^63
     vi(1, 8) + b"\x80" * 11,                                  # varint longer than 10 bytes
     vi(1, 8) + varint(3 << 3 | 3),                             # group wire type
     vi(1, 8) + b"\x00",                                        # field number 0
     ld(7, graph((node("Add", "a"),)))[:-3]],                  # truncated inside the graph
    ids=["node-2^63", "graph-2^63", "long-varint", "group", "field-0", "truncated"],
)
def test_malformed_protobuf_is_a_finding(tmp_path: Path, data: bytes) -> None:
    result = scan_bytes(tmp_path, "m.onnx", data)
    assert result.errors == () and "MLSEC-ONNX-005" in rules_of(result)


def test_deep_subgraph_nesting_is_bounded(tmp_path: Path) -> None:
    g = graph((node("Identity", "leaf"),))
    for i in range(40):
        g = graph((node("If", f"n{i}", attrs=(ld(1, "then_branch") + ld(6, g) + vi(20, 5),)),))
    result = scan_bytes(tmp_path, "m.onnx", model(g))
    assert result.errors == () and any("nested deeper" in f.message for f in result.findings)


def test_large_initializers_are_skipped_not_read(tmp_path: Path) -> None:
    raw = bytes(8 << 20)
    data = model(graph(inits=(tensor("big", [2 << 20], raw=raw),)))
    result = scan_bytes(tmp_path, "m.onnx", data)
    assert result.findings == () and result.errors == ()


def test_onnx_inside_a_zip_is_checked(tmp_path: Path) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("export/model.onnx", ext_model("/proc/self/environ"))
    result = scan_bytes(tmp_path, "export.zip", buf.getvalue())
    (f,) = [f for f in result.findings if f.rule_id == "MLSEC-ONNX-001"]
    assert f.location.member == "export/model.onnx"


def test_fixed_size_header_fields_are_read(tmp_path: Path) -> None:
    # fixed64/fixed32 fields (wire types 1 and 5) anywhere must be skipped correctly
    extra = varint(30 << 3 | 1) + struct.pack("<Q", 7) + varint(31 << 3 | 5) + struct.pack("<I", 7)
    result = scan_bytes(tmp_path, "m.onnx", model(graph(), extra=extra) + ld(7, graph(
        inits=(tensor("x", [1], external={"location": "/abs"}),))))
    assert "MLSEC-ONNX-001" in rules_of(result)
