"""The memo of whole outcomes: an unchanged tree is answered without opening its files, and
nothing an outcome depends on can change without the file being scanned again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlsec.hashing import cache_dir
from mlsec.model import ScanResult, Severity
from mlsec.pipeline import Options, run
from tests.conftest import FIXTURES

HOSTILE = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."
BENIGN = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01u."  # {'a': 1}, same length class


def _json(result: ScanResult) -> str:
    from mlsec.report.json import render

    return render(result, Severity.INFO)


def _memo_files() -> list[Path]:
    return sorted((cache_dir() / "memo").glob("*.json"))


def test_second_run_equals_an_uncached_run_on_the_fixtures() -> None:
    """Packages and facts about other files (included requirements, dataset cards) keep their paths."""
    first = run([str(FIXTURES)], Options(jobs=1))
    second = run([str(FIXTURES)], Options(jobs=1))
    fresh = run([str(FIXTURES)], Options(jobs=1, use_cache=False))
    assert _json(second) == _json(fresh) == _json(first)
    assert len(_memo_files()) == 1


def test_unchanged_files_are_not_opened_again(tmp_path: Path) -> None:
    """Measured from outside: an audit hook counts opens of the scanned files in the second run."""
    tree = tmp_path / "tree"
    (tree / "models").mkdir(parents=True)
    (tree / "models" / "evil.pkl").write_bytes(HOSTILE)
    (tree / "train.py").write_text("import pickle\n\ndef load(p):\n    return pickle.load(open(p, 'rb'))\n")
    (tree / "requirements.txt").write_text("numpy==1.26.4\n")
    (tree / "data.csv").write_text("a,b\n1,2\n")
    script = textwrap.dedent(f"""
        import json, sys
        from mlsec.pipeline import Options, run
        tree = {str(tree)!r}
        opened = []
        def hook(event, args):
            if event == "open" and isinstance(args[0], str) and args[0].startswith(tree):
                opened.append(args[0])
        sys.addaudithook(hook)
        out = []
        for _ in range(2):
            opened.clear()
            result = run([tree], Options(jobs=1))
            out.append({{"opened": sorted(set(opened)), "findings": [f.fingerprint for f in result.findings]}})
        print(json.dumps(out))
    """)
    env = {**os.environ, "MLSEC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    first, second = json.loads(proc.stdout)
    files = {str(p) for p in tree.rglob("*") if p.is_file()}
    assert files <= set(first["opened"])  # every file was read the first time
    assert files.isdisjoint(second["opened"])  # (.gitignore lookups of the walk remain)
    assert second["findings"] == first["findings"] and first["findings"]


def test_content_change_with_the_same_size_and_mtime_is_rescanned(tmp_path: Path) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(BENIGN + b"\x00" * (len(HOSTILE) - len(BENIGN)))
    st = model.stat()
    assert all(f.severity < Severity.HIGH for f in run([str(model)], Options()).findings)
    model.write_bytes(HOSTILE)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before; ctime moved
    assert model.stat().st_size == st.st_size
    assert run([str(model)], Options()).max_severity() == Severity.CRITICAL


def test_a_new_neighbour_changes_a_folder_scoped_outcome(tmp_path: Path) -> None:
    """A loading script means something once a dataset card sits next to it."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "ds.py").write_text("def rows():\n    yield {'a': 1}\n")
    before = run([str(tmp_path)], Options())
    (folder / "dataset_infos.json").write_text(json.dumps({"default": {"description": "d"}}))
    after = run([str(tmp_path)], Options())
    fresh = run([str(tmp_path)], Options(use_cache=False))
    assert _json(after) == _json(fresh)
    assert "MLSEC-DATA-011" not in {f.rule_id for f in before.findings if f.path.endswith("ds.py")}
    assert "MLSEC-DATA-011" in {f.rule_id for f in after.findings if f.path.endswith("ds.py")}


