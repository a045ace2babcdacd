"""Find credentials in text: provider tokens, key blocks and high-entropy values near key names.

The patterns live in ``rules/secrets.toml`` (ordered: specific formats first). Every pattern
carries lower-case keywords; its regex only runs when one of them occurs in the text, which is
what keeps a scan of ordinary code fast (most files mention no ``hf_`` or ``AKIA`` at all).

A hit never carries the secret itself, only where it is and a masked form (first four
characters and the length), so nothing downstream — findings, caches, reports — can leak it.
The interface (:class:`SecretHit`, :func:`find_secrets`) is shared with the dataset scanners and
stays stable.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections import Counter
from dataclasses import dataclass

from mlsec import catalog

__all__ = ["SecretHit", "find_secrets", "mask", "rule_for_kind"]


@dataclass(frozen=True, slots=True)
class SecretHit:
    """One secret in a text: its kind, its span in that text and a masked form of it."""

    kind: str
    start: int
    end: int
    masked: str


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str
    rule: str
    regex: re.Pattern[str]
    keywords: tuple[str, ...]
    name: re.Pattern[str] | None
    near: re.Pattern[str] | None
    window: int
    min_entropy: float
    require: frozenset[str]
    ignore: tuple[str, ...]


_MIN_DISTINCT = 6
_CLASSES = {
    "upper": str.isupper,
    "lower": str.islower,
    "digit": str.isdigit,
    "letter": str.isalpha,
}


def mask(value: str) -> str:
    """First four characters, an ellipsis and the length: enough to recognise, never to use."""
    return f"{value[:4]}…({len(value)} chars)"


@functools.cache
def _patterns() -> tuple[_Pattern, ...]:
    """Compile ``rules/secrets.toml`` once per process."""
    with (catalog.data_dir("rules") / "secrets.toml").open("rb") as fh:
        doc = tomllib.load(fh)
    out = []
    for entry in doc.get("pattern", []):
        require = frozenset(entry.get("require", ()))
        unknown = require - set(_CLASSES)
        if unknown:
            raise ValueError(f"secrets.toml: unknown character class {sorted(unknown)} in {entry['kind']}")
        near, name = entry.get("near"), entry.get("name")
        out.append(
            _Pattern(
                kind=entry["kind"],
                rule=entry["rule"],
                regex=re.compile(entry["regex"]),
                keywords=tuple(k.lower() for k in entry.get("keywords", ())),
                name=re.compile(name) if name else None,
                near=re.compile(near) if near else None,
                window=int(entry.get("window", 200)),
                min_entropy=float(entry.get("min_entropy", 0.0)),
                require=require,
                ignore=tuple(s.lower() for s in entry.get("ignore", ())),
            )
        )
    return tuple(out)


@functools.cache
def _rules_by_kind() -> dict[str, str]:
    return {p.kind: p.rule for p in _patterns()}


def rule_for_kind(kind: str) -> str:
    """Catalog rule id under which a hit of ``kind`` is reported (KeyError for an unknown kind)."""
    return _rules_by_kind()[kind]


def kinds() -> dict[str, str]:
    """Every kind the detector can report, with its rule id."""
    return dict(_rules_by_kind())


def _entropy(value: str) -> float:
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _plausible(p: _Pattern, value: str) -> bool:
    if len(set(value)) < _MIN_DISTINCT:  # hf_xxxxxxxx..., 0000...: placeholders, not keys
        return False
    if p.ignore:
        low = value.lower()
        if any(s in low for s in p.ignore):
            return False
    for cls in p.require:
        test = _CLASSES[cls]
        if not any(test(ch) for ch in value):
            return False
    return not p.min_entropy or _entropy(value) >= p.min_entropy


def _near(p: _Pattern, text: str, start: int, end: int, cache: dict[str, list[tuple[int, int]]]) -> bool:
    assert p.near is not None
    spans = cache.get(p.near.pattern)
    if spans is None:
        spans = cache[p.near.pattern] = [m.span() for m in p.near.finditer(text)]
    return any(s < end + p.window and e > start - p.window and not (s <= start and e >= end) for s, e in spans)


def find_secrets(text: str) -> list[SecretHit]:
    """All secrets in ``text``, sorted by position; overlapping matches keep the most specific."""
    if not text:
        return []
    lower = text.lower()
    near_cache: dict[str, list[tuple[int, int]]] = {}
    taken: list[tuple[int, int]] = []
    hits: list[SecretHit] = []
    for p in _patterns():
        if p.keywords and not any(k in lower for k in p.keywords):
            continue
        for m in p.regex.finditer(text):
            if "secret" in p.regex.groupindex:
                start, end = m.span("secret")
            else:
                start, end = m.span()
            if start < 0 or end <= start:
                continue
            if p.name is not None and not p.name.search(m.group("name")):
                continue
            value = text[start:end]
            if not _plausible(p, value):
                continue
            if p.near is not None and not _near(p, text, start, end, near_cache):
                continue
            if any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            hits.append(SecretHit(kind=p.kind, start=start, end=end, masked=mask(value)))
    hits.sort(key=lambda h: (h.start, h.end, h.kind))
    return hits
