"""bandit, run in-process: every default test, results mapped to mlsec findings.

bandit has no public API (research A.1), so every bandit import lives in this one file and the
version is pinned (``bandit>=1.9.4,<1.10``). Per file we do what ``BanditManager._parse_file``
does — collect ``# nosec`` comments, run ``BanditNodeVisitor`` — with changes that do not
change a single result (a test checks this against the stock visitor) but make it cheaper:

* the tree comes from the parse the ML rules already did (one ``ast.parse`` per file);
* ``# nosec`` comments are only tokenized for when the file contains ``nosec`` at all;
* nodes of a type that no enabled test looks at, and that bandit's visitor keeps no state for
  (imports, functions, classes), are walked without building bandit's per-node context and
  without calling an empty test list. That is most nodes (names, loads, operators...);
* a test that finds nothing skips the ``# nosec`` lookup stock bandit only does to log a
  warning, and B613 (bidirectional characters) is skipped for UTF-8 source without any.

Together about 2× less CPU than stock bandit for identical results.

Mapping: rule id ``MLSEC-BANDIT-<test id>`` (one catalog entry per bandit test, so waivers and
policies can name one test); severity from bandit's severity × confidence; CWE, test name,
severity and confidence in evidence. Messages that quote a hard-coded password (B105–B107) are
masked. B614 and B615 are not run when the ML rules run, which report the same calls with more
context (``supersedes`` in ``rules/code``).

Configuration, nearest ``mlsec.toml`` or ``pyproject.toml`` ``[tool.mlsec]`` above the file::

    [tool.mlsec.bandit]
    skips = ["B101", "B311"]   # bandit tests not to run
    tests = []                 # when not empty: run only these tests
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlsec import __version__, catalog
from mlsec.model import Artifact, ArtifactKind, Finding, Location, Severity, Skip
from mlsec.registry import ScanContext, register

BANDIT_REQUIREMENT = "bandit>=1.9.4,<1.10"
_TEST_ID = re.compile(r"B\d{3}")
_PASSWORD_TESTS = frozenset({"B105", "B106", "B107"})
_QUOTED = re.compile(r"'.*'", re.DOTALL)
_LEVELS = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "UNDEFINED": 0}
# bandit severity (rows) x confidence (columns): LOW, MEDIUM, HIGH
_SEVERITY = (
    (Severity.INFO, Severity.LOW, Severity.LOW),
    (Severity.LOW, Severity.MEDIUM, Severity.MEDIUM),
    (Severity.MEDIUM, Severity.HIGH, Severity.HIGH),
)
FALLBACK_RULE = "MLSEC-BANDIT-PLUGIN"


class BanditConfigError(ValueError):
    """``[tool.mlsec.bandit]`` is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class BanditSelection:
    """Which bandit tests run: ``tests`` (only these, when given) minus ``skips``."""

    tests: frozenset[str] = frozenset()
    skips: frozenset[str] = frozenset()
    source: str = ""

    def __contains__(self, test_id: object) -> bool:
        return isinstance(test_id, str) and (not self.tests or test_id in self.tests) and test_id not in self.skips

    def digest(self) -> str:
        """Stable text for cache keys."""
        return f"tests={','.join(sorted(self.tests))};skips={','.join(sorted(self.skips))}"


def _ids(value: object, key: str, source: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _TEST_ID.fullmatch(v) for v in value):
        raise BanditConfigError(f"{source}: [tool.mlsec.bandit] {key} must be a list of bandit test ids like 'B101'")
    return frozenset(value)


@functools.lru_cache(maxsize=256)
def _config_for_dir(directory: str, _run: int) -> BanditSelection:
    # Memoized per folder within one run only (config.new_run): the next run sees edits.
    from mlsec.config import ConfigError, _find_project_config

    try:
        found = _find_project_config(Path(directory))
    except ConfigError as exc:
        raise BanditConfigError(str(exc)) from None
    if found is None:
        return BanditSelection()
    path, section = found
    table = section.get("bandit", {})
    if not isinstance(table, dict):
        raise BanditConfigError(f"{path}: [tool.mlsec] bandit must be a table")
    unknown = set(table) - {"skips", "tests"}
    if unknown:
        raise BanditConfigError(f"{path}: unknown [tool.mlsec.bandit] key(s) {sorted(unknown)} (known: skips, tests)")
    return BanditSelection(
        tests=_ids(table.get("tests", []), "tests", str(path)),
        skips=_ids(table.get("skips", []), "skips", str(path)),
        source=str(path),
    )


def bandit_config(fs_path: str) -> BanditSelection:
    """The bandit test selection for a file, from the nearest project configuration."""
    # abspath, not resolve(): this runs for every file of a cached re-scan, and the lookup of
    # the nearest config is by directory either way.
    from mlsec.config import run_id

    return _config_for_dir(os.path.dirname(os.path.abspath(fs_path)), run_id())


