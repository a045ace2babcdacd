"""ML-specific Python code rules: one fast AST pass over resolved call names.

bandit knows general Python risks but few ML ones (research A.3/A.4): it misses ``joblib.load``,
``trust_remote_code=True``, ``torch.hub.load``, Keras ``safe_mode=False``, MLflow remote URIs,
Gradio ``share=True`` and model output flowing into ``exec``. This pass covers them in one
iterative walk of the tree (no recursion, so deep nesting cannot crash it): imports and aliases
are tracked, every call is resolved to a dotted name (``from torch import load as tl; tl(f)`` is
``torch.load``) and matched against the rules in ``rules/code/*.toml``. The rules are data: a
call pattern, conditions on arguments, and a positive and a negative example that the tests run.

Where bandit already reports a call well (``dill.load`` under B301, ``yaml.load`` under B506),
a rule block names that bandit test and stays quiet whenever bandit runs it; where our rule is
strictly richer (B614 ``torch.load``, B615 Hugging Face downloads), the bandit adapter drops
bandit's issue instead (``supersedes`` in the rule). Either way one finding per problem.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mlsec import __version__, catalog
from mlsec.fsio import open_regular
from mlsec.model import Artifact, ArtifactKind, Finding, Location, Package, Severity, Skip
from mlsec.registry import ScanContext, register

MAX_SOURCE_BYTES = 8 << 20  # generated modules beyond this are skipped, not parsed
_HEX = frozenset("0123456789abcdefABCDEF")
_TRUE_TEXT = frozenset({"True", "true", "1"})


# --------------------------------------------------------------------------------------------
# Rules (rules/code/*.toml)


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on a call argument: ``arg`` (keyword names and/or a position) ``is`` something."""

    names: tuple[str, ...]
    position: int | None
    test: str
    values: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class MatchBlock:
    """Calls one rule reports, with the conditions that must all hold."""

    calls: tuple[str, ...]
    regex: re.Pattern[str]
    where: tuple[Condition, ...] = ()
    requires_import: tuple[str, ...] = ()
    bandit: str = ""                      # bandit test that reports these calls already
    evidence: tuple[tuple[str, str], ...] = ()
    message: str = ""
    severity_if: tuple[tuple[Condition, Severity], ...] = ()
    order: int = 0                        # position in the rule file: the first block that names a call decides


@dataclass(frozen=True, slots=True)
class TaintSpec:
    """Model or LLM output (sources) reaching code execution (sinks) inside one function."""

    sources: re.Pattern[str]
    sinks: re.Pattern[str]
    message: str
    sink_patterns: tuple[str, ...] = ()
    source_patterns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CodeRule:
    """A rule from ``rules/code/<file>.toml``: metadata, examples and what to match."""

    id: str
    title: str
    severity: Severity
    cwe: tuple[int, ...]
    explanation: str
    remediation: str
    positive: str
    negative: str
    blocks: tuple[MatchBlock, ...] = ()
    taint: TaintSpec | None = None
    supersedes: tuple[str, ...] = ()
    file: str = ""
    positive_hits: int | None = None     # how many hits the positive example must give (tests)


_CONDITION_TESTS = frozenset({
    "true", "false", "not_true", "missing", "present", "in", "not_in", "prefix",
    "hex_pinned", "not_hex_pinned", "local_path", "not_local_path", "hub_unpinned", "not_none",
})


def glob_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """Dotted-name globs to one regex: ``*`` is part of one name, ``**`` any number of parts."""
    parts = []
    for pat in patterns:
        rx = re.escape(pat)
        rx = rx.replace(r"\*\*\.", "(?:.*\\.)?").replace(r"\.\*\*", "(?:\\..*)?").replace(r"\*\*", ".*")
        parts.append(rx.replace(r"\*", "[^.]*"))
    return re.compile("|".join(f"(?:{p})" for p in parts) or "(?!)")


def _condition(raw: dict[str, Any], where: str) -> Condition:
    test = str(raw.get("is", ""))
    if test not in _CONDITION_TESTS:
        raise ValueError(f"{where}: unknown condition {test!r} (known: {', '.join(sorted(_CONDITION_TESTS))})")
    arg = raw.get("arg", ())
    names = (arg,) if isinstance(arg, str) else tuple(arg)
    pos = raw.get("position")
    return Condition(names=names, position=int(pos) if pos is not None else None, test=test,
                     values=tuple(raw.get("values", ())))


