"""Resource bounds (issue #10): member counts, memo sizes, declared lengths, files that change
or are not regular files, permissions and odd member names.

What is already covered elsewhere is not repeated here: decompression bombs, gzip/zip nesting,
deep pickles and the opcode limit (test_hostile.py), symlink loops, FIFOs met by discovery,
chmod 0 for non-root users and non-UTF-8 file names (test_discover.py), and huge declared sizes
of .npy v2 headers, BINBYTES8, long lines and zip local headers (test_robustness.py,
test_engine.py, test_formats_malformed.py).

Every sample is built from bytes here; nothing is ever unpickled. Timings are only hang guards
(generous bounds); speed targets do not belong in tests.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import io
import json
import os
import pickle
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mlsec.engine.context import Limits
from mlsec.model import ScanResult, Severity
from mlsec.pipeline import Options, Progress, run
from mlsec.report import renderer
from tests.conftest import REPO, rules_of, scan_bytes, scan_path
from tests.hostile_corpus import npy_header

# ---------------------------------------------------------------------------------------------
# Samples and helpers
# ---------------------------------------------------------------------------------------------

# posix.system('id'), hand-written (protocol 2 GLOBAL + REDUCE): the same bytes on every OS.
HOSTILE_BODY = b"cposix\nsystem\n(Vid\ntR"
HOSTILE = b"\x80\x02" + HOSTILE_BODY + b"."
BENIGN = pickle.dumps({"weights": [1.0, 2.0]}, protocol=2)
SYSTEM = "posix.system"


def critical(result: ScanResult, path: str) -> list[str]:
    """Members (or "" for the file itself) of ``path`` where posix.system is reported CRITICAL."""
    return [f.location.member or "" for f in result.findings
            if f.path == path and f.severity == Severity.CRITICAL and f.rule_id == "MLSEC-PICKLE-001"
            and dict(f.evidence).get("global") == SYSTEM]


def reported_paths(result: ScanResult) -> list[str]:
    """Every path the result accounts for (scanned or skipped), with repetitions."""
    return [a.path for a in result.artifacts] + [s.path for s in result.skipped]


def json_report(result: ScanResult) -> dict[str, Any]:
    """The JSON report, as bytes a consumer would read: strict UTF-8, then parsed."""
    text = renderer("json")(result, Severity.INFO)
    doc: dict[str, Any] = json.loads(text.encode("utf-8").decode("utf-8"))
    return doc


def raw_zip(members: Sequence[tuple[bytes, bytes]], *, flags: int = 0) -> bytes:
    """A stored zip written header by header, so member names can be any bytes."""
    body, central = b"", b""
    for name, data in members:
        crc = zlib.crc32(data)
        offset = len(body)
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, 0, 0, 0x21, crc, len(data), len(data),
                            len(name), 0) + name + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, 0, 0, 0x21, crc, len(data),
                               len(data), len(name), 0, 0, 0, 0, 0, offset) + name
    n = len(members)
    return body + central + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), len(body), 0)


def many_member_zip(count: int) -> bytes:
    """A valid zip64 archive with ``count`` central-directory entries named ``a``.

    Every entry points at the one (empty, stored) local header, so the file is 47 bytes per
    entry and builds with one multiplication; Python's zipfile lists all ``count`` entries.
    """
    name = b"a"
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0) + name
    entry = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, 0, 0, 0, len(name),
                        0, 0, 0, 0, 0, 0) + name
    cd_size, cd_offset = len(entry) * count, len(local)
    z64_offset = cd_offset + cd_size
    z64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_offset, 1)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + entry * count + z64 + locator + eocd


def tar_header(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type = size, 0, kind
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def tar_member(name: str, data: bytes) -> bytes:
    return tar_header(name, len(data)) + data + b"\0" * (-len(data) % 512)


def warm_up(tmp_path: Path) -> None:
    """Import every scanner once, so that hang guards do not measure first-use imports."""
    warm = tmp_path / "warm-up"
    warm.mkdir(exist_ok=True)
    (warm / "w.pkl").write_bytes(BENIGN)
    scan_path(warm, use_cache=False)


def release_fifo(path: Path) -> bool:
    """Open the write end of a FIFO without blocking: True when a reader was waiting on it.

    Opening and closing the write end gives the waiting reader end-of-file, which unblocks it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody has the FIFO open for reading
        return False
    os.close(fd)
    return True


