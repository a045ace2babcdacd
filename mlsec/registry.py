"""Scanner protocol and registry.

A scanner looks at one whole artifact. Scanners register with :func:`register` and are found
by importing every module of ``mlsec.scanners`` (explicit, no entry-point magic: a scanner is
one file). ``version`` is part of the cache key, so changing what a scanner reports means
bumping it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from mlsec.limits import Limits
from mlsec.model import Artifact, Fact, Finding, Package, Skip


@dataclass(frozen=True, slots=True)
class ScanContext:
    """Settings a scanner may need; the same for every artifact of a run."""

    limits: Limits = Limits()
    engines: frozenset[str] = frozenset({"mlsec", "bandit"})
    online: bool = False  # network features (advisory services) only when asked for
    online_service: str = "pypi"
    # Other files and folders the scanners read for this artifact, each with its identity at
    # that moment (see note_read); filled during one artifact's scan, never shared.
    reads: list[tuple[str, tuple[int, int, int, int] | None]] = field(default_factory=list, compare=False)

    def note_read(self, path: str) -> None:
        """Record that the outcome depends on ``path`` (a file, or a folder's listing).

        Call it *before* reading, so a change made while reading shows as a change next run.
        The memo of whole outcomes (:mod:`mlsec.scanmemo`) reuses an outcome only while every
        noted path is unchanged; a scanner that is not ``cacheable`` must note what it reads to
        be memoized at all (and declare ``context_scope``).
        """
        from mlsec.scanmemo import read_identity

        self.reads.append((path, read_identity(path)))


class Scanner(Protocol):
    """One kind of inspection over whole artifacts.

    ``scan`` yields findings and skips, and (for the BOM) packages and facts. Hostile or malformed input is a Finding; raising means
    the scanner itself failed, which the pipeline records as an ErrorRecord for that artifact
    (after keeping whatever was yielded before the failure).
    """

    name: str
    version: str
    # Optional: ``cacheable = True`` when the output depends only on the artifact's content and
    # path (not on other files); the pipeline then reuses results for unchanged files.
    # Optional for the others: ``context_scope(artifact) -> scanmemo.Scope`` plus
    # ``ctx.note_read`` for every other file read make the whole outcome reusable.

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Whether this scanner should look at ``artifact``."""
        ...

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterable[Finding | Skip | Package | Fact]:
        """Inspect the artifact (open it via ``artifact.fs_path``)."""
        ...


_REGISTRY: dict[str, Scanner] = {}


def register(cls: type) -> type:
    """Class decorator: instantiate and register a scanner; duplicate names are a bug."""
    inst = cls()
    if inst.name in _REGISTRY:
        raise ValueError(f"scanner {inst.name!r} registered twice")
    _REGISTRY[inst.name] = inst
    return cls


_imported = False


def scanners() -> list[Scanner]:
    """All registered scanners, sorted by name (``mlsec.scanners.*`` is imported once per process:
    listing the package directory for every file was a measurable part of a cached re-scan)."""
    global _imported
    if not _imported:
        import importlib
        import pkgutil

        import mlsec.scanners as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
        _imported = True
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
