"""Keras: Lambda layers, custom and dangerous objects in `.keras` configs and HDF5 attributes.

Hostile `.keras` files are the real fixture with its `config.json` edited; hostile `.h5` files
are written with h5py (those tests skip when it is absent). Bytecode is produced with
``marshal.dumps`` of a lambda's code object, exactly as Keras does, and never loaded.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
import json
import marshal
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mlsec.engine import hdf5_client, hdf5_worker
from mlsec.engine.context import Limits
from mlsec.model import ScanResult, Severity
from mlsec.pipeline import Options, run
from tests.conftest import FIXTURES, at_least, installed_worker, rules_of, scan_bytes, scan_path
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


# -- the isolated HDF5 reader process ---------------------------------------------------------
# h5py runs in a child process (mlsec.engine.hdf5_client); these tests make it crash, hang and
# misbehave for real (signals to the real child, or a stand-in child speaking the protocol).
LAMBDA_H5_CONFIG = {"class_name": "Sequential", "config": {"layers": [
    {"class_name": "Lambda", "config": {"name": "evil", "function": [evil_code(), None, None],
                                        "function_type": "lambda"}}]}}


@pytest.fixture
def reader() -> Iterator[hdf5_client.HDF5Reader]:
    """A fresh shared reader for the test, stopped afterwards (even if the test left it stopped)."""
    pytest.importorskip("h5py")
    with installed_worker(hdf5_client, hdf5_client.HDF5Reader()) as fresh:
        yield fresh


def hostile_h5(tmp_path: Path, name: str = "evil.h5") -> Path:
    return h5_with(tmp_path, name, model_config=json.dumps(LAMBDA_H5_CONFIG))


def assert_lambda_found(path: Path) -> None:
    result = scan_path(path, use_cache=False)
    assert [f.rule_id for f in result.findings] == ["MLSEC-KERAS-001"], result.findings
    assert result.errors == () and result.skipped == ()


def assert_reaped(pid: int) -> None:
    """The child is gone and was waited for: no zombie left behind."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def test_h5_files_are_read_by_one_reused_child_process(tmp_path: Path, reader: hdf5_client.HDF5Reader) -> None:
    assert reader.pid is None  # started lazily, on the first HDF5 file
    assert_lambda_found(hostile_h5(tmp_path))
    pid = reader.pid
    assert pid is not None and pid != os.getpid() and hdf5_client.worker_pid() == pid
    assert reader.command == hdf5_client.default_command()
    assert reader.command[:2] == (sys.executable, "-I")
    assert reader.command[-1] == str(Path(hdf5_worker.__file__).resolve())
    if Path("/proc/self").is_dir():
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1] == [os.fsencode(a) for a in reader.command]
    for name in ("tiny_sequential.h5", "tiny_functional.weights.h5"):
        result = scan_path(KERAS_DIR / name, use_cache=False)
        assert result.findings == () and result.skipped == () and result.errors == (), name
    assert_lambda_found(hostile_h5(tmp_path, "again.h5"))
    assert reader.pid == pid and reader.starts == 1


def test_h5_in_an_archive_is_sent_as_bytes_to_the_same_child(tmp_path: Path,
                                                             reader: hdf5_client.HDF5Reader) -> None:
    h5 = hostile_h5(tmp_path).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:  # deflated: the reader gets bytes
        zf.writestr("a/evil.h5", h5)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as zf:    # stored: a window of the zip on disk
        zf.writestr("b/evil.h5", h5)
    result = scan_bytes(tmp_path, "bundle.zip", buf.getvalue(), use_cache=False)
    assert sorted((f.rule_id, f.location.member) for f in result.findings) == [
        ("MLSEC-KERAS-001", "a/evil.h5"), ("MLSEC-KERAS-001", "b/evil.h5")]
    assert reader.starts == 1


