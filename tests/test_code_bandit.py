"""The bandit adapter: same results as stock bandit, nosec, configuration, mapping, masking."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import pytest

from mlsec import catalog, config
from mlsec.model import Severity
from mlsec.pipeline import Options, run
from mlsec.scanners import code_bandit as cb
from mlsec.scanners import code_ml
from tests.conftest import FIXTURES, rules_of

pytest.importorskip("bandit", reason="bandit is not installed")

BOTH = frozenset({"mlsec", "bandit"})
ONLY_BANDIT = frozenset({"bandit"})


def scan(path: Path, engines: frozenset[str] = BOTH) -> object:
    return run([str(path)], Options(engines=engines, use_cache=False))


ALL_TESTS = cb.BanditSelection()


def bandit_hits(source: str, selection: cb.BanditSelection = ALL_TESTS, *, stock: bool = False,
                name: str = "sample.py") -> list[cb.BanditHit]:
    data = source.encode()
    found, errors = cb.run_bandit(data, ast.parse(data), name, selection, stock=stock)
    assert errors == []
    return found


def _corpus() -> list[Path]:
    stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    return sorted((FIXTURES / "code").glob("*.py")) + stdlib[::4]


def test_fast_visitor_gives_exactly_stock_bandit_results() -> None:
    """The per-node shortcuts must not change one result (fixtures plus a slice of the stdlib)."""
    compared: set[str] = set()
    for path in _corpus():
        data = path.read_bytes()
        try:
            tree = code_ml.parse_source(data)
        except code_ml.SourceError:
            continue
        fast, _ = cb.run_bandit(data, tree, str(path), cb.BanditSelection())
        stock, _ = cb.run_bandit(data, code_ml.parse_source(data), str(path), cb.BanditSelection(), stock=True)
        assert fast == stock, path.name
        compared |= {h.test_id for h in stock}
    assert len(compared) >= 10, compared  # the corpus exercised many different tests


def test_nosec_is_honoured_as_bandit_does() -> None:
    src = (
        "import subprocess\n"
        "subprocess.call(cmd, shell=True)  # nosec B602\n"
        "subprocess.call(cmd, shell=True)  # nosec\n"
        "subprocess.call(cmd, shell=True)  # nosec B101\n"
        "subprocess.call(cmd, shell=True)\n"
    )
    b602 = sorted(h.line for h in bandit_hits(src) if h.test_id == "B602")
    assert b602 == [4, 5]
    assert b602 == sorted(h.line for h in bandit_hits(src, stock=True) if h.test_id == "B602")


def test_severity_times_confidence() -> None:
    def hit(sev: str, conf: str) -> cb.BanditHit:
        return cb.BanditHit("B000", "t", sev, conf, 0, "", 1, 1, 1)

    assert cb.severity_of(hit("HIGH", "HIGH")) is Severity.HIGH
    assert cb.severity_of(hit("HIGH", "LOW")) is Severity.MEDIUM
    assert cb.severity_of(hit("MEDIUM", "MEDIUM")) is Severity.MEDIUM
    assert cb.severity_of(hit("LOW", "HIGH")) is Severity.LOW
    assert cb.severity_of(hit("LOW", "LOW")) is Severity.INFO


def test_every_bandit_test_has_a_catalog_entry() -> None:
    from bandit.core import extension_loader

    m = extension_loader.MANAGER
    tests = set(m.plugins_by_id) | {t["id"] for tests in m.blacklist.values() for t in tests}
    missing = sorted(t for t in tests if f"MLSEC-BANDIT-{t}" not in catalog.rules())
    assert missing == []
    assert cb.FALLBACK_RULE in catalog.rules()


def test_findings_map_ids_cwe_lines_and_evidence(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import subprocess\n\ndef run(cmd):\n    subprocess.call(cmd, shell=True)\n")
    result = scan(tmp_path / "app.py", ONLY_BANDIT)
    (f,) = [f for f in result.findings if f.rule_id == "MLSEC-BANDIT-B602"]
    ev = dict(f.evidence)
    assert f.severity is Severity.HIGH and f.scanner == "bandit"
    assert f.location.line == 4 and f.location.column == 5
    assert ev["bandit_test"] == "B602" and ev["cwe"] == "CWE-78" and ev["confidence"] == "high"
    assert "4" not in f.key.split("|")[0]


def test_hardcoded_password_is_masked(tmp_path: Path) -> None:
    secret = "Tr0ub4dor&3xtra"
    (tmp_path / "db.py").write_text(f'password = "{secret}"\nconnect(user="a", password="{secret}")\n')
    result = scan(tmp_path / "db.py", ONLY_BANDIT)
    found = [f for f in result.findings if f.rule_id in ("MLSEC-BANDIT-B105", "MLSEC-BANDIT-B106")]
    assert len(found) == 2
    for f in found:
        assert secret not in f.message and secret not in f.key and "Tr0u…(15 chars)" in f.message
        assert all(secret not in v for _, v in f.evidence)


def test_project_config_skips_and_selects_tests(tmp_path: Path) -> None:
    src = "import subprocess\nassert x\nsubprocess.call(cmd, shell=True)\n"
    (tmp_path / "app.py").write_text(src)
    base = rules_of(scan(tmp_path / "app.py", ONLY_BANDIT))  # type: ignore[arg-type]
    assert {"MLSEC-BANDIT-B101", "MLSEC-BANDIT-B602", "MLSEC-BANDIT-B404"} <= base
    (tmp_path / "pyproject.toml").write_text('[tool.mlsec.bandit]\nskips = ["B101"]\n')
    assert "MLSEC-BANDIT-B101" not in rules_of(scan(tmp_path / "app.py", ONLY_BANDIT))  # type: ignore[arg-type]
    (tmp_path / "pyproject.toml").write_text('[tool.mlsec.bandit]\ntests = ["B602", "B404"]\n')
    assert rules_of(scan(tmp_path / "app.py", ONLY_BANDIT)) == {"MLSEC-BANDIT-B602", "MLSEC-BANDIT-B404"}  # type: ignore[arg-type]
    (tmp_path / "mlsec.toml").write_text('[bandit]\nskips = ["nope"]\n')
    config.new_run()  # a direct lookup outside a scan: per-run caches belong to the last scan
    with pytest.raises(cb.BanditConfigError, match="mlsec.toml"):
        cb.bandit_config(str(tmp_path / "app.py"))


def test_ml_rules_replace_b614_b615_and_leave_b301_to_bandit(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import dill\nimport torch\nfrom transformers import AutoModel\n"
        "torch.load('m.pt')\nAutoModel.from_pretrained('org/m')\ndill.load(open('x', 'rb'))\n"
    )
    alone = rules_of(scan(tmp_path / "m.py", ONLY_BANDIT))  # type: ignore[arg-type]
    assert {"MLSEC-BANDIT-B614", "MLSEC-BANDIT-B615", "MLSEC-BANDIT-B301"} <= alone
    both = rules_of(scan(tmp_path / "m.py"))  # type: ignore[arg-type]
    assert {"MLSEC-CODE-003", "MLSEC-CODE-002", "MLSEC-BANDIT-B301"} <= both
    assert not both & {"MLSEC-BANDIT-B614", "MLSEC-BANDIT-B615", "MLSEC-CODE-007"}


def test_ml_rules_report_wherever_b614_and_b615_do() -> None:
    """Dropping B614/B615 is only right if the ML rules fire on every line they fire on."""
    src = (
        "import torch\nfrom torch import load\nimport transformers\nfrom datasets import load_dataset\n"
        "from huggingface_hub import hf_hub_download, snapshot_download\n"
        "torch.load(f)\ntorch.load(f, weights_only=False)\ntorch.serialization.load(f)\n"
        "transformers.AutoModel.from_pretrained('org/m')\ntransformers.AutoModel.from_pretrained(name, revision='main')\n"
        "load_dataset('org/data')\nhf_hub_download('org/m', 'f.bin')\nsnapshot_download(repo_id='org/m', revision='v1.0')\n"
    )
    bandit_lines = {h.line for h in bandit_hits(src) if h.test_id in ("B614", "B615")}
    ours = {h.line for h in code_ml.analyze(ast.parse(src)) if h.rule_id in ("MLSEC-CODE-002", "MLSEC-CODE-003")}
    assert len(bandit_lines) >= 7 and bandit_lines <= ours


def test_unparsable_file_reported_once(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def f(:\n")
    for engines in (BOTH, ONLY_BANDIT):
        result = scan(tmp_path / "bad.py", engines)
        assert [s.code for s in result.skipped] == ["unparsable-source"]  # type: ignore[attr-defined]
        assert not result.errors  # type: ignore[attr-defined]


def test_too_deep_for_bandit_is_a_skip(tmp_path: Path) -> None:
    deep = "x = " + " + ".join(["a"] * 3000) + "\n"
    (tmp_path / "deep.py").write_text(deep)
    result = scan(tmp_path / "deep.py", ONLY_BANDIT)
    assert not result.errors  # type: ignore[attr-defined]
    codes = [s.code for s in result.skipped]  # type: ignore[attr-defined]
    assert codes in ([], ["bandit-incomplete"], ["unparsable-source"])
