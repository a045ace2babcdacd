"""Read what a Hugging Face-style model directory says about itself, without trusting it.

A model directory (``config.json`` and/or a ``README.md`` model card with YAML front matter,
next to weight files) declares its architecture, task, licence, base model, training datasets
and metrics. The ML-BOM records those declarations so a registry can require them; it does not
verify them.

Both files are attacker-controlled, so reading them is defensive:

* at most :data:`MAX_FILE` bytes are read; a larger file is not parsed at all;
* ``config.json`` goes through ``json.loads`` and the front matter through ``yaml.safe_load``
  (no Python tags, no object construction); nothing else in the directory is opened;
* only plain values are taken out (strings, numbers turned into strings, lists of those), with
  caps on counts (:data:`MAX_ITEMS`) and lengths (:data:`MAX_TEXT`), so YAML aliases, huge
  lists or wrong types can only make a field go missing;
* every problem becomes a warning string naming the repo-relative path, never an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlsec.fsio import open_regular

MAX_FILE = 1 << 20
MAX_ITEMS = 64
MAX_TEXT = 256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".gguf", ".onnx", ".h5")
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"


def is_weight_name(path: str) -> bool:
    """Does the file name look like model weights (used to spot a model directory)?"""
    return path.lower().endswith(WEIGHT_SUFFIXES)


@dataclass(frozen=True, slots=True)
class Metric:
    """One performance metric from the card: a declared metric name, or a reported value."""

    type: str
    value: str = ""
    slice: str = ""


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What the directory declares; empty strings and tuples mean "not stated"."""

    name: str = ""
    licenses: tuple[str, ...] = ()
    base_models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    metrics: tuple[Metric, ...] = ()
    architecture: str = ""   # config.json architectures[0], e.g. BertForSequenceClassification
    model_type: str = ""     # config.json model_type, e.g. bert (the architecture family)
    task: str = ""           # front matter pipeline_tag, e.g. text-classification
    tags: tuple[str, ...] = ()
    library: str = ""        # front matter library_name, e.g. transformers
    has_config: bool = False        # a config.json was there (whether or not it parsed)
    has_front_matter: bool = False  # the card starts with a front matter block (same)
    warnings: tuple[str, ...] = ()


def read(config: tuple[str, str] | None, readme: tuple[str, str] | None) -> ModelCard:
    """Read ``config.json`` and the model card, each given as ``(fs_path, display_path)``.

    ``display_path`` (repo-relative) is the only path that appears in warnings, so no path of
    this machine ends up in a BOM.
    """
    warnings: list[str] = []
    cfg = _read_config(config, warnings) if config else None
    found, front = _read_front_matter(readme, warnings) if readme else (False, None)
    fields: dict[str, Any] = {"has_config": config is not None, "has_front_matter": found}
    if cfg:
        fields.update(_from_config(cfg))
    if front:
        fields.update(_from_front_matter(front))
    return ModelCard(**fields, warnings=tuple(warnings))


# -- reading ----------------------------------------------------------------------------------


def _read_text(where: tuple[str, str], warnings: list[str]) -> str | None:
    fs_path, shown = where
    if not fs_path:
        warnings.append(f"{shown}: no local path to read it from")
        return None
    try:
        with open_regular(fs_path) as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        warnings.append(f"{shown}: cannot read ({exc.strerror})")
        return None
    if len(data) > MAX_FILE:
        warnings.append(f"{shown}: larger than {MAX_FILE} bytes, not read")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        warnings.append(f"{shown}: not UTF-8, not read")
        return None


def _read_config(where: tuple[str, str], warnings: list[str]) -> dict[str, Any] | None:
    text = _read_text(where, warnings)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        warnings.append(f"{where[1]}: invalid JSON ({_short(exc)})")
        return None
    if not isinstance(value, dict):
        warnings.append(f"{where[1]}: not a JSON object")
        return None
    return value


