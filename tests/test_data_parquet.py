"""Parquet and Arrow IPC: the pickled extension type (CVE-2023-47248) from metadata alone, content.

Hostile files are made here two ways: by pyarrow itself when it is installed (a field whose
metadata declares ``arrow.py_extension_type``; pyarrow 14.0.1+ writes and reads such metadata
without unpickling it), and byte by byte with the small Thrift-compact and FlatBuffers writers
below, so that the metadata check is tested without pyarrow too. The committed fixtures under
``fixtures/data/columnar`` and ``fixtures/data/hf_dataset`` were written by pandas, pyarrow and
datasets.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mlsec.model import ScanResult, Severity
from mlsec.scanners.data_parquet import (
    Malformed,
    SchemaCheck,
    _Thrift,
    check_ipc,
    check_parquet,
    parse_footer,
    safe_pyarrow,
)
from mlsec.scanners.data_text import BUDGET_ENV
from tests.conftest import FIXTURES, installed_worker, scan_bytes, scan_path
from tests.hostile_corpus import varint

COLUMNAR = FIXTURES / "data" / "columnar"
HF = FIXTURES / "data" / "hf_dataset"
# A protocol-2 pickle that calls posix.system('id') when unpickled (never unpickled here).
PAYLOAD = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."
EXT = {b"ARROW:extension:name": b"arrow.py_extension_type", b"ARROW:extension:metadata": PAYLOAD}


# --- a tiny Thrift compact writer ---------------------------------------------------------

def zz(n: int) -> bytes:
    return varint((n << 1) ^ (n >> 63))


I32, I64, BINARY, LIST, STRUCT = 5, 6, 8, 9, 12


def tstruct(fields: list[tuple[int, int, bytes]]) -> bytes:
    out, last = bytearray(), 0
    for fid, ftype, payload in fields:
        delta = fid - last
        out += bytes([delta << 4 | ftype]) if 0 < delta <= 15 else bytes([ftype]) + zz(fid)
        out += payload
        last = fid
    return bytes(out) + b"\x00"


def tlist(etype: int, items: list[bytes]) -> bytes:
    head = bytes([len(items) << 4 | etype]) if len(items) < 15 else bytes([0xF0 | etype]) + varint(len(items))
    return head + b"".join(items)


def tbinary(data: bytes) -> bytes:
    return varint(len(data)) + data


def parquet_file(kv: list[tuple[bytes, bytes]], columns: tuple[str, ...] = ("x",), rows: int = 3) -> bytes:
    schema = [tstruct([(4, BINARY, tbinary(b"schema")), (5, I32, zz(len(columns)))])]
    schema += [tstruct([(1, I32, zz(2)), (4, BINARY, tbinary(c.encode()))]) for c in columns]
    footer = tstruct([
        (1, I32, zz(2)),
        (2, LIST, tlist(STRUCT, schema)),
        (3, I64, zz(rows)),
        (4, LIST, tlist(STRUCT, [])),
        (5, LIST, tlist(STRUCT, [tstruct([(1, BINARY, tbinary(k)), (2, BINARY, tbinary(v))]) for k, v in kv])),
        (6, BINARY, tbinary(b"hand-written by mlsec tests")),
    ])
    return b"PAR1" + footer + struct.pack("<I", len(footer)) + b"PAR1"


# --- a tiny FlatBuffers writer (front to back: every reference points forward) ----------

Writer = Callable[["FB"], int]


class FB:
    def __init__(self) -> None:
        self.buf = bytearray(b"\0\0\0\0")

    def _align(self) -> None:
        self.buf += b"\0" * (-len(self.buf) % 4)

    def table(self, slots: list[tuple[str, object] | None]) -> int:
        """slots[i] = (kind, value): kind u8/i16/i32/i64, or ref (value is a Writer)."""
        self._align()
        vt = len(self.buf)
        self.buf += struct.pack("<HH", 4 + 2 * len(slots), 0) + b"\0\0" * len(slots)
        self._align()
        table = len(self.buf)
        self.buf += struct.pack("<i", table - vt)
        refs = []
        for i, slot in enumerate(slots):
            if slot is None:
                continue
            kind, value = slot
            if kind == "i64":
                self.buf += b"\0" * (-len(self.buf) % 8)
            struct.pack_into("<H", self.buf, vt + 4 + 2 * i, len(self.buf) - table)
            if kind == "ref":
                refs.append((len(self.buf), value))
                self.buf += b"\0\0\0\0"
            else:
                self.buf += struct.pack({"u8": "<B", "i16": "<h", "i32": "<i", "i64": "<q"}[kind], value)
        struct.pack_into("<H", self.buf, vt + 2, len(self.buf) - table)
        for pos, writer in refs:
            child = writer(self)  # type: ignore[operator]
            struct.pack_into("<I", self.buf, pos, child - pos)
        return table

    def string(self, data: bytes) -> int:
        self._align()
        pos = len(self.buf)
        self.buf += struct.pack("<I", len(data)) + data + b"\0"
        return pos

    def vector(self, items: list[Writer]) -> int:
        self._align()
        pos = len(self.buf)
        self.buf += struct.pack("<I", len(items)) + b"\0\0\0\0" * len(items)
        for i, writer in enumerate(items):
            child = writer(self)
            slot = pos + 4 + 4 * i
            struct.pack_into("<I", self.buf, slot, child - slot)
        return pos

    def finish(self, root: int) -> bytes:
        struct.pack_into("<I", self.buf, 0, root)
        self._align()
        return bytes(self.buf)


def kv_table(key: bytes, value: bytes) -> Writer:
    return lambda fb: fb.table([("ref", lambda f: f.string(key)), ("ref", lambda f: f.string(value))])


def field_table(name: str, metadata: dict[bytes, bytes], children: list[Writer] | None = None) -> Writer:
    int64 = ("ref", lambda fb: fb.table([("i32", 64), ("u8", 1)]))
    return lambda fb: fb.table([
        ("ref", lambda f: f.string(name.encode())),
        ("u8", 1),
        ("u8", 13 if children else 2),           # Struct_ or Int
        ("ref", lambda f: f.table([])) if children else int64,
        None,
        ("ref", lambda f: f.vector(children or [])),
        ("ref", lambda f: f.vector([kv_table(k, v) for k, v in metadata.items()])),
    ])


def schema_table(fields: list[Writer], schema_meta: dict[bytes, bytes] | None = None) -> Writer:
    return lambda fb: fb.table([
        ("i16", 0),
        ("ref", lambda f: f.vector(fields)),
        ("ref", lambda f: f.vector([kv_table(k, v) for k, v in (schema_meta or {}).items()])),
    ])


def schema_message(fields: list[Writer], schema_meta: dict[bytes, bytes] | None = None) -> bytes:
    """An encapsulated IPC Schema message (continuation marker, length, flatbuffer)."""
    fb = FB()
    root = fb.table([("i16", 4), ("u8", 1), ("ref", schema_table(fields, schema_meta)), ("i64", 0)])
    body = fb.finish(root)
    body += b"\0" * (-len(body) % 8)
    return b"\xff\xff\xff\xff" + struct.pack("<i", len(body)) + body


EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def arrow_file(stream_fields: list[Writer], footer_fields: list[Writer]) -> bytes:
    """Arrow IPC file: magic, a stream with ``stream_fields``, a footer with ``footer_fields``."""
    fb = FB()
    root = fb.table([("i16", 4), ("ref", schema_table(footer_fields)), ("ref", lambda f: f.vector([])),
                     ("ref", lambda f: f.vector([]))])
    footer = fb.finish(root)
    return b"ARROW1\0\0" + schema_message(stream_fields) + EOS + footer + struct.pack("<i", len(footer)) + b"ARROW1"


def evidence(result: ScanResult, rule: str) -> list[dict[str, str]]:
    return [dict(f.evidence) | {"_member": f.location.member or "", "_sev": f.severity.label}
            for f in result.findings if f.rule_id == rule]


def assert_cve_found(result: ScanResult, field: str) -> None:
    (ext,) = evidence(result, "MLSEC-DATA-001")
    assert ext["field"] == field and ext["_sev"] == "critical"
    assert ext["pickle_bytes"] == str(len(PAYLOAD))
    calls = evidence(result, "MLSEC-PICKLE-001")
    assert calls and calls[0]["global"] == "posix.system"
    assert calls[0]["_member"].endswith(f"{field}!ARROW:extension:metadata")
    assert any(s.code == "unsafe-to-read" for s in result.skipped)
    assert not result.errors


# --- without pyarrow: hand-written metadata ----------------------------------------------

def test_parquet_footer_declaring_the_pickled_type(tmp_path: Path) -> None:
    msg = schema_message([field_table("x", EXT)])
    data = parquet_file([(b"ARROW:schema", base64.b64encode(msg))])
    result = scan_bytes(tmp_path, "evil.parquet", data)
    assert_cve_found(result, "x")
    facts = {f.name: f.value for f in result.facts}
    assert facts["dataset.rows"] == "3" and facts["dataset.columns"] == "1"


def test_nested_field_and_legacy_message_framing(tmp_path: Path) -> None:
    inner = field_table("inner", EXT)
    msg = schema_message([field_table("plain", {}), field_table("outer", {}, [inner])])
    legacy = msg[4:]  # pre-0.15 framing: length first, no continuation marker
    data = parquet_file([(b"ARROW:schema", base64.b64encode(legacy))], columns=("plain", "outer"))
    assert_cve_found(scan_bytes(tmp_path, "nested.parquet", data), "outer.inner")


def test_arrow_stream_and_file_footer(tmp_path: Path) -> None:
    assert_cve_found(scan_bytes(tmp_path, "data-00000-of-00001.arrow",
                                schema_message([field_table("col", EXT)]) + EOS), "col")
    # The stream's schema is clean; the file footer (what pyarrow's file reader uses) is not.
    data = arrow_file([field_table("col", {})], [field_table("col", EXT)])
    result = scan_bytes(tmp_path, "evil.feather", data)
    assert_cve_found(result, "col")
    assert evidence(result, "MLSEC-DATA-001")[0]["source"] == "Arrow file footer"


def test_marker_outside_field_metadata_is_still_reported(tmp_path: Path) -> None:
    msg = schema_message([field_table("x", {})], {b"note": b"arrow.py_extension_type"})
    data = parquet_file([(b"ARROW:schema", base64.b64encode(msg))])
    result = scan_bytes(tmp_path, "odd.parquet", data)
    (ext,) = evidence(result, "MLSEC-DATA-001")
    assert ext["field"] == "(not attributable to a field)"


def test_second_arrow_schema_entry_is_checked_too(tmp_path: Path) -> None:
    clean = base64.b64encode(schema_message([field_table("x", {})]))
    evil = base64.b64encode(schema_message([field_table("x", EXT)]))
    data = parquet_file([(b"ARROW:schema", clean), (b"ARROW:schema", evil)])
    assert_cve_found(scan_bytes(tmp_path, "twice.parquet", data), "x")


def test_clean_hand_written_files_have_no_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as on a machine without the extra
    msg = schema_message([field_table("x", {b"PARQUET:field_id": b"1"})])
    result = scan_bytes(tmp_path, "ok.parquet", parquet_file([(b"ARROW:schema", base64.b64encode(msg))]))
    assert result.findings == () and not result.errors
    (skip,) = result.skipped
    assert skip.code == "optional-dependency" and "pyarrow is not installed" in skip.reason


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("short.parquet", b"PAR1PAR1", "too short"),
        ("nomagic.parquet", b"PAR1" + b"\0" * 20 + b"XXXX", "no PAR1 magic"),
        ("biglen.parquet", b"PAR1" + b"\0" * 20 + struct.pack("<I", 1 << 30) + b"PAR1", "does not fit"),
        ("enc.parquet", b"PAR1" + b"\0" * 20 + struct.pack("<I", 4) + b"PARE", "encrypted footer"),
        ("garbage.parquet", b"PAR1" + b"\xff" * 64 + struct.pack("<I", 64) + b"PAR1", "footer"),
        ("deep.parquet", b"PAR1" + b"\x1c" * 5000 + struct.pack("<I", 5000) + b"PAR1", "nested too deeply"),
        ("badlen.arrow", b"\xff\xff\xff\xff" + struct.pack("<i", 1 << 29) + b"\x10" * 64, "does not fit"),
        ("trunc.arrow", b"ARROW1\0\0\xff\xff\xff\xff\x40\0\0\0" + b"\0" * 16, "truncated"),
    ],
)
def test_malformed_metadata_is_a_finding(tmp_path: Path, name: str, data: bytes, problem: str) -> None:
    result = scan_bytes(tmp_path, name, data)
    assert not result.errors
    messages = [f.message for f in result.findings if f.rule_id == "MLSEC-DATA-015"]
    assert any(problem in m for m in messages), messages


def test_legacy_feather_v1_is_skipped_not_misread(tmp_path: Path) -> None:
    result = scan_bytes(tmp_path, "old.feather", b"FEA1" + b"\0" * 64 + b"FEA1")
    assert result.findings == () and [s.code for s in result.skipped] == ["unsupported-format"]


def test_thrift_reader_limits() -> None:
    with pytest.raises(Malformed):
        parse_footer(b"\x1c" * 5000)  # structs nested 5000 deep
    with pytest.raises(Malformed):
        parse_footer(b"\x19\xfc\xff\xff\xff\x0f")  # a list claiming billions of elements
    t = _Thrift(varint(300) + zz(-5))
    assert t.varint() == 300 and t.zigzag() == -5


def _mutants(data: bytes, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(b))
            b[pos] = rng.randrange(256)
        if rng.random() < 0.3:
            cut = rng.randrange(len(b))
            b = b[:cut] if rng.random() < 0.5 else b[cut:]
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("name", ["sales.parquet", "nested.parquet", "sales.feather", "sales_stream.arrow"])
def test_mutated_real_files_never_crash_the_metadata_readers(name: str, tmp_path: Path) -> None:
    path = COLUMNAR / name
    if not path.exists():
        pytest.skip("fixtures/data/columnar missing (run fixtures/make_data_fixtures.py)")
    data = path.read_bytes()
    for i, blob in enumerate(_mutants(data, 150, seed=len(name))):
        target = tmp_path / f"m{i}"
        target.write_bytes(blob)
        with target.open("rb") as fh:
            check = SchemaCheck()
            if name.endswith(".parquet"):
                check_parquet(fh, len(blob), check)
            else:
                check_ipc(fh, len(blob), check)
        assert all(isinstance(p, str) for p in check.problems)


# --- the committed fixtures (pandas, pyarrow, datasets) ---------------------------------

@pytest.mark.parametrize(("name", "rows", "columns"), [
    ("columnar/sales.parquet", "40", "6"), ("columnar/nested.parquet", "40", "3"),
    ("columnar/sales.feather", "40", "6"), ("columnar/sales_stream.arrow", "40", "6"),
    ("hf_dataset/data-00000-of-00001.arrow", "40", "3"),
])
def test_fixture_metadata_without_pyarrow(name: str, rows: str, columns: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = FIXTURES / "data" / name
    if not path.exists():
        pytest.skip("fixtures/data missing (run fixtures/make_data_fixtures.py)")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    result = scan_path(path)
    assert result.findings == () and not result.errors
    facts = {f.name: f.value for f in result.facts}
    assert (facts["dataset.rows"], facts["dataset.columns"]) == (rows, columns)
    assert facts["dataset.coverage"] == f"bytes 0/{path.stat().st_size}; rows 0/{rows}"
    assert [s.code for s in result.skipped] == ["optional-dependency"]


def test_fixtures_are_clean_with_pyarrow() -> None:
    pytest.importorskip("pyarrow", minversion="14.0.1")
    if not COLUMNAR.is_dir():
        pytest.skip("fixtures/data/columnar missing")
    for path in [*COLUMNAR.iterdir(), HF / "data-00000-of-00001.arrow"]:
        result = scan_path(path)
        assert result.findings == () and not result.skipped and not result.errors, path
        facts = {f.name: f.value for f in result.facts}
        size = path.stat().st_size
        assert facts["dataset.coverage"] == f"bytes {size}/{size}; rows 40/40", path


# --- with pyarrow: files written by the real library ------------------------------------

@pytest.fixture
def pa():  # type: ignore[no-untyped-def]
    return pytest.importorskip("pyarrow", minversion="14.0.1")


def test_pyarrow_written_files_with_the_pickled_type(pa, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq
    from pyarrow import feather

    evil = pa.field("x", pa.int64(), metadata=EXT)
    table = pa.table({"x": [1, 2, 3], "name": ["a", "b", "c"]},
                     schema=pa.schema([evil, pa.field("name", pa.string())]))
    pq.write_table(table, tmp_path / "evil.parquet")
    feather.write_feather(table, tmp_path / "evil.feather")
    with pa.OSFile(str(tmp_path / "evil_stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    nested = pa.schema([pa.field("s", pa.struct([pa.field("inner", pa.int64(), metadata=EXT)]))])
    pq.write_table(pa.table({"s": [{"inner": 1}]}, schema=nested), tmp_path / "nested.parquet")
    for name, field in (("evil.parquet", "x"), ("evil.feather", "x"), ("evil_stream.arrow", "x"),
                        ("nested.parquet", "s.inner")):
        assert_cve_found(scan_path(tmp_path / name), field)


def test_pyarrow_content_is_scanned_per_column(pa, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    n = 1000
    table = pa.table({
        "id": list(range(n)),
        "email": [f"user{i}@mail.example.org" if i % 10 == 0 else "none" for i in range(n)],
        "tags": [["a", "+44 20 7946 0958"] if i % 2 else [] for i in range(n)],
        "meta": [{"card": "4111 1111 1111 1111" if i == 7 else "-", "n": i} for i in range(n)],
        "cat": pa.array(["x", "DE89 3704 0044 0532 0130 00"] * (n // 2)).dictionary_encode(),
    })
    pq.write_table(table, tmp_path / "people.parquet", row_group_size=100)
    result = scan_path(tmp_path / "people.parquet")
    got = {(e["kind"], e["column"]): e["count"] for r in ("MLSEC-DATA-004", "MLSEC-DATA-005")
           for e in evidence(result, r)}
    assert got == {("email", "email"): "100", ("phone", "tags"): "500", ("credit_card", "meta.card"): "1",
                   ("iban", "cat"): "500"}
    facts = {f.name: f.value for f in result.facts}
    assert facts["dataset.sensitive_kinds"] == "credit_card,email,iban,phone"
    assert facts["dataset.rows"] == "1000" and facts["dataset.columns"] == "5"
    assert "user10@mail.example.org" not in str(result.to_dict())


def test_pyarrow_row_groups_are_sampled_above_the_budget(pa, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    n = 200_000
    rng = random.Random(3)
    text = ["".join(rng.choices("abcdefghij ", k=40)) + (f" u{i}@example.org" if i % 1000 == 0 else "")
            for i in range(n)]
    pq.write_table(pa.table({"text": text}), tmp_path / "big.parquet", row_group_size=10_000,
                   compression="none")
    with pa.OSFile(str(tmp_path / "big.arrow"), "wb") as sink, pa.ipc.new_stream(sink, pa.schema(
            [("text", pa.string())])) as w:
        w.write_table(pa.table({"text": text}), max_chunksize=10_000)
    monkeypatch.setenv(BUDGET_ENV, "2")
    for name in ("big.parquet", "big.arrow"):
        result = scan_path(tmp_path / name)
        (sampled,) = evidence(result, "MLSEC-DATA-014")
        rows_part = sampled["coverage"].split("; rows ")[1]
        scanned, total = (int(x) for x in rows_part.split("/"))
        assert total == n and 10_000 <= scanned < n // 2, (name, sampled["coverage"])
        (mails,) = evidence(result, "MLSEC-DATA-005")
        assert 5 <= int(mails["count"]) < 100
        facts = {f.name: f.value for f in result.facts}
        assert facts["dataset.rows"] == str(n)  # exact from the metadata even when sampled
        assert facts["dataset.coverage"] == sampled["coverage"]


def test_only_fixed_pyarrow_versions_may_read_content() -> None:
    assert not safe_pyarrow("13.0.0") and not safe_pyarrow("14.0.0") and not safe_pyarrow("0.14.1")
    assert safe_pyarrow("14.0.1") and safe_pyarrow("26.0.1") and safe_pyarrow("15.0.0.dev123")


def test_the_cve_rule_is_critical() -> None:
    from mlsec import catalog

    assert catalog.rules()["MLSEC-DATA-001"].severity == Severity.CRITICAL


# --- pyarrow runs in an isolated, reused child process (mlsec.engine.arrow_client) -------

@pytest.fixture
def sampler(pa):  # type: ignore[no-untyped-def]
    """A fresh shared Arrow sampler for the test, stopped afterwards (even if left stopped)."""
    from mlsec.engine import arrow_client

    with installed_worker(arrow_client, arrow_client.ArrowSampler()) as fresh:
        yield fresh


def _people(pa, path: Path) -> Path:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"email": ["a@mail.example.org", "x"], "n": [1, 2]}), path)
    return path


def _assert_people(result: ScanResult) -> None:
    assert [(e["kind"], e["count"]) for e in evidence(result, "MLSEC-DATA-005")] == [("email", "1")]
    assert result.errors == () and result.skipped == ()
    assert "a@mail.example.org" not in str(result.to_dict())


def _assert_reaped(pid: int) -> None:
    import os

    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_content_is_sampled_by_one_reused_child_process(pa, sampler, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os

    from mlsec.engine import arrow_client, arrow_worker

    assert sampler.pid is None  # started lazily, on the first file whose content is read
    _assert_people(scan_path(_people(pa, tmp_path / "a.parquet"), use_cache=False))
    pid = sampler.pid
    assert pid is not None and pid != os.getpid() and arrow_client.worker_pid() == pid
    assert sampler.command == arrow_client.default_command()
    assert sampler.command[:2] == (sys.executable, "-I")
    assert sampler.command[-1] == str(Path(arrow_worker.__file__).resolve())
    for path in [*sorted(COLUMNAR.iterdir()), HF / "data-00000-of-00001.arrow"]:
        result = scan_path(path, use_cache=False)
        assert result.findings == () and not result.skipped and not result.errors, path
    _assert_people(scan_path(_people(pa, tmp_path / "b.parquet"), use_cache=False))
    assert sampler.pid == pid and sampler.starts == 1


def test_a_crash_of_the_sampler_is_a_high_finding_and_the_next_file_is_sampled(
        pa, sampler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal
    import threading
    import time

    _assert_people(scan_path(_people(pa, tmp_path / "first.parquet"), use_cache=False))  # starts the child
    pid = sampler.pid
    assert pid is not None
    # The request mlsec builds for the victim is sent with one change made here: it names a
    # FIFO (and the FIFO's identity). The child acknowledges it and blocks in pyarrow's open of
    # the FIFO, i.e. inside the file's handling, where pyarrow would crash, when it is killed.
    victim = _people(pa, tmp_path / "victim.parquet")
    fifo = tmp_path / "blocks"
    os.mkfifo(fifo)
    st = os.stat(fifo)
    real_sample = sampler.sample
    monkeypatch.setattr(sampler, "sample", lambda request, timeout: real_sample(
        {**request, "path": str(fifo), "dev": st.st_dev, "ino": st.st_ino}, timeout))
    results: list[ScanResult] = []
    scan = threading.Thread(target=lambda: results.append(scan_path(victim, use_cache=False)))
    scan.start()
    deadline = time.monotonic() + 20
    while not sampler.busy:
        assert time.monotonic() < deadline, "the child never took the request"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    scan.join(30)
    assert not scan.is_alive()
    monkeypatch.undo()
    (result,) = results
    (f,) = result.findings
    assert f.rule_id == "MLSEC-DATA-016" and f.severity == Severity.HIGH and "SIGKILL" in f.message
    assert f.path.endswith("victim.parquet") and dict(f.evidence)["outcome"] == "was killed by signal SIGKILL"
    assert result.errors == () and result.skipped == ()
    facts = {x.name: x.value for x in result.facts}
    assert facts["dataset.rows"] == "2" and facts["dataset.columns"] == "2"  # the schema check still ran
    _assert_reaped(pid)
    # the next file gets a new child and its content is sampled as usual
    _assert_people(scan_path(_people(pa, tmp_path / "next.parquet"), use_cache=False))
    assert sampler.pid not in (None, pid) and sampler.starts == 2


def test_a_sampler_that_hangs_is_killed_at_the_timeout(pa, sampler, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import time

    from mlsec.engine import arrow_client

    _assert_people(scan_path(_people(pa, tmp_path / "first.parquet"), use_cache=False))
    pid = sampler.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a child that never answers, as if pyarrow looped on the file
    monkeypatch.setattr(arrow_client, "REQUEST_TIMEOUT", 0.5)
    started = time.monotonic()
    result = scan_path(_people(pa, tmp_path / "hangs.parquet"), use_cache=False)
    assert 0.5 <= time.monotonic() - started < 10
    (f,) = result.findings
    assert f.rule_id == "MLSEC-SCAN-001" and "no answer within 0.5s" in f.message and result.errors == ()
    assert dict(f.evidence)["transient"] == "true"
    _assert_reaped(pid)
    monkeypatch.undo()
    _assert_people(scan_path(_people(pa, tmp_path / "next.parquet"), use_cache=False))
    assert sampler.pid not in (None, pid) and sampler.starts == 2


def test_results_cross_the_process_boundary_unchanged_and_masked(pa, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """In-process sampling (the functions the child runs) and the child's answer give the same report."""
    from mlsec.engine.context import Inspection
    from mlsec.scanners.data_parquet import (
        coverage_from_json,
        coverage_to_json,
        sample_parquet,
        tally_from_json,
        tally_to_json,
    )
    from mlsec.scanners.data_text import Coverage, Tally

    path = _people(pa, tmp_path / "p.parquet")
    tally, cov = Tally(), Coverage(bytes_total=path.stat().st_size)
    sample_parquet(str(path), 1 << 30, tally, cov, Inspection(path=str(path), scanner="t"))
    wire = json.loads(json.dumps({"t": tally_to_json(tally), "c": coverage_to_json(cov)}))
    assert "a@mail.example.org" not in json.dumps(wire)
    tally2, cov2 = Tally(), Coverage()
    tally_from_json(wire["t"], tally2)
    coverage_from_json(wire["c"], cov2)
    assert tally2.stats == tally.stats and cov2 == cov
    assert tally2.findings("p", "s", cov2) == tally.findings("p", "s", cov)
    for bad in ([["pii", "nope", "c", 1, None, [], []]], [["pii", "email", "c", 0, None, [], []]], {"x": 1}):
        with pytest.raises((ValueError, TypeError)):
            tally_from_json(bad, Tally())
