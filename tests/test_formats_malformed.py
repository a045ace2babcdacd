"""Malformed input for every new format: random bytes, every truncation of the first 64 bytes,
lengths of 2^63 — findings, never tracebacks, and memory that stays bounded (measured in a
child process with getrusage, so other tests do not disturb the number).
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, scan_bytes
from tests.test_formats_gguf import gguf, gstr
from tests.test_formats_onnx import ld, varint, vi

FORMATS = FIXTURES / "formats"
HAS_H5PY = importlib.util.find_spec("h5py") is not None
HAS_PY7ZR = importlib.util.find_spec("py7zr") is not None

# (file name, fixture) for each format; formats with a length-prefixed or magic header must give
# a finding (or a skip) for every truncation, protobufs only must not crash (a cut at a field
# boundary is a valid, shorter message).
SEEDS = {
    "gguf": ("m.gguf", FORMATS / "gguf" / "tiny_le.gguf", True),
    "gguf-be": ("m.gguf", FORMATS / "gguf" / "tiny_be.gguf", True),
    "safetensors": ("m.safetensors", FORMATS / "safetensors" / "tiny.safetensors", True),
    "onnx": ("m.onnx", FORMATS / "onnx" / "tiny_linear.onnx", False),
    "savedmodel": ("saved_model.pb", FORMATS / "savedmodel" / "tiny_module" / "saved_model.pb", False),
    "keras": ("m.keras", FORMATS / "keras" / "tiny_sequential.keras", True),
    "hdf5": ("m.h5", FORMATS / "keras" / "tiny_sequential.h5", True),
    "7z": ("m.7z", FORMATS / "7z" / "bundle.7z", True),
}


def _needs(kind: str) -> None:
    if kind == "hdf5" and not HAS_H5PY:
        pytest.skip("h5py not installed")
    if kind == "7z" and not HAS_PY7ZR:
        pytest.skip("py7zr not installed")


@pytest.mark.parametrize("kind", list(SEEDS))
def test_every_truncation_of_the_first_64_bytes(tmp_path: Path, kind: str) -> None:
    _needs(kind)
    name, seed, must_report = SEEDS[kind]
    data = seed.read_bytes()
    for cut in range(1, 65):
        result = scan_bytes(tmp_path, name, data[:cut])
        assert result.errors == (), (kind, cut, result.errors)
        # a 7z cut inside its 6-byte magic is just text (".7z" is not an extension hint yet)
        if must_report and (kind != "7z" or cut >= 6):
            assert result.findings or result.skipped, (kind, cut)


@pytest.mark.parametrize("kind", list(SEEDS))
def test_random_bytes_behind_each_header(kind: str) -> None:
    """Bounded fuzz straight through the dispatcher: magic or header prefix + random body."""
    _needs(kind)
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mlsec.engine import dispatch
    from mlsec.engine.context import Inspection
    from mlsec.engine.stream import bytes_stream

    name, seed, _ = SEEDS[kind]
    prefix = seed.read_bytes()[:16]

    @settings(max_examples=120, deadline=None, derandomize=True)
    @given(st.integers(min_value=0, max_value=16), st.binary(max_size=400))
    def check(keep: int, body: bytes) -> None:
        insp = Inspection(path="fuzz", scanner="fuzz")
        dispatch.inspect(bytes_stream(prefix[:keep] + body), insp, None, 0, name)
        assert all(f.rule_id.startswith("MLSEC-") for f in insp.findings)

    check()


def _sevenz_next_header(size: int) -> bytes:
    """A 7z start header that points at a next header of ``size`` bytes (valid CRCs)."""
    tail = struct.pack("<QQI", 0, size, 0)
    return b"7z\xbc\xaf\x27\x1c\x00\x04" + struct.pack("<I", zlib.crc32(tail)) + tail


def _h5_with_eof(address: int) -> bytes:
    data = bytearray((FORMATS / "keras" / "tiny_sequential.h5").read_bytes())
    struct.pack_into("<Q", data, 40, address)   # superblock v0: end-of-file address
    return bytes(data)


def hostile_lengths() -> dict[str, bytes]:
    """One file per place a 2^63 (or otherwise absurd) length can sit."""
    big = 1 << 63
    offsets = json.dumps({"a": {"dtype": "F32", "shape": [big, big], "data_offsets": [0, big]}}).encode()
    files = {
        "len.safetensors": struct.pack("<Q", big) + b'{"a": 1}',
        "len-1.safetensors": struct.pack("<Q", 99_999_999) + b'{"' + b"a" * 64,
        "offsets.safetensors": struct.pack("<Q", len(offsets)) + offsets,
        "kv.gguf": gguf([], n_kv=big),
        "tensors.gguf": gguf([], n_tensors=big),
        "string.gguf": gguf([gstr("k") + struct.pack("<I", 8) + struct.pack("<Q", big)]),
        "array.gguf": gguf([gstr("k") + struct.pack("<IIQ", 9, 0, big)]),
        "strings.gguf": gguf([gstr("k") + struct.pack("<IIQ", 9, 8, big)]),
        "dims.gguf": gguf([], [gstr("t") + struct.pack("<IQQIQ", 2, big, big, 0, 0)]),
        "graph.onnx": vi(1, 8) + varint(7 << 3 | 2) + varint(big),
        "raw.onnx": ld(7, ld(5, varint(9 << 3 | 2) + varint(big))),
        "saved_model.pb": vi(1, 1) + varint(2 << 3 | 2) + varint(big),
        "frozen.pb": b"\x0a" + varint(big),
    }
    if HAS_PY7ZR:
        files["header.7z"] = _sevenz_next_header(big)
        files["header40.7z"] = _sevenz_next_header(1 << 40)
    if HAS_H5PY:
        files["eof.h5"] = _h5_with_eof(big - 1)
    return files


@pytest.mark.parametrize("name", list(hostile_lengths()))
def test_absurd_lengths_are_findings(tmp_path: Path, name: str) -> None:
    result = scan_bytes(tmp_path, name, hostile_lengths()[name])
    assert result.errors == ()
    assert result.findings or [s.code for s in result.skipped] == ["unknown-protobuf"], name


_MEASURE = """
import resource, sys
from mlsec.pipeline import Options, run
result = run([sys.argv[1]], Options(use_cache=False))
reported = len({f.path for f in result.findings} | {s.path for s in result.skipped})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, len(result.errors), reported)
"""


def _peak_mb(path: Path, cache: Path) -> tuple[int, int, int]:
    """(peak RSS in MB, errors, files reported) of a scan in a fresh interpreter."""
    env = {"MLSEC_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, env=env,
                         timeout=300, check=True, cwd=REPO)
    peak, errors, reported = (int(x) for x in out.stdout.split())
    return peak, errors, reported


def test_memory_stays_bounded_on_absurd_lengths(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    for name, data in hostile_lengths().items():
        (hostile / name).write_bytes(data)
    baseline, base_errors, _ = _peak_mb(FORMATS, tmp_path / "c1")   # same imports, benign files
    peak, errors, reported = _peak_mb(hostile, tmp_path / "c2")
    assert base_errors == 0 and errors == 0 and reported == len(hostile_lengths())
    assert peak < baseline + 64, f"peak RSS {peak} MB on hostile lengths vs {baseline} MB on benign files"
