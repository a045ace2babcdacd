"""TensorFlow SavedModel / GraphDef / keras_metadata protobufs, read without TensorFlow.

Hostile graphs are encoded with field numbers from tensorflow/core/framework/*.proto and
tensorflow/core/protobuf/{meta_graph,saved_model}.proto. Protobuf merges concatenated messages,
so appending a hostile ``meta_graphs`` entry to the real fixture gives a file TensorFlow reads
as one SavedModel with both graphs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from mlsec.model import Severity
from tests.conftest import FIXTURES, at_least, rules_of, scan_bytes, scan_path
from tests.test_formats_onnx import ld, vi

SM_DIR = FIXTURES / "formats" / "savedmodel" / "tiny_module"
REAL_PB = SM_DIR / "saved_model.pb"


def attr(key: str, value: bytes) -> bytes:
    return ld(5, ld(1, key) + ld(2, value))


def node(name: str, op: str, *inputs: str, attrs: tuple[bytes, ...] = ()) -> bytes:
    return ld(1, name) + ld(2, op) + b"".join(ld(3, i) for i in inputs) + b"".join(attrs)


def const(name: str, *strings: str) -> bytes:
    tensor = vi(1, 7) + b"".join(ld(8, s) for s in strings)   # DT_STRING, string_val
    return node(name, "Const", attrs=(attr("value", ld(8, tensor)), attr("dtype", vi(6, 7))))


def graph_def(*nodes: bytes, functions: tuple[bytes, ...] = ()) -> bytes:
    lib = ld(2, b"".join(ld(1, f) for f in functions)) if functions else b""
    return b"".join(ld(1, n) for n in nodes) + lib


def function(name: str, *nodes: bytes) -> bytes:
    return ld(1, ld(1, name)) + b"".join(ld(3, n) for n in nodes)


def meta_graph(gd: bytes, assets: tuple[str, ...] = ()) -> bytes:
    return ld(2, gd) + b"".join(ld(6, ld(2, a)) for a in assets)


def saved_model(*metas: bytes) -> bytes:
    return vi(1, 1) + b"".join(ld(2, m) for m in metas)


def test_benign_savedmodel_written_by_tensorflow_is_clean() -> None:
    result = scan_path(SM_DIR)
    assert {a.format for a in result.artifacts if a.path.endswith(".pb")} == {"protobuf"}
    assert not at_least(result, Severity.LOW) and not result.errors and not result.skipped


def test_hostile_graph_appended_to_a_real_savedmodel(tmp_path: Path) -> None:
    data = REAL_PB.read_bytes() + ld(2, meta_graph(graph_def(node("leak", "ReadFile", "path"))))
    result = scan_bytes(tmp_path, "saved_model.pb", data)
    (f,) = result.findings
    assert f.rule_id == "MLSEC-TF-001" and f.severity == Severity.HIGH
    assert dict(f.evidence) == {"op": "ReadFile", "node": "leak", "scope": "graph"}


@pytest.mark.parametrize("op", ["ReadFile", "WriteFile", "MatchingFiles", "PyFunc", "PyFuncStateless",
                                "EagerPyFunc", "CreateSummaryFileWriter", "SqlDataset", "ImmutableConst"])
def test_ops_that_touch_files_or_python(tmp_path: Path, op: str) -> None:
    data = saved_model(meta_graph(graph_def(node("n1", op))))
    result = scan_bytes(tmp_path, "saved_model.pb", data)
    assert [dict(f.evidence)["op"] for f in result.findings if f.rule_id == "MLSEC-TF-001"] == [op]


def test_ops_inside_library_functions_name_the_function(tmp_path: Path) -> None:
    fn = function("__inference_serve_42", node("cb", "EagerPyFunc", "x"), node("ok", "MatMul", "a", "b"))
    data = saved_model(meta_graph(graph_def(node("call", "StatefulPartitionedCall"), functions=(fn,))))
    (f,) = scan_bytes(tmp_path, "saved_model.pb", data).findings
    assert dict(f.evidence) == {"op": "EagerPyFunc", "node": "cb", "scope": "function __inference_serve_42"}


@pytest.mark.parametrize(
    ("n", "flagged"),
    [(node("p", "PrintV2", "x", attrs=(attr("output_stream", ld(2, "file:///tmp/leak.txt")),)), True),
     (node("p", "PrintV2", "x", attrs=(attr("output_stream", ld(2, "stderr")),)), False),
     (node("d", "DebugIdentityV2", "x", attrs=(attr("dump_root", ld(2, "/tmp/dump")),)), True),
     (node("d", "DebugIdentity", "x", attrs=(attr("debug_urls", ld(1, ld(2, "grpc://10.0.0.1:6064"))),)), True),
     (node("d", "DebugIdentity", "x"), False),
     (node("dp", "DecodeProtoV2", "x", attrs=(attr("descriptor_source", ld(2, "/etc/x.desc")),)), True),
     (node("dp", "DecodeProtoV2", "x", attrs=(attr("descriptor_source", ld(2, "local://")),)), False)],
    ids=["print-file", "print-stderr", "debug-dump", "debug-url", "debug-plain", "proto-file", "proto-local"],
)
def test_ops_that_write_only_with_a_target(tmp_path: Path, n: bytes, flagged: bool) -> None:
    result = scan_bytes(tmp_path, "saved_model.pb", saved_model(meta_graph(graph_def(n))))
    assert ("MLSEC-TF-001" in rules_of(result)) is flagged


@pytest.mark.parametrize(
    ("path", "op", "flagged"),
    [("/etc/cron.d/job", "SaveV2", True), ("../../../tmp/x", "RestoreV2", True),
     ("gs://attacker/vocab.txt", "InitializeTableFromTextFileV2", True), ("C:\\x\\y", "MergeV2Checkpoints", True),
     ("_temp_abc/part", "SaveV2", False), ("variables/variables", "RestoreV2", False)],
)
def test_save_restore_and_tables_with_odd_paths(tmp_path: Path, path: str, op: str, flagged: bool) -> None:
    gd = graph_def(const("filename", path), node("io", op, "filename:0", "^ctrl"))
    result = scan_bytes(tmp_path, "saved_model.pb", saved_model(meta_graph(gd)))
    found = [f for f in result.findings if f.rule_id == "MLSEC-TF-002"]
    assert bool(found) is flagged
    if flagged:
        assert dict(found[0].evidence)["path"] == path and dict(found[0].evidence)["node"] == "io"


def test_asset_names_that_leave_the_assets_directory(tmp_path: Path) -> None:
    data = saved_model(meta_graph(graph_def(), assets=("vocab.txt", "../../../etc/passwd")))
    (f,) = scan_bytes(tmp_path, "saved_model.pb", data).findings
    assert f.rule_id == "MLSEC-TF-002" and dict(f.evidence)["asset"] == "../../../etc/passwd"


def test_frozen_graphdef_is_read(tmp_path: Path) -> None:
    data = graph_def(const("c", "hi"), node("w", "WriteFile", "c", "c"))
    result = scan_bytes(tmp_path, "frozen_inference_graph.pb", data)
    assert [dict(f.evidence)["op"] for f in result.findings] == ["WriteFile"]


def test_keras_metadata_with_a_lambda_layer(tmp_path: Path) -> None:
    code = base64.b64encode(b"\xe3...system...os...").decode()
    layer = {"class_name": "Lambda", "config": {"name": "evil", "function": [code, None, None],
                                                 "function_type": "lambda"}}
    meta = ld(1, vi(1, 1) + ld(2, "root.layer-1") + ld(3, "_tf_keras_layer") + ld(4, json.dumps(layer)))
    result = scan_bytes(tmp_path, "keras_metadata.pb", meta)
    (f,) = result.findings
    assert f.rule_id == "MLSEC-KERAS-001" and f.severity == Severity.CRITICAL
    assert "system" in dict(f.evidence)["names"] and dict(f.evidence)["source"] == "keras_metadata _tf_keras_layer"


def test_unknown_protobufs_are_skipped_not_passed(tmp_path: Path) -> None:
    result = scan_bytes(tmp_path, "sentencepiece.pb", ld(3, "x") + vi(4, 1))
    assert result.findings == () and [s.code for s in result.skipped] == ["unknown-protobuf"]


def test_truncated_savedmodel_is_a_finding_at_every_cut(tmp_path: Path) -> None:
    data = REAL_PB.read_bytes()
    for cut in range(1, len(data), max(1, len(data) // 97)):
        result = scan_bytes(tmp_path, "saved_model.pb", data[:cut])
        assert result.errors == (), cut
        assert "MLSEC-TF-003" in rules_of(result) or not result.findings, cut


def test_asset_symlink_out_of_the_model_directory(tmp_path: Path) -> None:
    model = tmp_path / "sm"
    shutil.copytree(SM_DIR, model)
    (model / "assets" / "vocab.txt").unlink()
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    os.symlink(secret, model / "assets" / "vocab.txt")
    os.symlink("/", model / "assets" / "root")
    result = scan_path(model)
    found = sorted(dict(f.evidence)["asset"] for f in result.findings if f.rule_id == "MLSEC-TF-004")
    assert found == ["assets/root", "assets/vocab.txt"]
    assert all(f.scanner == "mlsec-savedmodel-dir" for f in result.findings if f.rule_id == "MLSEC-TF-004")
