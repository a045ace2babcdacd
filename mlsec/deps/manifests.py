"""Pick the reader for a dependency file, and the helpers every reader shares.

Readers never raise on bad input: a file that cannot be read or parsed becomes a fatal
:class:`~mlsec.deps.Problem`, a single entry that cannot be understood a non-fatal one, so the
scanner can say exactly what was not checked. Files are read whole but capped
(:data:`MAX_BYTES`): dependency files are small, and a 30 MB "requirements.txt" is not one.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlsec.deps import Dependency, Manifest, Problem
from mlsec.fsio import open_regular
from mlsec.sniff import manifest_format as format_of  # re-exported: the deps API

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

MAX_BYTES = 32 << 20

_NORMALIZE = re.compile(r"[-_.]+")


def normalize(name: str) -> str:
    """PEP 503 name normalization (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return _NORMALIZE.sub("-", name).lower().strip()


def read_text(fs_path: str, path: str) -> tuple[str, Problem | None]:
    """Decode a dependency file: UTF-8 (with or without BOM) or UTF-16 with a BOM.

    Returns the text and, when it could not be read cleanly, a fatal Problem (with "" as text)
    or a non-fatal one (undecodable bytes replaced).
    """
    try:
        with open_regular(fs_path) as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        return "", Problem("unreadable", f"cannot read {path}: {exc.strerror}", path, fatal=True)
    if len(data) > MAX_BYTES:
        return "", Problem("too-large", f"{path} is larger than {MAX_BYTES >> 20} MB; not a dependency file mlsec reads",
                           path, fatal=True)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), None
        except UnicodeDecodeError:
            return "", Problem("decode", f"{path} has a UTF-16 byte-order mark but is not valid UTF-16", path, fatal=True)
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8-sig", errors="replace")
        line = data[: exc.start].count(b"\n") + 1
        return text, Problem("decode", f"invalid UTF-8 at byte {exc.start}; undecodable bytes were replaced",
                             path, line=line)


def exact_version(spec: SpecifierSet) -> str:
    """The single version a specifier allows (``==1.2`` or ``===1.2``), else ""."""
    items = list(spec)
    if len(items) != 1:
        return ""
    only = items[0]
    if only.operator in ("==", "===") and "*" not in only.version:
        return only.version
    return ""


def from_pep508(text: str, *, source: str, line: int | None, via_line: int | None = None,
                **fields: object) -> Dependency | Problem:
    """Parse a PEP 508 requirement string into a Dependency, or a non-fatal Problem."""
    from packaging.requirements import InvalidRequirement, Requirement

    raw = text.strip()
    try:
        req = Requirement(raw)
    except InvalidRequirement as exc:
        return Problem("invalid-requirement", f"not a valid requirement: {_clip(raw)} ({_clip(str(exc), 120)})",
                       source, line=line, via_line=via_line)
    return Dependency(
        name=normalize(req.name),
        version="" if req.url else exact_version(req.specifier),
        specifier=str(req.specifier),
        source=source,
        line=line,
        via_line=via_line,
        extras=tuple(sorted(req.extras)),
        marker=str(req.marker) if req.marker else "",
        url=req.url or "",
        raw=_clip(raw),
        **fields,  # type: ignore[arg-type]
    )


def find_line(lines: list[str], needle: str, start: int = 0) -> int | None:
    """1-based number of the first line at or after index ``start`` containing ``needle``."""
    for i in range(max(start, 0), len(lines)):
        if needle in lines[i]:
            return i + 1
    return None


def header_line(lines: list[str], header: str) -> int | None:
    """1-based line of a TOML table header such as ``[tool.poetry.dependencies]``."""
    pattern = re.compile(r"^\s*" + re.escape(header) + r"\s*(#.*)?$")
    for i, text in enumerate(lines):
        if pattern.match(text):
            return i + 1
    return None


def _clip(text: str, limit: int = 200) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


clip = _clip


def parse(fs_path: str, path: str, fmt: str | None = None) -> Manifest:
    """Read the dependency file at ``fs_path`` (reported as ``path``) with the reader its name selects."""
    fmt = fmt or format_of(path)
    reader = _readers().get(fmt or "")
    if reader is None:
        return Manifest(path=path, format=fmt or "unknown",
                        problems=(Problem("unsupported", f"{path} is not a dependency format mlsec reads", path, fatal=True),))
    return reader(fs_path, path)


def _readers() -> dict[str, Callable[[str, str], Manifest]]:
    # Imported here: a scan only pays for the formats it meets.
    from mlsec.deps import conda, lockfiles, pyproject, requirements, setupcfg

    return {
        "requirements": requirements.parse,
        "pyproject": pyproject.parse,
        "setup.cfg": setupcfg.parse,
        "poetry.lock": lockfiles.parse_poetry,
        "uv.lock": lockfiles.parse_uv,
        "Pipfile.lock": lockfiles.parse_pipfile,
        "pylock.toml": lockfiles.parse_pylock,
        "environment.yml": conda.parse,
    }