def _rule_from(doc: dict[str, Any], file: str) -> CodeRule:
    blocks = []
    taint = None
    for i, m in enumerate(doc.get("match", [])):
        where = f"{file} match[{i}]"
        if m.get("kind") == "taint":
            taint = TaintSpec(sources=glob_regex(m["sources"]), sinks=glob_regex(m["sinks"]),
                              message=m.get("message", ""), sink_patterns=tuple(m["sinks"]),
                              source_patterns=tuple(m["sources"]))
            continue
        calls = tuple(m["calls"])
        blocks.append(MatchBlock(
            calls=calls,
            regex=glob_regex(calls),
            where=tuple(_condition(c, where) for c in m.get("where", ())),
            requires_import=tuple(m.get("requires_import", ())),
            bandit=str(m.get("bandit", "")),
            evidence=tuple(sorted((str(k), str(v)) for k, v in m.get("evidence", {}).items())),
            message=str(m.get("message", "")),
            severity_if=tuple((_condition(s["when"], where), Severity.parse(s["severity"]))
                              for s in m.get("severity_if", ())),
            order=i,
        ))
    ex = doc.get("example", {})
    return CodeRule(
        id=doc["id"], title=doc["title"], severity=Severity.parse(doc["severity"]), cwe=tuple(doc["cwe"]),
        explanation=doc["explanation"].strip(), remediation=doc["remediation"].strip(),
        positive=ex.get("positive", ""), negative=ex.get("negative", ""),
        blocks=tuple(blocks), taint=taint, supersedes=tuple(doc.get("supersedes", ())), file=file,
        positive_hits=ex.get("positive_hits"),
    )


@functools.cache
def rules() -> tuple[CodeRule, ...]:
    """All ML code rules, sorted by id (loaded once per process)."""
    out = []
    for path in sorted((catalog.data_dir("rules") / "code").glob("*.toml")):
        with path.open("rb") as fh:
            out.append(_rule_from(tomllib.load(fh), path.name))
    ids = [r.id for r in out]
    if len(ids) != len(set(ids)):
        raise ValueError(f"duplicate rule id in rules/code: {sorted(ids)}")
    return tuple(sorted(out, key=lambda r: r.id))


@functools.cache
def rules_digest() -> str:
    """Hash of ``rules/code`` and ``rules/secrets.toml``: part of the scanners' versions."""
    h = hashlib.sha256()
    root = catalog.data_dir("rules")
    for path in sorted([*(root / "code").glob("*.toml"), root / "secrets.toml"]):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def superseded_bandit_tests() -> frozenset[str]:
    """bandit tests whose issues the ML rules replace (the adapter drops them when both run)."""
    return frozenset(t for r in rules() for t in r.supersedes)


@functools.cache
def _index() -> tuple[dict[str, list[tuple[CodeRule, MatchBlock]]], list[tuple[CodeRule, MatchBlock]]]:
    """Blocks by the last name of their call patterns; patterns ending in a wildcard go to a list."""
    by_name: dict[str, list[tuple[CodeRule, MatchBlock]]] = {}
    wild: list[tuple[CodeRule, MatchBlock]] = []
    for rule in rules():
        for block in rule.blocks:
            lasts = {c.rsplit(".", 1)[-1] for c in block.calls}
            if any("*" in last for last in lasts):
                wild.append((rule, block))
                continue
            for last in lasts:
                by_name.setdefault(last, []).append((rule, block))
    return by_name, wild


# Call names so common that the module name is the better hint of the two (both must be written).
_COMMON_NAMES = frozenset({"get", "post", "put", "head", "patch", "delete", "options", "request", "stream", "open",
                           "load", "loads", "run", "init", "download", "Client", "AsyncClient", "launch", "pipeline"})


