"""The rule catalog and the data files that ship with mlsec (``rules/`` and ``policies/``).

Rules live as TOML under ``rules/`` so that a rule's documentation (what, why, how to fix) sits
next to its id and severity, the way bandit keeps docs in plugin docstrings. The same files are
force-included into the wheel as ``mlsec/_data``; :func:`data_dir` finds them either way, so an
installed wheel and a source checkout behave the same.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from mlsec.model import Severity

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Directory of bundled data ``name`` ("rules" or "policies"), installed or from source."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"mlsec data directory {name!r} not found (broken installation?)")


@dataclass(frozen=True, slots=True)
class Rule:
    """Metadata for one rule id; every Finding's ``rule_id`` must name one of these."""

    id: str
    title: str
    severity: Severity
    cwe: tuple[int, ...]
    help: str
    remediation: str
    references: tuple[str, ...] = ()


@functools.cache
def rules() -> dict[str, Rule]:
    """All rules from ``rules/catalog/*.toml``, keyed by id. Duplicate ids are a packaging bug."""
    import tomllib  # here: a run answered from the memo never reads the catalog

    out: dict[str, Rule] = {}
    for path in sorted((data_dir("rules") / "catalog").glob("*.toml")):
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
        for entry in doc.get("rule", []):
            rule = Rule(
                id=entry["id"],
                title=entry["title"],
                severity=Severity.parse(entry["severity"]),
                cwe=tuple(entry.get("cwe", ())),
                help=entry["help"].strip(),
                remediation=entry["remediation"].strip(),
                references=tuple(entry.get("references", ())),
            )
            if rule.id in out:
                raise ValueError(f"duplicate rule id {rule.id} in {path.name}")
            out[rule.id] = rule
    return out


@dataclass(frozen=True, slots=True)
class GlobalPattern:
    """One allow/deny list entry for pickle globals.

    ``module`` is an exact module name, or ``pkg.**`` for a package and all its submodules.
    ``names`` holds exact attribute names, ``*`` for any, or ``re:<regex>`` (full match).
    """

    module: str
    names: tuple[str, ...]
    reason: str
    exclude_modules: tuple[str, ...] = ()

    def _module_matches(self, pattern: str, module: str) -> bool:
        if pattern.endswith(".**"):
            base = pattern[:-3]
            return module == base or module.startswith(base + ".")
        return module == pattern

    def matches(self, module: str, name: str) -> bool:
        """True when ``module.name`` is covered by this entry."""
        if not self._module_matches(self.module, module):
            return False
        if any(self._module_matches(ex, module) for ex in self.exclude_modules):
            return False
        for pat in self.names:
            if pat == "*" or pat == name:
                return True
            if pat.startswith("re:") and re.fullmatch(pat[3:], name):
                return True
        return False


@dataclass(frozen=True, slots=True)
class GlobalLists:
    """The pickle engine's allowlist (known-safe callables) and denylist (code execution)."""

    safe: tuple[GlobalPattern, ...]
    unsafe: tuple[GlobalPattern, ...]
    payload_loaders: tuple[GlobalPattern, ...]

    def unsafe_reason(self, module: str, name: str) -> str | None:
        """Why ``module.name`` is a known code-execution/system callable, or None."""
        return next((p.reason for p in self.unsafe if p.matches(module, name)), None)

    def is_safe(self, module: str, name: str) -> bool:
        """True when ``module.name`` is on the allowlist (and not on the denylist)."""
        return self.unsafe_reason(module, name) is None and any(p.matches(module, name) for p in self.safe)

    def loads_payload(self, module: str, name: str) -> bool:
        """True when the callable deserializes a bytes argument (so the bytes must be scanned too)."""
        return any(p.matches(module, name) for p in self.payload_loaders)


def _patterns(entries: list[dict[str, object]]) -> tuple[GlobalPattern, ...]:
    out = []
    for e in entries:
        names = e.get("names", ["*"])
        excl = e.get("exclude_modules", [])
        assert isinstance(names, list) and isinstance(excl, list)
        out.append(
            GlobalPattern(
                module=str(e["module"]),
                names=tuple(str(n) for n in names),
                reason=str(e.get("reason", "")),
                exclude_modules=tuple(str(x) for x in excl),
            )
        )
    return tuple(out)


@functools.cache
def pickle_globals() -> GlobalLists:
    """Load ``rules/pickle/{safe,unsafe}.toml``."""
    import tomllib

    base = data_dir("rules") / "pickle"
    with (base / "safe.toml").open("rb") as fh:
        safe = tomllib.load(fh)
    with (base / "unsafe.toml").open("rb") as fh:
        unsafe = tomllib.load(fh)
    return GlobalLists(
        safe=_patterns(safe.get("safe", [])),
        unsafe=_patterns(unsafe.get("unsafe", [])),
        payload_loaders=_patterns(unsafe.get("payload_loader", [])),
    )


def rules_digest() -> str:
    """Digest of every bundled rule file: part of cache keys, so a rule change rescans."""
    import hashlib

    h = hashlib.sha256()
    root = data_dir("rules")
    for path in sorted(root.rglob("*.toml")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()
