"""Waivers and inline ignores: which findings a team has accepted, until when, and why.

Matching happens here, in Python (globs, fingerprints, dates); the policy only sees the facts
(``waiver.expired``, ``owner``, ``reason``) and decides whether a suppression is acceptable at
the target stage. A suppressed finding is never dropped: it moves to ``ScanResult.suppressed``
with the waiver that claimed it, so reports and the policy still see it.

Waivers file (``.mlsec/waivers.yaml``)::

    version: 1
    waivers:
      - id: W-2026-014                  # required, unique
        match:                          # all given keys must match; lists are "any of"
          rule: MLSEC-PICKLE-001        # rule id or glob (MLSEC-PICKLE-*), or a list
          paths: ["models/legacy/**"]   # gitignore-style globs on repo-relative paths
          fingerprint: 3f9a...          # pin one exact finding
        stages: [dev, staging]          # default: every stage
        expires: 2027-01-31             # required; the waiver applies through that day (UTC)
        reason: "replaced by the ONNX export in Q1"
        owner: ml-platform@example.com

Inline, on the reported line of a text file: ``# mlsec: ignore[RULE-ID] reason`` (several ids
separated by commas; the reason is required, an ignore without one is reported, not honoured).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlsec.errors import BaselineError, WaiverError
from mlsec.fsio import open_regular
from mlsec.model import Finding, ScanResult
from mlsec.verdicts import Suppressed, Suppression

MAX_WAIVER_FILE = 1 << 20
MAX_INLINE_FILE = 8 << 20
INLINE = re.compile(r"#\s*mlsec:\s*ignore\[([A-Za-z0-9_*,\s.:-]+)\]\s*(.*)$")

_WAIVER_KEYS = {"id", "match", "stages", "expires", "reason", "owner", "ticket", "vex", "approved_by"}
_MATCH_KEYS = {"rule", "paths", "fingerprint"}


@dataclass(frozen=True, slots=True)
class Waiver:
    """One entry of the waivers file, validated."""

    id: str
    rules: tuple[str, ...]
    paths: tuple[str, ...]
    fingerprints: tuple[str, ...]
    stages: tuple[str, ...]
    expires: dt.datetime  # first instant at which the waiver no longer applies (UTC)
    expires_text: str
    reason: str
    owner: str
    line: int
    vex: tuple[tuple[str, str], ...] = ()

    def expired(self, now: dt.datetime) -> bool:
        """True once ``now`` is past the last day of the waiver."""
        return now >= self.expires

    def matches(self, finding: Finding) -> bool:
        """Do all the given match keys accept this finding?"""
        if not self.matches_site(finding.rule_id, finding.path):
            return False
        return not self.fingerprints or finding.fingerprint in self.fingerprints

    def matches_site(self, rule_id: str, path: str) -> bool:
        """The rule and path keys only (fingerprints are per finding)."""
        if self.rules and not any(fnmatch.fnmatchcase(rule_id.upper(), r.upper()) for r in self.rules):
            return False
        return not self.paths or _spec(self.paths).match_file(path)

    def suppression(self) -> Suppression:
        """What a finding matched by this waiver carries."""
        return Suppression("waiver", self.id, self.reason, self.owner, self.expires_text, self.stages)


@functools.lru_cache(maxsize=1024)
def _spec(globs: tuple[str, ...]) -> Any:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(globs)


@dataclass(frozen=True, slots=True)
class WaiverStatus:
    """A waiver after matching: how many findings it claimed and whether it has expired."""

    waiver: Waiver
    expired: bool
    matched: int
    applies_to_stage: bool

    def to_input(self) -> dict[str, Any]:
        """Fact for the policy input."""
        w = self.waiver
        return {
            "id": w.id,
            "expires": w.expires_text,
            "expired": self.expired,
            "matched": self.matched,
            "stages": list(w.stages),
            "applies_to_stage": self.applies_to_stage,
            "owner": w.owner,
            "reason": w.reason,
            "line": w.line,
        }


@dataclass(frozen=True, slots=True)
class Note:
    """Something about suppression the user should hear (an inline ignore without a reason)."""

    kind: str
    path: str
    line: int
    message: str

    def to_input(self) -> dict[str, Any]:
        """Fact for the policy input."""
        return {"kind": self.kind, "path": self.path, "line": self.line, "message": self.message}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The scan result with suppressions applied, plus what the policy needs to know about them."""

    result: ScanResult
    waivers: tuple[WaiverStatus, ...]
    notes: tuple[Note, ...]