def test_a_crash_of_the_reader_is_a_high_finding_and_the_next_file_is_read(
        tmp_path: Path, reader: hdf5_client.HDF5Reader, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = h5_with(tmp_path, "victim.h5", model_config=json.dumps({"class_name": "Sequential"}))
    assert_lambda_found(hostile_h5(tmp_path))  # starts the child
    pid = reader.pid
    assert pid is not None
    # The scan of the victim sends the child the request mlsec builds for it, with one change
    # made here, in the test: the path names a FIFO. The child takes the request (acknowledges
    # it) and blocks opening the FIFO, i.e. it is inside the file's handling, exactly where
    # libhdf5 would crash, when the test kills it with SIGSEGV.
    fifo = tmp_path / "blocks"
    os.mkfifo(fifo)
    real_read = reader.read
    monkeypatch.setattr(reader, "read", lambda request, timeout: real_read(
        dataclasses.replace(request, path=str(fifo)), timeout))
    results: list[ScanResult] = []
    scan = threading.Thread(target=lambda: results.append(scan_path(victim, use_cache=False)))
    scan.start()
    wait_until(lambda: reader.busy, "the child took the request")
    os.kill(pid, signal.SIGSEGV)
    scan.join(30)
    assert not scan.is_alive()
    monkeypatch.undo()
    (result,) = results
    (f,) = result.findings
    assert f.rule_id == "MLSEC-KERAS-006" and f.severity == Severity.HIGH and "SIGSEGV" in f.message
    assert f.path.endswith("victim.h5") and dict(f.evidence)["outcome"] == "was killed by signal SIGSEGV"
    assert result.errors == () and result.skipped == ()
    assert_reaped(pid)
    # the next file gets a new child, and is inspected as usual
    assert_lambda_found(hostile_h5(tmp_path, "next.h5"))
    assert reader.pid not in (None, pid) and reader.starts == 2


def test_a_child_stopped_before_it_takes_the_request_is_not_blamed_on_the_file(
        tmp_path: Path, reader: hdf5_client.HDF5Reader) -> None:
    """Killed after the request was written but before the child read it: retried, no finding."""
    assert_lambda_found(hostile_h5(tmp_path))
    pid = reader.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    results: list[ScanResult] = []
    scan = threading.Thread(target=lambda: results.append(scan_path(hostile_h5(tmp_path, "b.h5"),
                                                                    use_cache=False)))
    scan.start()
    time.sleep(0.2)  # the request sits unread in the stopped child's pipe (timing only shortens the wait)
    os.kill(pid, signal.SIGKILL)
    scan.join(30)
    (result,) = results
    assert [f.rule_id for f in result.findings] == ["MLSEC-KERAS-001"] and reader.starts == 2
    assert_reaped(pid)


def test_a_reader_that_hangs_is_killed_at_the_timeout(tmp_path: Path, reader: hdf5_client.HDF5Reader,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert_lambda_found(hostile_h5(tmp_path))
    pid = reader.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a child that never answers, as if libhdf5 looped on the file
    monkeypatch.setattr(hdf5_client, "REQUEST_TIMEOUT", 0.5)
    started = time.monotonic()
    result = scan_path(hostile_h5(tmp_path, "hangs.h5"), use_cache=False)
    assert 0.5 <= time.monotonic() - started < 10
    (f,) = result.findings
    assert f.rule_id == "MLSEC-SCAN-001" and "no answer within 0.5s" in f.message and result.errors == ()
    assert_reaped(pid)
    monkeypatch.undo()
    assert_lambda_found(hostile_h5(tmp_path, "next.h5"))
    assert reader.pid not in (None, pid) and reader.starts == 2


def test_the_artifact_time_budget_caps_the_reader_timeout(tmp_path: Path, reader: hdf5_client.HDF5Reader) -> None:
    assert_lambda_found(hostile_h5(tmp_path))
    assert reader.pid is not None
    os.kill(reader.pid, signal.SIGSTOP)
    result = scan_path(hostile_h5(tmp_path, "hangs.h5"), use_cache=False, limits=Limits(timeout=0.5))
    assert [f.rule_id for f in result.findings] == ["MLSEC-SCAN-001"] and result.errors == ()
    assert reader.pid is None  # killed; the next file starts another


def test_a_child_that_died_between_files_is_replaced_silently(tmp_path: Path,
                                                              reader: hdf5_client.HDF5Reader) -> None:
    assert_lambda_found(hostile_h5(tmp_path))
    pid = reader.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer, while no file was being read
    wait_until(lambda: not Path(f"/proc/{pid}/status").exists()
               or "zombie" in Path(f"/proc/{pid}/status").read_text(), "the child died")
    assert_lambda_found(hostile_h5(tmp_path, "next.h5"))  # no crash finding for an innocent file
    assert reader.starts == 2
    assert_reaped(pid)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open descriptors in /proc")
def test_no_descriptor_or_process_leaks_across_many_files_and_restarts(
        tmp_path: Path, reader: hdf5_client.HDF5Reader) -> None:
    files = [hostile_h5(tmp_path, f"m{i}.h5") for i in range(3)]
    assert_lambda_found(files[0])
    ours = len(os.listdir("/proc/self/fd"))
    pid = reader.pid
    assert pid is not None
    theirs = len(os.listdir(f"/proc/{pid}/fd"))
    for _ in range(10):
        for path in files:
            assert_lambda_found(path)
    assert len(os.listdir(f"/proc/{pid}/fd")) == theirs and reader.starts == 1
    for _ in range(3):  # kill and restart a few times
        old = reader.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        assert_lambda_found(files[1])
        assert_reaped(old)
    assert len(os.listdir("/proc/self/fd")) == ours and reader.starts == 4


def test_threads_share_the_child(tmp_path: Path, reader: hdf5_client.HDF5Reader) -> None:
    files = [hostile_h5(tmp_path, f"t{i}.h5") for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: scan_path(p, use_cache=False), files * 3))
    assert all([f.rule_id for f in r.findings] == ["MLSEC-KERAS-001"] for r in results)
    assert reader.starts == 1


def test_parallel_jobs_do_not_share_the_parents_child(tmp_path: Path, reader: hdf5_client.HDF5Reader) -> None:
    """--jobs forks pool workers; each starts its own child and the parent's keeps working."""
    files = [hostile_h5(tmp_path, f"j{i}.h5") for i in range(4)]
    assert_lambda_found(files[0])
    pid = reader.pid
    result = run([str(tmp_path)], Options(jobs=2, use_cache=False))
    assert sorted(f.rule_id for f in result.findings) == ["MLSEC-KERAS-001"] * 4 and result.errors == ()
    assert_lambda_found(files[1])
    assert reader.pid == pid and reader.starts == 1
    started = time.monotonic()
    reader.close()  # stdin is ours alone (no forked copy): end of file, a clean exit at once
    assert time.monotonic() - started < hdf5_client.STOP_TIMEOUT
    assert pid is not None
    assert_reaped(pid)


def _scan_in_pool_worker(path: str) -> tuple[int, int | None]:
    scan_path(path, use_cache=False)
    return os.getpid(), hdf5_client.worker_pid()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="looks processes up in /proc")
