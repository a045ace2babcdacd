"""Dataset directories: loading scripts, dataset cards and dataset_info.json, facts for the BOM.

``fixtures/data/hf_dataset`` was written by ``datasets`` (``save_to_disk``) with a hand-written
card; the other directories are laid out here the way the Hugging Face Hub and ``datasets`` lay
them out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlsec.model import ScanResult, Severity
from mlsec.scanners.data_dir import dataset_dir, front_matter
from tests.conftest import FIXTURES, rules_of, scan_path

HF = FIXTURES / "data" / "hf_dataset"

BUILDER = '''import datasets


class Squad(datasets.GeneratorBasedBuilder):
    """A loading script, as on the Hub before data-only datasets."""

    def _split_generators(self, dl_manager):
        return []

    def _generate_examples(self, filepath):
        yield 0, {}
'''


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def card(**fields: object) -> str:
    lines = ["---"]
    for key, value in fields.items():
        lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines + ["---", "", "# Card", ""])


def by_rule(result: ScanResult) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for f in result.findings:
        out.setdefault(f.rule_id, []).append((f.path.split("/", 1)[-1] if "/" in f.path else f.path, f.message))
    return out


def facts(result: ScanResult) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for f in result.facts:
        out.setdefault((f.path, f.name), set()).add(f.value)
    return out


def test_loading_script_next_to_a_dataset_card(tmp_path: Path) -> None:
    root = write(tmp_path / "squad", {
        "README.md": card(license="cc-by-sa-4.0", task_categories=["question-answering"],
                          source_datasets=["original"]),
        "squad.py": BUILDER,
        "helpers.py": "def tokenize(s):\n    return s.split()\n",
        "data/train.jsonl": '{"q": "why"}\n',
    })
    result = scan_path(root)
    scripts = sorted((f for f in result.findings if f.rule_id == "MLSEC-DATA-011"), key=lambda f: f.path)
    assert [f.path.rsplit("/", 1)[-1] for f in scripts] == ["helpers.py", "squad.py"]
    squad = next(f for f in scripts if f.path.endswith("squad.py"))
    assert squad.severity == Severity.HIGH and "trust_remote_code" in squad.message
    assert squad.location.line == 4 and dict(squad.evidence)["builder"] == "datasets.GeneratorBasedBuilder"
    assert rules_of(result) == {"MLSEC-DATA-011"}  # licence and source declared


def test_builder_class_anywhere_is_a_loading_script(tmp_path: Path) -> None:
    root = write(tmp_path / "proj", {"pipelines/my_dataset.py": BUILDER.replace("datasets.", "")
                                     .replace("import ", "from datasets import GeneratorBasedBuilder  # ")})
    result = scan_path(root)
    (f,) = [f for f in result.findings if f.rule_id == "MLSEC-DATA-011"]
    assert dict(f.evidence)["reason"] == "defines a datasets builder class"


def test_code_in_ordinary_and_model_directories_is_not_a_loading_script(tmp_path: Path) -> None:
    root = write(tmp_path / "repo", {
        "train.py": "import pandas as pd\npd.read_csv('data/train.csv')\n",
        "data/train.csv": "a,b\n1,2\n",
        "README.md": "# My project\n",
        "model/README.md": card(library_name="transformers", pipeline_tag="text-classification",
                                datasets=["imdb"]),
        "model/config.json": "{}",
        "model/handler.py": "def handle(x):\n    return x\n",
    })
    result = scan_path(root)
    assert not rules_of(result) & {"MLSEC-DATA-011", "MLSEC-DATA-012", "MLSEC-DATA-013"}


def test_card_without_licence_or_source(tmp_path: Path) -> None:
    root = write(tmp_path / "ds", {"README.md": card(pretty_name="x", size_categories=["n<1K"]),
                                   "train.csv": "a\n1\n"})
    result = scan_path(root)
    got = by_rule(result)
    assert got["MLSEC-DATA-012"] == [("README.md", "Dataset licence: the card declares none")]
    (info,) = [f for f in result.findings if f.rule_id == "MLSEC-DATA-013"]
    assert info.severity == Severity.INFO and info.path.endswith("README.md")
    root2 = write(tmp_path / "ds2", {"README.md": card(license="unknown", task_categories=["other"],
                                                       source_datasets=["extended|squad"])})
    got2 = by_rule(scan_path(root2))
    assert got2["MLSEC-DATA-012"] == [("README.md", "Dataset licence: the card says unknown")]
    assert "MLSEC-DATA-013" not in got2


def test_card_declarations_become_facts_on_the_directory_and_its_data_files(tmp_path: Path) -> None:
    write(tmp_path / "ds", {
        "README.md": card(license=["mit", "cc-by-4.0"], task_categories=["other"],
                          source_datasets=["original"], classification="confidential",
                          owners=["data-eng", "privacy@example.com"]),
        "data/train-00000.parquet": "not really parquet",
        "data/nested/test.csv": "a\n1\n",
        ".hidden/secret.csv": "a\n1\n",
        "state.json": "{}",
    })
    result = scan_path(tmp_path, use_gitignore=False)
    got = facts(result)
    for target in ("ds", "ds/data/train-00000.parquet", "ds/data/nested/test.csv"):
        assert got[(target, "dataset.license")] == {"mit,cc-by-4.0"}, target
        assert got[(target, "dataset.source")] == {"original"}
        assert got[(target, "dataset.classification")] == {"confidential"}
        assert got[(target, "dataset.owner")] == {"data-eng", "privacy@example.com"}
    assert ("ds/.hidden/secret.csv", "dataset.license") not in got
    assert ("ds/state.json", "dataset.license") not in got


def test_dataset_info_json_gives_rows_columns_and_fills_gaps(tmp_path: Path) -> None:
    info = {"features": {"text": {"dtype": "string"}, "label": {"dtype": "int64"}},
            "splits": {"train": {"name": "train", "num_examples": 800}, "test": {"name": "test", "num_examples": 200}},
            "license": "apache-2.0", "homepage": "https://example.org/data"}
    root = write(tmp_path / "cache", {"dataset_info.json": json.dumps(info), "loader.py": "x = 1\n"})
    result = scan_path(tmp_path)
    got = facts(result)
    assert got[("cache/dataset_info.json", "dataset.rows")] == {"1000"}
    assert got[("cache", "dataset.columns")] == {"2"}
    assert got[("cache", "dataset.license")] == {"apache-2.0"}
    assert got[("cache", "dataset.source")] == {"https://example.org/data"}
    assert rules_of(result) & {"MLSEC-DATA-011", "MLSEC-DATA-012", "MLSEC-DATA-013"} == {"MLSEC-DATA-011"}
    # Without a licence and without a card, dataset_info.json speaks for the gaps.
    info.pop("license")
    info.pop("homepage")
    (root / "dataset_info.json").write_text(json.dumps(info))
    got = by_rule(scan_path(root))
    assert got["MLSEC-DATA-012"][0][0].endswith("dataset_info.json")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("---\nlicense: [mit\ntask_categories: x\n---\n", "invalid YAML"),
        ("---\n- just\n- a list\n---\n", "not a mapping"),
        ("---\nlicense: !!python/object/apply:os.system ['echo pwned']\n---\n", "invalid YAML"),
    ],
)
def test_malformed_cards_are_findings_and_never_execute(tmp_path: Path, text: str, problem: str) -> None:
    root = write(tmp_path / "ds", {"README.md": text, "dataset_info.json": "{}"})
    result = scan_path(root)
    bad = [f.message for f in result.findings if f.rule_id == "MLSEC-DATA-015"]
    assert any(problem in m for m in bad), bad
    assert not result.errors


def test_yaml_alias_bomb_and_huge_cards(tmp_path: Path) -> None:
    bomb = "---\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(12)) + "license: *m\ntask_categories: [other]\n---\n"
    root = write(tmp_path / "ds", {"README.md": bomb})
    result = scan_path(root)
    assert not result.errors  # the licence is a nested list of lists: taken as "not stated"
    assert "MLSEC-DATA-012" in rules_of(result)
    big = write(tmp_path / "big", {"README.md": card(license="mit", task_categories=["x"]) + "x" * (2 << 20),
                                   "dataset_info.json": "{}"})
    assert "MLSEC-DATA-015" in rules_of(scan_path(big))


def test_front_matter_and_directory_classification(tmp_path: Path) -> None:
    assert front_matter("---\na: 1\n---\nbody") == "a: 1"
    assert front_matter("\ufeff---\na: 1\n...\n") == "a: 1"
    assert front_matter("# title\n---\na: 1\n---\n") is None
    assert front_matter("---\nunterminated: 1\n") is None
    write(tmp_path / "a", {"dataset_dict.json": '{"splits": ["train"]}'})
    write(tmp_path / "b", {"state.json": "{}", "data-00000-of-00001.arrow": ""})
    write(tmp_path / "c", {"state.json": "{}"})
    assert dataset_dir(str(tmp_path / "a")) is not None and dataset_dir(str(tmp_path / "b")) is not None
    assert dataset_dir(str(tmp_path / "c")) is None


def test_the_datasets_fixture_directory() -> None:
    if not HF.is_dir():
        pytest.skip("fixtures/data/hf_dataset missing (run fixtures/make_data_fixtures.py)")
    result = scan_path(HF)
    assert [f for f in result.findings if f.severity >= Severity.INFO] == []
    got = facts(result)
    arrow = "data-00000-of-00001.arrow"  # paths are relative to the scanned directory
    assert got[(arrow, "dataset.license")] == {"cc-by-4.0"}
    assert got[(arrow, "dataset.owner")] == {"ml-platform"}
    assert got[(arrow, "dataset.classification")] == {"internal"}
    assert got[(".", "dataset.columns")] == {"3"} and got[(".", "dataset.source")] == {"original"}