def front_matter(text: str) -> str | None:
    """The YAML between a leading ``---`` line and the next ``---`` (or ``...``) line."""
    lines = text.splitlines()
    if not lines or lines[0].rstrip() != "---":
        return None
    for i, line in enumerate(lines[1:], 1):
        if line.rstrip() in ("---", "..."):
            return "\n".join(lines[1:i])
    return None


def _read_front_matter(where: tuple[str, str], warnings: list[str]) -> tuple[bool, dict[str, Any] | None]:
    """(does the card start with front matter, its mapping when it parses)."""
    text = _read_text(where, warnings)
    if text is None or text.split("\n", 1)[0].rstrip() != "---":
        return False, None
    body = front_matter(text)
    if body is None:
        warnings.append(f"{where[1]}: front matter has no closing '---' line")
        return True, None
    import yaml

    try:
        value = yaml.safe_load(body)
    except Exception as exc:  # noqa: BLE001 - hostile YAML must never stop a BOM; PyYAML raises many types
        warnings.append(f"{where[1]}: invalid YAML front matter ({_short(exc)})")
        return True, None
    if not isinstance(value, dict):
        warnings.append(f"{where[1]}: front matter is not a mapping")
        return True, None
    return True, value


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:120] or type(exc).__name__


# -- extraction (plain values only, capped) ---------------------------------------------------


def _text(value: Any) -> str:
    """A scalar as text: strings and numbers (not booleans, not containers)."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str | int | float):
        return " ".join(str(value).split())[:MAX_TEXT]
    return ""


def _texts(value: Any) -> tuple[str, ...]:
    """A scalar or a list of scalars as a tuple of distinct non-empty texts, in order."""
    out: list[str] = []
    for item in _list(value) if isinstance(value, list) else [value]:
        text = _text(item)
        if text and text not in out:
            out.append(text)
    return tuple(out)


def _list(value: Any) -> list[Any]:
    return value[:MAX_ITEMS] if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    architectures = _texts(cfg.get("architectures"))
    return {"architecture": architectures[0] if architectures else "", "model_type": _text(cfg.get("model_type"))}


def _from_front_matter(fm: dict[str, Any]) -> dict[str, Any]:
    licenses = _texts(fm.get("license"))
    if licenses == ("other",) and _text(fm.get("license_name")):
        licenses = (_text(fm.get("license_name")),)
    index = fm.get("model-index")
    first = _mapping(index[0]) if isinstance(index, list) and index else {}
    return {
        "name": _text(first.get("name")),
        "licenses": licenses,
        "base_models": _texts(fm.get("base_model")),
        "datasets": _texts(fm.get("datasets")),
        "metrics": _metrics(fm.get("metrics"), index),
        "task": _text(fm.get("pipeline_tag")),
        "tags": _texts(fm.get("tags")),
        "library": _text(fm.get("library_name")),
    }


def _metrics(declared: Any, index: Any) -> tuple[Metric, ...]:
    """Reported values from ``model-index`` first, then declared metric names without a value."""
    reported = [
        metric
        for entry in _list(index)
        for result in _list(_mapping(entry).get("results"))
        for metric in _result_metrics(_mapping(result))
    ]
    names = {m.type for m in reported}
    declared_only = [Metric(type=n) for n in _texts(declared) if n not in names]
    return tuple(dict.fromkeys(reported + declared_only))[:MAX_ITEMS]


def _result_metrics(result: dict[str, Any]) -> list[Metric]:
    dataset = _mapping(result.get("dataset"))
    where = _text(dataset.get("name")) or _text(dataset.get("type"))
    split = _text(dataset.get("split"))
    slice_ = f"{where} ({split})" if where and split else where or split
    out = []
    for item in _list(result.get("metrics")):
        m = _mapping(item)
        kind = _text(m.get("type")) or _text(m.get("name"))
        if kind:
            out.append(Metric(type=kind, value=_text(m.get("value")), slice=slice_))
    return out
