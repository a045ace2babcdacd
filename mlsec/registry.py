"""Scanner protocol and registry.

A scanner looks at one whole artifact. Scanners register with :func:`register` and are found
by importing every module of ``mlsec.scanners`` (explicit, no entry-point magic: a scanner is
one file). ``version`` is part of the cache key, so changing what a scanner reports means
bumping it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from mlsec.engine.context import Limits
from mlsec.model import Artifact, Fact, Finding, Package, Skip


@dataclass(frozen=True, slots=True)
class ScanContext:
    """Settings a scanner may need; the same for every artifact of a run."""

    limits: Limits = Limits()
    engines: frozenset[str] = frozenset({"mlsec", "bandit"})
    online: bool = False  # network features (advisory services) only when asked for
    online_service: str = "pypi"


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
        import mlsec.scanners as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
        _imported = True
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
