"""SHA-256 of artifacts: the overlapped read/hash path gives exactly hashlib's digest."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from mlsec import hashing


@pytest.mark.parametrize("size", [
    hashing._OVERLAP_FROM - 1,                      # the plain loop
    hashing._OVERLAP_FROM,                          # the threaded one from here
    hashing._OVERLAP_FROM + 1,
    hashing._OVERLAP_FROM + 3 * hashing._CHUNK + 12_345,
])
def test_digest_matches_hashlib_on_both_paths(tmp_path: Path, size: int) -> None:
    block = os.urandom(1 << 16)
    data = (block * (size // len(block) + 1))[:size]
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    assert hashing.sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_overlapped_hashing_leaves_no_thread_behind(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x01" * (hashing._OVERLAP_FROM + 5))
    before = threading.active_count()
    for _ in range(3):
        hashing.sha256_file(str(path))
    assert threading.active_count() == before


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.bin"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        hashing.sha256_file(str(fifo))
