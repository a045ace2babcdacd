"""Dependency manifests, the offline advisory store and supply-chain checks.

The data every part of the dependency scanner shares lives here, as frozen dataclasses:
a parsed :class:`Manifest` holds :class:`Dependency` records (one per declared or locked
package, with the file and line that declared it), the index settings that decide where
packages come from, and the problems met while parsing. Format readers live in one module per
format family (``requirements``, ``pyproject``, ``setupcfg``, ``lockfiles``, ``conda``);
:mod:`mlsec.deps.manifests` picks one by file name.

This module stays import-light: the scanner registry imports it for every run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mlsec.model import Package


@dataclass(frozen=True, slots=True)
class Dependency:
    """One dependency as a manifest declares (or a lockfile resolves) it.

    ``name`` is PEP 503-normalized. ``version`` is the exact version when the entry pins one
    (``==1.2.3``, ``===1.2.3``, a lockfile version), else "". ``specifier`` is the PEP 440
    range as written (Poetry ``^``/``~`` constraints are translated; a Poetry ``||`` union is
    kept and understood by the matcher). ``line`` is 1-based in ``source``, the repo-relative
    file that declared it; when that file was pulled in with ``-r``/``-c``, ``via_line`` is
    the line of that include in the scanned file, so findings can point into the scanned file.
    """

    name: str
    version: str
    specifier: str
    source: str
    line: int | None = None
    via_line: int | None = None
    extras: tuple[str, ...] = ()
    marker: str = ""
    url: str = ""                    # direct reference: VCS, archive URL or local path
    editable: bool = False
    hashes: tuple[str, ...] = ()     # "sha256:<hex>"
    index: str = ""                  # the index or source the entry says it comes from
    group: str = ""                  # "", "dev", an extra or group name, "constraint", "build"
    ecosystem: str = "pypi"          # "pypi" or "conda"
    direct: bool = True              # False for transitive packages of a lockfile
    constraint: bool = False         # from a -c constraints file: limits versions, installs nothing
    pypi_name: str = ""              # conda entries: the PyPI name used for advisory matching ("" = none)
    raw: str = ""                    # the entry as written (trimmed), for evidence

    @property
    def pinned(self) -> bool:
        """True when exactly one version can be installed."""
        return bool(self.version)

    @property
    def report_line(self) -> int | None:
        """The line to point at in the scanned file (the include line for included files)."""
        return self.via_line if self.via_line is not None else self.line

    @property
    def display(self) -> str:
        """``name==1.2.3`` or ``name>=1,<2`` or the bare name."""
        if self.version:
            return f"{self.name}=={self.version}"
        return f"{self.name}{self.specifier}"

    @property
    def purl(self) -> str:
        """Package URL of the entry (``pkg:pypi/name@version``), as the ML-BOM names it."""
        return package_of(self).purl


@dataclass(frozen=True, slots=True)
class IndexSetting:
    """Where packages may come from: an index, an extra index, find-links, a named source.

    ``kind`` is one of ``index-url``, ``extra-index-url``, ``find-links``, ``trusted-host``,
    ``poetry-source``, ``uv-index``, ``pipfile-source``, ``conda-channel``, ``lock-index``.
    ``priority`` carries Poetry's source priority or uv's ``default``/``explicit`` flags.
    """

    url: str
    kind: str
    source: str
    line: int | None = None
    via_line: int | None = None
    priority: str = ""
    name: str = ""
    verify_tls: bool = True

    @property
    def report_line(self) -> int | None:
        """The line to point at in the scanned file."""
        return self.via_line if self.via_line is not None else self.line


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in a manifest mlsec could not read or would not follow.

    ``fatal`` means the whole file could not be parsed, so nothing in it was checked.
    ``code``: ``unreadable``, ``too-large``, ``decode``, ``syntax``, ``invalid-requirement``,
    ``include-missing``, ``include-cycle``, ``include-depth``, ``remote-include``,
    ``unknown-option``.
    """

    code: str
    message: str
    source: str
    line: int | None = None
    via_line: int | None = None
    fatal: bool = False

    @property
    def report_line(self) -> int | None:
        """The line to point at in the scanned file."""
        return self.via_line if self.via_line is not None else self.line


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything read from one dependency file (and the files it includes).

    ``format``: ``requirements``, ``pyproject``, ``setup.cfg``, ``poetry.lock``, ``uv.lock``,
    ``Pipfile.lock``, ``pylock.toml``, ``environment.yml``. ``locked`` is True for lockfiles,
    whose versions are resolved (transitive packages included). ``settings`` are
    resolver options that matter for security, e.g. ``("index-strategy", "unsafe-best-match")``
    or ``("require-hashes", "true")``, each with the line that set it.
    """

    path: str
    format: str
    dependencies: tuple[Dependency, ...] = ()
    indexes: tuple[IndexSetting, ...] = ()
    settings: tuple[tuple[str, str, int | None], ...] = ()
    problems: tuple[Problem, ...] = ()
    locked: bool = False
    # Other files the parse looked for (``-r``/``-c`` includes, found or not): the answer
    # changes when they do, which the memo of whole outcomes must know.
    read_files: tuple[str, ...] = ()

    @property
    def parsed(self) -> bool:
        """False when the file as a whole could not be read."""
        return not any(p.fatal for p in self.problems)

    def setting(self, key: str) -> str | None:
        """Value of a resolver setting, or None."""
        return next((v for k, v, _ in self.settings if k == key), None)


def package_of(dep: Dependency) -> Package:
    """The BOM record for a dependency (constraints are not packages: callers filter them)."""
    return Package(
        name=dep.name,
        version=dep.version,
        path=dep.source,
        ecosystem=dep.ecosystem,
        specifier="" if dep.version else dep.specifier,
        direct=dep.direct,
    )


def resolved_versions(packages: Iterable[Package]) -> dict[str, str]:
    """Map each PyPI package name (PEP 503) to its exact version across all manifests.

    For other scanners that need to know what is installed, e.g. the code scanner saying
    "torch < 2.6: ``weights_only=True`` is not a safe guard". Packages with only a range are
    left out (nothing is known about them). When manifests disagree, the **lowest** version
    wins: a check that fires for an old version must fire if any manifest installs it.
    """
    from packaging.version import InvalidVersion, Version

    out: dict[str, str] = {}
    rank: dict[str, Version | None] = {}
    for p in packages:
        if p.ecosystem != "pypi" or not p.version:
            continue
        try:
            v: Version | None = Version(p.version)
        except InvalidVersion:
            v = None  # an unparsable version only stands when nothing parsable is known
        cur = rank.get(p.name)
        if p.name not in out or (v is not None and (cur is None or v < cur)):
            out[p.name], rank[p.name] = p.version, v
    return dict(sorted(out.items()))
