"""Discovery: what gets scanned, what gets reported as skipped, and format sniffing."""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
from pathlib import Path

import pytest

from mlsec.discover import Candidate, discover
from mlsec.model import ArtifactKind, Skip
from mlsec.sniff import sniff
from tests.conftest import scan_path


def _walk(root: Path, **kw: object) -> tuple[dict[str, Candidate], dict[str, Skip]]:
    cands: dict[str, Candidate] = {}
    skips: dict[str, Skip] = {}
    for item in discover([root], **kw):  # type: ignore[arg-type]
        if isinstance(item, Candidate):
            cands[item.path] = item
        else:
            skips[item.path] = item
    return cands, skips


def test_formats_come_from_bytes_not_extensions(tmp_path: Path) -> None:
    (tmp_path / "model.txt").write_bytes(pickle.dumps([1, 2], protocol=4))
    (tmp_path / "weights.pkl").write_bytes(gzip.compress(pickle.dumps([1], protocol=2)))
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
    (tmp_path / "noext").write_bytes(b"(lp0\nI1\na.")
    cands, _ = _walk(tmp_path, use_gitignore=False)
    assert {Path(k).name: v.format for k, v in cands.items()} == {
        "model.txt": "pickle", "weights.pkl": "gzip", "pytorch_model.bin": "zip", "noext": "pickle"}
    assert cands["pytorch_model.bin"].kind == ArtifactKind.MODEL  # absolute roots give root-relative paths


def test_garbage_with_model_extension_is_still_inspected(tmp_path: Path) -> None:
    (tmp_path / "broken.pkl").write_bytes(b"\x00\x01garbage" * 10)
    result = scan_path(tmp_path)
    assert [f.rule_id for f in result.findings] == ["MLSEC-PICKLE-005"]


@pytest.mark.parametrize(
    ("head", "fmt"),
    [(b"PK\x03\x04", "zip"), (b"\x1f\x8b\x08", "gzip"), (b"BZh9", "bz2"), (b"\xfd7zXZ\x00", "xz"),
     (b"\x93NUMPY\x01\x00", "numpy"), (b"\x89HDF\r\n\x1a\n", "hdf5"), (b"GGUF\x03\x00", "gguf"),
     (b"\x78\x9c\x03\x00", "zlib"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"", "empty"), (b"hello\n", "text")],
)
def test_sniff_magic_numbers(head: bytes, fmt: str) -> None:
    assert sniff(head) == fmt


def test_skips_git_venv_and_honours_gitignore_and_exclude(tmp_path: Path) -> None:
    for name in [".git/objects/x.pkl", "venv2/lib/y.pkl", "keep/a.pkl", "ignored/b.pkl", "keep/c.tmp.pkl", "drop/d.pkl"]:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(pickle.dumps(1, protocol=2))
    (tmp_path / "venv2" / "pyvenv.cfg").write_text("home = /usr\n")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "keep" / ".gitignore").write_text("*.tmp.pkl\n")
    cands, skips = _walk(tmp_path, excludes=["drop/"])
    assert sorted(cands) == ["keep/a.pkl"]
    assert not skips
    cands_all, _ = _walk(tmp_path, use_gitignore=False)
    assert len(cands_all) == 4  # .git and the venv stay skipped


def test_lfs_pointer_is_reported_as_skipped_not_clean(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 123456\n")
    result = scan_path(tmp_path)
    assert [(s.code, Path(s.path).name) for s in result.skipped] == [("lfs-pointer", "model.bin")]
    assert result.artifacts == ()


def test_symlink_loops_and_broken_links_are_reported(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)  # a directory loop
    (tmp_path / "self").symlink_to(tmp_path / "self")  # a file link loop
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "real.pkl").write_bytes(pickle.dumps(1, protocol=2))
    (tmp_path / "alias.pkl").symlink_to(tmp_path / "real.pkl")
    cands, skips = _walk(tmp_path)
    names = {Path(k).name: v.code for k, v in skips.items()}
    assert names == {"up": "dir-symlink", "self": "symlink-loop", "dangling": "broken-link"}
    assert sorted(Path(k).name for k in cands) == ["alias.pkl", "real.pkl"]


def test_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.pkl")
    _, skips = _walk(tmp_path)
    assert [s.code for s in skips.values()] == ["special-file"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read files without permission")
def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "secret.pkl"
    p.write_bytes(b"x")
    p.chmod(0)
    _, skips = _walk(tmp_path)
    assert [s.code for s in skips.values()] == ["unreadable"]


def test_non_utf8_file_name_is_scanned(tmp_path: Path) -> None:
    name = os.fsdecode(b"mod\xe9l.pkl")
    (tmp_path / name).write_bytes(pickle.dumps(1, protocol=2))
    result = scan_path(tmp_path)
    assert len(result.artifacts) == 1 and result.errors == ()


def test_sha256_matches_hashlib_and_cache_is_reused(tmp_path: Path) -> None:
    import hashlib

    data = os.urandom(3 << 20)
    (tmp_path / "big.pkl").write_bytes(data)
    first = scan_path(tmp_path / "big.pkl")
    second = scan_path(tmp_path / "big.pkl")
    assert first.artifacts[0].sha256 == second.artifacts[0].sha256 == hashlib.sha256(data).hexdigest()


def test_text_that_starts_like_a_zlib_header_is_text() -> None:
    # b"x = 1" and b"x^" pass zlib's two-byte header check; they are Python, not archives.
    import zlib

    assert sniff(b"x = 1\nprint(x)\n") == "text"
    assert sniff(b"x^2 + y^2\n") == "text"
    assert sniff(zlib.compress(b"payload" * 20)) == "zlib"
