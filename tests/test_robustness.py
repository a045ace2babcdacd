"""Damaged input gives findings or skips — never a traceback, never an ErrorRecord.

Every benign fixture is truncated at several points and has bytes flipped (fixed seed), and
the whole damaged corpus is scanned in one run: the scan must finish, account for every file,
and report no scanner errors (an error would mean a reader raised instead of reporting).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from mlsec.model import Severity
from tests.conftest import FIXTURES, scan_path

BENIGN = sorted(p for p in (FIXTURES / "benign").rglob("*") if p.is_file() and p.suffix not in (".md", ".txt"))


def _mutants(data: bytes, rng: random.Random) -> list[bytes]:
    out = [data[:n] for n in {0, 1, 2, 7, len(data) // 3, len(data) // 2, len(data) - 1} if n < len(data)]
    for _ in range(6):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        out.append(bytes(buf))
    return out


def test_damaged_corpus_never_raises(tmp_path: Path) -> None:
    rng = random.Random(1234)
    count = 0
    for src in BENIGN:
        for i, data in enumerate(_mutants(src.read_bytes(), rng)):
            (tmp_path / f"{src.parent.name}-{src.name}-{i}").write_bytes(data)
            count += 1
    result = scan_path(tmp_path)
    assert result.errors == ()
    assert len(result.artifacts) + len(result.skipped) == count


def test_huge_declared_sizes_are_bounded(tmp_path: Path) -> None:
    cases = {
        "npy-header.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{",
        "npy-shape.npy": b"\x93NUMPY\x01\x00" + struct.pack("<H", 70)
        + b"{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000,), }".ljust(70) + b"\0" * 8,
        "pickle-bytes8.pkl": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62),
        "pickle-line.pkl": b"\x80\x02c" + b"a" * (1 << 20),
        "zip-sizes.zip": b"PK\x03\x04" + b"\x14\x00\x00\x00\x08\x00" + b"\0" * 8 + b"\xff" * 8 + b"\x01\x00\x00\x00" + b"x",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    result = scan_path(tmp_path)
    assert result.errors == ()
    flagged = {f.path for f in result.findings if f.severity >= Severity.MEDIUM}
    assert flagged == set(cases)


def test_empty_file_is_hashed_and_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.pkl").write_bytes(b"")
    result = scan_path(tmp_path)
    assert result.errors == () and result.artifacts[0].sha256.startswith("e3b0c442")


def test_random_bytes_behind_every_magic_never_raise() -> None:
    """Bounded fuzz of the dispatcher: random bodies behind each known magic number."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mlsec.engine import dispatch
    from mlsec.engine.context import Inspection
    from mlsec.engine.stream import bytes_stream

    magics = [b"\x80\x02", b"\x80\x05", b"(", b"c", b"PK\x03\x04", b"\x1f\x8b", b"BZh9", b"\xfd7zXZ\x00",
              b"\x93NUMPY\x01\x00", b"ZF0x", b"\x78\x9c", b"\x5d\x00\x00\x80\x00"]

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.sampled_from(magics), st.binary(max_size=600))
    def check(magic: bytes, body: bytes) -> None:
        insp = Inspection(path="fuzz", scanner="fuzz")
        dispatch.inspect(bytes_stream(magic + body), insp, None, 0, "fuzz.pkl")
        for f in insp.findings:
            assert f.rule_id.startswith("MLSEC-")

    check()
