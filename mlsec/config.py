"""Project configuration: lifecycle stages for the policy gate, from ``[tool.mlsec]`` or ``mlsec.toml``.

The shipped defaults live next to the Rego policies (``policies/data.json``), because they *are*
policy: which severity blocks at which stage. A project overrides them per stage and may add
stages or aliases (MLflow-style ``champion``/``challenger``, ``prod``), in either place::

    # pyproject.toml                          # or mlsec.toml (same keys, without "tool.mlsec")
    [tool.mlsec.stages.production]
    block_at = "high"
    aliases = ["champion", "prod"]

Python resolves names and turns severities into ranks here; Rego only compares numbers.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec.fsio import open_regular
from mlsec.model import Severity

# Stage settings and the value type each must have (anything else is a configuration error).
_STAGE_KEYS: dict[str, type | tuple[type, ...]] = {
    "block_at": str,
    "warn_at": str,
    "allow_waivers": bool,
    "allow_inline_ignores": bool,
    "waiver_requires_owner": bool,
    "waiver_requires_reason": bool,
    "fail_on_scanner_error": bool,
    "fail_on_skipped": bool,
    "require_hashes": bool,
    "require_model_card": bool,
    "require_license": bool,
    "allowed_model_formats": list,
    "aliases": list,
}


_DERIVED = frozenset({"block_rank", "warn_rank"})  # computed here from block_at / warn_at


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class StageConfig:
    """All stages after merging defaults and project settings (JSON-ready for Rego's data)."""

    order: tuple[str, ...]
    stages: dict[str, dict[str, Any]]
    aliases: dict[str, str]
    source: str

    def resolve(self, name: str) -> str:
        """Canonical stage name for ``name`` or an alias; ConfigError naming the choices otherwise."""
        key = name.strip().lower()
        if key in self.stages:
            return key
        if key in self.aliases:
            return self.aliases[key]
        choices = ", ".join([*self.order, *sorted(self.aliases)])
        raise ConfigError(f"unknown stage {name!r} (choose from {choices})")

    def data(self) -> dict[str, Any]:
        """The ``data.mlsec.config`` document handed to the policies."""
        return {"order": list(self.order), "stages": self.stages, "aliases": self.aliases}


_run = 0


def new_run() -> None:
    """Start of a scan: lookups cached per run (the nearest config of each folder) are redone,
    so a library caller's next run sees an edited pyproject.toml; within a run, each folder is
    looked up once (it was a third of a 2,000-file scan when done per file)."""
    global _run
    _run += 1


def run_id() -> int:
    """Which run per-run caches belong to (see :func:`new_run`)."""
    return _run


def _find_project_config(start: Path) -> tuple[Path, dict[str, Any]] | None:
    """Nearest ``mlsec.toml`` or ``pyproject.toml`` with ``[tool.mlsec]``, walking up from ``start``."""
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        own = folder / "mlsec.toml"
        if own.is_file():
            return own, _read_toml(own)
        py = folder / "pyproject.toml"
        if py.is_file():
            try:
                st = py.stat()
                doc = _parse_toml(str(py), st.st_mtime_ns, st.st_size)  # shared: copy only our table
            except OSError as exc:
                raise ConfigError(f"{py}: {exc}") from None
            tool = doc.get("tool", {})
            section = tool.get("mlsec") if isinstance(tool, dict) else None
            if section is not None:
                return py, copy.deepcopy(section)
        if (folder / ".git").exists():
            break  # do not read configuration from outside the repository
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file once per process and version of the file.

    Per-file scanners look up the nearest project config for every directory they visit; a big
    pyproject.toml parsed 150 times was most of a cached re-scan. Callers get a deep copy.
    """
    try:
        st = path.stat()
        return copy.deepcopy(_parse_toml(str(path), st.st_mtime_ns, st.st_size))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _parse_toml(path: str, _mtime_ns: int, _size: int) -> dict[str, Any]:
    import tomllib  # here: most runs find no config file to parse

    try:
        with open_regular(path) as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load(
    defaults: tuple[str, str], start: Path | None = None, explicit: Path | None = None
) -> StageConfig:
    """Merge the policy defaults (``(name, text)`` of the policies' ``data.json``) with project settings.

    ``explicit`` is a config file given on the command line; otherwise the nearest
    ``mlsec.toml`` / ``pyproject.toml [tool.mlsec]`` above ``start`` is used, if any.
    """
    name, text = defaults
    try:
        base = json.loads(text)["mlsec"]["config"]
        stages: dict[str, dict[str, Any]] = copy.deepcopy(base["stages"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{name}: cannot read default stage settings ({exc})") from None
    order: list[str] = list(base.get("order", stages))
    source = name
    found: tuple[Path, dict[str, Any]] | None
    if explicit is not None:
        doc = _read_toml(explicit)
        found = (explicit, doc.get("tool", {}).get("mlsec", doc) if explicit.name == "pyproject.toml" else doc)
    else:
        found = _find_project_config(start) if start is not None else None
    if found is not None:
        path, section = found
        source = str(path)
        user_stages = section.get("stages", {})
        if not isinstance(user_stages, dict):
            raise ConfigError(f"{path}: 'stages' must be a table of stage tables")
        for name, settings in user_stages.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"{path}: stages.{name} must be a table")
            key = name.lower()
            if key not in stages:
                # A new stage starts from the strictest shipped one: adding a stage never loosens.
                stages[key] = copy.deepcopy(stages[order[-1]])
                stages[key]["aliases"] = []
                order.append(key)
            stages[key].update(settings)
        if "order" in section:
            order = [str(s).lower() for s in section["order"]]
    return _finish(order, stages, source)


def _finish(order: list[str], stages: dict[str, dict[str, Any]], source: str) -> StageConfig:
    aliases: dict[str, str] = {}
    for name, settings in stages.items():
        for key, value in settings.items():
            if key in _DERIVED:
                continue
            want = _STAGE_KEYS.get(key)
            if want is None:
                known = ", ".join(sorted(_STAGE_KEYS))
                raise ConfigError(f"{source}: stages.{name}: unknown setting {key!r} (known: {known})")
            if not isinstance(value, want):
                raise ConfigError(f"{source}: stages.{name}.{key} has the wrong type ({type(value).__name__})")
        for key in ("block_at", "warn_at"):
            if key in settings:
                try:
                    settings[key.replace("_at", "_rank")] = int(Severity.parse(settings[key]))
                except ValueError as exc:
                    raise ConfigError(f"{source}: stages.{name}.{key}: {exc}") from None
        if "block_at" not in settings:
            raise ConfigError(f"{source}: stages.{name} has no block_at (a stage that can never block is a typo)")
        settings.setdefault("warn_rank", settings["block_rank"])
        for alias in settings.get("aliases", []):
            alias = str(alias).lower()
            if alias in stages or aliases.get(alias, name) != name:
                raise ConfigError(f"{source}: alias {alias!r} of stage {name!r} is already a stage or alias")
            aliases[alias] = name
    missing = [s for s in order if s not in stages]
    if missing:
        raise ConfigError(f"{source}: order names unknown stages: {', '.join(missing)}")
    return StageConfig(order=tuple(order), stages=stages, aliases=aliases, source=source)


def with_overrides(base: StageConfig, overrides: dict[str, Any], source: str) -> StageConfig:
    """``base`` with per-stage settings replaced (policy test cases use this)."""
    stages = copy.deepcopy(base.stages)
    for name, settings in overrides.get("stages", {}).items():
        if not isinstance(settings, dict):
            raise ConfigError(f"{source}: stages.{name} must be a mapping")
        target = stages.setdefault(name.lower(), copy.deepcopy(stages[base.order[-1]]))
        target.update(settings)
        for key in ("block_at", "warn_at"):
            if key in settings:
                target.pop(key.replace("_at", "_rank"), None)
    order = list(base.order) + [s for s in stages if s not in base.order]
    return _finish(order, stages, source)


# [tool.mlsec] keys that set command-line defaults (CLI > MLSEC_* env > file > built-in default).
_OPTION_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "fail_on": ("fail_on", str),
    "severity": ("severity", str),
    "exclude": ("exclude", list),
    "jobs": ("jobs", int),
    "timeout": ("timeout", (int, float)),
    "engines": ("engines", list),
    "policy": ("policy_dirs", list),
    "waivers": ("waivers", str),
    "baseline": ("baseline", str),
    "stage": ("stage", str),
    "no_gitignore": ("no_gitignore", bool),
    "no_cache": ("no_cache", bool),
}
_TABLES = frozenset({"stages", "order", "bandit", "data", "deps", "code"})  # read by other modules


def command_defaults(start: Path) -> dict[str, dict[str, Any]]:
    """click ``default_map`` for ``scan`` and ``gate`` from the nearest project config."""
    found = _find_project_config(start)
    if found is None:
        return {}
    path, section = found
    defaults: dict[str, Any] = {}
    for key, value in section.items():
        if key in _TABLES:
            continue
        spec = _OPTION_KEYS.get(key)
        if spec is None:
            known = ", ".join(sorted([*_OPTION_KEYS, *_TABLES]))
            raise ConfigError(f"{path}: unknown [tool.mlsec] key {key!r} (known: {known})")
        name, want = spec
        if not isinstance(value, want) or isinstance(value, bool) and want is not bool:
            raise ConfigError(f"{path}: {key} has the wrong type ({type(value).__name__})")
        if isinstance(value, str) and name in ("waivers", "baseline"):
            value = str((path.parent / value))
        if name == "policy_dirs":
            value = [str(path.parent / v) for v in value]
        defaults[name] = value
    scan = {k: v for k, v in defaults.items()}
    gate = {k: v for k, v in defaults.items() if k not in ("fail_on", "baseline")}
    return {"scan": scan, "gate": gate}
