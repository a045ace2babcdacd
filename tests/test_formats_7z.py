"""7z archives: members go through the same engine, with the zip/tar bomb limits (needs py7zr)."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from mlsec.engine.context import Limits
from mlsec.model import Severity
from tests.conftest import FIXTURES, at_least, rules_of, scan_bytes, scan_path
from tests.test_hostile import SYSTEM, globals_of, system_pickle

py7zr = pytest.importorskip("py7zr")


def sevenz(members: dict[str, bytes], **kwargs: object) -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", **kwargs) as z:
        for name, data in members.items():
            z.writestr(data, name)
    return buf.getvalue()


def test_benign_bundle_is_clean_and_its_members_are_read() -> None:
    result = scan_path(FIXTURES / "formats" / "7z" / "bundle.7z")
    assert result.artifacts[0].format == "7z"
    assert result.findings == () and not result.errors and not result.skipped


def test_pickle_inside_a_7z_is_found_with_its_member_name(tmp_path: Path) -> None:
    result = scan_bytes(tmp_path, "models.7z", sevenz({"readme.txt": b"hi", "weights/evil.pkl": system_pickle()}))
    hit = next(f for f in result.findings if dict(f.evidence).get("global") == SYSTEM)
    assert hit.severity == Severity.CRITICAL and hit.location.member == "weights/evil.pkl"


def test_nested_formats_inside_7z(tmp_path: Path) -> None:
    import gzip

    inner = sevenz({"deep/model.pt": gzip.compress(system_pickle())})
    result = scan_bytes(tmp_path, "outer.7z", sevenz({"inner.7z": inner}))
    assert SYSTEM in globals_of(result)
    hit = next(f for f in result.findings if dict(f.evidence).get("global") == SYSTEM)
    assert hit.location.member == "inner.7z!deep/model.pt!gzip"


def test_7z_inside_a_tar_gz_is_read_from_memory(tmp_path: Path) -> None:
    data = sevenz({"evil.pkl": system_pickle()})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("bundle.7z")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert SYSTEM in globals_of(scan_bytes(tmp_path, "b.tar.gz", buf.getvalue()))


def test_expansion_limits_turn_a_bomb_into_a_finding(tmp_path: Path) -> None:
    data = sevenz({"zeros.dat": bytes(8 << 20)})
    assert len(data) < 64 << 10
    tight = Limits(ratio_floor=1 << 20, max_ratio=50)
    (f,) = scan_bytes(tmp_path, "bomb.7z", data, limits=tight).findings
    assert f.rule_id == "MLSEC-ARCHIVE-001" and dict(f.evidence)["declared"] == str(8 << 20)
    small_budget = Limits(max_expanded=1 << 20)
    assert "MLSEC-ARCHIVE-001" in rules_of(scan_bytes(tmp_path, "bomb.7z", data, limits=small_budget))
    assert scan_bytes(tmp_path, "bomb.7z", data).findings == ()   # default limits: 8 MiB is fine


def test_member_count_limit(tmp_path: Path) -> None:
    data = sevenz({f"f{i}.txt": b"x" for i in range(20)})
    result = scan_bytes(tmp_path, "many.7z", data, limits=Limits(max_members=10))
    assert rules_of(result) == {"MLSEC-ARCHIVE-004"}


def test_encrypted_archive_is_reported_not_clean(tmp_path: Path) -> None:
    data = sevenz({"evil.pkl": system_pickle()}, password="secret", header_encryption=True)
    result = scan_bytes(tmp_path, "locked.7z", data)
    assert rules_of(result) == {"MLSEC-ARCHIVE-006"} and result.errors == ()


def test_escaping_member_names_are_reported(tmp_path: Path) -> None:
    # py7zr refuses to write '../' names; write a plain header and patch the name and both CRCs.
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as z:
        z.set_encoded_header_mode(False)
        z.writestr(system_pickle(), "aa/evil.pkl")
        z.writestr(system_pickle(), "ok.pkl")
    data = bytearray(buf.getvalue())
    offset, size = struct.unpack_from("<QQ", data, 12)
    start = 32 + offset
    header = bytes(data[start : start + size]).replace("aa/evil.pkl".encode("utf-16-le"),
                                                       "../evil.pkl".encode("utf-16-le"))
    assert header != bytes(data[start : start + size])
    data[start : start + size] = header
    struct.pack_into("<I", data, 28, zlib.crc32(header))
    struct.pack_into("<I", data, 8, zlib.crc32(bytes(data[12:32])))
    result = scan_bytes(tmp_path, "slip.7z", bytes(data))
    (f,) = [f for f in result.findings if f.rule_id == "MLSEC-ARCHIVE-003"]
    assert "../evil.pkl" in f.message
    hits = [f.location.member for f in result.findings if dict(f.evidence).get("global") == SYSTEM]
    assert hits == ["ok.pkl"]   # the escaping member is reported, the others are still inspected


def test_truncated_and_corrupt_archives_are_findings(tmp_path: Path) -> None:
    data = sevenz({"a.pkl": system_pickle(), "b.txt": b"hello" * 100})
    for cut in (6, 12, 32, len(data) // 2, len(data) - 3):
        result = scan_bytes(tmp_path, "t.7z", data[:cut])
        assert result.errors == (), cut
        assert at_least(result, Severity.MEDIUM), cut
    corrupt = bytearray(data)
    corrupt[40] ^= 0xFF
    result = scan_bytes(tmp_path, "c.7z", bytes(corrupt))
    assert result.errors == () and at_least(result, Severity.MEDIUM)
