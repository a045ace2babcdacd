"""The pre-commit hooks, driven by the real pre-commit (``try-repo``) in a throwaway git repo.

``try-repo`` installs this checkout into a fresh environment the way a user's
``.pre-commit-config.yaml`` would, and runs the hook on the staged files, as a commit does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HOSTILE = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."
PRE_COMMIT = Path(sys.executable).with_name("pre-commit")

pytestmark = [
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
    pytest.mark.skipif(not PRE_COMMIT.exists(), reason="pre-commit is not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(not (REPO / ".git").exists(), reason="the mlsec checkout is not a git repository"),
]


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One hook environment for the module (installing it is the slow part)."""
    return tmp_path_factory.mktemp("pre-commit-home")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60)


def _project(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "dev@example.com")
    _git(repo, "config", "user.name", "dev")
    (repo / "train.py").write_text("print('training')\n")
    _git(repo, "add", "train.py")
    return repo


def _try_repo(project: Path, home: Path, hook: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "MLSEC_CACHE_DIR": str(home / "mlsec-cache"),
           "NO_COLOR": "1"}
    return subprocess.run([str(PRE_COMMIT), "try-repo", str(REPO), hook], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_clean_commit_passes(tmp_path: Path, pre_commit_home: Path) -> None:
    project = _project(tmp_path)
    proc = _try_repo(project, pre_commit_home, "mlsec")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Passed" in proc.stdout


def test_commit_adding_a_hostile_pickle_is_blocked_with_the_reason(tmp_path: Path, pre_commit_home: Path) -> None:
    project = _project(tmp_path)
    (project / "model.pkl").write_bytes(HOSTILE)
    _git(project, "add", "model.pkl")
    before = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    proc = _try_repo(project, pre_commit_home, "mlsec")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Failed" in proc.stdout
    assert "model.pkl" in proc.stdout and "MLSEC-PICKLE-001" in proc.stdout and "posix.system" in proc.stdout
    after = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    assert after == before  # the hook wrote nothing into the repository


def test_unstaged_hostile_file_is_not_the_hooks_business(tmp_path: Path, pre_commit_home: Path) -> None:
    project = _project(tmp_path)
    (project / "model.pkl").write_bytes(HOSTILE)  # present, but not staged
    proc = _try_repo(project, pre_commit_home, "mlsec")
    assert proc.returncode == 0, proc.stdout + proc.stderr
