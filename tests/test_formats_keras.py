"""Keras: Lambda layers, custom and dangerous objects in `.keras` configs and HDF5 attributes.

Hostile `.keras` files are the real fixture with its `config.json` edited; hostile `.h5` files
are written with h5py (those tests skip when it is absent). Bytecode is produced with
``marshal.dumps`` of a lambda's code object, exactly as Keras does, and never loaded.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import marshal
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mlsec.model import Severity
from tests.conftest import FIXTURES, at_least, rules_of, scan_bytes, scan_path
from tests.test_hostile import SYSTEM, globals_of, npy_object, system_pickle

KERAS_DIR = FIXTURES / "formats" / "keras"
SEQ = KERAS_DIR / "tiny_sequential.keras"


def evil_code() -> str:
    fn = lambda x: __import__("os").system("id")
    return base64.b64encode(marshal.dumps(fn.__code__)).decode()


def config_of(path: Path = SEQ) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("config.json"))


def keras_zip(config: dict[str, Any], extra: dict[str, bytes] | None = None, source: Path = SEQ) -> bytes:
    """The fixture archive with ``config.json`` replaced (and optional extra members)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = json.dumps(config).encode() if info.filename == "config.json" else src.read(info)
            dst.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            dst.writestr(name, data)
    return buf.getvalue()


def with_layer(layer: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(config_of())
    cfg["config"]["layers"].insert(2, layer)
    return cfg


LAMBDA_K3 = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
             "config": {"name": "evil", "function": {"class_name": "__lambda__",
                                                      "config": {"code": "", "defaults": None, "closure": None}}}}


def lambda_k3() -> dict[str, Any]:
    layer = copy.deepcopy(LAMBDA_K3)
    layer["config"]["function"]["config"]["code"] = evil_code()
    return layer


def test_benign_keras_files_are_clean() -> None:
    import importlib.util

    # the archives hold model.weights.h5: without h5py it is reported as not inspected
    expected_skips = [] if importlib.util.find_spec("h5py") else ["missing-dependency"]
    for name in ("tiny_sequential.keras", "tiny_functional.keras"):
        result = scan_path(KERAS_DIR / name)
        assert result.findings == () and not result.errors, name
        assert [s.code for s in result.skipped] == expected_skips, name


def test_benign_h5_files_are_clean() -> None:
    pytest.importorskip("h5py")
    for name in ("tiny_sequential.h5", "tiny_functional.weights.h5"):
        result = scan_path(KERAS_DIR / name)
        assert result.findings == () and not result.errors and not result.skipped, name


def test_lambda_bytecode_in_a_keras_archive_is_critical(tmp_path: Path) -> None:
    result = scan_bytes(tmp_path, "model.keras", keras_zip(with_layer(lambda_k3())))
    (f,) = result.findings
    assert f.rule_id == "MLSEC-KERAS-001" and f.severity == Severity.CRITICAL
    assert f.location.member == "config.json" and f.location.pointer == "/config/layers/2"
    ev = dict(f.evidence)
    assert ev["layer"] == "evil" and "system" in ev["names"] and "safe_mode" in ev["safe_mode"]


def test_lambda_as_activation_is_found_anywhere_in_the_config(tmp_path: Path) -> None:
    cfg = config_of()
    cfg["config"]["layers"][1]["config"]["activation"] = {"class_name": "__lambda__",
                                                          "config": {"code": evil_code()}}
    (f,) = scan_bytes(tmp_path, "m.keras", keras_zip(cfg)).findings
    assert f.rule_id == "MLSEC-KERAS-001" and "activation" in (f.location.pointer or "")


@pytest.mark.parametrize(
    ("obj", "rule", "severity"),
    [({"module": "os", "class_name": "function", "config": "system", "registered_name": "function"},
      "MLSEC-KERAS-003", Severity.CRITICAL),
     ({"module": "builtins", "class_name": "function", "config": "eval"}, "MLSEC-KERAS-003", Severity.CRITICAL),
     ({"module": "subprocess", "class_name": "Popen", "config": {}}, "MLSEC-KERAS-003", Severity.CRITICAL),
     ({"module": "evil_pkg.layers", "class_name": "Backdoor", "config": {"name": "b"},
       "registered_name": "Custom>Backdoor"}, "MLSEC-KERAS-002", Severity.HIGH),
     ({"module": None, "class_name": "MyLayer", "config": {"name": "m"}, "registered_name": "Acme>MyLayer"},
      "MLSEC-KERAS-002", Severity.HIGH)],
    ids=["os.system", "builtins.eval", "subprocess", "custom-module", "registered-name"],
)
def test_objects_from_outside_keras(tmp_path: Path, obj: dict[str, Any], rule: str, severity: Severity) -> None:
    cfg = config_of()
    cfg["config"]["layers"][1]["config"]["kernel_initializer"] = obj
    found = [f for f in scan_bytes(tmp_path, "m.keras", keras_zip(cfg)).findings if f.rule_id == rule]
    assert found and found[0].severity == severity, found