@dataclass(frozen=True)
class _Trigger:
    """Words (``*`` allowed inside) of which one must be in a module, written as identifiers,
    and literal prefixes (case-insensitive). ``always`` when a rule has no such hint."""

    words: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    always: bool = False

    @functools.cached_property
    def _compiled(self) -> tuple[tuple[tuple[bytes, re.Pattern[bytes]], ...], re.Pattern[bytes] | None]:
        # One regex per word, starting with the word itself so that the regex engine can use its
        # fast literal search; the word boundary before it is checked by hand.
        words = tuple((w.split("*", 1)[0].encode(), re.compile(re.escape(w).replace(r"\*", r"\w*").encode() + rb"(?!\w)"))
                      for w in sorted(self.words))
        pre = "|".join(sorted(re.escape(p) for p in self.prefixes))
        return words, (re.compile(b"(?i:" + pre.encode() + b")") if pre else None)

    def search(self, source: bytes) -> bool:
        if self.always:
            return True
        words, prefix_rx = self._compiled
        for literal, rx in words:
            if literal not in source:  # bytes search is much faster than a regex scan
                continue
            for m in rx.finditer(source):
                if m.start() == 0 or source[m.start() - 1] not in _WORD_BYTES:
                    return True
        return prefix_rx is not None and prefix_rx.search(source) is not None


_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _pattern_word(pattern: str) -> str | None:
    """A word any call matching ``pattern`` has written in the module, or None when there is none."""
    literal = [p for p in reversed(pattern.split(".")) if p not in ("*", "**")]  # from the end
    if not literal:
        return None
    return next((p for p in literal if p not in _COMMON_NAMES and "*" not in p), literal[0])


def _block_trigger(block: MatchBlock) -> _Trigger:
    """What a module must contain for ``block`` to match in it."""
    for cond in block.where:  # a keyword that has to be written out is the most selective hint
        if cond.position is None and cond.test in ("true", "false", "in", "present") and cond.names:
            return _Trigger(words=cond.names)
    for cond in block.where:  # a literal URL prefix, unless it is as common as https://
        if cond.test == "prefix" and cond.values and "https://" not in cond.values:
            return _Trigger(prefixes=tuple(str(v) for v in cond.values))
    return _calls_trigger(block.calls)


def _calls_trigger(patterns: Iterable[str]) -> _Trigger:
    words = [_pattern_word(p) for p in patterns]
    if any(w is None for w in words):
        return _Trigger(always=True)
    return _Trigger(words=tuple(w for w in words if w))


def _merge(triggers: Iterable[_Trigger]) -> _Trigger:
    ts = list(triggers)
    if any(t.always for t in ts):
        return _Trigger(always=True)
    return _Trigger(words=tuple(sorted({w for t in ts for w in t.words})),
                    prefixes=tuple(sorted({p for t in ts for p in t.prefixes})))


@functools.cache
def _triggers() -> tuple[_Trigger, tuple[tuple[_Trigger, _Trigger], ...]]:
    """What a module must contain for any rule to match in it.

    A hit needs a call whose resolved name matches a pattern; the literal parts of that name are
    written in the source (the attribute or called name, or the import that aliased it), a
    keyword the conditions require is written out, and so is a literal URL prefix. A taint hit
    needs both a source and a sink. A module with none of this is not walked at all.
    """
    blocks = _merge(_block_trigger(b) for r in rules() for b in r.blocks)
    taint = tuple((_calls_trigger(r.taint.source_patterns), _calls_trigger(r.taint.sink_patterns))
                  for r in rules() if r.taint is not None)
    return blocks, taint


def might_match(source: bytes) -> bool:
    """Cheap test on the text before walking the tree (see :func:`_triggers`)."""
    blocks, taint = _triggers()
    if blocks.search(source):
        return True
    return any(src.search(source) and sink.search(source) for src, sink in taint)


# --------------------------------------------------------------------------------------------
# torch version (join with the dependency scanner's data)


_VERSION = re.compile(r"\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)")