# -- loading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Baseline:
    """Fingerprints of the findings an earlier ``--format json`` report listed (active and
    suppressed): a scan with ``--baseline`` reports only what is new since (bandit's ``-b``)."""

    fingerprints: frozenset[str]
    label: str  # the report's file name, shown with every finding it suppresses


MAX_BASELINE_FILE = 256 << 20


def load_baseline(path: Path) -> Baseline:
    """Read an mlsec JSON report; BaselineError when it cannot serve as a baseline."""
    import json

    try:
        with open_regular(path) as fh:
            data = fh.read(MAX_BASELINE_FILE + 1)
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_BASELINE_FILE:
        raise BaselineError(f"{path}: larger than {MAX_BASELINE_FILE >> 20} MB")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema_version") != 1 or not isinstance(doc.get("findings"), list):
        raise BaselineError(f"{path}: not an mlsec JSON report (write one with `mlsec scan --format json -o FILE`)")
    prints: set[str] = set()
    for entry in [*doc["findings"], *(doc.get("suppressed") or [])]:
        fp = entry.get("fingerprint") if isinstance(entry, dict) else None
        if not isinstance(fp, str) or len(fp) != 64:
            raise BaselineError(f"{path}: a finding without a fingerprint; not an mlsec JSON report")
        prints.add(fp)
    return Baseline(frozenset(prints), path.name)


