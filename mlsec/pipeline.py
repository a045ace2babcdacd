"""discover -> hash -> scan, with per-artifact isolation and optional process parallelism.

Each artifact is handled on its own: a scanner that raises (a bug) or runs out of time gives
an ErrorRecord for that artifact and scanner, keeps the findings it produced before failing,
and the scan goes on. Hostile input is never an error here — scanners turn it into findings.
The library stays quiet: progress goes to an optional callback; only the CLI prints.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from mlsec import __version__
from mlsec.discover import Candidate, discover
from mlsec.hashing import HashCache, advisory_db_path, cache_dir
from mlsec.limits import Limits
from mlsec.model import Artifact, ArtifactKind, ErrorRecord, Fact, Finding, Package, ScanResult, Skip
from mlsec.scanmemo import Identity, Remembered, ScanMemo, Scope, context, identity, memo_key

if TYPE_CHECKING:
    from mlsec.registry import Scanner
    from mlsec.resultcache import ResultCache

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class Options:
    """What to scan and how; built by the CLI (or by library users) and passed down unchanged."""

    excludes: tuple[str, ...] = ()
    use_gitignore: bool = True
    jobs: int = 1
    use_cache: bool = True
    limits: Limits = field(default_factory=Limits)
    engines: frozenset[str] = frozenset({"mlsec", "bandit"})
    kinds: frozenset[str] = frozenset()  # only these artifact kinds (empty: all), e.g. a deps-only hook
    online: bool = False  # explicit --online: dependency scanners may ask a vulnerability service
    online_service: str = "pypi"


class _Outcome(NamedTuple):
    """One file's scan (a NamedTuple: one per file, built even when answered from the memo)."""

    artifact: Artifact
    findings: tuple[Finding, ...]
    skipped: tuple[Skip, ...]
    errors: tuple[ErrorRecord, ...]
    packages: tuple[Package, ...] = ()
    facts: tuple[Fact, ...] = ()
    ran: tuple[tuple[str, str], ...] = ()  # (name, version) of every scanner that looked at it
    scope: int = Scope.FILE  # settings beyond the file that the scanners' output depends on
    reads: tuple[tuple[str, Identity | None], ...] = ()  # other files they read (ScanContext.note_read)
    memoizable: bool = True  # False when a scanner does not say what else it depends on


# One cache connection per process, cache directory and setting (workers open their own).
_hash_caches: dict[tuple[bool, str], HashCache] = {}
_result_caches: dict[tuple[bool, str, str], ResultCache] = {}


@functools.lru_cache(maxsize=8)
def _salt(limits: Limits, engines: frozenset[str]) -> str:
    return f"{limits!r}\0{sorted(engines)}"


def _hash_cache(enabled: bool) -> HashCache:
    key = (enabled, str(cache_dir()))
    if key not in _hash_caches:
        _hash_caches[key] = HashCache(enabled)
    return _hash_caches[key]


def _result_cache(enabled: bool, options: Options) -> ResultCache:
    salt = _salt(options.limits, options.engines)
    key = (enabled, str(cache_dir()), salt)
    if key not in _result_caches:
        from mlsec.resultcache import ResultCache  # a run answered from the memo looks nothing up

        _result_caches[key] = ResultCache(enabled, salt)
    return _result_caches[key]


