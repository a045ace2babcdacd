"""Inputs the coverage-guided fuzzer (benchmarks/fuzz_atheris.py) found, rebuilt here.

Each one crashed the process, raised out of a scanner or ran for minutes past the timeout
before its fix; the test states the behaviour now required. Hang and crash guards run the scan
in a child process, so a regression fails the test instead of taking pytest down.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlsec.model import Severity
from tests.conftest import REPO, scan_bytes

_CHILD = textwrap.dedent("""
    import json, sys
    from mlsec.engine.context import Limits
    from mlsec.pipeline import Options, run
    result = run([sys.argv[1]], Options(use_cache=False, limits=Limits(timeout=float(sys.argv[2]))))
    print(json.dumps({"errors": [e.message for e in result.errors],
                      "findings": [[f.rule_id, f.severity.label, dict(f.evidence)] for f in result.findings]}))
""")


def _scan_in_child(path: Path, timeout: float = 20.0) -> dict[str, list]:
    env = {**os.environ, "MLSEC_CACHE_DIR": str(path.parent / "cache")}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(timeout)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout * 6, check=False)
    assert proc.returncode == 0, f"the scan died (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def test_global_with_thousands_of_dotted_names_is_critical_and_quick(tmp_path: Path) -> None:
    """A 4 KB STACK_GLOBAL name 'a.a.a...' made the deny-list walk quadratic (85 s, past --timeout)."""
    name = ".".join(["a"] * 2047).encode()
    data = (b"\x80\x04\x8c\x01m" + b"X" + struct.pack("<I", len(name)) + name + b"\x93.")
    path = tmp_path / "dotted.pkl"
    path.write_bytes(data)
    got = _scan_in_child(path, timeout=20.0)  # the child gets 120 s before the guard fires
    assert got["errors"] == []
    critical = [f for f in got["findings"] if f[1] == "critical"]
    assert critical and critical[0][0] == "MLSEC-PICKLE-001"
    assert critical[0][2]["global"].startswith("m.a.a") and "attribute chain of 2048 names" in critical[0][2]["reason"]


@pytest.mark.parametrize("line, rule", [
    ("-r a\0b.txt", "MLSEC-DEP-012"),                      # NUL in an include: os.path.realpath raised
    ("git+https://[x]/r.git", "MLSEC-DEP-008"),             # bracketed non-IP host: urlsplit raised
    ("a @ https://u@h:x/a.whl", "MLSEC-DEP-008"),           # non-numeric port: .port raised in redact()
])
def test_odd_requirement_lines_are_findings_not_errors(tmp_path: Path, line: str, rule: str) -> None:
    result = scan_bytes(tmp_path, "requirements.txt", (line + "\n").encode(), use_cache=False)
    assert result.errors == ()
    assert rule in {f.rule_id for f in result.findings}
    assert all("\0" not in f.message for f in result.findings)


def test_arrow_stream_whose_offsets_point_past_the_file_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    """pyarrow trusts IPC offsets: reading a string column through them hit unmapped memory (SIGBUS)."""
    pa = pytest.importorskip("pyarrow", reason="pyarrow (mlsec[data]) reads Arrow content")
    table = pa.table({"s": pa.array(["hello", "world"], type=pa.large_string())})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    offsets = struct.pack("<qqq", 0, 5, 10)
    data = sink.getvalue()
    assert data.count(offsets) == 1
    path = tmp_path / "bad.arrows"
    path.write_bytes(data.replace(offsets, struct.pack("<qqq", 0, 1 << 20, 10)))
    got = _scan_in_child(path)
    assert got["errors"] == []
    assert any(f[0] == "MLSEC-DATA-015" and f[2].get("error") == "ArrowInvalid" for f in got["findings"])


def test_real_dotted_names_still_resolve_step_by_step(tmp_path: Path) -> None:
    """The depth cut-off must not hide the re-export walk on real, short chains."""
    data = b"\x80\x04\x8c\x04uuid\x8c\tos.system\x93\x8c\x02id\x85R."
    result = scan_bytes(tmp_path, "reexport.pkl", data, use_cache=False)
    assert result.max_severity() == Severity.CRITICAL