def load_waivers(path: Path) -> tuple[Waiver, ...]:
    """Parse and validate a waivers file; WaiverError with ``file:line`` on any problem."""
    import yaml

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WaiverError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_WAIVER_FILE:
        raise WaiverError(f"{path}:1: file is larger than {MAX_WAIVER_FILE} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WaiverError(f"{path}:1: not UTF-8 ({exc.reason})") from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return ()
        doc = _Node(root, loader, path)
        return _waivers_from(doc, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise WaiverError(f"{path}:{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise WaiverError(f"{path}:1: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


class _Node:
    """A YAML node with its line, converted to Python values only through the safe constructor."""

    def __init__(self, node: Any, loader: Any, path: Path) -> None:
        self.node, self.loader, self.path = node, loader, path
        self.line = node.start_mark.line + 1
        self.key_line = self.line  # for a mapping value: the line of its key

    def fail_key(self, message: str) -> WaiverError:
        return WaiverError(f"{self.path}:{self.key_line}: {message}")

    def fail(self, message: str) -> WaiverError:
        return WaiverError(f"{self.path}:{self.line}: {message}")

    def mapping(self, what: str) -> dict[str, _Node]:
        import yaml

        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail(f"{what} must be a mapping")
        out: dict[str, _Node] = {}
        for key, value in self.node.value:
            key_node = _Node(key, self.loader, self.path)
            k = key_node.scalar_text(f"a key in {what}")
            if k in out:
                raise key_node.fail(f"duplicate key {k!r} in {what}")
            out[k] = _Node(value, self.loader, self.path)
            out[k].key_line = key_node.line
        return out

    def sequence(self, what: str) -> list[_Node]:
        import yaml

        if not isinstance(self.node, yaml.SequenceNode):
            raise self.fail(f"{what} must be a list")
        return [_Node(v, self.loader, self.path) for v in self.node.value]

    def value(self) -> Any:
        import yaml

        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail("expected a single value")
        try:
            return self.loader.construct_object(self.node, deep=True)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. an impossible date: 2027-02-30
            raise self.fail(f"invalid value {self.node.value!r}: {exc}") from None

    def scalar_text(self, what: str) -> str:
        value = self.value()
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise self.fail(f"{what} must be text")
        return str(value)

    def texts(self, what: str) -> tuple[str, ...]:
        import yaml

        if isinstance(self.node, yaml.SequenceNode):
            return tuple(n.scalar_text(what) for n in self.sequence(what))
        return (self.scalar_text(what),)


def _waivers_from(doc: _Node, path: Path) -> tuple[Waiver, ...]:
    top = doc.mapping("the waivers file")
    unknown = set(top) - {"version", "waivers"}
    if unknown:
        raise top[sorted(unknown)[0]].fail_key(f"unknown top-level key {sorted(unknown)[0]!r} (expected version, waivers)")
    if "version" in top and top["version"].value() != 1:
        raise top["version"].fail("unsupported version (expected 1)")
    if "waivers" not in top:
        raise doc.fail("missing 'waivers' list")
    out: list[Waiver] = []
    seen: dict[str, int] = {}
    for entry in top["waivers"].sequence("waivers"):
        w = _waiver(entry)
        if w.id in seen:
            raise entry.fail(f"duplicate waiver id {w.id!r} (first at line {seen[w.id]})")
        seen[w.id] = w.line
        out.append(w)
    return tuple(out)


def _waiver(entry: _Node) -> Waiver:
    fields = entry.mapping("a waiver")
    unknown = set(fields) - _WAIVER_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise fields[key].fail_key(f"unknown waiver key {key!r} (known: {', '.join(sorted(_WAIVER_KEYS))})")
    for required in ("id", "match", "expires"):
        if required not in fields:
            raise entry.fail(f"waiver is missing required key {required!r}")
    wid = fields["id"].scalar_text("id").strip()
    if not wid:
        raise fields["id"].fail("waiver id is empty")
    match = fields["match"].mapping("match")
    unknown = set(match) - _MATCH_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise match[key].fail_key(f"unknown match key {key!r} (known: {', '.join(sorted(_MATCH_KEYS))})")
    if not match:
        raise fields["match"].fail("match needs at least one of rule, paths, fingerprint")
    expires, expires_text = _expiry(fields["expires"])
    stages = tuple(s.lower() for s in fields["stages"].texts("stages")) if "stages" in fields else ()
    vex: tuple[tuple[str, str], ...] = ()
    if "vex" in fields:
        vex = tuple(sorted((k, v.scalar_text(f"vex.{k}")) for k, v in fields["vex"].mapping("vex").items()))
    return Waiver(
        id=wid,
        rules=match["rule"].texts("rule") if "rule" in match else (),
        paths=match["paths"].texts("paths") if "paths" in match else (),
        fingerprints=match["fingerprint"].texts("fingerprint") if "fingerprint" in match else (),
        stages=stages,
        expires=expires,
        expires_text=expires_text,
        reason=fields["reason"].scalar_text("reason").strip() if "reason" in fields else "",
        owner=(fields.get("owner") or fields.get("approved_by")).scalar_text("owner").strip()  # type: ignore[union-attr]
        if ("owner" in fields or "approved_by" in fields)
        else "",
        line=entry.line,
        vex=vex,
    )


def _expiry(node: _Node) -> tuple[dt.datetime, str]:
    value = node.value()
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC), when.isoformat()
    if isinstance(value, dt.date):
        end = dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        return end, value.isoformat()
    if isinstance(value, str):
        try:
            day = dt.date.fromisoformat(value.strip())
        except ValueError:
            try:
                when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise node.fail(f"expires {value!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from None
            when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
            return when.astimezone(dt.UTC), when.isoformat()
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC), day.isoformat()
    raise node.fail("expires must be a date (YYYY-MM-DD) or an RFC 3339 time")


# -- applying ----------------------------------------------------------------------------------


def apply(
    result: ScanResult,
    waivers: Sequence[Waiver],
    *,
    stage: str | None,
    now: dt.datetime,
    base: Path | None = None,
    root_lookup: dict[str, str] | None = None,
    baseline: Baseline | None = None,
) -> Outcome:
    """Move findings claimed by a live waiver, an inline ignore or the baseline to ``suppressed``.

    ``stage`` None (a plain scan) honours every unexpired waiver; with a stage, only waivers
    listing it (or listing none). Expired waivers claim nothing. A waiver beats an inline
    ignore, and among waivers one with an owner and a reason beats one without (then file
    order): the claim that the strictest stage can accept wins.

    ``paths`` globs are relative to ``base`` (the folder that holds ``.mlsec/``, i.e. the
    repository root), whatever directory was scanned; without a base, to the scan root.
    """
    fs_paths = root_lookup if root_lookup is not None else {a.path: a.fs_path for a in result.artifacts}
    inline, notes = _inline_ignores(result.findings, fs_paths)
    rel = _relative_to(base, fs_paths)
    live_ids = {w.id for w in waivers if not w.expired(now) and (stage is None or not w.stages or stage in w.stages)}
    matched: dict[str, int] = {w.id: 0 for w in waivers}
    kept: list[Finding] = []
    suppressed: list[Suppressed] = list(result.suppressed)
    # Rule and path keys are checked once per (rule, path) site, not per finding: a big scan has
    # many findings per site, and glob matching is the expensive part.
    sites: dict[tuple[str, str], list[Waiver]] = {}
    for f in result.findings:
        claim: Suppression | None = None
        if waivers:
            where = rel.get(f.path, f.path)
            candidates = sites.get((f.rule_id, where))
            if candidates is None:
                candidates = sites[(f.rule_id, where)] = [w for w in waivers if w.matches_site(f.rule_id, where)]
            hits = [w for w in candidates if not w.fingerprints or f.fingerprint in w.fingerprints]
            for hit in hits:
                if hit.id not in live_ids:
                    matched[hit.id] += 1  # expired or out of stage: counted, so warnings can say so
            live = [hit for hit in hits if hit.id in live_ids]
            if live:
                best = min(live, key=lambda w: not (w.owner and w.reason))  # stable: file order breaks ties
                matched[best.id] += 1
                claim = best.suppression()
        if claim is None and f.location.line is not None:
            claim = inline.get((f.path, f.location.line, f.rule_id))
        if claim is None and baseline is not None and f.fingerprint in baseline.fingerprints:
            claim = Suppression("baseline", f"baseline:{baseline.label}", f"already in the baseline report {baseline.label}")
        if claim is None:
            kept.append(f)
        else:
            suppressed.append(Suppressed(f, claim))
    statuses = tuple(
        WaiverStatus(w, w.expired(now), matched[w.id], stage is None or not w.stages or stage in w.stages)
        for w in waivers
    )
    new = replace(
        result,
        findings=tuple(kept),
        suppressed=tuple(sorted(suppressed, key=lambda s: s.finding.sort_key())),
    )
    return Outcome(new, statuses, tuple(notes))


def _relative_to(base: Path | None, fs_paths: dict[str, str]) -> dict[str, str]:
    """Report path -> path relative to ``base`` for artifacts inside it (for waiver globs)."""
    if base is None:
        return {}
    root = os.path.abspath(base)
    out: dict[str, str] = {}
    for path, fs in fs_paths.items():
        if not fs:
            continue
        full = os.path.abspath(fs)
        if full == root or full.startswith(root.rstrip(os.sep) + os.sep):
            out[path] = os.path.relpath(full, root).replace(os.sep, "/")
    return out


def waivers_base(path: Path) -> Path:
    """The folder waiver path globs are relative to: the one holding ``.mlsec/``, else the
    repository root above the file, else the file's folder."""
    folder = path.resolve().parent
    if folder.name == ".mlsec":
        return folder.parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def with_resolved_stages(waivers: Sequence[Waiver], resolve: Callable[[str], str], source: Path) -> tuple[Waiver, ...]:
    """Waivers with stage aliases replaced by canonical names; WaiverError naming file, line and id."""
    out: list[Waiver] = []
    for w in waivers:
        names: list[str] = []
        for s in w.stages:
            try:
                names.append(resolve(s))
            except Exception as exc:  # noqa: BLE001 - a ConfigError, reported with the waiver's place
                raise WaiverError(f"{source}:{w.line}: waiver {w.id}: {exc}") from None
        out.append(replace(w, stages=tuple(dict.fromkeys(names))))
    return tuple(out)


def _inline_ignores(
    findings: Iterable[Finding], fs_paths: dict[str, str]
) -> tuple[dict[tuple[str, int | None, str], Suppression], list[Note]]:
    """Inline ``# mlsec: ignore[...]`` comments on the lines findings point at."""
    wanted: dict[str, set[int]] = {}
    findings = [f for f in findings if not (f.location.member or "").startswith("cell ")]  # lines inside a cell
    for f in findings:
        if f.location.line is not None and f.path in fs_paths:
            span = range(f.location.line, (f.location.end_line or f.location.line) + 1)
            wanted.setdefault(f.path, set()).update(span)
    comments: dict[tuple[str, int], tuple[tuple[str, ...], str]] = {}
    notes: list[Note] = []
    for path, numbers in wanted.items():
        for lineno, text in _read_lines(fs_paths[path], numbers):
            m = INLINE.search(text)
            if m is None:
                continue
            rules = tuple(r.strip().upper() for r in m.group(1).split(",") if r.strip())
            reason = m.group(2).strip()
            if not reason:
                notes.append(Note("inline-ignore-without-reason", path, lineno,
                                  f"{path}:{lineno}: inline ignore without a reason is not honoured"))
                continue
            comments[(path, lineno)] = (rules, reason)
    out: dict[tuple[str, int | None, str], Suppression] = {}
    for f in findings:
        if f.location.line is None or f.path not in wanted:
            continue
        for lineno in range(f.location.line, (f.location.end_line or f.location.line) + 1):
            hit = comments.get((f.path, lineno))
            if hit and any(fnmatch.fnmatchcase(f.rule_id.upper(), r) for r in hit[0]):
                out[(f.path, f.location.line, f.rule_id)] = Suppression("inline", f"inline:{f.path}:{lineno}", hit[1])
                break
    return out, notes


def _read_lines(fs_path: str, lines: set[int]) -> Iterable[tuple[int, str]]:
    try:
        with open_regular(fs_path) as fh:
            data = fh.read(MAX_INLINE_FILE)
    except OSError:
        return
    for lineno, raw in enumerate(data.splitlines(), 1):
        if lineno in lines:
            yield lineno, raw.decode("utf-8", "replace")