def scan_in_thread(paths: Sequence[Path], options: Options, *, fifos: Sequence[Path] = (), patience: float = 2.0,
                   on_progress: Progress | None = None, setup: Callable[[], None] | None = None,
                   ) -> tuple[ScanResult | None, bool, BaseException | None]:
    """Run the pipeline in a thread: (result, blocked, exception).

    ``blocked`` is True when the scan had not finished after ``patience`` seconds (a warm scan
    of a few small files takes milliseconds). A scan blocked on one of ``fifos`` is then
    released (again and again, each time it reopens them) so that the test can finish and
    report what it saw, instead of hanging the suite.
    """
    out: dict[str, object] = {}

    def target() -> None:
        try:
            if setup is not None:
                setup()
            out["result"] = run([str(p) for p in paths], options, on_progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, name="mlsec-scan", daemon=True)
    thread.start()
    thread.join(patience)
    blocked = thread.is_alive()
    deadline = time.monotonic() + 20
    while thread.is_alive() and time.monotonic() < deadline:
        for fifo in fifos:
            release_fifo(fifo)
        thread.join(0.02)
    assert not thread.is_alive(), "the scan is stuck even after its FIFOs were released"
    result = out.get("result")
    error = out.get("error")
    return (result if isinstance(result, ScanResult) else None, blocked,
            error if isinstance(error, BaseException) else None)


# ---------------------------------------------------------------------------------------------
# 1. Zip archives with a million members, and zips that lie about their entry count
# ---------------------------------------------------------------------------------------------

MILLION = 1_000_000


@pytest.fixture(scope="module")
def million_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a 47 MB zip of 10^6 entries and a hostile pickle beside it."""
    directory = tmp_path_factory.mktemp("million")
    data = many_member_zip(MILLION)
    assert len(data) < 80 << 20
    (directory / "many.zip").write_bytes(data)
    (directory / "evil.pkl").write_bytes(HOSTILE)
    return directory


def test_many_member_zip_is_a_real_zip() -> None:
    # The builder writes what Python's zipfile accepts (checked on a small count: listing 10^6 is slow).
    with zipfile.ZipFile(io.BytesIO(many_member_zip(1000))) as zf:
        assert len(zf.infolist()) == 1000 and zf.read(zf.infolist()[-1]) == b""


def test_zip_with_a_million_members_reports_the_member_limit(million_zip: Path) -> None:
    started = time.monotonic()
    result = scan_path(million_zip, use_cache=False)
    assert time.monotonic() - started < 60  # hang guard only
    assert result.errors == ()
    limit = [f for f in result.findings if f.rule_id == "MLSEC-ARCHIVE-004" and f.path == "many.zip"]
    assert len(limit) == 1, rules_of(result)
    assert f"more than {Limits().max_members} entries" in limit[0].message
    assert limit[0].severity >= Severity.MEDIUM
    # One finding per problem, not one per entry: the duplicate name is reported once.
    assert len([f for f in result.findings if f.path == "many.zip"]) <= 3
    assert critical(result, "evil.pkl") == [""]
    assert sorted(reported_paths(result)) == ["evil.pkl", "many.zip"]


_PEAK_CHILD = """
import sys
from mlsec.engine import dispatch
from mlsec.engine.context import Limits
from mlsec.pipeline import Options, run
from mlsec.registry import scanners

def status_mb(field):  # VmRSS now / VmHWM peak of this process (ru_maxrss would include the parent's)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024