def weights_only_is_safe(torch_version: str | None) -> bool:
    """True when torch's loader with ``weights_only=True`` is not bypassable in this torch version.

    CVE-2025-32434 (GHSA-53q9-r3pm-6pq6): torch < 2.6.0 executes code from a crafted
    checkpoint even with ``weights_only=True``. Unknown versions are not known to be safe.
    Pre-releases of 2.6.0 count as older; local versions (``2.6.0+cu124``) as released.
    """
    if not torch_version:
        return False
    m = _VERSION.fullmatch(torch_version.strip())
    if not m:
        return False
    release = tuple(int(x or 0) for x in m.group(1, 2, 3))
    rest = m.group(4).split("+", 1)[0].lower()
    pre = bool(re.match(r"\.?(a|b|c|rc|alpha|beta|pre|preview|dev)", rest))
    if release > (2, 6, 0):
        return True
    return release == (2, 6, 0) and not pre


def refine_torch_findings(findings: Sequence[Finding], packages: Sequence[Package]) -> list[Finding]:
    """Join MLSEC-CODE-004 (``weights_only=True``) findings with the project's torch pin.

    A finding carrying ``needs_torch_ge`` stays INFO while the torch version is unknown; it is
    raised to HIGH when the project pins torch below 2.6, to MEDIUM when its torch range still
    admits such a version, and dropped when every admitted version is safe. Meant to run in the
    pipeline after all artifacts were scanned (packages come from the dependency scanner).
    """
    torch = [p for p in packages if p.name == "torch"]
    if not torch or not any(dict(f.evidence).get("needs_torch_ge") for f in findings):
        return list(findings)
    pinned = [p.version for p in torch if p.version]
    ranges = [p.specifier for p in torch if not p.version and p.specifier]
    verdict: tuple[Severity, str] | None
    if pinned:
        bad = sorted(v for v in pinned if not weights_only_is_safe(v))
        verdict = (Severity.HIGH, f"the project pins torch {', '.join(bad)}") if bad else None
    elif ranges and _range_admits_unsafe(ranges):
        verdict = (Severity.MEDIUM, f"the project's torch range ({'; '.join(ranges)}) admits versions below 2.6")
    elif ranges:
        verdict = None
    else:
        return list(findings)
    out = []
    for f in findings:
        if not dict(f.evidence).get("needs_torch_ge"):
            out.append(f)
        elif verdict is not None:
            sev, why = verdict
            out.append(replace(f, severity=sev, message=f"{f.message}; {why}",
                               evidence=tuple(sorted((*f.evidence, ("torch_dependency", why))))))
    return out


def _range_admits_unsafe(specifiers: Sequence[str]) -> bool:
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
    except ImportError:  # pragma: no cover - packaging is nearly always present
        return True
    probes = ("2.5.1", "2.4.1", "2.3.1", "2.2.2", "2.1.2", "2.0.1", "1.13.1")
    for spec in specifiers:
        try:
            s = SpecifierSet(spec)
        except InvalidSpecifier:
            return True
        if any(s.contains(v, prereleases=True) for v in probes):
            return True
    return False


# --------------------------------------------------------------------------------------------
# The AST pass


@dataclass(frozen=True, slots=True)
class MLHit:
    """One rule match in a module, before it becomes a Finding (notebooks remap the line)."""

    rule_id: str
    severity: Severity
    message: str
    line: int
    end_line: int
    column: int
    callee: str
    scope: str
    evidence: tuple[tuple[str, str], ...] = ()


@dataclass
class _Scope:
    name: str
    assigns: list[tuple[ast.AST, ast.AST]] = field(default_factory=list)  # (target, value)
    sinks: list[tuple[ast.Call, str]] = field(default_factory=list)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _is_true(node: ast.AST | None) -> bool:
    """Literal ``True`` (or what bandit also accepts as true: ``1``, ``"True"``)."""
    if not isinstance(node, ast.Constant):
        return False
    v = node.value
    return v is True or (type(v) is int and v == 1) or (isinstance(v, str) and v in _TRUE_TEXT)


def _text(node: ast.AST | None, limit: int = 80) -> str:
    """Short source-like text of an argument, for messages and evidence (never a whole blob)."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant):
        s = repr(node.value)
    else:
        try:
            s = ast.unparse(node)
        except (ValueError, RecursionError, AttributeError):  # pragma: no cover - exotic nodes
            s = type(node).__name__
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _literal_str(node: ast.AST | None) -> str | None:
    """The string a literal (or the constant head of an f-string) starts with, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        head = node.values[0].value
        return head if isinstance(head, str) else None
    return None