def scan_candidate(cand: Candidate, options: Options) -> _Outcome:
    """Hash one file and run every applicable scanner on it, isolating failures."""
    from mlsec.registry import ScanContext, scanners  # here: a run answered from the memo imports no scanner

    ctx = ScanContext(limits=options.limits, engines=options.engines, online=options.online,
                      online_service=options.online_service)
    try:
        digest = _hash_cache(options.use_cache).digest(cand.fs_path, cand.size, cand.mtime_ns, cand.inode,
                                                       cand.ctime_ns)
    except OSError as exc:
        artifact = Artifact(cand.path, cand.kind, cand.format, cand.size, "", cand.fs_path)
        skip = Skip(cand.path, f"cannot read: {exc.strerror}", "unreadable")
        return _Outcome(artifact, (), (skip,), ())
    artifact = Artifact(cand.path, cand.kind, cand.format, cand.size, digest, cand.fs_path)
    findings: list[Finding] = []
    skipped: list[Skip] = []
    errors: list[ErrorRecord] = []
    packages: list[Package] = []
    facts: list[Fact] = []
    sinks: dict[type, list[Any]] = {Finding: findings, Skip: skipped, Package: packages, Fact: facts}
    applicable: list[Scanner] = [s for s in scanners() if s.applies(artifact, ctx)]
    finished: list[tuple[str, list[Any]]] = []  # cache entries, written once the file proved unchanged
    cache = _result_cache(options.use_cache, options) if any(_cacheable(s) for s in applicable) else None
    for scanner in applicable:
        version = scanner.version
        salt = getattr(scanner, "cache_salt", None)
        if salt is not None:
            version += "\0" + salt(artifact)  # e.g. the project's bandit test selection
        key = cache.key(artifact, scanner.name, version) if cache is not None and _cacheable(scanner) else None
        cached = cache.get(key, artifact.path) if cache is not None and key is not None else None
        if cached is not None:
            for item in cached:
                sinks[type(item)].append(item)
            continue
        produced: list[Any] = []
        try:
            for item in scanner.scan(artifact, ctx):
                sinks[type(item)].append(item)
                produced.append(item)
        except Exception as exc:  # noqa: BLE001 - isolation is the point: record and go on
            errors.append(ErrorRecord(cand.path, scanner.name, f"{type(exc).__name__}: {exc}"))
        else:
            # The cache restores items under this file's path: items about other files are not cached.
            if cache is not None and key is not None and all(i.path == artifact.path for i in produced) \
                    and not any(_transient(i) for i in produced):
                finished.append((key, produced))
    if _identity(cand) != _current_identity(cand.fs_path):
        # Hashed one version, scanned another (or several): the findings may not belong to the
        # digest, so nothing is cached and the scan of this file is incomplete.
        errors.append(ErrorRecord(cand.path, "pipeline", "the file changed while it was being scanned "
                                  "(size, mtime or ctime moved); its findings may not match its SHA-256: scan it again"))
    elif cache is not None:
        for key, produced in finished:
            cache.put(key, produced)
    if not applicable and cand.kind in (ArtifactKind.MODEL, ArtifactKind.ARCHIVE):
        skipped.append(Skip(cand.path, f"no scanner for {cand.format} content yet", "unsupported-format"))
    scope, memoizable = Scope.FILE, True
    for s in applicable:
        own = _scope(s, artifact)
        if own is None:
            memoizable = False
        else:
            scope |= own
    return _Outcome(artifact, tuple(findings), tuple(skipped), tuple(errors), tuple(packages), tuple(facts),
                    tuple((s.name, s.version) for s in applicable), scope, tuple(ctx.reads), memoizable)


def _transient(item: Any) -> bool:
    """Output about this run rather than the file (a reader timed out or could not start):
    never cached or memoized, so the next run tries again."""
    if isinstance(item, Finding):
        return dict(item.evidence).get("transient") == "true"
    return isinstance(item, Skip) and item.code in _TRANSIENT_SKIPS


_TRANSIENT_SKIPS = frozenset({"reader-unavailable"})


def _scope(scanner: Scanner, artifact: Artifact) -> Scope | None:
    """What beyond the file (and its noted reads) this scanner's output depends on; None: unknown."""
    if not _cacheable(scanner):
        scope = getattr(scanner, "context_scope", None)
        return scope(artifact) if scope is not None else None
    return Scope.SETTINGS if getattr(scanner, "cache_salt", None) is not None else Scope.FILE


def _cacheable(scanner: Scanner) -> bool:
    """Scanners opt in with ``cacheable = True``: their output depends on the file alone."""
    return bool(getattr(scanner, "cacheable", False))


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """Drop second-opinion findings that repeat one of ours (same file, same global)."""
    ours = {(f.path, dict(f.evidence).get("global")) for f in findings if f.scanner != "modelscan"}
    return [
        f for f in findings
        if f.scanner != "modelscan" or (f.path, dict(f.evidence).get("global")) not in ours
    ]


def _memo(options: Options) -> ScanMemo:
    """The memo of this scan configuration (disabled with ``--no-cache`` and for ``--online``)."""
    if not options.use_cache or options.online:
        return ScanMemo(None)
    settings = repr((options.excludes, options.use_gitignore, options.limits, sorted(options.engines),
                     sorted(options.kinds)))
    return ScanMemo(memo_key(settings))