def test_project_settings_change_a_settings_scoped_outcome(tmp_path: Path) -> None:
    """The bandit selection lives in pyproject.toml: changing it re-runs bandit on unchanged code."""
    (tmp_path / "app.py").write_text("import subprocess\nsubprocess.call('ls', shell=True)\n")
    before = {f.rule_id for f in run([str(tmp_path / "app.py")], Options()).findings}
    assert any(r.startswith("BANDIT-B602") or "B602" in r for r in before), before
    (tmp_path / "pyproject.toml").write_text('[tool.mlsec.bandit]\nskips = ["B602", "B404"]\n')
    after = {f.rule_id for f in run([str(tmp_path / "app.py")], Options()).findings}
    assert not any("B602" in r for r in after), after


def test_an_included_requirements_file_changes_the_including_manifest(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r base.txt\n")
    (tmp_path / "base.txt").write_text("numpy==1.26.4\n")
    first = run([str(tmp_path / "requirements.txt")], Options(kinds=frozenset({"dependencies"})))
    (tmp_path / "base.txt").write_text("numpy==1.26.4\nrequests==2.31.0\n")
    second = run([str(tmp_path / "requirements.txt")], Options(kinds=frozenset({"dependencies"})))
    assert {p.name for p in first.packages} == {"numpy"}
    assert {p.name for p in second.packages} == {"numpy", "requests"}


def test_corrupt_memo_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(HOSTILE)
    first = run([str(model)], Options())
    for memo in _memo_files():
        memo.write_bytes(b'{"format": 1, "files": {"' + str(model).encode() + b'": {"id": "x"}}}')
    second = run([str(model)], Options())
    assert second.findings == first.findings and second.errors == ()
    for memo in _memo_files():
        memo.write_bytes(b"\xff\x00not json")
    assert run([str(model)], Options()).findings == first.findings


def test_no_cache_writes_no_memo(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(HOSTILE)
    run([str(tmp_path)], Options(use_cache=False))
    assert _memo_files() == []


@pytest.mark.parametrize("change", ["limits", "engines", "excludes"])
def test_other_options_use_another_memo(tmp_path: Path, change: str) -> None:
    (tmp_path / "m.pkl").write_bytes(HOSTILE)
    run([str(tmp_path)], Options())
    from mlsec.engine.context import Limits

    other = {"limits": Options(limits=Limits(timeout=7.0)), "engines": Options(engines=frozenset({"mlsec"})),
             "excludes": Options(excludes=("*.csv",))}[change]
    run([str(tmp_path)], other)
    assert len(_memo_files()) == 2


def test_a_cli_run_answered_from_the_memo_loads_no_scanning_machinery(tmp_path: Path) -> None:
    """Start-up is most of a cached re-run: the second run must not import scanners, readers,
    the catalog, SQLite, the waivers parser or the Rego engine (measured from its sys.modules)."""
    model = tmp_path / "model.pkl"
    model.write_bytes(BENIGN)
    script = textwrap.dedent("""
        import json, sys
        from mlsec.cli import main
        sys.argv = ["mlsec", "scan", sys.argv[1], "--format", "json", "-q", "-o", sys.argv[2]]
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        heavy = ("mlsec.scanners", "mlsec.engine.pickle", "mlsec.registry", "mlsec.catalog", "mlsec.policy",
                 "mlsec.suppress", "sqlite3", "regopy")
        print(json.dumps([code, sorted(m for m in sys.modules if m.startswith(heavy))]))
    """)
    env = {**os.environ, "MLSEC_CACHE_DIR": str(tmp_path / "cache")}
    out = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script, str(model), str(tmp_path / "r.json")], capture_output=True,
                              text=True, env=env, timeout=120, check=False, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        out.append(json.loads(proc.stdout))
    (code1, first), (code2, second) = out
    assert code1 == code2 == 0
    assert "mlsec.registry" in first and "sqlite3" in first  # the first run really scanned
    assert second == []


def test_runs_over_different_files_share_one_memo(tmp_path: Path) -> None:
    """A pre-commit hook hands over another list of files each commit: one memo, not one per list."""
    a, b = tmp_path / "a.pkl", tmp_path / "b.pkl"
    a.write_bytes(HOSTILE)
    b.write_bytes(BENIGN)
    first = run([str(a)], Options())
    run([str(b)], Options())
    again = run([str(a)], Options())
    (memo,) = _memo_files()
    assert set(json.loads(memo.read_text())["files"]) == {str(a), str(b)}
    assert again.findings == first.findings and again.findings