def test_pool_workers_stop_their_children_when_they_exit(tmp_path: Path) -> None:
    """Pool workers leave through os._exit (no atexit): multiprocessing's finalizers stop the child."""
    pytest.importorskip("h5py")
    path = str(hostile_h5(tmp_path))
    with ProcessPoolExecutor(max_workers=2) as pool:
        pids = set(pool.map(_scan_in_pool_worker, [path] * 4))
    children = {child for _, child in pids}
    assert None not in children and not children & {pid for pid, _ in pids}

    def gone(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status")
        return not status.exists() or "hdf5_worker" not in Path(f"/proc/{pid}/cmdline").read_text()

    wait_until(lambda: all(gone(pid) for pid in children if pid is not None), "the pool's children were reaped")


_EXIT_CHECK = """
import atexit, os, sys
state = {}
def check():  # registered first, so it runs after mlsec's own exit handler
    try:
        os.waitpid(state["pid"], os.WNOHANG)
        print("not reaped")
    except ChildProcessError:
        print("reaped")
atexit.register(check)
from mlsec.engine import hdf5_client
from mlsec.pipeline import Options, run
result = run([sys.argv[1]], Options(use_cache=False))
state["pid"] = hdf5_client.worker_pid()
print(state["pid"] is not None, len(result.findings))
"""


def test_the_child_is_stopped_and_reaped_at_interpreter_exit(tmp_path: Path) -> None:
    path = hostile_h5(tmp_path)
    env = {**os.environ, "MLSEC_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", _EXIT_CHECK, str(path)], capture_output=True, text=True,
                         env=env, timeout=60, check=True)
    assert out.stdout.split() == ["True", "1", "reaped"], out.stderr


