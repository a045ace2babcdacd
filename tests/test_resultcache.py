"""The per-file result cache: unchanged files are not rescanned, changed ones are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlsec.model import Severity
from mlsec.pipeline import Options, run
from mlsec.scanners.models import ModelScanner

HOSTILE = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."


def _boom(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the scanner ran although its result was cached")


def test_unchanged_file_is_served_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(HOSTILE)
    first = run([str(model)], Options())
    assert [f.rule_id for f in first.findings] == ["MLSEC-PICKLE-001"]
    monkeypatch.setattr(ModelScanner, "scan", _boom)
    second = run([str(model)], Options())
    assert second.errors == ()
    assert second.findings == first.findings  # same findings, same fingerprints, same path


def test_changed_content_is_rescanned(tmp_path: Path) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(HOSTILE)
    assert run([str(model)], Options()).max_severity() == Severity.CRITICAL
    model.write_bytes(b"\x80\x02}q\x00.")  # a benign dict
    assert run([str(model)], Options()).findings == ()


def test_no_cache_always_scans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(HOSTILE)
    run([str(model)], Options())
    monkeypatch.setattr(ModelScanner, "scan", _boom)
    result = run([str(model)], Options(use_cache=False))
    assert len(result.errors) == 1 and "AssertionError" in result.errors[0].message


def test_same_content_at_another_path_keeps_its_own_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pkl", tmp_path / "b.pkl"
    a.write_bytes(HOSTILE)
    b.write_bytes(HOSTILE)
    run([str(a)], Options())
    result = run([str(tmp_path)], Options())
    assert sorted(f.path for f in result.findings) == ["a.pkl", "b.pkl"]


def test_errors_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(HOSTILE)
    with monkeypatch.context() as mp:
        mp.setattr(ModelScanner, "scan", _boom)
        assert run([str(model)], Options()).errors
    result = run([str(model)], Options())
    assert result.errors == () and result.max_severity() == Severity.CRITICAL


def test_big_file_with_a_non_utf8_name_is_hashed_through_the_cache(tmp_path: Path) -> None:
    fs = os.fsencode(tmp_path) + b"/mod\xe9le.bin"  # Latin-1 bytes: not valid UTF-8
    with open(fs, "wb") as fh:
        fh.write(b"\x80\x02}q\x00." + b"\0" * (2 << 20))  # over the hash cache's 1 MiB floor
    first = run([str(tmp_path)], Options())
    second = run([str(tmp_path)], Options())
    assert first.errors == () and second.errors == ()
    assert [a.sha256 for a in first.artifacts] == [a.sha256 for a in second.artifacts]
    assert len(first.artifacts) == 1 and len(first.artifacts[0].sha256) == 64
