"""Each dependency format parses to the expected dependency list, with the lines that declared it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsec.deps import Dependency, manifests
from mlsec.deps.conda import conda_spec
from mlsec.deps.pyproject import poetry_constraint
from mlsec.deps.requirements import logical_lines
from tests.conftest import FIXTURES

DEPS = FIXTURES / "deps"


def parse(rel: str) -> manifests.Manifest:
    return manifests.parse(str(DEPS / rel), rel)


def rows(m: manifests.Manifest) -> list[tuple[str, str, str, int | None]]:
    return [(d.name, d.version, d.specifier, d.line) for d in m.dependencies]


def by_name(m: manifests.Manifest, name: str) -> Dependency:
    (dep,) = [d for d in m.dependencies if d.name == name]
    return dep


def test_requirements_with_includes_hashes_markers_extras_urls_editables() -> None:
    m = parse("requirements/requirements.txt")
    assert m.format == "requirements" and m.problems == ()
    assert rows(m) == [
        ("scikit-learn", "1.0.2", "==1.0.2", 1), ("pyyaml", "5.3.1", "==5.3.1", 2),   # from -r base.txt
        ("torch", "1.13.0", "==1.13.0", 1),                                            # from -c constraints.txt
        ("pillow", "9.0.0", "==9.0.0", 6), ("requests", "2.31.0", "==2.31.0", 8), ("torch", "", "", 9),
        ("mlflow", "", "<2.9,>=2.0", 10), ("numpy", "", "", 11), ("featlib", "", "", 12), ("evallib", "", "", 13),
        ("", "", "", 14),
    ]
    base = by_name(m, "scikit-learn")
    assert base.source == "requirements/base.txt" and base.via_line == 2 and base.report_line == 2
    constraint = [d for d in m.dependencies if d.constraint]
    assert [(d.name, d.source, d.via_line) for d in constraint] == [("torch", "requirements/constraints.txt", 3)]
    pillow = by_name(m, "pillow")
    assert pillow.hashes == ("sha256:ee6e2963e92762923956fe5d3479b1fdc3b76c83f290aad131a2f98c3df0593e",)
    requests = by_name(m, "requests")
    assert requests.extras == ("security", "socks") and requests.marker == 'python_version >= "3.8"'
    assert by_name(m, "numpy").url.startswith("https://files.pythonhosted.org/")
    assert by_name(m, "featlib").url == "git+https://github.com/example/featlib.git@v1.2#egg=featlib"
    assert by_name(m, "evallib").editable
    local = m.dependencies[-1]
    assert local.editable and local.url == "./libs/localpkg"
    assert [(i.kind, i.url, i.line) for i in m.indexes] == [("index-url", "https://pypi.org/simple", 4)]


def test_pyproject_pep621_groups_build_and_uv_settings() -> None:
    m = parse("projects/pyproject.toml")
    assert m.problems == ()
    assert [(d.name, d.version, d.specifier, d.line, d.group) for d in m.dependencies] == [
        ("torch", "", ">=2.0", 9, ""), ("transformers", "4.30.0", "==4.30.0", 10, ""), ("pillow", "", "", 11, ""),
        ("numpy", "", ">=1.24", 12, ""), ("gradio", "3.0.0", "==3.0.0", 16, "extra:serve"),
        ("pytest", "", ">=8", 19, "group:dev"), ("ruff", "0.5.0", "==0.5.0", 20, "group:lint"),
        ("hatchling", "", ">=1.25", 2, "build"),
    ]
    assert by_name(m, "transformers").extras == ("torch",)
    assert m.settings == (("index-strategy", "unsafe-best-match", 23),)
    assert [(i.kind, i.url, i.line, i.name) for i in m.indexes] == [
        ("uv-index", "http://pypi.internal.example/simple", 27, "internal")]


def test_pyproject_poetry_tables_constraints_and_sources() -> None:
    m = parse("projects/poetry/pyproject.toml")
    assert m.problems == ()
    assert [(d.name, d.version, d.specifier, d.line, d.group) for d in m.dependencies] == [
        ("numpy", "", ">=1.24.2,<2.0.0", 9, ""), ("scipy", "", ">=1.10,<1.11", 10, ""),
        ("pandas", "2.0.3", "==2.0.3", 11, ""), ("mlflow", "", ">=2.1,<2.3", 12, ""),
        ("internal-lib", "", ">=0.3,<0.4", 13, ""), ("featlib", "", "", 14, ""), ("localpkg", "", "", 15, ""),
        ("pyyaml", "5.3.1", "==5.3.1", 16, ""), ("pyyaml", "", ">=6.0,<7.0", 16, ""), ("pytest", "", "", 22, "dev"),
    ]
    assert by_name(m, "featlib").url == "git+https://github.com/example/featlib.git@main"
    assert by_name(m, "internal-lib").index == "internal" and by_name(m, "mlflow").extras == ("extras",)
    assert [(i.kind, i.priority, i.line) for i in m.indexes] == [("poetry-source", "supplemental", 26)]


@pytest.mark.parametrize(("poetry", "pep440"), [
    ("^1.2.3", ">=1.2.3,<2.0.0"), ("^0.2.3", ">=0.2.3,<0.3.0"), ("^0.0.3", ">=0.0.3,<0.0.4"), ("^0", ">=0,<1.0"),
    ("~1.2.3", ">=1.2.3,<1.3.0"), ("~1", ">=1,<2.0"), ("1.2.3", "==1.2.3"), ("*", ""), (">=1.0 <2.0", ">=1.0,<2.0"),
    ("^1.0 || ^2.0", ">=1.0,<2.0 || >=2.0,<3.0"),
])
def test_poetry_constraints_translate_to_pep440(poetry: str, pep440: str) -> None:
    assert poetry_constraint(poetry) == pep440


@pytest.mark.parametrize(("lock", "direct", "groups"), [
    ("uv.lock", [True, True, True], ["dev", "", ""]),
    ("pylock.toml", [False, False, False], ["", "", ""]),
    ("poetry.lock", [False, False, False], ["dev", "", ""]),
])
def test_toml_lockfiles_made_by_their_tools(lock: str, direct: list[bool], groups: list[str]) -> None:
    m = parse(f"locks/{lock}")
    assert m.locked and m.problems == ()
    assert [(d.name, d.version) for d in m.dependencies] == [("iniconfig", "2.0.0"), ("pillow", "9.0.0"),
                                                             ("six", "1.16.0")]
    assert [d.direct for d in m.dependencies] == direct and [d.group for d in m.dependencies] == groups
    text = (DEPS / "locks" / lock).read_text().splitlines()
    for dep in m.dependencies:  # each line points at that package's entry
        assert dep.line is not None and text[dep.line] == f'name = "{dep.name}"' or \
            text[dep.line - 1] == f'name = "{dep.name}"', (lock, dep.name, dep.line)
        assert dep.hashes and all(h.startswith("sha256:") for h in dep.hashes)
        assert dep.index == "https://pypi.org/simple"


def test_pipfile_lock_made_by_pipenv() -> None:
    m = parse("locks/Pipfile.lock")
    assert m.locked and m.problems == ()
    assert [(d.name, d.version, d.group) for d in m.dependencies] == [
        ("pillow", "9.0.0", ""), ("six", "1.16.0", ""), ("iniconfig", "2.0.0", "dev")]
    text = (DEPS / "locks" / "Pipfile.lock").read_text().splitlines()
    assert all(f'"{d.name}": {{' in text[d.line - 1] for d in m.dependencies if d.line)
    assert [(i.kind, i.url, i.verify_tls) for i in m.indexes] == [("pipfile-source", "https://pypi.org/simple", True)]


def test_conda_environment_with_pip_section() -> None:
    m = parse("projects/environment.yml")
    assert m.problems == ()
    assert [(d.name, d.version, d.specifier, d.line, d.ecosystem, d.pypi_name) for d in m.dependencies] == [
        ("pytorch", "1.13.0", "==1.13.0", 8, "conda", "torch"), ("numpy", "", "==1.26.*", 9, "conda", "numpy"),
        ("pillow", "9.0.0", "==9.0.0", 10, "conda", "pillow"), ("cudatoolkit", "11.8.0", "==11.8.0", 11, "conda", ""),
        ("mlflow", "2.1.0", "==2.1.0", 14, "pypi", ""), ("tensorfow", "2.12.0", "==2.12.0", 15, "pypi", ""),
    ]
    assert by_name(m, "pillow").index == "conda-forge"
    assert [(i.kind, i.url) for i in m.indexes][-2:] == [
        ("conda-channel", "http://conda.internal.example/channel"),
        ("extra-index-url", "https://download.pytorch.org/whl/cpu")]


@pytest.mark.parametrize(("spec", "expected"), [
    ("=1.26", ("", "==1.26.*")), ("==1.26.4", ("1.26.4", "==1.26.4")), ("=1.26.4=py311h_0", ("1.26.4", "==1.26.4")),
    ("1.26.4 py311_0", ("1.26.4", "==1.26.4")), (">=1.2,<2", ("", ">=1.2,<2")), ("[version='>=2.0']", ("", ">=2.0")),
    ("", ("", "")),
])
def test_conda_match_specs(spec: str, expected: tuple[str, str]) -> None:
    assert conda_spec(spec) == expected


def test_setup_cfg_install_requires_extras_and_setup_requires() -> None:
    m = parse("projects/setup.cfg")
    assert m.problems == ()
    assert [(d.name, d.version, d.specifier, d.line, d.group) for d in m.dependencies] == [
        ("numpy", "", ">=1.21", 7, ""), ("pillow", "9.0.0", "==9.0.0", 8, ""),
        ("tensorflow", "2.4.0", "==2.4.0", 9, ""), ("setuptools-scm", "", "", 11, "build"),
        ("matplotlib", "3.5.0", "==3.5.0", 15, "extra:viz"),
    ]
    assert by_name(m, "tensorflow").marker == 'platform_system != "Darwin"'


def test_logical_lines_follow_pip_continuations_and_comments() -> None:
    text = "a==1 \\\n  --hash=sha256:x\n# c \\\nb==2  # trailing\nc==3 \\\n"
    assert logical_lines(text) == [(1, "a==1   --hash=sha256:x"), (4, "b==2"), (5, "c==3")]


def test_include_cycles_missing_remote_and_invalid_lines_are_problems_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "-r requirements.txt\n-r missing.txt\n-r https://example.com/r.txt\nnot a requirement!!\n--bogus\nok==1\n")
    m = manifests.parse(str(tmp_path / "requirements.txt"), "requirements.txt")
    assert [(p.code, p.line) for p in m.problems] == [
        ("include-cycle", 1), ("include-missing", 2), ("remote-include", 3), ("invalid-requirement", 4),
        ("unknown-option", 5)]
    assert rows(m) == [("ok", "1", "==1", 6)] and m.parsed


def test_deep_include_chains_stop_at_the_limit(tmp_path: Path) -> None:
    for i in range(15):
        (tmp_path / f"requirements{i}.txt").write_text(f"-r requirements{i + 1}.txt\npkg{i}==1\n")
    (tmp_path / "requirements15.txt").write_text("last==1\n")
    m = manifests.parse(str(tmp_path / "requirements0.txt"), "requirements0.txt")
    assert any(p.code == "include-depth" for p in m.problems)
    assert len(m.dependencies) == 11  # the scanned file and ten levels of includes


@pytest.mark.parametrize(("name", "data"), [
    ("pyproject.toml", b"[project\ndependencies = ["),
    ("uv.lock", b"version = 1\n[[package]\n"),
    ("Pipfile.lock", b"{\"default\": "),
    ("Pipfile.lock", b"[" * 100_000),
    ("environment.yml", b"dependencies: [unclosed"),
    ("environment.yml", b"- just\n- a list\n"),
    ("pylock.toml", b"\xff\xfe\x00\xd8"),
    ("setup.cfg", b"no section header\n"),
])
def test_corrupt_files_are_fatal_problems(tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / name).write_bytes(data)
    m = manifests.parse(str(tmp_path / name), name)
    assert not m.parsed and m.dependencies == ()


def test_utf16_and_bom_requirements_are_decoded(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_bytes("torch==2.0.0\n".encode("utf-16"))
    (tmp_path / "requirements-b.txt").write_bytes(b"\xef\xbb\xbfnumpy==1.0\n")
    assert rows(manifests.parse(str(tmp_path / "requirements.txt"), "requirements.txt")) == [("torch", "2.0.0", "==2.0.0", 1)]
    assert rows(manifests.parse(str(tmp_path / "requirements-b.txt"), "requirements-b.txt")) == [("numpy", "1.0", "==1.0", 1)]


def test_format_selection_by_name() -> None:
    assert manifests.format_of("a/requirements-dev.txt") == "requirements"
    assert manifests.format_of("constraints.in") == "requirements"
    assert manifests.format_of("pylock.gpu.toml") == "pylock.toml"
    assert manifests.format_of("Pipfile.lock") == "Pipfile.lock"
    assert manifests.format_of("requirements/base.txt") == "requirements"
    assert manifests.format_of("dev-requirements.txt") == "requirements"
    assert manifests.format_of("environment-gpu.yaml") == "environment.yml"
    assert manifests.format_of("notes.txt") is None and manifests.format_of("docs/base.txt") is None
