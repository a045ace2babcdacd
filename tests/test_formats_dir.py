"""Hugging Face model directories: trust_remote_code, pickle-only weights, templates, card facts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlsec.model import Severity
from tests.conftest import FIXTURES, at_least, rules_of, scan_path
from tests.test_hostile import system_pickle

HF = FIXTURES / "formats" / "hf"


def hf_dir(tmp_path: Path, config: dict[str, object] | None = None, **files: bytes | str) -> Path:
    d = tmp_path / "model"
    shutil.copytree(HF, d)
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    for name, data in files.items():
        target = d / name.replace("__", ".")
        target.write_bytes(data) if isinstance(data, bytes) else target.write_text(data)
    return d


def test_benign_directories_are_clean_and_give_card_facts() -> None:
    for directory in (HF, FIXTURES / "hf_model"):
        result = scan_path(directory)
        assert not at_least(result, Severity.LOW) and not result.errors, directory
    facts = {(f.name, f.value) for f in scan_path(HF).facts if f.scanner == "mlsec-hf-dir"}
    assert facts == {("model.license", "mit"), ("model.architecture", "LlamaForCausalLM"),
                     ("model.task", "text-generation")}


def test_auto_map_with_local_code_needs_trust_remote_code(tmp_path: Path) -> None:
    cfg = {"architectures": ["EvilForCausalLM"], "model_type": "evil",
           "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}
    d = hf_dir(tmp_path, cfg, modeling_evil__py="import os\nos.system('id')\n")
    found = {dict(f.evidence)["code_file"]: f for f in scan_path(d).findings if f.rule_id == "MLSEC-HF-001"}
    assert set(found) == {"configuration_evil.py", "modeling_evil.py"}
    assert dict(found["modeling_evil.py"].evidence)["present"] == "yes"
    assert dict(found["configuration_evil.py"].evidence)["present"] == "no"
    assert all(f.severity == Severity.HIGH and f.path.endswith("config.json") for f in found.values())


def test_auto_map_into_another_repository(tmp_path: Path) -> None:
    cfg = {"auto_map": {"AutoModel": "someone/other-repo--modeling.Model"}}
    (f,) = [f for f in scan_path(hf_dir(tmp_path, cfg)).findings if f.rule_id == "MLSEC-HF-002"]
    assert dict(f.evidence)["repository"] == "someone/other-repo"


def test_tokenizer_auto_map_lists_and_custom_pipelines(tmp_path: Path) -> None:
    tok = {"auto_map": {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}, "chat_template": "{{ messages }}"}
    cfg = {"custom_pipelines": {"text-generation": {"impl": "pipeline_x.XPipeline", "pt": ["AutoModel"]}}}
    d = hf_dir(tmp_path, cfg, tokenizer_config__json=json.dumps(tok))
    found = {(f.path.rsplit("/", 1)[-1], dict(f.evidence)["code_file"]) for f in scan_path(d).findings
             if f.rule_id == "MLSEC-HF-001"}
    assert found == {("tokenizer_config.json", "tokenization_x.py"), ("config.json", "pipeline_x.py")}


def test_pickle_weights_without_safetensors_are_low(tmp_path: Path) -> None:
    d = hf_dir(tmp_path, pytorch_model__bin=b"\x80\x02}q\x00.", training_args__bin=b"\x80\x02]q\x00.")
    (d / "model.safetensors").unlink()
    result = scan_path(d)
    (f,) = [f for f in result.findings if f.rule_id == "MLSEC-HF-003"]
    assert f.severity == Severity.LOW and dict(f.evidence)["files"] == "pytorch_model.bin, training_args.bin"
    assert not at_least(result, Severity.MEDIUM)


def test_pickle_weights_next_to_safetensors_are_fine(tmp_path: Path) -> None:
    d = hf_dir(tmp_path, pytorch_model__bin=b"\x80\x02}q\x00.")
    assert "MLSEC-HF-003" not in rules_of(scan_path(d))


def test_hostile_pickle_weights_still_reach_the_engine(tmp_path: Path) -> None:
    d = hf_dir(tmp_path, pytorch_model__bin=system_pickle())
    (d / "model.safetensors").unlink()
    assert {"MLSEC-HF-003", "MLSEC-PICKLE-001"} <= rules_of(scan_path(d))


def test_hostile_tokenizer_chat_template_is_capped_at_high(tmp_path: Path) -> None:
    tok = {"chat_template": [{"name": "default", "template": "{{ messages }}"},
                             {"name": "rag", "template": "{{ cycler.__init__.__globals__.os.popen('id').read() }}"}]}
    d = hf_dir(tmp_path, tokenizer_config__json=json.dumps(tok))
    found = [f for f in scan_path(d).findings if f.rule_id == "MLSEC-HF-004"]
    assert found and {f.severity for f in found} == {Severity.HIGH}
    assert {dict(f.evidence)["template"] for f in found} == {"chat_template.rag"}


def test_broken_config_is_not_a_crash(tmp_path: Path) -> None:
    d = hf_dir(tmp_path)
    (d / "config.json").write_text('{"auto_map": ')
    result = scan_path(d)
    assert result.errors == () and not at_least(result, Severity.MEDIUM)