def test_torch_module_wrapper_payload_goes_through_the_pickle_engine(tmp_path: Path) -> None:
    layer = {"module": "keras.layers", "class_name": "TorchModuleWrapper", "registered_name": None,
             "config": {"name": "wrapped", "module": base64.b64encode(system_pickle("id")).decode()}}
    result = scan_bytes(tmp_path, "m.keras", keras_zip(with_layer(layer)))
    assert "MLSEC-KERAS-005" in rules_of(result) and SYSTEM in globals_of(result)
    hit = next(f for f in result.findings if dict(f.evidence).get("global") == SYSTEM)
    assert hit.location.member == "config.json!/config/layers/2/module"


def test_legacy_keras_zip_with_pickled_weights_reaches_the_pickle_engine(tmp_path: Path) -> None:
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("arr_0.npy", npy_object(system_pickle()))
    result = scan_bytes(tmp_path, "old.keras", keras_zip(config_of(), {"model.weights.npz": npz.getvalue()}))
    assert SYSTEM in globals_of(result) and at_least(result, Severity.CRITICAL)


def test_broken_config_json_is_reported(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", '{"class_name": "Sequential", ')
    result = scan_bytes(tmp_path, "m.keras", buf.getvalue())
    assert rules_of(result) == {"MLSEC-KERAS-004"} and result.errors == ()


def test_deeply_nested_config_does_not_crash(tmp_path: Path) -> None:
    deep: Any = {"class_name": "Lambda", "config": {"function": ["AAAA", None, None]}}
    for _ in range(300):
        deep = {"class_name": "Wrapper", "config": {"layer": deep}}
    result = scan_bytes(tmp_path, "m.keras", keras_zip({"class_name": "Sequential", "config": {"layers": [deep]}}))
    assert result.errors == () and "MLSEC-KERAS-004" in rules_of(result)


# -- HDF5 (h5py) ------------------------------------------------------------------------------
def h5_with(tmp_path: Path, name: str, **attrs: Any) -> Path:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        f.create_dataset("model_weights/dense/kernel", data=[[1.0, 2.0]])
    return path


def test_keras2_lambda_in_h5_model_config_is_critical(tmp_path: Path) -> None:
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 1}},
        {"class_name": "Lambda", "config": {"name": "evil", "function": [evil_code(), None, None],
                                            "function_type": "lambda", "module": "__main__"}}]}}
    path = h5_with(tmp_path, "model.h5", model_config=json.dumps(cfg), keras_version="2.15.0", backend="tensorflow")
    result = scan_path(path)
    (f,) = result.findings
    assert f.rule_id == "MLSEC-KERAS-001" and f.severity == Severity.CRITICAL
    assert "CVE-2025-9905" in dict(f.evidence)["safe_mode"] and dict(f.evidence)["source"] == "model_config"


def test_keras2_custom_layer_and_training_config_function(tmp_path: Path) -> None:
    cfg = {"class_name": "Sequential", "config": {"layers": [{"class_name": "MyAttention", "config": {"name": "a"}}]}}
    training = {"loss": {"module": "os", "class_name": "function", "config": "system"}}
    path = h5_with(tmp_path, "model.h5", model_config=json.dumps(cfg), training_config=json.dumps(training))
    by_rule = {f.rule_id: f for f in scan_path(path).findings}
    assert by_rule["MLSEC-KERAS-002"].severity == Severity.MEDIUM
    assert dict(by_rule["MLSEC-KERAS-003"].evidence)["source"] == "training_config"


def test_h5_attribute_with_many_elements_is_not_read(tmp_path: Path) -> None:
    path = h5_with(tmp_path, "model.h5", model_config=["{}"] * 1000)
    (f,) = scan_path(path).findings
    assert f.rule_id == "MLSEC-KERAS-004" and "1000 elements" in f.message


def test_h5_inside_a_zip_is_opened_from_the_archive(tmp_path: Path) -> None:
    cfg = {"class_name": "Functional", "config": {"layers": [lambda_k3()]}}
    h5 = h5_with(tmp_path, "inner.h5", model_config=json.dumps(cfg)).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("models/inner.h5", h5)
    result = scan_bytes(tmp_path, "bundle.zip", buf.getvalue())
    (f,) = result.findings
    assert f.rule_id == "MLSEC-KERAS-001" and f.location.member == "models/inner.h5"


def test_damaged_h5_is_a_finding(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    data = (KERAS_DIR / "tiny_sequential.h5").read_bytes()
    for cut in (8, 100, 600, 2048, len(data) // 2):
        result = scan_bytes(tmp_path, "m.h5", data[:cut])
        assert result.errors == (), cut
        assert "MLSEC-KERAS-004" in rules_of(result) or result.findings == (), cut
    result = scan_bytes(tmp_path, "m.h5", b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    assert rules_of(result) == {"MLSEC-KERAS-004"}


def test_without_h5py_hdf5_is_skipped_not_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    result = scan_path(KERAS_DIR / "tiny_sequential.h5", use_cache=False)
    assert [s.code for s in result.skipped] == ["missing-dependency"] and result.errors == ()
