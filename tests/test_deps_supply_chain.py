"""Supply-chain checks: pinning, hashes, index configuration, direct references, names; and the scanner's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsec import catalog
from mlsec.deps import manifests, supply_chain
from mlsec.deps.supply_chain import one_edit, redact, typosquat_target, vcs_commit
from mlsec.model import Severity
from tests.conftest import FIXTURES, scan_path

DEPS = FIXTURES / "deps"


def issues(tmp_path: Path, name: str, text: str) -> list[supply_chain.Issue]:
    (tmp_path / name).write_text(text)
    return supply_chain.check(manifests.parse(str(tmp_path / name), name))


def keyed(found: list[supply_chain.Issue]) -> dict[str, supply_chain.Issue]:
    return {i.key: i for i in found}


def test_unpinned_and_unhashed_requirements(tmp_path: Path) -> None:
    found = keyed(issues(tmp_path, "requirements.txt", "torch>=2\nnumpy\npillow==10.4.0\n"))
    assert set(found) == {"unpinned|torch", "unpinned|numpy", "no-hashes"}
    assert found["unpinned|torch"].line == 1 and dict(found["unpinned|torch"].evidence)["specifier"] == ">=2"
    assert found["no-hashes"].rule_id == "MLSEC-DEP-005" and dict(found["no-hashes"].evidence)["requirements"] == "3"


def test_hash_mode_flags_only_the_requirements_without_hashes(tmp_path: Path) -> None:
    found = keyed(issues(tmp_path, "requirements.txt", "a==1 --hash=sha256:00\nb==2\n"))
    assert set(found) == {"missing-hash|b"} and found["missing-hash|b"].line == 2


def test_constraint_pins_count_as_pinned_and_in_files_are_inputs(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("torch==2.6.0\n")
    found = keyed(issues(tmp_path, "requirements.txt", "-c c.txt\ntorch --hash=sha256:00\n"))
    assert "unpinned|torch" not in found
    assert issues(tmp_path, "requirements.in", "torch>=2\n") == []  # pip-tools input: ranges on purpose
    assert not [i for i in issues(tmp_path, "pyproject.toml", '[project]\ndependencies = ["torch>=2"]\n')
                if i.rule_id in ("MLSEC-DEP-004", "MLSEC-DEP-005")]


def test_index_configuration(tmp_path: Path) -> None:
    found = keyed(issues(tmp_path, "requirements.txt",
                         "--extra-index-url https://user:tok3n@pkgs.internal.example/simple\n"
                         "--index-url http://mirror.example/simple\n--trusted-host mirror.example\n"
                         "-f http://127.0.0.1:8000/wheels\na==1 --hash=sha256:00\n"))
    assert set(found) == {"extra-index|https://***@pkgs.internal.example/simple", "http-index|http://mirror.example/simple",
                          "no-tls|mirror.example", "extra-index|http://127.0.0.1:8000/wheels"}
    confusion = found["extra-index|https://***@pkgs.internal.example/simple"]
    assert confusion.rule_id == "MLSEC-DEP-006" and confusion.line == 1 and "tok3n" not in confusion.message
    assert "tok3n" not in repr(found)
    assert found["http-index|http://mirror.example/simple"].rule_id == "MLSEC-DEP-007"


def test_poetry_uv_and_conda_index_settings() -> None:
    poetry = keyed(supply_chain.check(manifests.parse(str(DEPS / "projects/poetry/pyproject.toml"), "pyproject.toml")))
    assert poetry["extra-index|https://pypi.internal.example/simple"].rule_id == "MLSEC-DEP-006"
    assert poetry["vcs-ref|featlib"].rule_id == "MLSEC-DEP-008"
    uv = keyed(supply_chain.check(manifests.parse(str(DEPS / "projects/pyproject.toml"), "pyproject.toml")))
    assert uv["index-strategy|unsafe-best-match"].line == 23
    assert uv["http-index|http://pypi.internal.example/simple"].line == 27
    conda = keyed(supply_chain.check(manifests.parse(str(DEPS / "projects/environment.yml"), "environment.yml")))
    assert {"http-index|http://conda.internal.example/channel", "extra-index|https://download.pytorch.org/whl/cpu",
            "typosquat|tensorfow"} <= set(conda)
    assert "unpinned|pytorch" not in conda  # conda entries are inventory


def test_direct_references(tmp_path: Path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    found = keyed(issues(tmp_path, "requirements.txt",
                         f"git+https://github.com/o/a.git@main#egg=a\ngit+https://github.com/o/b.git@{sha}#egg=b\n"
                         "c @ https://example.com/c-1.0.tar.gz\n"
                         "d @ https://example.com/d-1.0.tar.gz#sha256=00ff\n"
                         "git+http://git.example.com/e.git#egg=e\n"))
    assert {k for k in found if not k.startswith(("no-hashes", "missing-hash"))} == {
        "vcs-ref|a", "url-hash|c", "http-url|e", "vcs-ref|e"}
    assert vcs_commit(f"git+https://x/y.git@{sha}") == sha and vcs_commit(f"git+https://x/y?rev=main#{sha}") == sha
    assert vcs_commit("git+https://x/y.git@v1.0") == "" and vcs_commit("svn+https://x/y@1234") == "1234"


def test_locks_vcs_sources_pinned_by_commit_are_fine() -> None:
    m = manifests.parse(str(DEPS / "locks/uv.lock"), "uv.lock")
    assert supply_chain.check(m) == []


@pytest.mark.parametrize(("name", "target"), [
    ("tensorfow", "tensorflow"), ("transfomers", "transformers"), ("lang-chain", "langchain"),
    ("hugging-face-hub", "huggingface-hub"), ("numpyy", "numpy"), ("py-torch", "torch"), ("pytroch", None),
    ("torch-nightly", "torch"), ("hub-huggingface", "huggingface-hub"), ("scikitlearn", "scikit-learn"),
])
def test_typosquats_of_popular_ml_names(name: str, target: str | None) -> None:
    hit = typosquat_target(name)
    assert (hit[0] if hit else None) == target


@pytest.mark.parametrize("name", ["dash", "dask", "fastai", "fastapi", "scapy", "scipy", "panda", "tensorboardx",
                                  "faiss-gpu", "onnxruntime-gpu", "torch", "keras", "requests-mock", "six", "attrs"])
def test_popular_and_allowlisted_names_are_not_typosquats(name: str) -> None:
    assert typosquat_target(name) is None


def test_known_bad_and_placeholder_names(tmp_path: Path) -> None:
    found = keyed(issues(tmp_path, "requirements.txt", "torchtriton==3.0.0 --hash=sha256:0\nsklearn==0.0 --hash=sha256:0\n"))
    assert found["known-bad|torchtriton"].severity == Severity.HIGH
    assert dict(found["placeholder|sklearn"].evidence)["use"] == "scikit-learn"


def test_one_edit_is_damerau() -> None:
    assert one_edit("torch", "troch") and one_edit("numpy", "numpyy") and one_edit("keras", "kears")
    assert not one_edit("torch", "torch") and not one_edit("torch", "trohc") and not one_edit("numpy", "numba")


def test_redact_removes_credentials() -> None:
    assert redact("https://u:p@h.example:8443/simple") == "https://***@h.example:8443/simple"
    assert redact("https://h.example/simple") == "https://h.example/simple"


# -- through the real pipeline ------------------------------------------------------------------------


def test_scan_yields_packages_and_findings_with_lines(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "# pinned but typo\ntransfomers==4.30.0\n--extra-index-url https://pkgs.internal.example/simple\ntorch>=2\n")
    result = scan_path(tmp_path)
    assert {(p.name, p.version, p.specifier) for p in result.packages} == {("transfomers", "4.30.0", ""),
                                                                           ("torch", "", ">=2")}
    lines = {(f.rule_id, f.location.line) for f in result.findings}
    assert {("MLSEC-DEP-009", 2), ("MLSEC-DEP-006", 3), ("MLSEC-DEP-004", 4), ("MLSEC-DEP-005", 2)} <= lines
    assert all(f.rule_id in catalog.rules() and f.scanner == "mlsec-deps" for f in result.findings)
    assert all(str(f.location.line) not in f.key for f in result.findings if f.location.line and f.location.line > 9)
    assert [s.code for s in result.skipped] == ["no-advisory-db"]


def test_fingerprints_survive_moved_lines(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("torch>=2\n")
    before = {f.fingerprint for f in scan_path(tmp_path).findings}
    (tmp_path / "requirements.txt").write_text("# comment\n\ntorch>=2\n")
    assert {f.fingerprint for f in scan_path(tmp_path).findings} == before


def test_unparseable_file_is_a_finding_and_no_packages(tmp_path: Path) -> None:
    (tmp_path / "poetry.lock").write_text("[[package]\nname = ")
    result = scan_path(tmp_path)
    assert [(f.rule_id, f.severity) for f in result.findings] == [("MLSEC-DEP-011", Severity.MEDIUM)]
    assert result.packages == () and result.errors == ()


def test_a_file_without_dependencies_is_not_reported_incomplete(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    result = scan_path(tmp_path)
    assert result.findings == () and result.skipped == () and result.errors == ()


@pytest.mark.parametrize("name", ["requirements.txt", "pyproject.toml", "uv.lock", "Pipfile.lock", "pylock.toml",
                                  "environment.yml", "setup.cfg", "poetry.lock"])
def test_hostile_bytes_never_crash_the_scanner(tmp_path: Path, name: str) -> None:
    import random

    rng = random.Random(7)
    for i in range(20):
        d = tmp_path / str(i)
        d.mkdir()
        (d / name).write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
        assert scan_path(d).errors == ()
