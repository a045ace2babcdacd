"""Scanner results remembered per file content, so an unchanged file is not scanned twice.

A pre-commit run or a CI re-run mostly sees files it has seen before. The key is everything a
cacheable scanner's output depends on: the file's SHA-256, its repo-relative path and format,
the scanner's name and version, the rules digest and the limits. Only scanners that declare
``cacheable = True`` (output depends on that file alone, not on its neighbours) are cached,
and only runs that completed: an error is retried next time.

Values are JSON, decoded into our own frozen types — never pickle (a cache file that a
scanner of hostile pickles deserializes with pickle would be an own goal). Any cache problem
falls back to scanning.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

from mlsec.hashing import cache_dir
from mlsec.model import Artifact, Fact, Finding, Location, Package, Severity, Skip

Item = Finding | Skip | Package | Fact
_FORMAT = 1


def encode_item(item: Item) -> dict[str, Any]:
    """JSON form of one scanner output (the path is the cache entry's, so it is left out)."""
    if isinstance(item, Finding):
        return {"t": "f", "rule_id": item.rule_id, "severity": int(item.severity), "message": item.message,
                "scanner": item.scanner, "location": item.location.to_dict(), "key": item.key,
                "evidence": [list(p) for p in item.evidence]}
    if isinstance(item, Skip):
        return {"t": "s", "reason": item.reason, "code": item.code}
    if isinstance(item, Package):
        return {"t": "p", "name": item.name, "version": item.version, "ecosystem": item.ecosystem,
                "specifier": item.specifier, "direct": item.direct}
    return {"t": "x", "name": item.name, "value": item.value, "scanner": item.scanner}


def decode_item(raw: dict[str, Any], path: str) -> Item:
    """Inverse of :func:`encode_item` for the file at ``path``; raises on anything unexpected."""
    t = raw["t"]
    if t == "f":
        loc = {k: raw["location"].get(k) for k in ("line", "end_line", "column", "offset", "member", "pointer")}
        return Finding(raw["rule_id"], Severity(int(raw["severity"])), raw["message"], path, raw["scanner"],
                       Location(**loc), raw["key"], tuple((str(a), str(b)) for a, b in raw["evidence"]))
    if t == "s":
        return Skip(path, raw["reason"], raw["code"])
    if t == "p":
        return Package(raw["name"], raw["version"], path, raw["ecosystem"], raw["specifier"], bool(raw["direct"]))
    if t == "x":
        return Fact(path, raw["name"], raw["value"], raw["scanner"])
    raise ValueError(f"unknown cached item type {t!r}")


class ResultCache:
    """SQLite-backed cache of scanner outputs; ``enabled=False`` makes every lookup a miss."""

    def __init__(self, enabled: bool = True, salt: str = "") -> None:
        import sqlite3  # here: decoding memo entries (encode_item/decode_item) needs no database

        self._db: sqlite3.Connection | None = None
        from mlsec import catalog  # here: decoding a memo entry needs no rules

        self._salt = f"{_FORMAT}\0{catalog.rules_digest()}\0{salt}" if enabled else ""
        if not enabled:
            return
        try:
            directory = cache_dir()
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(directory / "results.sqlite", timeout=5)
            # One commit per scanned file: WAL + NORMAL sync keeps that cheap (a cache may lose the
            # last entries in a power cut; it is only a cache).
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS r (key TEXT PRIMARY KEY, items TEXT)")
        except (OSError, sqlite3.Error):
            self._db = None

    def key(self, artifact: Artifact, scanner: str, version: str) -> str:
        """Cache key of one scanner's run on one artifact."""
        ident = "\0".join((self._salt, artifact.sha256, artifact.path, artifact.format, str(artifact.kind),
                           scanner, version))
        return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()

    def get(self, key: str, path: str) -> list[Item] | None:
        """The cached items for ``key`` (with ``path`` filled in), or None."""
        if self._db is None:
            return None
        import sqlite3

        try:
            row = self._db.execute("SELECT items FROM r WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            return [decode_item(x, path) for x in json.loads(row[0])]
        except (sqlite3.Error, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, items: list[Item]) -> None:
        """Remember a completed run."""
        if self._db is None:
            return
        import sqlite3

        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO r VALUES (?, ?)",
                                 (key, json.dumps([encode_item(i) for i in items])))
        except sqlite3.Error:
            pass