scanners(), dispatch.formats()
before = status_mb("VmRSS")
result = run([sys.argv[1]], Options(use_cache=False, limits=Limits(max_members=int(sys.argv[2]))))
print(round(status_mb("VmHWM") - before), len(result.errors), " ".join(sorted({f.rule_id for f in result.findings})))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to measure memory")
def test_member_limit_bounds_the_memory_of_the_central_directory(million_zip: Path, tmp_path: Path) -> None:
    # max_members=100: reading 10^6 entries to keep 100 is work and memory the limit should save.
    # A 2 GB central directory (allowed by the reader) is ~46 million entries, i.e. many GB of
    # Python objects: one file could then take the whole scan down. Reading the directory bytes
    # themselves (47 MB here) is tolerated by the bound below; one object per entry is not.
    zip_path = million_zip / "many.zip"
    env = {**os.environ, "MLSEC_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(zip_path), "100"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120, check=True)
    grown, errors, rules = proc.stdout.split(maxsplit=2)
    assert int(errors) == 0 and "MLSEC-ARCHIVE-004" in rules
    assert int(grown) < 2 * zip_path.stat().st_size / 2**20, f"peak memory grew by {grown} MB"


def _lying_zips() -> dict[str, bytes]:
    """Two-entry zips (benign first, hostile second) whose end records claim other counts/sizes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model/version", b"3\n")
        zf.writestr("model/evil.pkl", HOSTILE)
    real = buf.getvalue()
    end = real.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", real, end + 12)
    body = real[:end]

    def eocd(count: int, size: int, offset: int) -> bytes:
        return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, size, offset, 0)

    def zip64(count: int, size: int, offset: int, record_at: int | None = None) -> bytes:
        record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
        locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, len(body) if record_at is None else record_at, 1)
        return record + locator + eocd(0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)

    return {
        "claims-65535": body + eocd(0xFFFF, cd_size, cd_offset),
        "claims-1": body + eocd(1, cd_size, cd_offset),
        "zip64-claims-million": body + zip64(MILLION, cd_size, cd_offset),
        "zip64-claims-2^64-1": body + zip64(2**64 - 1, cd_size, cd_offset),
        "zip64-cd-size-2^40": body + zip64(2, 1 << 40, cd_offset),
        "zip64-cd-offset-2^63": body + zip64(2, cd_size, 1 << 63),
        "zip64-record-at-2^63": body + zip64(2, cd_size, cd_offset, record_at=1 << 63),
        "cd-size-4GiB": body + eocd(2, 0xFFFFFFF0, cd_offset),
    }


@pytest.mark.parametrize("case", list(_lying_zips()))
def test_zip_end_record_that_lies_about_its_entries_is_bounded(tmp_path: Path, case: str) -> None:
    data = _lying_zips()[case]
    started = time.monotonic()
    result = scan_bytes(tmp_path, "model.zip", data, use_cache=False)
    assert time.monotonic() - started < 30  # hang guard only
    assert result.errors == ()
    # Whatever the end record claims, the entries that are there are read.
    assert critical(result, "model.zip") == ["model/evil.pkl"], [(f.rule_id, f.message) for f in result.findings]
    if case.startswith(("zip64-cd", "zip64-record", "cd-size")):
        assert "MLSEC-ARCHIVE-002" in rules_of(result)  # no usable central directory: said so


# ---------------------------------------------------------------------------------------------
# 2. Tar archives with many members
# ---------------------------------------------------------------------------------------------


def test_tar_member_limit_is_reported_and_members_before_it_are_inspected(tmp_path: Path) -> None:
    count = 5000
    members = [tar_member("first.pkl", HOSTILE)]
    members += [tar_header(f"m{i}.bin") for i in range(count - 2)]
    members += [tar_member("last.pkl", HOSTILE)]  # beyond the limit: not inspected, but the limit says so
    data = b"".join(members) + b"\0" * 1024
    (tmp_path / "evil.pkl").write_bytes(HOSTILE)
    (tmp_path / "many.tar").write_bytes(data)
    result = scan_path(tmp_path, limits=Limits(max_members=1000), use_cache=False)
    assert result.errors == ()
    limit = [f for f in result.findings if f.rule_id == "MLSEC-ARCHIVE-004" and f.path == "many.tar"]
    assert len(limit) == 1 and "more than 1000 members" in limit[0].message
    assert critical(result, "many.tar") == ["first.pkl"]
    assert critical(result, "evil.pkl") == [""]


def test_compressed_tar_with_100k_members_hits_the_default_limit(tmp_path: Path) -> None:
    # 100,001 directory entries: 51 MB of tar headers, 0.5 MB once gzipped (not a ratio bomb).
    count = Limits().max_members + 1
    data = gzip.compress(tar_header("d/", kind=tarfile.DIRTYPE) * count + b"\0" * 1024, compresslevel=1, mtime=0)
    assert len(data) < 2 << 20
    (tmp_path / "evil.pkl").write_bytes(HOSTILE)
    (tmp_path / "dirs.tar.gz").write_bytes(data)
    started = time.monotonic()
    result = scan_path(tmp_path, use_cache=False)
    assert time.monotonic() - started < 60  # hang guard only
    assert result.errors == ()
    limit = [f for f in result.findings if f.rule_id == "MLSEC-ARCHIVE-004" and f.path == "dirs.tar.gz"]
    assert len(limit) == 1 and f"more than {Limits().max_members} members" in limit[0].message
    assert "MLSEC-ARCHIVE-001" not in rules_of(result)
    assert critical(result, "evil.pkl") == [""]


# ---------------------------------------------------------------------------------------------
# 3. Pickle memo: huge indices, a million entries
# ---------------------------------------------------------------------------------------------


def test_a_million_memo_entries_is_a_limit_finding(tmp_path: Path) -> None:
    # The call comes first; then MEMOIZE one more time than the default memo limit allows.
    data = b"\x80\x04" + HOSTILE_BODY + b"\x94" * (Limits().max_memo + 1) + b"."
    started = time.monotonic()
    result = scan_bytes(tmp_path, "memo.pkl", data, use_cache=False)
    assert time.monotonic() - started < 30  # hang guard only
    assert result.errors == ()
    limit = [f for f in result.findings if f.rule_id == "MLSEC-PICKLE-009"]
    assert limit and f"more than {Limits().max_memo} memo entries" in limit[0].message
    assert critical(result, "memo.pkl") == [""]


def test_sparse_huge_memo_indices_count_against_the_limit(tmp_path: Path) -> None:
    # LONG_BINPUT at indices spread over the whole 32-bit range: a dense table would be 4 G slots.
    n = 20_000
    puts = b"".join(b"r" + struct.pack("<I", 0xFFFFFFFF - i * 214_741) for i in range(n + 1))
    data = b"\x80\x02" + HOSTILE_BODY + puts + b"."
    result = scan_bytes(tmp_path, "sparse.pkl", data, limits=Limits(max_memo=n), use_cache=False)
    assert result.errors == ()
    assert any(f.rule_id == "MLSEC-PICKLE-009" and f"more than {n} memo entries" in f.message for f in result.findings)
    assert critical(result, "sparse.pkl") == [""]


def test_long_binget_of_a_huge_index_never_put_is_damage(tmp_path: Path) -> None:
    data = b"\x80\x02" + HOSTILE_BODY + b"j\xff\xff\xff\xff."
    result = scan_bytes(tmp_path, "get.pkl", data, use_cache=False)
    damage = [f for f in result.findings if f.rule_id == "MLSEC-PICKLE-005"]
    assert damage and "memo index 4294967295" in damage[0].message
    assert critical(result, "get.pkl") == [""]


def test_text_memo_opcodes_with_huge_decimal_indices(tmp_path: Path) -> None:
    big = b"9" * 4000  # an index far beyond 64 bits, but a line the engine accepts
    through_memo = b"\x80\x02cposix\nsystem\np" + big + b"\n0g" + big + b"\n(Vid\ntR."
    result = scan_bytes(tmp_path, "big-index.pkl", through_memo, use_cache=False)
    assert result.errors == () and "MLSEC-PICKLE-005" not in rules_of(result)
    assert critical(result, "big-index.pkl") == [""]  # the call through the memo is still attributed
    too_long = b"\x80\x02cposix\nsystem\np" + b"9" * 100_000 + b"\n."
    result = scan_bytes(tmp_path, "long-index.pkl", too_long, use_cache=False)
    damage = [f.message for f in result.findings if f.rule_id == "MLSEC-PICKLE-005"]
    assert damage and "longer than" in damage[0], damage
    assert "posix.system" in {dict(f.evidence).get("global") for f in result.findings}


# ---------------------------------------------------------------------------------------------
# 4. Multi-GB declared lengths not covered elsewhere
# ---------------------------------------------------------------------------------------------

_Q = struct.Struct("<Q").pack
_I = struct.Struct("<I").pack


DECLARED: dict[str, tuple[bytes, str, str]] = {
    # name: (bytes, rule, message fragment)
    "st-2^40.safetensors": (_Q(1 << 40) + b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
                            "MLSEC-SAFETENSORS-001", "1099511627776 is impossible"),
    "unicode8.pkl": (b"\x80\x04" + HOSTILE_BODY + b"0\x8d" + _Q(1 << 60) + b"abc", "MLSEC-PICKLE-005",
                     "BINUNICODE8 of 1152921504606846976 bytes runs past the end"),
    "bytearray8.pkl": (b"\x80\x05" + HOSTILE_BODY + b"0\x96" + _Q(1 << 60) + b"abc", "MLSEC-PICKLE-005",
                       "BYTEARRAY8 of 1152921504606846976 bytes runs past the end"),
    "binunicode.pkl": (b"\x80\x03" + HOSTILE_BODY + b"0X" + _I(0xFFFFFFFF) + b"abc", "MLSEC-PICKLE-005",
                       "BINUNICODE of 4294967295 bytes runs past the end"),
    "long4.pkl": (b"\x80\x02" + HOSTILE_BODY + b"0\x8b" + struct.pack("<i", 2**31 - 1) + b"abc", "MLSEC-PICKLE-005",
                  "LONG4 of 2147483647 bytes runs past the end"),
    "binstring.pkl": (b"\x80\x01" + HOSTILE_BODY + b"0T" + struct.pack("<i", 2**31 - 1) + b"abc", "MLSEC-PICKLE-005",
                      "BINSTRING of 2147483647 bytes runs past the end"),
    # Inside a compressed stream the remaining length is unknown: the reader must skip, not buffer.
    "unicode8.pkl.gz": (gzip.compress(b"\x80\x04" + HOSTILE_BODY + b"0\x8d" + _Q(1 << 60) + b"\0" * (4 << 20), mtime=0),
                        "MLSEC-PICKLE-005", "truncated BINUNICODE8"),
    "bytes8.pkl.gz": (gzip.compress(b"\x80\x04" + HOSTILE_BODY + b"0\x8e" + _Q(1 << 60) + b"\0" * (4 << 20), mtime=0),
                      "MLSEC-PICKLE-005", "truncated BINBYTES8"),
    "long4.pkl.gz": (gzip.compress(b"\x80\x02" + HOSTILE_BODY + b"0\x8b" + struct.pack("<i", 2**31 - 1)
                                   + b"\0" * (4 << 20), mtime=0), "MLSEC-PICKLE-005", "truncated LONG4"),
    "v3-header.npy": (b"\x93NUMPY\x03\x00" + _I(0xFFFFFFFF) + b"{", "MLSEC-NUMPY-002",
                      "header of 4294967295 bytes"),
    "shape-2^60.npy.gz": (gzip.compress(npy_header("<f8", (1 << 60,)) + b"\0" * (4 << 20), mtime=0),
                          "MLSEC-NUMPY-002", "data truncated"),
}


@pytest.mark.parametrize("name", list(DECLARED))
def test_huge_declared_lengths_are_findings(tmp_path: Path, name: str) -> None:
    data, rule, fragment = DECLARED[name]
    started = time.monotonic()
    result = scan_bytes(tmp_path, name, data, use_cache=False)
    assert time.monotonic() - started < 30  # hang guard only
    assert result.errors == ()
    messages = [f.message for f in result.findings if f.rule_id == rule]
    assert any(fragment in m for m in messages), [(f.rule_id, f.message) for f in result.findings]
    if name.endswith((".pkl", ".pkl.gz")):
        assert len(critical(result, name)) == 1  # the call before the bad length is still reported


# ---------------------------------------------------------------------------------------------
# 5. Files that change while they are read
# ---------------------------------------------------------------------------------------------


def _big_torch_zip(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", BENIGN)
        zf.writestr("archive/data/0", b"\0" * size)
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def test_file_rewritten_truncated_and_grown_during_the_scan(tmp_path: Path) -> None:
    """A 50 MB checkpoint is truncated, regrown and appended to while it is hashed and read.

    Which bytes each read sees depends on the race; what must hold whichever way it goes: the
    scan returns, no scanner fails (the only error allowed is the pipeline's own record that the
    file changed under it), the file is accounted for once, its neighbour is still reported
    CRITICAL, and the report is valid JSON.
    """
    content = _big_torch_zip(50 << 20)
    big = tmp_path / "model.pt"
    big.write_bytes(content)
    (tmp_path / "evil.pkl").write_bytes(HOSTILE)
    stop = threading.Event()
    changes = [0]

    def churn() -> None:
        step = 0
        while not stop.is_set():
            action = step % 4
            if action == 0:
                os.truncate(big, 0)
            elif action == 1:
                os.truncate(big, len(content) // 3)
            elif action == 2:
                with open(big, "ab") as fh:
                    fh.write(b"PK\x03\x04" + os.urandom(1 << 20))
            else:
                big.write_bytes(content)
            changes[0] += 1
            step += 1
            time.sleep(0.002)

    writer = threading.Thread(target=churn, daemon=True)
    writer.start()
    results: list[ScanResult] = []
    raced = 0  # scans during which the file changed at least once
    deadline = time.monotonic() + 15
    try:
        while (raced < 3 or len(results) < 4) and time.monotonic() < deadline:
            before = changes[0]
            results.append(scan_path(tmp_path, use_cache=False))
            raced += changes[0] > before
    finally:
        stop.set()
        writer.join(10)
    assert raced >= 3, f"the file changed during only {raced} of {len(results)} scans"
    for result in results:
        for error in result.errors:  # "changed while it was being scanned", never a scanner failure
            assert (error.path, error.scanner) == ("model.pt", "pipeline") and "changed" in error.message, error
        assert sorted(a.path for a in result.artifacts) == ["evil.pkl", "model.pt"]  # each file once
        assert {s.path for s in result.skipped} <= {"model.pt"}  # e.g. a skip saying that it changed
        assert critical(result, "evil.pkl") == [""]
        assert not critical(result, "model.pt")  # benign in every state it was in
        for artifact in result.artifacts:
            hashed = len(artifact.sha256) == 64 and int(artifact.sha256, 16) >= 0
            assert hashed or (artifact.sha256 == "" and any(s.path == artifact.path for s in result.skipped))
        json_report(result)


def _change_after_hashing(monkeypatch: pytest.MonkeyPatch, target: Path, change: Callable[[Path], object]) -> None:
    """Make ``change`` happen to ``target`` right after mlsec hashed it (once): a deterministic race."""
    import mlsec.hashing

    real = mlsec.hashing.sha256_file
    done: list[bool] = []

    def hashed_then_changed(path: str) -> str:
        digest = real(path)
        if not done and Path(path) == target:
            done.append(True)
            change(target)
        return digest

    monkeypatch.setattr(mlsec.hashing, "sha256_file", hashed_then_changed)


@pytest.mark.parametrize("change", ["replaced-by-benign", "truncated"])
def test_file_changed_between_hash_and_scan_is_reported_and_never_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    model = tmp_path / "model.pkl"
    model.write_bytes(HOSTILE)
    hostile_sha = hashlib.sha256(HOSTILE).hexdigest()
    if change == "replaced-by-benign":
        _change_after_hashing(monkeypatch, model, lambda p: p.write_bytes(BENIGN))
    else:
        _change_after_hashing(monkeypatch, model, lambda p: os.truncate(p, 0))
    first = scan_path(tmp_path)  # with the result cache, as the CLI runs by default
    artifact = first.artifacts[0]
    told = ([s.reason for s in first.skipped if s.path == "model.pkl"]
            + [e.message for e in first.errors if e.path == "model.pkl"]
            + [f.message for f in first.findings if f.path == "model.pkl" and "chang" in f.message.lower()])
    # Either the digest describes the bytes that were scanned, or the report says they differ.
    assert artifact.sha256 != hostile_sha or critical(first, "model.pkl") or told, (
        "the hostile file's hash was reported with the findings of other bytes, and nothing says so")
    # The same hostile bytes, scanned again: never answered from what the other bytes gave.
    monkeypatch.undo()
    model.write_bytes(HOSTILE)
    second = scan_path(tmp_path)
    assert second.artifacts[0].sha256 == hostile_sha
    assert critical(second, "model.pkl") == [""], "hostile file reported clean from the result cache"


# ---------------------------------------------------------------------------------------------
# 6. Device files, sockets and FIFOs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_device_given_as_a_path_is_skipped_not_read(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    started = time.monotonic()
    result = run([device], Options(use_cache=False))
    assert time.monotonic() - started < 30  # /dev/zero never ends: only a skip can finish
    assert result.artifacts == () and result.errors == ()
    assert [(s.path, s.code) for s in result.skipped] == [(Path(device).name, "special-file")]
    assert "not a regular file" in result.skipped[0].reason


def test_device_links_and_a_socket_in_a_tree_are_skipped_and_siblings_scanned(tmp_path: Path) -> None:
    links = {"zero.pkl": "/dev/zero", "random.bin": "/dev/urandom", "null.pt": "/dev/null"}
    for name, device in links.items():
        (tmp_path / name).symlink_to(device)
    (tmp_path / "evil.pkl").write_bytes(HOSTILE)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp_path / "listener.pkl"))
        assert stat.S_ISSOCK(os.lstat(tmp_path / "listener.pkl").st_mode)
        started = time.monotonic()
        result = scan_path(tmp_path, use_cache=False)
        assert time.monotonic() - started < 30
    finally:
        sock.close()
    assert result.errors == ()
    skips = {s.path: s for s in result.skipped}
    assert sorted(skips) == sorted([*links, "listener.pkl"])
    assert all(s.code == "special-file" and "not a regular file" in s.reason for s in skips.values())
    assert [a.path for a in result.artifacts] == ["evil.pkl"]
    assert critical(result, "evil.pkl") == [""]


def test_device_link_as_a_dataset_card_is_read_boundedly(tmp_path: Path) -> None:
    # Scanners that read a neighbour (here the dataset-directory checks reading README.md) must
    # not read a device forever either.
    warm_up(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "README.md").symlink_to("/dev/zero")
    (data / "dataset_info.json").write_text('{"description": "x"}')
    (data / "evil.pkl").write_bytes(HOSTILE)
    result, blocked, error = scan_in_thread([data], Options(use_cache=False), patience=20)
    assert error is None and not blocked and result is not None
    assert result.errors == ()
    assert [(s.path, s.code) for s in result.skipped] == [("README.md", "special-file")]
    assert critical(result, "evil.pkl") == [""]


def test_fifo_dataset_card_next_to_dataset_info_does_not_block(tmp_path: Path) -> None:
    warm_up(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    fifo = data / "README.md"
    os.mkfifo(fifo)
    (data / "dataset_info.json").write_text('{"description": "x"}')
    (data / "evil.pkl").write_bytes(HOSTILE)
    result, blocked, error = scan_in_thread([data], Options(use_cache=False), fifos=[fifo])
    assert error is None and result is not None
    assert [(s.path, s.code) for s in result.skipped] == [("README.md", "special-file")]
    assert critical(result, "evil.pkl") == [""]
    assert not blocked, "the scan waited for a writer on the README.md FIFO"


def test_regular_file_replaced_by_a_fifo_after_discovery_is_not_waited_on(tmp_path: Path) -> None:
    warm_up(tmp_path)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.pkl").write_bytes(BENIGN)
    swapped = tree / "b.pkl"
    swapped.write_bytes(BENIGN)
    (tree / "evil.pkl").write_bytes(HOSTILE)

    def swap_after_first(done: int, total: int, path: str) -> None:
        if path == "a.pkl":  # b.pkl was a regular file when discovered; now it is a FIFO
            swapped.unlink()
            os.mkfifo(swapped)

    result, blocked, error = scan_in_thread([tree], Options(use_cache=False), fifos=[swapped],
                                            on_progress=swap_after_first)
    assert error is None and result is not None
    assert critical(result, "evil.pkl") == [""]
    told = [s for s in result.skipped if s.path == "b.pkl"] + [e for e in result.errors if e.path == "b.pkl"]
    assert told, "b.pkl was scanned as if it were a regular file"
    assert not blocked, "the scan waited for a writer on a FIFO that replaced a scanned file"


# ---------------------------------------------------------------------------------------------
# 7. Permission denied
# ---------------------------------------------------------------------------------------------

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_file_permission_override() -> None:
    """In the calling thread only, lose root's right to ignore file permissions.

    Linux credentials are per thread and capset(2) changes the calling thread's, so the scan
    thread behaves like an ordinary user for permission checks (open, and access(2), which for
    uid 0 uses the permitted set) while the rest of the test process keeps its rights.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    mask = ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & mask)
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _unprivileged_scan(tmp_path: Path, paths: Sequence[Path], options: Options,
                       on_progress: Progress | None = None) -> ScanResult:
    """Scan as a user that file permissions apply to (dropping root's override when needed)."""
    if sys.platform != "linux" or not hasattr(os, "geteuid"):
        pytest.skip("permission tests need Linux")
    root = os.geteuid() == 0
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    unusable: list[str] = []  # why permissions cannot be tested here, if they cannot

    def setup() -> None:
        if root:
            try:
                _drop_file_permission_override()
            except (OSError, AttributeError) as exc:
                unusable.append(f"running as root and cannot drop the file-permission override: {exc}")
                raise
        try:
            probe.read_bytes()
        except PermissionError:
            return
        unusable.append("a chmod 0 file stays readable to this user, so permission errors cannot be produced")
        raise RuntimeError(unusable[0])

    result, blocked, error = scan_in_thread(paths, options, on_progress=on_progress, setup=setup, patience=30)
    if unusable:
        pytest.skip(unusable[0])
    assert error is None and not blocked and result is not None, error
    return result


