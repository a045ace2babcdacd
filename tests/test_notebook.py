"""Notebooks: findings point at cells, IPython syntax is neutralised, outputs are searched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlsec.model import Finding, ScanResult
from mlsec.pipeline import Options, run
from tests.conftest import FIXTURES

NOTEBOOK = FIXTURES / "code" / "leaky_notebook.ipynb"
FAKE_TOKEN_TAIL = "QzWvXkTnRbLpYmJdHsFgCaEuIoVtNwKrPq"  # the fixture's fake hf_ token, without its prefix


def scan(path: Path, engines: frozenset[str] = frozenset({"mlsec"})) -> ScanResult:
    return run([str(path)], Options(engines=engines, use_cache=False))


def one(result: ScanResult, rule_id: str) -> Finding:
    found = [f for f in result.findings if f.rule_id == rule_id]
    assert len(found) == 1, [(f.rule_id, f.location) for f in result.findings]
    return found[0]


def write_nb(path: Path, cells: list[dict[str, Any]], language: str = "python") -> Path:
    doc = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"language": language, "name": "k"}},
           "cells": cells}
    path.write_text(json.dumps(doc))
    return path


def code(source: str, outputs: list[dict[str, Any]] | None = None, ident: str | None = None) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": "code", "source": source, "metadata": {}, "outputs": outputs or [],
                            "execution_count": None}
    if ident:
        cell["id"] = ident
    return cell


def test_fixture_reports_token_in_output_and_remote_code_with_cell_numbers() -> None:
    result = scan(NOTEBOOK)
    token = one(result, "MLSEC-SECRET-001")
    assert token.location.member == "cell 3" and token.location.pointer == "output 1" and token.location.line == 1
    assert "hf_Q…(37 chars)" in token.message and "cell 3" in token.message
    remote = one(result, "MLSEC-CODE-001")
    assert remote.location.member == "cell 4" and remote.location.line == 5  # line 1 of the cell is %%time
    load = one(result, "MLSEC-CODE-003")
    assert load.location.member == "cell 5" and load.location.line == 5  # after a help query, a magic, x = !ls
    pip = one(result, "MLSEC-NB-001")
    assert pip.location.member == "cell 2" and dict(pip.evidence)["unpinned"] == "transformers"
    http = one(result, "MLSEC-CODE-016")
    assert http.location.member == "cell 2" and http.location.line == 2
    assert not result.errors and not result.skipped
    assert FAKE_TOKEN_TAIL not in json.dumps(result.to_dict())


def test_pip_installs_become_packages() -> None:
    result = scan(NOTEBOOK)
    assert {(p.name, p.version, p.specifier) for p in result.packages} == {("torch", "2.5.1", "==2.5.1"),
                                                                           ("transformers", "", "")}


def test_imports_carry_across_cells_and_lines_map_back(tmp_path: Path) -> None:
    nb = write_nb(tmp_path / "a.ipynb", [
        code("import torch as t\n%load_ext autoreload\n!nvidia-smi \\\n  -L", ident="c1"),
        {"cell_type": "markdown", "source": "text", "metadata": {}},
        code("x = 1\n\n\nstate = t.load('ckpt.pt')", ident="c3"),
    ])
    f = one(scan(nb), "MLSEC-CODE-003")
    assert f.location.member == "cell 3" and f.location.line == 4
    assert f.key.startswith("cell:c3|")


def test_fingerprint_follows_the_cell_not_its_position(tmp_path: Path) -> None:
    cell = code("import joblib\nm = joblib.load('m.joblib')", ident="loader")
    a = one(scan(write_nb(tmp_path / "a.ipynb", [cell])), "MLSEC-CODE-006")
    b = one(scan(write_nb(tmp_path / "a.ipynb", [code("print(1)", ident="new"), cell])), "MLSEC-CODE-006")
    assert a.location.member == "cell 1" and b.location.member == "cell 2"
    assert a.fingerprint == b.fingerprint


def test_a_broken_cell_does_not_hide_the_others(tmp_path: Path) -> None:
    nb = write_nb(tmp_path / "b.ipynb", [
        code("def broken(:\n    pass"),
        code("from transformers import AutoModel\nAutoModel.from_pretrained('o/m', trust_remote_code=True)"),
    ])
    result = scan(nb)
    assert one(result, "MLSEC-CODE-001").location.member == "cell 2"
    assert [(s.code, s.reason.endswith(": 1")) for s in result.skipped] == [("unparsable-cells", True)]


def test_shell_cell_magic_is_not_python_but_is_read(tmp_path: Path) -> None:
    nb = write_nb(tmp_path / "c.ipynb", [
        code("%%bash\npip install requests==2.32.3 'numpy>=1.26' -i https://mirror.example/simple\ncurl http://x.example/m.bin -o m.bin"),
    ])
    result = scan(nb)
    assert not result.skipped
    pip = one(result, "MLSEC-NB-001")
    assert pip.location.line == 2 and dict(pip.evidence)["unpinned"] == "numpy"
    assert {(p.name, p.version) for p in result.packages} == {("requests", "2.32.3"), ("numpy", "")}
    assert one(result, "MLSEC-CODE-016").location.line == 3


def test_outputs_of_every_kind_are_searched(tmp_path: Path) -> None:
    gh = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"
    aws = "AKIA" + "QWERTYUIOPASDFGH"
    outputs = [
        {"output_type": "execute_result", "execution_count": 1, "metadata": {},
         "data": {"text/plain": f"'{gh}'", "image/png": "iVBORw0KGgo="}},
        {"output_type": "error", "ename": "KeyError", "evalue": "x",
         "traceback": [f"\x1b[0;31mKeyError\x1b[0m: bad key {aws}"]},
    ]
    result = scan(write_nb(tmp_path / "d.ipynb", [code("x", outputs)]))
    github = one(result, "MLSEC-SECRET-008")
    assert github.location.pointer == "output 1" and github.location.member == "cell 1"
    assert one(result, "MLSEC-SECRET-006").location.pointer == "output 2"
    text = json.dumps(result.to_dict())
    assert gh[4:] not in text and aws[4:] not in text


def test_malformed_notebook_is_a_finding_and_still_searched(tmp_path: Path) -> None:
    token = "hf_" + "MnBvCxZlKjHgFdSaPoIuYtReWqAzSxDcFv"
    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [ {"source": "token = \\"' + token + '\\"" ')
    result = scan(bad)
    assert one(result, "MLSEC-NB-002").severity.label == "low"
    assert one(result, "MLSEC-SECRET-001").location.line == 1
    assert not result.errors
    deep = tmp_path / "deep.ipynb"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert [f.rule_id for f in scan(deep).findings] == ["MLSEC-NB-002"]


def test_non_python_kernel_gets_secrets_but_no_code_rules(tmp_path: Path) -> None:
    nb = write_nb(tmp_path / "r.ipynb", [code("library(torch)\ntorch.load('x')")], language="R")
    result = scan(nb)
    assert not result.findings and [s.code for s in result.skipped] == ["non-python-notebook"]


def test_bandit_runs_on_cells() -> None:
    pytest.importorskip("bandit", reason="bandit is not installed")
    result = scan(NOTEBOOK, frozenset({"mlsec", "bandit"}))
    assert not result.errors
    rules = {f.rule_id for f in result.findings}
    assert "MLSEC-CODE-003" in rules and "MLSEC-BANDIT-B614" not in rules  # superseded by the ML rule
    only = scan(NOTEBOOK, frozenset({"bandit"}))
    b614 = [f for f in only.findings if f.rule_id == "MLSEC-BANDIT-B614"]
    assert len(b614) == 1 and b614[0].location.member == "cell 5" and b614[0].location.line == 5
    assert not [f for f in only.findings if f.rule_id.startswith(("MLSEC-CODE", "MLSEC-SECRET"))]


def test_odd_but_valid_json_shapes_do_not_crash(tmp_path: Path) -> None:
    cells: list[Any] = [
        "not a cell", {"cell_type": 3, "source": ["a", 1, None]}, {"cell_type": "code", "source": None, "outputs": "x"},
        {"cell_type": "code", "source": "x = 1", "outputs": [1, {"output_type": "error", "traceback": "plain"},
                                                             {"data": {"text/plain": [1, 2], "application/json": {"a": [1]}}}]},
    ]
    for doc in ({"cells": cells}, {"worksheets": [{"cells": [{"cell_type": "code", "input": "import joblib\njoblib.load('m')"}]}]},
                [], {"cells": {}}, {"cells": [], "metadata": {"kernelspec": "python"}}):
        path = tmp_path / "odd.ipynb"
        path.write_text(json.dumps(doc))
        result = scan(path)
        assert not result.errors, doc
        if "worksheets" in doc:  # nbformat 3 keeps code in "input"
            assert [f.rule_id for f in result.findings] == ["MLSEC-CODE-006"]