class _Analyzer:
    """State of one pass over one module."""

    def __init__(self, bandit_tests: frozenset[str] | Any) -> None:
        self.bandit_tests = bandit_tests
        self.aliases: dict[str, str] = {}
        self.imports: set[str] = set()
        self.hits: list[MLHit] = []
        self.scopes: list[_Scope] = []
        self.source_calls = 0
        self.by_name, self.wild = _index()
        self.taint_rules = [r for r in rules() if r.taint is not None]

    # ---- names

    def resolve(self, node: ast.AST) -> str:
        """Dotted name of an expression through import aliases (``?`` for what has none).

        Calls and subscripts inside the chain show as ``()``/``[]``: ``gr.Blocks().launch`` is
        ``gradio.Blocks().launch``. Iterative, so absurdly long chains cannot exhaust the stack.
        """
        parts: list[str] = []
        pending = ""
        while True:
            if isinstance(node, ast.Attribute):
                parts.append(node.attr + pending)
                pending = ""
                node = node.value
            elif isinstance(node, ast.Call):
                pending = "()" + pending
                node = node.func
            elif isinstance(node, ast.Subscript):
                pending = "[]" + pending
                node = node.value
            elif isinstance(node, ast.Name):
                base = self.aliases.get(node.id, node.id) + pending
                break
            else:
                base = "?" + pending
                break
        parts.reverse()
        name = ".".join([base, *parts])
        if parts and "(" not in name and "[" not in name:
            return self.aliases.get(name, name)
        return name

    def imported(self, modules: tuple[str, ...]) -> bool:
        return any(i == m or i.startswith(m + ".") for m in modules for i in self.imports)

    def add_import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                self.imports.add(a.name)
                if a.asname:
                    self.aliases[a.asname] = a.name
            return
        if node.level or not node.module:
            return  # relative imports name project code, not libraries
        for a in node.names:
            full = f"{node.module}.{a.name}"
            self.imports.add(full)
            self.aliases[a.asname or a.name] = full

    # ---- walk

    def run(self, tree: ast.AST) -> list[MLHit]:
        module = _Scope("<module>")
        self.scopes.append(module)
        stack: list[tuple[ast.AST, _Scope]] = [(tree, module)]
        while stack:
            node, scope = stack.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.add_import(node)
                continue
            if isinstance(node, _SCOPES):
                inner = _Scope(node.name if scope is module else f"{scope.name}.{node.name}")
                self.scopes.append(inner)
                # decorators, defaults and bases evaluate in the enclosing scope
                outer_parts: list[ast.AST] = list(node.decorator_list)
                if isinstance(node, ast.ClassDef):
                    outer_parts += node.bases + [k.value for k in node.keywords]
                else:
                    outer_parts += [d for d in (*node.args.defaults, *node.args.kw_defaults) if d is not None]
                for stmt in reversed(node.body):
                    stack.append((stmt, inner))
                for part in reversed(outer_parts):
                    stack.append((part, scope))
                continue
            if isinstance(node, ast.Call):
                self.call(node, scope)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if node.value is not None:
                    for t in targets:
                        scope.assigns.append((t, node.value))
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                scope.assigns.append((node.target, node.iter))
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                scope.assigns.append((node.optional_vars, node.context_expr))
            elif isinstance(node, ast.NamedExpr):
                scope.assigns.append((node.target, node.value))
            children = list(ast.iter_child_nodes(node))
            for child in reversed(children):
                stack.append((child, scope))
        if self.taint_rules and self.source_calls and any(s.sinks for s in self.scopes):
            self.taint()
        return self.hits

    def call(self, node: ast.Call, scope: _Scope) -> None:
        callee = self.resolve(node.func)
        last = callee.rsplit(".", 1)[-1]
        candidates = [*self.by_name.get(last, ()), *self.wild]
        if len(candidates) > 1:
            candidates.sort(key=lambda rb: (rb[0].id, rb[1].order))
        claimed: set[str] = set()
        for rule, block in candidates:
            if rule.id in claimed or not block.regex.fullmatch(callee):
                continue
            if block.requires_import and not self.imported(block.requires_import):
                continue
            claimed.add(rule.id)  # the first block naming this call decides for its rule
            if block.bandit and block.bandit in self.bandit_tests:
                continue  # bandit reports this call itself
            if all(self.check(c, node) for c in block.where):
                self.report(rule, block, node, callee, scope)
        for rule in self.taint_rules:
            assert rule.taint is not None
            if rule.taint.sources.fullmatch(callee):
                self.source_calls += 1
            if rule.taint.sinks.fullmatch(callee):
                scope.sinks.append((node, callee))

    # ---- conditions

    @staticmethod
    def arg(cond: Condition, node: ast.Call) -> ast.AST | None:
        for kw in node.keywords:
            if kw.arg in cond.names:
                return kw.value
        if cond.position is not None and cond.position < len(node.args):
            a = node.args[cond.position]
            return None if isinstance(a, ast.Starred) else a
        return None

    def check(self, cond: Condition, node: ast.Call) -> bool:
        value = self.arg(cond, node)
        t = cond.test
        if t == "missing":
            return value is None
        if t == "present":
            return value is not None
        if t == "not_none":
            return value is not None and not (isinstance(value, ast.Constant) and value.value is None)
        if t == "true":
            return _is_true(value)
        if t == "false":
            return isinstance(value, ast.Constant) and value.value is False
        if t == "not_true":
            return not _is_true(value)
        if t in ("in", "not_in"):
            inside = value is not None and self.literal_in(value, cond.values)
            return inside if t == "in" else not inside
        if t == "prefix":
            s = _literal_str(value)
            return s is not None and s.lower().startswith(tuple(str(v).lower() for v in cond.values))
        if t in ("hex_pinned", "not_hex_pinned"):
            pinned = _hex_pinned(value)
            return pinned is True if t == "hex_pinned" else pinned is False
        if t in ("local_path", "not_local_path"):
            s = _literal_str(value)
            local = s is not None and s.startswith(("./", "/", "../", "~", ".\\")) or s in (".", "..")
            return local if t == "local_path" else not local
        if t == "hub_unpinned":
            s = _literal_str(value)
            if s is None:
                return True
            ref = s.partition(":")[2]
            return not (len(ref) >= 7 and all(c in _HEX for c in ref))
        raise AssertionError(t)  # pragma: no cover - validated at load time

    def literal_in(self, value: ast.AST, values: tuple[Any, ...]) -> bool:
        if isinstance(value, ast.Constant):
            return value.value in values
        if isinstance(value, (ast.Name, ast.Attribute)):
            name = self.resolve(value)
            return name in values or name.rsplit(".", 1)[-1] in values
        return False

    # ---- reporting

    def report(self, rule: CodeRule, block: MatchBlock, node: ast.Call, callee: str, scope: _Scope) -> None:
        severity = rule.severity
        for cond, sev in block.severity_if:
            if self.check(cond, node):
                severity = sev
                break
        ev = dict(block.evidence)
        ev["call"] = callee
        first = ""
        for cond in block.where:
            val = self.arg(cond, node)
            if val is not None:
                label = cond.names[0] if cond.names else f"arg{cond.position}"
                ev[label] = _text(val)
                first = first or ev[label]
        message = (block.message or rule.title).format(callee=callee, value=first)
        self.hits.append(MLHit(rule.id, severity, message, node.lineno, node.end_lineno or node.lineno,
                               node.col_offset + 1, callee, scope.name, tuple(sorted(ev.items()))))

    # ---- taint: model output into code execution

    def taint(self) -> None:
        for rule in self.taint_rules:
            spec = rule.taint
            assert spec is not None
            names: dict[str, set[str]] = {s.name: set() for s in self.scopes}
            module = names["<module>"]  # module-level names are visible in every function
            attrs: set[str] = set()
            for _ in range(8):  # fixpoint; chains longer than this are not worth the time
                changed = False
                for scope in self.scopes:
                    local = names[scope.name]
                    for target, value in scope.assigns:
                        if not self.tainted(value, local, module, attrs, spec):
                            continue
                        for t in ast.walk(target):
                            if isinstance(t, ast.Name) and t.id not in local:
                                local.add(t.id)
                                changed = True
                            elif isinstance(t, ast.Attribute) and t.attr not in attrs and _is_self(t.value):
                                attrs.add(t.attr)
                                changed = True
                if not changed:
                    break
            for scope in self.scopes:
                for node, callee in scope.sinks:
                    args = [*node.args, *(k.value for k in node.keywords)]
                    bad = next((a for a in args if self.tainted(a, names[scope.name], module, attrs, spec)), None)
                    if bad is None:
                        continue
                    message = (spec.message or rule.title).format(callee=callee, value=_text(bad))
                    self.hits.append(MLHit(rule.id, rule.severity, message, node.lineno, node.end_lineno or node.lineno,
                                           node.col_offset + 1, callee, scope.name,
                                           (("call", callee), ("tainted", _text(bad)))))

    def tainted(self, expr: ast.AST, local: set[str], module: set[str], attrs: set[str], spec: TaintSpec) -> bool:
        """Does ``expr`` derive from model output (a tainted name, ``self.<attr>`` or a source call)?"""
        for n in ast.walk(expr):
            if isinstance(n, ast.Name) and (n.id in local or n.id in module):
                return True
            if isinstance(n, ast.Attribute) and n.attr in attrs and _is_self(n.value):
                return True
            if isinstance(n, ast.Call) and spec.sources.fullmatch(self.resolve(n.func)):
                return True
        return False


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _hex_pinned(node: ast.AST | None) -> bool | None:
    """True for a literal commit hash (7+ hex), False for a missing or literal branch/tag, None if unknown."""
    if node is None:
        return False
    if isinstance(node, ast.Constant):
        if node.value is None:
            return False
        s = str(node.value)
        return len(s) >= 7 and all(c in _HEX for c in s)
    return None  # a variable: give it the benefit of the doubt (as bandit B615 does)