def _stand_in(tmp_path: Path, body: str) -> hdf5_client.HDF5Reader:
    """A reader whose child is a small script speaking the protocol (to misbehave on purpose)."""
    script = tmp_path / "stand_in.py"
    script.write_text("import json, os, struct, sys\n"
                      "def send(header, blob=b''):\n"
                      "    text = json.dumps(header).encode()\n"
                      "    os.write(1, struct.pack('>II', len(text), len(blob)) + text + blob)\n" + body)
    return hdf5_client.HDF5Reader([sys.executable, "-I", str(script)])


def test_a_malformed_reply_is_a_crash_and_the_child_is_replaced(tmp_path: Path,
                                                               reader: hdf5_client.HDF5Reader) -> None:
    stand_in = _stand_in(tmp_path, "send({'ready': True})\nos.read(0, 1 << 16)\nos.write(1, b'\\xff' * 64)\n"
                                   "import time; time.sleep(60)\n")
    hdf5_client.set_shared(stand_in)
    try:
        result = scan_path(hostile_h5(tmp_path), use_cache=False)
        (f,) = result.findings
        assert f.rule_id == "MLSEC-KERAS-006" and "malformed reply" in f.message and result.errors == ()
        assert stand_in.pid is None and stand_in.starts == 1
    finally:
        stand_in.close()
        hdf5_client.set_shared(reader)


@pytest.mark.parametrize(
    ("body", "code"),
    [("send({'ready': False, 'error': 'ImportError: No module named h5py'})\n", "missing-dependency"),
     ("sys.exit(3)\n", "reader-unavailable")],
    ids=["h5py-missing-in-child", "child-cannot-start"],
)
def test_a_reader_that_cannot_start_is_a_skip_remembered_for_the_scan(
        tmp_path: Path, reader: hdf5_client.HDF5Reader, body: str, code: str) -> None:
    stand_in = _stand_in(tmp_path, body)
    hdf5_client.set_shared(stand_in)
    try:
        for name in ("a.h5", "b.h5"):
            result = scan_path(hostile_h5(tmp_path, name), use_cache=False)
            assert result.findings == () and result.errors == ()
            assert [s.code for s in result.skipped] == [code]
        assert stand_in.starts == 1  # not retried for every file
    finally:
        stand_in.close()
        hdf5_client.set_shared(reader)


def test_the_child_refuses_a_file_replaced_after_the_parent_opened_it(
        tmp_path: Path, reader: hdf5_client.HDF5Reader) -> None:
    path = hostile_h5(tmp_path)
    st = path.stat()
    request = hdf5_client.Request(attrs=("model_config",), max_storage=1 << 20, max_value=1 << 20, path=str(path),
                                  length=st.st_size, identity=(st.st_dev, st.st_ino + 1))
    reply = reader.read(request, 30)
    assert isinstance(reply, hdf5_client.Reply) and reply.open_error is not None and "replaced" in reply.open_error