def test_unreadable_zip_and_directory_beside_a_hostile_pickle(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    locked = tree / "model.zip"
    locked.write_bytes(raw_zip([(b"data.pkl", HOSTILE)]))
    locked.chmod(0)
    closed = tree / "closed"
    closed.mkdir()
    (closed / "inner.pkl").write_bytes(HOSTILE)
    closed.chmod(0)
    (tree / "evil.pkl").write_bytes(HOSTILE)
    try:
        result = _unprivileged_scan(tmp_path, [tree], Options(use_cache=False))
    finally:
        closed.chmod(0o700)
        locked.chmod(0o600)
    assert result.errors == ()
    skips = {s.path: s.code for s in result.skipped}
    assert skips == {"model.zip": "unreadable", "closed": "unreadable"}
    assert critical(result, "evil.pkl") == [""]
    assert [a.path for a in result.artifacts] == ["evil.pkl"]


def test_scan_root_that_cannot_be_listed_is_reported(tmp_path: Path) -> None:
    """os.walk only tells its onerror callback; a root folder it cannot list must not vanish."""
    closed = tmp_path / "closed"
    closed.mkdir()
    (closed / "inner.pkl").write_bytes(HOSTILE)
    closed.chmod(0)
    try:
        result = _unprivileged_scan(tmp_path, [closed], Options(use_cache=False))
    finally:
        closed.chmod(0o700)
    assert result.errors == () and result.artifacts == ()
    assert [(s.code, "cannot be listed" in s.reason) for s in result.skipped] == [("unreadable", True)]


def test_file_made_unreadable_after_discovery_is_skipped(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.pkl").write_bytes(BENIGN)
    later = tree / "b.zip"
    later.write_bytes(raw_zip([(b"data.pkl", HOSTILE)]))
    (tree / "evil.pkl").write_bytes(HOSTILE)

    def lock_after_first(done: int, total: int, path: str) -> None:
        if path == "a.pkl":
            later.chmod(0)

    try:
        result = _unprivileged_scan(tmp_path, [tree], Options(use_cache=False), on_progress=lock_after_first)
    finally:
        later.chmod(0o600)
    assert result.errors == ()
    assert [(s.path, s.code) for s in result.skipped] == [("b.zip", "unreadable")]
    assert "Permission denied" in result.skipped[0].reason
    assert critical(result, "evil.pkl") == [""]


# ---------------------------------------------------------------------------------------------
# 8. Odd member names
# ---------------------------------------------------------------------------------------------

ODD_NAMES: dict[bytes, str | None] = {
    # raw name: rule expected besides the payload finding
    b"caf\xe9/model.pkl": None,              # Latin-1, not UTF-8
    b"\x80\x81\xfe.pkl": None,               # no valid UTF-8 at all
    b"../../etc/cron.d/evil.pkl": "MLSEC-ARCHIVE-003",
    b"/abs/evil.pkl": "MLSEC-ARCHIVE-003",
    b"C:/win/evil.pkl": "MLSEC-ARCHIVE-003",
    b"nul\x00byte.pkl": None,
    b"\xe2\x80\xaelkp.pkl": None,            # right-to-left override
    b"esc\x1b[31mred.pkl": None,             # terminal escape
    b"ok.pkl": None,
}


@pytest.mark.parametrize("flags", [0, 0x800], ids=["cp437-flag", "utf8-flag"])
def test_odd_zip_member_names_are_reported_and_serializable(tmp_path: Path, flags: int) -> None:
    data = raw_zip([(name, HOSTILE) for name in ODD_NAMES], flags=flags)
    result = scan_bytes(tmp_path, "odd.zip", data, use_cache=False)
    assert result.errors == ()
    members = critical(result, "odd.zip")
    assert len(members) == len(set(members)) == len(ODD_NAMES), members  # every entry, each under its own name
    assert any(m.startswith("caf") and m.endswith("/model.pkl") for m in members)
    slips = {f.message for f in result.findings if f.rule_id == "MLSEC-ARCHIVE-003"}
    for raw, rule in ODD_NAMES.items():
        if rule == "MLSEC-ARCHIVE-003":
            assert any(repr(raw.decode()) in m for m in slips), (raw, slips)
    doc = json_report(result)
    assert len([f for f in doc["findings"] if f["severity"] == "critical"]) == len(ODD_NAMES)


def test_odd_tar_member_names_are_reported(tmp_path: Path) -> None:
    names = ["../../etc/cron.d/evil.pkl", "/abs/evil.pkl", "C:/Windows/evil.pkl", "..\\..\\evil.pkl",
             "\u202elkp.pkl", "esc\x1b[31mred.pkl", "ok.pkl"]
    data = b"".join(tar_member(n, HOSTILE) for n in names) + b"\0" * 1024
    result = scan_bytes(tmp_path, "odd.tar", data, use_cache=False)
    assert result.errors == ()
    assert sorted(critical(result, "odd.tar")) == sorted(names)
    slips = [f for f in result.findings if f.rule_id == "MLSEC-ARCHIVE-003"]
    assert len(slips) == 4  # parent, absolute, drive letter and backslash escapes
    json_report(result)


def _tar_with_latin1_name() -> bytes:
    info = tarfile.TarInfo(b"caf\xe9/model.pkl".decode("utf-8", "surrogateescape"))
    info.size, info.mtime = len(HOSTILE), 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        tf.addfile(info, io.BytesIO(HOSTILE))
    data = buf.getvalue()
    assert b"caf\xe9/model.pkl" in data
    return data


@pytest.mark.parametrize("where", ["tar-member", "file-name"])
def test_non_utf8_names_give_a_valid_utf8_json_report(tmp_path: Path, where: str) -> None:
    if where == "tar-member":
        result = scan_bytes(tmp_path, "odd.tar", _tar_with_latin1_name(), use_cache=False)
        shown = critical(result, "odd.tar")
    else:
        (tmp_path / os.fsdecode(b"caf\xe9.pkl")).write_bytes(HOSTILE)
        result = scan_path(tmp_path, use_cache=False)
        shown = [f.path for f in result.findings if f.severity == Severity.CRITICAL]
    assert result.errors == () and len(shown) == 1 and shown[0].startswith("caf")
    for fmt in ("json", "sarif", "gitlab"):
        renderer(fmt)(result, Severity.INFO).encode("utf-8")  # what `-f FORMAT:FILE` writes
    doc = json_report(result)
    assert len([f for f in doc["findings"] if f["severity"] == "critical"]) == 1
