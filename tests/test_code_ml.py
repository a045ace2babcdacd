"""ML code rules: every rule's own examples, name resolution, deferral to bandit, torch versions."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from mlsec import catalog
from mlsec.model import Finding, Package, Severity
from mlsec.pipeline import Options, run
from mlsec.scanners import code_ml
from tests.conftest import FIXTURES, REPO, rules_of, scan_bytes

RULES = code_ml.rules()


def hits(source: str, bandit_tests: frozenset[str] = frozenset()) -> list[code_ml.MLHit]:
    return code_ml.analyze(ast.parse(source), bandit_tests)


def ids(source: str, bandit_tests: frozenset[str] = frozenset()) -> list[str]:
    return [h.rule_id for h in hits(source, bandit_tests)]


def test_every_rule_file_loads_with_examples() -> None:
    files = sorted((REPO / "rules" / "code").glob("*.toml"))
    assert len(files) == len(RULES) >= 20
    for rule in RULES:
        assert rule.positive.strip() and rule.negative.strip(), rule.id
        assert rule.blocks or rule.taint is not None, rule.id


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_positive_example_is_reported(rule: code_ml.CodeRule) -> None:
    found = [h for h in hits(rule.positive) if h.rule_id == rule.id]
    assert found, f"{rule.id}: positive example not reported"
    if rule.positive_hits is not None:
        assert len(found) == rule.positive_hits, [h.message for h in found]
    for h in found:
        assert h.line >= 1 and h.column >= 1 and h.message


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_negative_example_is_clean(rule: code_ml.CodeRule) -> None:
    assert [h.message for h in hits(rule.negative) if h.rule_id == rule.id] == []


def test_rule_files_and_catalog_agree() -> None:
    """rules/code/*.toml carry the documentation; the catalog entry must say the same."""
    cat = catalog.rules()
    for path in sorted((REPO / "rules" / "code").glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        entry = cat[doc["id"]]
        assert entry.title == doc["title"], path.name
        assert entry.severity == Severity.parse(doc["severity"]), path.name
        assert entry.cwe == tuple(doc["cwe"]), path.name
        assert entry.help == doc["explanation"].strip(), path.name
        assert entry.remediation == doc["remediation"].strip(), path.name


def test_names_resolve_through_imports_and_aliases() -> None:
    src = (
        "import torch as t\nfrom torch import load as tl\nimport torch.hub\nfrom joblib import load\n"
        "t.load('a')\ntl('b')\ntorch.hub.load('o/r', 'm')\nload('c')\n"
    )
    found = {(h.rule_id, h.callee) for h in hits(src)}
    assert ("MLSEC-CODE-003", "torch.load") in found
    assert ("MLSEC-CODE-005", "torch.hub.load") in found
    assert ("MLSEC-CODE-006", "joblib.load") in found
    assert sum(1 for h in hits(src) if h.rule_id == "MLSEC-CODE-003") == 2


def test_unrelated_names_are_not_confused() -> None:
    # a local function called load, a method named load, torch never imported
    src = "def load(p):\n    return p\n\nload('x')\nmodel.load('y')\nstore.torch.load('z')\n"
    assert ids(src) == []


def test_calls_bandit_reports_are_left_to_bandit() -> None:
    src = "import dill\nimport yaml\nimport pandas as pd\ndill.load(f)\nyaml.load(f, Loader=yaml.Loader)\npd.read_pickle('p')\n"
    assert sorted(ids(src)) == ["MLSEC-CODE-007", "MLSEC-CODE-008", "MLSEC-CODE-010"]
    assert ids(src, frozenset({"B301", "B506"})) == []
    # only what bandit runs is deferred: B301 skipped by the project -> our rule reports dill again
    assert sorted(ids(src, frozenset({"B506"}))) == ["MLSEC-CODE-007", "MLSEC-CODE-008"]


def test_first_block_claims_the_call() -> None:
    src = "import requests\nrequests.get('https://x', verify=False)\n"
    assert ids(src) == ["MLSEC-CODE-017"]
    assert ids(src, frozenset({"B501"})) == []  # bandit's B501 covers requests verbs
    sess = "import requests\ns = requests.Session()\ns.get('https://x', verify=False)\n"
    assert ids(sess, frozenset({"B501"})) == ["MLSEC-CODE-017"]  # B501 does not see sessions


def test_pinned_revision_lowers_trust_remote_code() -> None:
    pinned = "from transformers import AutoModel\nAutoModel.from_pretrained('o/m', revision='0123abcd', trust_remote_code=True)\n"
    (h,) = [h for h in hits(pinned) if h.rule_id == "MLSEC-CODE-001"]
    assert h.severity is Severity.MEDIUM
    assert not [h for h in hits(pinned) if h.rule_id == "MLSEC-CODE-002"]


def test_taint_needs_a_flow_not_just_both_calls() -> None:
    flow = "import os\nimport anthropic\nc = anthropic.Anthropic()\nr = c.messages.create(model='m', messages=[])\nos.system(r.content[0].text)\n"
    assert ids(flow) == ["MLSEC-CODE-018"]
    no_flow = "import os\nimport anthropic\nc = anthropic.Anthropic()\nr = c.messages.create(model='m', messages=[])\nos.system('uptime')\n"
    assert ids(no_flow) == []
    loop = ("import subprocess\nfrom openai import OpenAI\n\ndef f(c=OpenAI()):\n    out = ''\n"
            "    for chunk in OpenAI().chat.completions.create(model='m', messages=[], stream=True):\n"
            "        out += chunk.choices[0].delta.content\n    subprocess.check_output(out, shell=True)\n")
    assert ids(loop) == ["MLSEC-CODE-018"]


def test_deep_nesting_does_not_crash_the_pass() -> None:
    chain = "x = " + " + ".join(["a"] * 20000) + "\n"
    try:
        tree = code_ml.parse_source(chain)
    except code_ml.SourceError:
        return  # the parser refused: a Skip, also fine
    assert code_ml.analyze(tree) == []


@pytest.mark.parametrize(
    ("version", "safe"),
    [("2.6.0", True), ("2.6.0+cu124", True), ("2.7.1", True), ("3.0", True), ("2.5.1", False),
     ("2.6.0rc1", False), ("2.6.0.dev20241112", False), ("1.13.1", False), ("", False), (None, False),
     ("garbage", False), ("2.6", True)],
)
def test_weights_only_is_safe(version: str | None, safe: bool) -> None:
    assert code_ml.weights_only_is_safe(version) is safe


def _weights_only_finding() -> Finding:
    (h,) = [h for h in hits("import torch\ntorch.load('m.pt', weights_only=True)\n")]
    (f,) = code_ml.hit_findings([h], "train.py", "mlsec-code")
    assert f.severity is Severity.INFO and dict(f.evidence)["needs_torch_ge"] == "2.6"
    return f


def test_torch_refinement_with_dependency_data() -> None:
    f = _weights_only_finding()
    other = Finding("MLSEC-CODE-006", Severity.MEDIUM, "m", "train.py", "mlsec-code", key="k")
    old = [Package("torch", "2.5.1", "requirements.txt", specifier="==2.5.1")]
    out = code_ml.refine_torch_findings([f, other], old)
    assert out[1] == other and out[0].severity is Severity.HIGH and "2.5.1" in out[0].message
    new = [Package("torch", "2.6.0", "requirements.txt", specifier="==2.6.0")]
    assert code_ml.refine_torch_findings([f, other], new) == [other]
    assert code_ml.refine_torch_findings([f], []) == [f]  # unknown: stays informational
    pytest.importorskip("packaging")
    loose = [Package("torch", "", "pyproject.toml", specifier=">=2.0")]
    assert code_ml.refine_torch_findings([f], loose)[0].severity is Severity.MEDIUM
    tight = [Package("torch", "", "pyproject.toml", specifier=">=2.6")]
    assert code_ml.refine_torch_findings([f], tight) == []


def test_fixture_script_through_the_pipeline() -> None:
    result = run([str(FIXTURES / "code" / "ml_pipeline.py")], Options(use_cache=False))
    want = {"MLSEC-CODE-001", "MLSEC-CODE-002", "MLSEC-CODE-003", "MLSEC-CODE-005", "MLSEC-CODE-006",
            "MLSEC-CODE-009", "MLSEC-CODE-010", "MLSEC-CODE-018", "MLSEC-CODE-019"}
    assert want <= rules_of(result)
    assert not result.errors and not result.skipped
    clean = run([str(FIXTURES / "code" / "clean_train.py")], Options(use_cache=False))
    assert not [f for f in clean.findings if f.rule_id.startswith("MLSEC-CODE")]


def test_fingerprints_survive_unrelated_edits(tmp_path: Path) -> None:
    body = "import torch\n\ndef load(p):\n    return torch.load(p)\n"
    a = scan_bytes(tmp_path / "a", "m.py", body.encode(), use_cache=False)
    b = scan_bytes(tmp_path / "a", "m.py", ("# a comment\n\n\n" + body).encode(), use_cache=False)
    (fa,) = [f for f in a.findings if f.rule_id == "MLSEC-CODE-003"]
    (fb,) = [f for f in b.findings if f.rule_id == "MLSEC-CODE-003"]
    assert fa.location.line == 4 and fb.location.line == 7
    assert fa.fingerprint == fb.fingerprint


@pytest.mark.parametrize(
    ("name", "data"),
    [("nul.py", b"import torch\x00\n"), ("syntax.py", b"def f(:\n  pass\n"), ("py2.py", b"print 'hello'\n"),
     ("latin.py", b"# -*- coding: klingon -*-\nx = 1\n")],
)
def test_unparsable_source_is_a_skip_not_an_error(tmp_path: Path, name: str, data: bytes) -> None:
    result = scan_bytes(tmp_path, name, data, use_cache=False)
    assert not result.errors
    assert [s.code for s in result.skipped] == ["unparsable-source"]


def test_text_prefilter_never_hides_a_hit() -> None:
    """``might_match`` skips modules without trigger words; it must be true wherever a rule fires."""
    sources = [r.positive for r in RULES] + [
        "import torch.hub as th\nth.load('o/r', 'm')\n",
        "from sklearn.externals.joblib import load as jl\njl('m')\n",
        "import os\nfrom litellm import completion\nos.execvp(completion(model='m', messages=[]).text, [])\n",
        "import fsspec\nfsspec.open('HTTP://host/x.bin')\n",
    ]
    for src in sources:
        assert hits(src), src
        assert code_ml.might_match(src.encode()), src
    assert not code_ml.might_match(b"import numpy as np\n\ndef f(x):\n    return np.mean(x)\n")


@pytest.mark.parametrize("chain", ["()", "[0]", "().b"])
def test_long_call_chains_do_not_exhaust_the_stack(chain: str) -> None:
    src = "import torch\nx = torch.load" + chain * 2500
    try:
        tree = code_ml.parse_source(src)
    except code_ml.SourceError:
        pytest.skip("this interpreter's parser refuses the chain")
    code_ml.analyze(tree)  # no RecursionError


def test_resolution_shows_calls_in_the_chain() -> None:
    (h,) = hits("import gradio as gr\ngr.Blocks().launch(share=True)\n")
    assert h.callee == "gradio.Blocks().launch"