def _remembered(hit: Remembered) -> _Outcome:
    sinks: dict[type, list[Any]] = {Finding: [], Skip: [], Package: [], Fact: []}
    for item in hit.items:
        sinks[type(item)].append(item)
    return _Outcome(hit.artifact, tuple(sinks[Finding]), tuple(sinks[Skip]), (), tuple(sinks[Package]),
                    tuple(sinks[Fact]), hit.ran, hit.scope, hit.reads)


def run(paths: Sequence[str | os.PathLike[str]], options: Options = Options(),
        on_progress: Progress | None = None) -> ScanResult:
    """Scan ``paths`` and return a sorted, frozen ScanResult."""
    from mlsec.config import new_run

    new_run()
    memo = _memo(options)
    candidates: list[Candidate] = []
    skipped: list[Skip] = []
    for item in discover(paths, options.excludes, options.use_gitignore, memo.known()):
        if isinstance(item, Candidate):
            if not options.kinds or str(item.kind) in options.kinds:
                candidates.append(item)
        elif not options.kinds:
            skipped.append(item)  # with --only, skips of files of other kinds are not this run's business
    ctx = context([os.fspath(p) for p in paths], (c.fs_path for c in candidates), str(advisory_db_path()))
    outcomes: list[_Outcome | None] = []
    todo: list[int] = []
    for i, cand in enumerate(candidates):
        hit = memo.get(cand.fs_path, cand.path, _identity(cand), ctx)
        outcomes.append(_remembered(hit) if hit is not None else None)
        if hit is None:
            todo.append(i)
    total, done = len(candidates), len(candidates) - len(todo)
    if options.jobs > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor  # only parallel scans pay for it

        with ProcessPoolExecutor(max_workers=options.jobs) as pool:
            futures = [pool.submit(scan_candidate, candidates[i], options) for i in todo]
            for i, fut in zip(todo, futures):
                cand = candidates[i]
                try:
                    outcomes[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 - a dead worker must not end the scan
                    art = Artifact(cand.path, cand.kind, cand.format, cand.size, "", cand.fs_path)
                    outcomes[i] = _Outcome(art, (), (), (ErrorRecord(cand.path, "pipeline", f"worker failed: {exc}"),))
                done += 1
                if on_progress:
                    on_progress(done, total, cand.path)
    else:
        for i in todo:
            outcomes[i] = scan_candidate(candidates[i], options)
            done += 1
            if on_progress:
                on_progress(done, total, candidates[i].path)
    scanned = [o for o in outcomes if o is not None]
    for i in todo:
        o = outcomes[i]
        if o is not None and not o.errors and o.memoizable and not any(_transient(i) for i in (*o.findings, *o.skipped)):
            memo.put(candidates[i].fs_path, _identity(candidates[i]), o.artifact,
                     [*o.findings, *o.skipped, *o.packages, *o.facts], o.ran, o.scope, o.reads, ctx)
    memo.save()
    return _result(scanned, skipped)


def _identity(cand: Candidate) -> Identity:
    return (cand.size, cand.mtime_ns, cand.inode, cand.ctime_ns)


def _current_identity(fs_path: str) -> Identity | None:
    try:
        return identity(os.stat(fs_path))
    except OSError:
        return None


def _result(outcomes: list[_Outcome], skipped: list[Skip]) -> ScanResult:
    """Merge per-file outcomes into the run's sorted result (cross-file refinements included)."""
    findings = _dedupe([f for o in outcomes for f in o.findings])
    packages = sorted({p for o in outcomes for p in o.packages}, key=lambda p: (p.path, p.name, p.version))
    if any(p.name == "torch" for p in packages):
        from mlsec.scanners.code_ml import refine_torch_findings  # needs the project's torch pin: cross-file

        findings = refine_torch_findings(findings, packages)
    used = sorted({pair for o in outcomes for pair in o.ran})
    return ScanResult(
        tool_version=__version__,
        artifacts=tuple(sorted((o.artifact for o in outcomes), key=lambda a: a.path)),
        findings=tuple(sorted(findings, key=Finding.sort_key)),
        skipped=tuple(sorted(skipped + [s for o in outcomes for s in o.skipped], key=lambda s: (s.path, s.code, s.reason))),
        errors=tuple(sorted((e for o in outcomes for e in o.errors), key=lambda e: (e.path, e.scanner))),
        scanners=tuple(used),
        packages=tuple(packages),
        facts=tuple(sorted({f for o in outcomes for f in o.facts}, key=lambda f: (f.path, f.name, f.value))),
    )