def analyze(tree: ast.AST, bandit_tests: frozenset[str] | Any = frozenset()) -> list[MLHit]:
    """Every ML rule hit in a parsed module, in source order.

    ``bandit_tests`` is what bandit will run over the same code (anything supporting ``in``);
    rule blocks that defer to one of those tests stay quiet.
    """
    hits = _Analyzer(bandit_tests).run(tree)
    hits.sort(key=lambda h: (h.line, h.column, h.rule_id))
    return hits


# --------------------------------------------------------------------------------------------
# Parsing shared with the bandit adapter (one parse per file and process)


class SourceError(Exception):
    """The file is not Python this interpreter can parse; the message says why (a Skip)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A module's bytes and its tree."""

    data: bytes
    tree: ast.Module


_last_parse: list[tuple[tuple[str, str], Parsed]] = []


def parse_artifact(artifact: Artifact) -> Parsed:
    """Read and parse a .py artifact; the last result is kept so the second scanner reuses it."""
    key = (artifact.fs_path, artifact.sha256)
    if _last_parse and _last_parse[0][0] == key:
        return _last_parse[0][1]
    if artifact.size > MAX_SOURCE_BYTES:
        raise SourceError(f"source file larger than {MAX_SOURCE_BYTES >> 20} MiB was not parsed")
    with open_regular(artifact.fs_path) as fh:
        data = fh.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise SourceError(f"source file larger than {MAX_SOURCE_BYTES >> 20} MiB was not parsed")
    parsed = Parsed(data, parse_source(data))
    _last_parse[:] = [(key, parsed)]
    return parsed


