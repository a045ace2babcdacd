"""CI integration files: the GitHub Action, the GitLab template and the Kubeflow component.

They are data for other systems, so the tests check what those systems rely on: the action's
inputs reach the script only through ``env`` (no ``${{ }}`` inside ``run:``), the commands they
run are valid mlsec invocations, and the Kubeflow component compiles with the real ``kfp``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlsec.cli import main
from tests.conftest import REPO

ACTION = REPO / "action.yml"
GITLAB = REPO / "integrations" / "gitlab" / "mlsec.gitlab-ci.yml"
KFP = REPO / "integrations" / "kubeflow" / "mlsec_gate_component.yaml"
HOOKS = REPO / ".pre-commit-hooks.yaml"


def test_action_is_composite_and_never_interpolates_inputs_into_scripts() -> None:
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    for step in action["runs"]["steps"]:
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], step["name"]  # injection: inputs go through env
    for name, out in action["outputs"].items():
        assert "value" in out, name  # composite outputs need a value


def test_gitlab_template_reports_match_the_files_it_writes(tmp_path: Path) -> None:
    job = yaml.safe_load(GITLAB.read_text())["mlsec"]
    script = " ".join(job["script"])
    written = set(re.findall(r"--format \w+:(\S+)", script))
    reports = job["artifacts"]["reports"]
    assert {reports["sast"], reports["junit"]} <= written


def test_commands_in_hooks_and_templates_parse(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("x = 1\n")
    runner = CliRunner()
    for hook in yaml.safe_load(HOOKS.read_text()):
        argv = shlex.split(hook["entry"])[1:] + [str(a) for a in hook.get("args", [])]
        if hook.get("pass_filenames", True):
            argv.append(str(tmp_path / "m.py"))
        else:
            argv = [str(tmp_path) if a == "." else a for a in argv]
        result = runner.invoke(main, argv, catch_exceptions=False)
        assert result.exit_code == 0, (hook["id"], result.output)


def test_kubeflow_component_compiles_with_kfp(tmp_path: Path) -> None:
    kfp = pytest.importorskip("kfp", reason="kfp is not installed (pip install kfp to run this test)")
    from kfp import compiler, components, dsl

    gate = components.load_component_from_file(str(KFP))

    @dsl.pipeline(name="train-gate-push")
    def pipeline(stage: str = "production") -> None:
        model = dsl.importer(artifact_uri="gs://bucket/model.safetensors", artifact_class=dsl.Artifact)
        gate(model=model.output, stage=stage)

    out = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    spec = yaml.safe_load(out.read_text())
    command = " ".join(spec["deploymentSpec"]["executors"]["exec-mlsec-gate"]["container"]["command"])
    assert "mlsec gate" in command and "--stage" in command
    assert kfp.__version__
