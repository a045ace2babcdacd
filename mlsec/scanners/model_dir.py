"""Hugging Face model directories: custom code, pickle-only weights, chat templates, card facts.

A Hub-style directory is loaded as a whole, so some risks live between files rather than in
one of them:

* ``auto_map`` (in ``config.json``, ``tokenizer_config.json`` and processor configs) and
  ``custom_pipelines`` point the loader at Python files in the repository — or in *another*
  repository (``org/repo--module.Class``). Loading then needs ``trust_remote_code=True`` and
  runs that code. The ``.py`` files themselves are discovered and go to the code scanners.
* Weights only in pickle-based formats (``pytorch_model.bin``...) when no safetensors file is
  present: the pickle engine checks them, but the safe format is a conversion away.
* ``chat_template`` in ``tokenizer_config.json``: the same Jinja checks as GGUF templates.
  transformers renders in a sandbox, so the severity is capped at HIGH.

The model card's licence, architecture and task become Facts for the ML-BOM and the policy
input; reading is delegated to :mod:`mlsec.modelcard` (bounded, safe YAML, never raises).
This scanner looks at sibling files, so it is not cached.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from typing import Any

from mlsec import __version__, modelcard
from mlsec.engine.context import Inspection
from mlsec.fsio import open_regular
from mlsec.model import Artifact, Fact, Finding, Severity, Skip
from mlsec.registry import ScanContext, register

CONFIG_FILES = frozenset({"config.json", "tokenizer_config.json", "processor_config.json",
                          "preprocessor_config.json", "feature_extractor_config.json", "image_processor_config.json"})
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")
MAX_SIBLINGS = 10_000
MAX_REFS = 64


def _refs(value: Any) -> list[str]:
    """Class references in an ``auto_map`` value (a string, or a list of strings/None)."""
    items = value if isinstance(value, list) else [value]
    return [v for v in items[:MAX_REFS] if isinstance(v, str) and v]


def _pickle_weights(directory: str) -> tuple[list[str], bool]:
    """(pickle-format weight files, whether any safetensors file is present) in ``directory``."""
    from mlsec.sniff import sniff

    pickles: list[str] = []
    has_safetensors = False
    try:
        with os.scandir(directory) as it:
            for i, entry in enumerate(it):
                if i >= MAX_SIBLINGS:
                    break
                name = entry.name
                lower = name.lower()
                if lower.endswith((".safetensors", ".safetensors.index.json")):
                    has_safetensors = True
                elif lower.endswith(PICKLE_WEIGHT_SUFFIXES) and entry.is_file():
                    try:
                        with open_regular(entry.path) as fh:
                            head = fh.read(4096)
                    except OSError:
                        continue
                    if sniff(head) in ("pickle", "zip"):
                        pickles.append(name)
    except OSError:
        return [], False
    return sorted(pickles), has_safetensors


@register
class ModelDirectoryScanner:
    """Checks that need a Hugging Face model directory as a whole (anchored on its config files)."""

    name = "mlsec-hf-dir"
    version = f"{__version__}+1"
    cacheable = False  # findings depend on sibling files

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Known HF config files on disk."""
        return ("mlsec" in ctx.engines and bool(artifact.fs_path)
                and posixpath.basename(artifact.path) in CONFIG_FILES)

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip | Fact]:
        """auto_map / custom pipelines, templates, weights, and card facts."""
        from mlsec.scanners.model_gguf import check_template

        insp = Inspection(path=artifact.path, scanner=self.name, limits=ctx.limits)
        warnings: list[str] = []
        config = modelcard._read_config((artifact.fs_path, artifact.path), warnings)
        directory = os.path.dirname(artifact.fs_path)
        base = posixpath.basename(artifact.path)
        if config is not None:
            self._auto_map(config, directory, insp)
            template = config.get("chat_template")
            for key, text in _templates(template):
                check_template(text, insp, None, key, None, rule="MLSEC-HF-004", cap=Severity.HIGH)
        if base == "config.json":
            pickles, has_safetensors = _pickle_weights(directory)
            if pickles and not has_safetensors:
                insp.add(
                    "MLSEC-HF-003",
                    f"Model weights only in pickle-based files ({', '.join(pickles[:3])}"
                    f"{', ...' if len(pickles) > 3 else ''}); no safetensors version is present",
                    key="pickle-weights",
                    evidence={"files": ", ".join(pickles[:10]), "count": str(len(pickles))},
                )
            yield from self._facts(artifact, directory)
        yield from insp.findings

    def _auto_map(self, config: dict[str, Any], directory: str, insp: Inspection) -> None:
        refs: list[tuple[str, str]] = []
        auto_map = config.get("auto_map")
        if isinstance(auto_map, dict):
            for auto_class, value in list(auto_map.items())[:MAX_REFS]:
                refs.extend((str(auto_class), ref) for ref in _refs(value))
        pipelines = config.get("custom_pipelines")
        if isinstance(pipelines, dict):
            for task, spec in list(pipelines.items())[:MAX_REFS]:
                impl = spec.get("impl") if isinstance(spec, dict) else None
                if isinstance(impl, str) and impl:
                    refs.append((f"custom_pipelines.{task}", impl))
        for auto_class, ref in refs:
            if "--" in ref:
                repo, _, target = ref.partition("--")
                insp.add(
                    "MLSEC-HF-002",
                    f"{auto_class} loads {target!r} from another repository ({repo}) with trust_remote_code",
                    key=f"remote {ref}",
                    evidence={"auto_class": auto_class, "reference": ref[:200], "repository": repo[:200]},
                )
                continue
            module = ref.rsplit(".", 1)[0] if "." in ref else ref
            code_file = module.replace(".", "/") + ".py"
            present = os.path.isfile(os.path.join(directory, code_file))
            insp.add(
                "MLSEC-HF-001",
                f"Loading requires trust_remote_code: {auto_class} runs {ref!r} from {code_file}"
                f"{'' if present else ' (file not in this directory)'}",
                key=f"auto_map {module}",
                evidence={"auto_class": auto_class, "reference": ref[:200], "code_file": code_file,
                          "present": "yes" if present else "no"},
            )

    def _facts(self, artifact: Artifact, directory: str) -> Iterator[Fact]:
        readme = os.path.join(directory, modelcard.CARD_NAME)
        shown = posixpath.join(posixpath.dirname(artifact.path), modelcard.CARD_NAME)
        card = modelcard.read((artifact.fs_path, artifact.path),
                              (readme, shown) if os.path.isfile(readme) else None)
        values = {"model.license": ", ".join(card.licenses), "model.architecture": card.architecture,
                  "model.task": card.task}
        for name, value in values.items():
            if value:
                yield Fact(path=artifact.path, name=name, value=value, scanner=self.name)


def _templates(value: Any) -> list[tuple[str, str]]:
    """``chat_template`` as (label, text) pairs: a string, or a list of {name, template}."""
    if isinstance(value, str):
        return [("chat_template", value[: 1 << 20])]
    out = []
    if isinstance(value, list):
        for item in value[:MAX_REFS]:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                out.append((f"chat_template.{str(item.get('name', '?'))[:64]}", item["template"][: 1 << 20]))
    return out