# --------------------------------------------------------------------------------------------
# bandit plumbing (all bandit imports are here, inside functions: importing mlsec stays fast)


@dataclass(frozen=True, slots=True)
class BanditHit:
    """One bandit issue, reduced to what a finding needs (message already masked)."""

    test_id: str
    test_name: str
    severity: str
    confidence: str
    cwe: int
    text: str
    line: int
    end_line: int
    column: int


class BanditTrouble(Exception):
    """bandit could not handle this source (too deep for its recursive visitor); becomes a Skip."""


@functools.cache
def bandit_version() -> str:
    """Installed bandit version ("missing" when it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("bandit")
    except metadata.PackageNotFoundError:
        return "missing"


class _ErrorLog(logging.Handler):
    """Keeps bandit's ERROR records (a crashed test) so they surface as a Skip, not on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0][:300])


@functools.cache
def _setup() -> tuple[Any, _ErrorLog]:
    """Import bandit once per process, quiet its logger, build the fast visitor class."""
    try:
        from bandit.core import context as b_context
        from bandit.core import node_visitor, tester
    except ImportError:
        raise RuntimeError(f"bandit is not installed: pip install '{BANDIT_REQUIREMENT}'") from None

    log = logging.getLogger("bandit")
    handler = _ErrorLog()
    log.addHandler(handler)
    log.setLevel(logging.ERROR)  # bandit's debug calls become cheap and its warnings stay off stderr
    log.propagate = False

    class FastTester(tester.BanditTester):
        """bandit's tester without scores and without the nosec lookup for tests that found nothing.

        For a test that returns nothing, stock bandit only looks up ``# nosec`` to log a warning
        (silenced here); a hit goes through exactly the stock path. ``skip_file_test`` is B613 when
        the caller has proven the file holds no bidirectional control character.
        """

        skip_file_test: Any = None

        def run_tests(self, raw_context: dict[str, Any], checktype: str) -> None:
            for test in self.testset.get_tests(checktype):
                if test is self.skip_file_test:
                    continue
                temp_context = raw_context.copy()
                context = b_context.Context(temp_context)
                try:
                    result = test(context, test._config) if hasattr(test, "_config") else test(context)
                    if result is None:
                        continue
                    skip = self._get_nosecs_from_contexts(temp_context, test_result=result)
                    fname = temp_context["filename"]
                    result.fname = fname.decode("utf-8") if isinstance(fname, bytes) else fname
                    result.fdata = temp_context["file_data"]
                    if result.lineno is None:
                        result.lineno = temp_context["lineno"]
                    if result.linerange == []:
                        result.linerange = temp_context["linerange"]
                    if result.col_offset == -1:
                        result.col_offset = temp_context["col_offset"]
                    result.end_col_offset = temp_context.get("end_col_offset", 0)
                    result.test = test.__name__
                    if result.test_id == "":
                        result.test_id = test._test_id
                    if skip is not None:
                        if not skip:
                            self.metrics.note_nosec()
                            continue
                        if result.test_id in skip:
                            self.metrics.note_skipped_test()
                            continue
                    self.results.append(result)
                except Exception as e:  # noqa: BLE001 - what bandit does: log (collected) and go on
                    self.report_error(test.__name__, context, e)

    class FastVisitor(node_visitor.BanditNodeVisitor):
        """bandit's visitor, skipping per-node work for node types no enabled test looks at."""

        needs: frozenset[str] = frozenset()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.tester = FastTester(self.testset, self.debug, self.nosec_lines, self.metrics)

        def update_scores(self, scores: Any) -> None:
            """Scores only feed bandit's metrics report, which mlsec does not produce."""

        def generic_visit(self, node: ast.AST) -> None:
            needs = self.needs
            for _, value in ast.iter_fields(node):
                if isinstance(value, list):
                    max_idx = len(value) - 1
                    for idx, item in enumerate(value):
                        if isinstance(item, ast.AST):
                            item._bandit_sibling = value[idx + 1] if idx < max_idx else None  # type: ignore[attr-defined]
                            item._bandit_parent = node  # type: ignore[attr-defined]
                            if item.__class__.__name__ in needs:
                                self.pre_visit(item)
                                self.visit(item)
                                self.generic_visit(item)
                                self.post_visit(item)
                            else:
                                self.generic_visit(item)
                elif isinstance(value, ast.AST):
                    value._bandit_sibling = None  # type: ignore[attr-defined]
                    value._bandit_parent = node  # type: ignore[attr-defined]
                    if value.__class__.__name__ in needs:
                        self.pre_visit(value)
                        self.visit(value)
                        self.generic_visit(value)
                        self.post_visit(value)
                    else:
                        self.generic_visit(value)

        def process_tree(self, tree: ast.Module) -> None:
            """``process`` without parsing again (the caller parsed with the same grammar)."""
            self.generic_visit(tree)
            self.context = {"file_data": self.fdata, "filename": self.fname, "lineno": 0,
                            "linerange": [0, 1], "col_offset": 0}
            self.tester.run_tests(self.context, "File")

    return FastVisitor, handler