def parse_source(data: bytes | str, *, notebook: bool = False) -> ast.Module:
    """``ast.parse`` with every failure turned into SourceError (bad input is not a tool bug)."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if notebook else 0
    try:
        tree = compile(data, "<source>", "exec", flags | ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        raise SourceError(f"not valid Python: {exc.msg} (line {exc.lineno})") from None
    except (ValueError, UnicodeDecodeError) as exc:  # null bytes, bad coding cookie
        raise SourceError(f"not parsable as Python source: {exc}") from None
    except (RecursionError, MemoryError):
        raise SourceError("nested too deeply to parse") from None
    assert isinstance(tree, ast.Module)
    return tree


def scope_index(tree: ast.Module) -> Callable[[int], str]:
    """Line -> qualified name of the innermost function or class around it ("<module>" outside).

    Keys of findings from other passes (bandit) use it, so a fingerprint survives edits in
    other functions. Walks statements only, which is far cheaper than walking every node.
    """
    spans: list[tuple[int, int, str]] = []
    stack: list[tuple[list[ast.stmt], str]] = [(tree.body, "")]
    while stack:
        body, prefix = stack.pop()
        for st in body:
            if isinstance(st, _SCOPES):
                name = f"{prefix}{st.name}"
                spans.append((st.lineno, st.end_lineno or st.lineno, name))
                stack.append((st.body, name + "."))
            else:
                for attr in ("body", "orelse", "finalbody", "handlers", "cases"):
                    sub = getattr(st, attr, None)
                    if isinstance(sub, list):
                        for item in sub:
                            if isinstance(item, (ast.ExceptHandler, ast.match_case)):
                                stack.append((item.body, prefix))
                        stack.append(([x for x in sub if isinstance(x, ast.stmt)], prefix))

    def lookup(line: int) -> str:
        best = "<module>"
        width = None
        for start, end, name in spans:
            if start <= line <= end and (width is None or end - start < width):
                best, width = name, end - start
        return best

    return lookup


# --------------------------------------------------------------------------------------------
# Findings


def sanitize(text: str) -> str:
    """Mask anything that looks like a secret (messages and evidence quote source code)."""
    from mlsec.detect.secrets import find_secrets

    hits = find_secrets(text)
    for h in reversed(hits):
        text = text[: h.start] + h.masked + text[h.end:]
    return text


LineMap = Callable[[int], tuple[str | None, int, str]]  # module line -> (member, line, key anchor)


def hit_findings(hits: Sequence[MLHit], path: str, scanner: str, *, line_map: LineMap | None = None) -> Iterator[Finding]:
    """Findings for hits; the key is scope, callee and the occurrence (never a line).

    ``line_map`` maps a line of the analysed module back to where it came from (a notebook
    cell), with an anchor for the key (the cell id) so fingerprints survive edits elsewhere.
    """
    seen: dict[tuple[str, str, str, str], int] = {}
    for h in hits:
        member, line, anchor = (None, h.line, "") if line_map is None else line_map(h.line)
        n = seen.get((anchor, h.rule_id, h.scope, h.callee), 0) + 1
        seen[(anchor, h.rule_id, h.scope, h.callee)] = n
        end = line + (h.end_line - h.line)
        yield Finding(
            rule_id=h.rule_id, severity=h.severity, message=sanitize(h.message), path=path, scanner=scanner,
            location=Location(line=line, end_line=end if end != line else None, column=h.column, member=member),
            key=f"{anchor}{h.scope}|{h.callee}#{n}",
            evidence=tuple((k, sanitize(v)) for k, v in h.evidence),
        )


def bandit_selection(ctx: ScanContext, fs_path: str) -> Any:
    """The bandit tests that will run on this file (empty when bandit is not an engine)."""
    if "bandit" not in ctx.engines:
        return frozenset()
    from mlsec.scanners.code_bandit import bandit_config

    return bandit_config(fs_path)


@register
class MLCodeScanner:
    """mlsec's own ML rules over Python source files."""

    name = "mlsec-code"
    cacheable = True

    @property
    def version(self) -> str:
        """Changes with the rules, so cached results of older rules are not reused."""
        return f"{__version__}+{rules_digest()}"

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Python source files, when the mlsec engine runs."""
        return "mlsec" in ctx.engines and artifact.kind is ArtifactKind.CODE

    def cache_salt(self, artifact: Artifact) -> str:
        """What besides the file decides the output: the bandit tests it defers to."""
        from mlsec.scanners.code_bandit import bandit_config

        return bandit_config(artifact.fs_path).digest()

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        """Parse once, match every rule; unparsable source is a Skip, not an error."""
        try:
            parsed = parse_artifact(artifact)
        except SourceError as exc:
            yield Skip(artifact.path, str(exc), "unparsable-source")
            return
        if not might_match(parsed.data):
            return  # no rule can match this module (it still had to parse: unparsable files are reported)
        hits = analyze(parsed.tree, bandit_selection(ctx, artifact.fs_path))
        yield from hit_findings(hits, artifact.path, self.name)