@dataclass(frozen=True)
class _TestSet:
    tests: Any
    blacklist: dict[str, Any]
    needs: frozenset[str]
    trojansource: Any = None


_BIDI_UTF8 = tuple(ch.encode() for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200f")


def _may_hold_bidi(data: bytes) -> bool:
    """Could B613 (bidirectional control characters) fire? Exact for UTF-8 source, else assume yes."""
    import tokenize

    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        return True
    if encoding not in ("utf-8", "utf-8-sig"):
        return True
    return any(b in data for b in _BIDI_UTF8)


_STATEFUL = frozenset({"ClassDef", "FunctionDef", "Import", "ImportFrom"})


@functools.lru_cache(maxsize=16)
def _testset(selection: BanditSelection) -> _TestSet:
    from bandit.core import blacklisting, config, extension_loader, test_set

    profile: dict[str, set[str]] = {"include": set(), "exclude": set(selection.skips)}
    if selection.tests:
        profile["include"] = set(selection.tests)
    known = set(extension_loader.MANAGER.plugins_by_id) | {
        t["id"] for tests in extension_loader.MANAGER.blacklist.values() for t in tests}
    unknown = (selection.tests | selection.skips) - known
    if unknown:
        raise BanditConfigError(f"{selection.source}: unknown bandit test id(s) {sorted(unknown)}")
    ts = test_set.BanditTestSet(config.BanditConfig(), profile)
    checks = set(ts.tests)
    needs = set(_STATEFUL) | checks
    if checks & {"Str", "Bytes"}:
        needs.add("Constant")
    trojan = next((t for t in ts.get_tests("File") if getattr(t, "_test_id", "") == "B613"), None)
    return _TestSet(ts, dict(getattr(blacklisting.blacklist, "_config", {}) or {}), frozenset(needs), trojan)


def _nosec_lines(data: bytes) -> dict[int, Any]:
    """bandit's ``# nosec`` map, tokenized only when the text can contain one."""
    if b"nosec" not in data:
        return {}
    import tokenize

    from bandit.core import manager

    lines: dict[int, Any] = {}
    try:
        for toktype, tokval, (lineno, _), _, _ in tokenize.tokenize(io.BytesIO(data).readline):
            if toktype == tokenize.COMMENT:
                lines[lineno] = manager._parse_nosec_comment(tokval)
    except (tokenize.TokenError, SyntaxError):
        pass
    return lines


def _mask_password(test_id: str, text: str) -> str:
    if test_id in _PASSWORD_TESTS:
        from mlsec.detect.secrets import mask

        def repl(m: re.Match[str]) -> str:
            return f"'{mask(m.group(0)[1:-1])}'"

        text = _QUOTED.sub(repl, text)
    from mlsec.scanners.code_ml import sanitize

    return sanitize(text)


def run_bandit(data: bytes, tree: ast.Module, name: str, selection: BanditSelection,
               *, stock: bool = False) -> tuple[list[BanditHit], list[str]]:
    """Run every selected bandit test over one module; returns hits and bandit's own errors.

    ``name`` is bandit's file name (used for its module qualname). ``stock=True`` uses bandit's
    unmodified visitor (tests compare the two).
    """
    fast_cls, errors = _setup()
    from bandit.core import blacklisting, metrics, node_visitor

    ts = _testset(selection)
    blacklisting.blacklist._config = ts.blacklist  # the blacklist plugin keeps its config globally
    met = metrics.Metrics()
    met.begin(name)
    nosec = _nosec_lines(data)
    errors.messages.clear()
    if stock:
        visitor = node_visitor.BanditNodeVisitor(name, io.BytesIO(data), None, ts.tests, False, nosec, met)
    else:
        visitor = fast_cls(name, io.BytesIO(data), None, ts.tests, False, nosec, met)
        visitor.needs = ts.needs
        if not _may_hold_bidi(data):
            visitor.tester.skip_file_test = ts.trojansource
    try:
        if stock:
            visitor.process(data)
        else:
            visitor.process_tree(tree)
    except RecursionError:
        raise BanditTrouble("nested too deeply for bandit's recursive visitor") from None
    hits = []
    for issue in visitor.tester.results:
        lines = [n for n in (issue.linerange or []) if isinstance(n, int) and n > 0]
        line = issue.lineno if isinstance(issue.lineno, int) and issue.lineno > 0 else (min(lines) if lines else 1)
        hits.append(BanditHit(
            test_id=str(issue.test_id), test_name=str(issue.test), severity=str(issue.severity).upper(),
            confidence=str(issue.confidence).upper(), cwe=int(getattr(issue.cwe, "id", 0) or 0),
            text=_mask_password(str(issue.test_id), str(issue.text)), line=line,
            end_line=max([line, *lines]), column=int(issue.col_offset or 0) + 1,
        ))
    hits.sort(key=lambda h: (h.line, h.column, h.test_id))
    return hits, list(errors.messages)


def severity_of(hit: BanditHit) -> Severity:
    """bandit severity × confidence → mlsec severity (see the table in the module)."""
    return _SEVERITY[_LEVELS.get(hit.severity, 0)][_LEVELS.get(hit.confidence, 0)]


def hit_findings(hits: list[BanditHit], path: str, scanner: str, *, line_map: Any = None,
                 scope_of: Any = None) -> Iterator[Finding]:
    """Findings for bandit hits. The key never holds a line: test, enclosing function, a hash of
    the message and the occurrence.

    ``line_map`` as in :func:`mlsec.scanners.code_ml.hit_findings` (notebook cells);
    ``scope_of`` maps a module line to its enclosing function (:func:`code_ml.scope_index`).
    """
    known = catalog.rules()
    seen: dict[tuple[str, str, str, str], int] = {}
    for h in hits:
        scope = scope_of(h.line) if scope_of is not None else ""
        rule_id = f"MLSEC-BANDIT-{h.test_id}"
        if rule_id not in known:
            rule_id = FALLBACK_RULE
        member, line, anchor = (None, h.line, "") if line_map is None else line_map(h.line)
        ident = "" if h.test_id in _PASSWORD_TESTS else h.text  # a password's text must not seed a hash
        digest = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        n = seen.get((anchor, scope, h.test_id, digest), 0) + 1
        seen[(anchor, scope, h.test_id, digest)] = n
        evidence = {
            "bandit_test": h.test_id,
            "bandit_name": h.test_name,
            "bandit_severity": h.severity.lower(),
            "confidence": h.confidence.lower(),
        }
        if h.cwe:
            evidence["cwe"] = f"CWE-{h.cwe}"
        end = line + (h.end_line - h.line)
        yield Finding(
            rule_id=rule_id, severity=severity_of(h), message=h.text, path=path, scanner=scanner,
            location=Location(line=line, end_line=end if end != line else None, column=h.column, member=member),
            key=f"{anchor}{h.test_id}|{scope}|{digest}#{n}", evidence=tuple(sorted(evidence.items())),
        )


def effective_selection(fs_path: str, ctx: ScanContext) -> BanditSelection:
    """The project's selection, minus the tests the ML rules supersede when they run too."""
    selection = bandit_config(fs_path)
    if "mlsec" not in ctx.engines:
        return selection
    from mlsec.scanners.code_ml import superseded_bandit_tests

    return replace(selection, skips=selection.skips | superseded_bandit_tests())


@register
class BanditScanner:
    """bandit's general Python security tests, in-process."""

    name = "bandit"
    cacheable = True

    @property
    def version(self) -> str:
        """mlsec, bandit and rules versions: any of them changing invalidates cached results."""
        from mlsec.scanners.code_ml import rules_digest  # B614/B615 are dropped per rules/code

        return f"{__version__}+bandit{bandit_version()}+{rules_digest()}"

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Python source files, when bandit is one of the engines."""
        return "bandit" in ctx.engines and artifact.kind is ArtifactKind.CODE

    def cache_salt(self, artifact: Artifact) -> str:
        """The project's bandit test selection also decides the output."""
        return bandit_config(artifact.fs_path).digest()

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        """Run bandit on the file; unparsable source is reported once (by the ML rules if they run)."""
        from mlsec.scanners.code_ml import SourceError, parse_artifact, scope_index

        selection = effective_selection(artifact.fs_path, ctx)
        try:
            parsed = parse_artifact(artifact)
        except SourceError as exc:
            if "mlsec" not in ctx.engines:
                yield Skip(artifact.path, str(exc), "unparsable-source")
            return
        try:
            hits, errors = run_bandit(parsed.data, parsed.tree, artifact.fs_path, selection)
        except BanditTrouble as exc:
            yield Skip(artifact.path, f"bandit: {exc}", "bandit-incomplete")
            return
        yield from hit_findings(hits, artifact.path, self.name, scope_of=scope_index(parsed.tree) if hits else None)
        for message in errors:
            yield Skip(artifact.path, f"a bandit test failed on this file: {message}", "bandit-incomplete")
