"""``pyproject.toml``: PEP 621 ``[project]``, PEP 735 ``[dependency-groups]``, Poetry, uv and build requirements.

These are *declared* dependencies (ranges, not resolved versions). Poetry's ``^`` and ``~``
constraints are not PEP 440 and are translated (``^1.2.3`` -> ``>=1.2.3,<2.0.0``); a ``||``
union is kept as written and the matcher understands it. Index configuration is read too:
Poetry sources with their priority and uv indexes and ``index-strategy`` (the
dependency-confusion checks need them).

tomllib keeps no positions, so lines are found by searching the text for each entry inside
its table; an entry that cannot be located gets the table's header line.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from mlsec.deps import Dependency, IndexSetting, Manifest, Problem
from mlsec.deps.manifests import clip, find_line, from_pep508, header_line, normalize, read_text

_POETRY_SKIP = {"python"}


def parse(fs_path: str, path: str) -> Manifest:
    """Read the dependency declarations and index settings of a pyproject.toml."""
    text, problem = read_text(fs_path, path)
    if problem is not None and problem.fatal:
        return Manifest(path=path, format="pyproject", problems=(problem,))
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Manifest(path=path, format="pyproject", problems=(
            Problem("syntax", f"not valid TOML: {clip(str(exc), 160)}", path, line=_toml_error_line(exc), fatal=True),))
    lines = text.splitlines()
    deps: list[Dependency] = []
    problems: list[Problem] = [problem] if problem is not None else []
    indexes: list[IndexSetting] = []
    settings: list[tuple[str, str, int | None]] = []

    def pep508_list(values: Any, header: str, group: str) -> None:
        if not isinstance(values, list):
            return
        start = (header_line(lines, header) or 1) - 1
        for value in values:
            if not isinstance(value, str):
                continue  # PEP 735 {include-group = "..."} tables
            line = _quoted_line(lines, value, start) or start + 1
            dep = from_pep508(value, source=path, line=line, group=group)
            (problems if isinstance(dep, Problem) else deps).append(dep)  # type: ignore[arg-type]

    project = _table(doc.get("project"))
    pep508_list(project.get("dependencies"), "[project]", "")
    for extra, values in sorted(_table(project.get("optional-dependencies")).items()):
        pep508_list(values, "[project.optional-dependencies]", f"extra:{extra}")
    for group, values in sorted(_table(doc.get("dependency-groups")).items()):
        pep508_list(values, "[dependency-groups]", f"group:{group}")
    pep508_list(_table(doc.get("build-system")).get("requires"), "[build-system]", "build")

    tool = _table(doc.get("tool"))
    _poetry(_table(tool.get("poetry")), lines, path, deps, problems, indexes)
    _uv(_table(tool.get("uv")), lines, path, deps, problems, indexes, settings)
    return Manifest(path=path, format="pyproject", dependencies=tuple(deps), indexes=tuple(indexes),
                    settings=tuple(settings), problems=tuple(problems))


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _toml_error_line(exc: tomllib.TOMLDecodeError) -> int | None:
    m = re.search(r"line (\d+)", str(exc))
    return int(m.group(1)) if m else None


def _quoted_line(lines: list[str], value: str, start: int) -> int | None:
    for quoted in (f'"{value}"', f"'{value}'", value):
        found = find_line(lines, quoted, start)
        if found is not None:
            return found
    return None


def _key_line(lines: list[str], key: str, start: int) -> int | None:
    pattern = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
    for i in range(max(start, 0), len(lines)):
        if pattern.match(lines[i]):
            return i + 1
    return None


# -- Poetry -------------------------------------------------------------------------------------


def poetry_constraint(text: str) -> str:
    """Translate a Poetry version constraint into PEP 440 (``||`` unions are kept)."""
    alternatives = [_poetry_single(part.strip()) for part in text.split("||")]
    return " || ".join(alternatives)


def _poetry_single(text: str) -> str:
    out = []
    for clause in re.split(r"\s*,\s*|\s+(?=[<>=!~^])", text.strip()):
        clause = clause.strip()
        if not clause or clause == "*":
            continue
        if clause.startswith("^"):
            out.append(_caret(clause[1:].strip()))
        elif clause.startswith("~") and not clause.startswith("~="):
            out.append(_tilde(clause[1:].strip()))
        elif clause[0].isdigit():
            out.append(f"=={clause}")
        elif clause.startswith("=") and not clause.startswith("=="):
            out.append(f"={clause}")
        else:
            out.append(clause.replace(" ", ""))
    return ",".join(out)


def _parts(version: str) -> list[int]:
    nums = []
    for piece in version.split(".")[:3]:
        m = re.match(r"\d+", piece)
        if not m:
            break
        nums.append(int(m.group()))
    return nums


def _caret(version: str) -> str:
    """``^1.2.3`` -> ``>=1.2.3,<2.0.0``; the first non-zero part may not change."""
    parts = _parts(version)
    if not parts:
        return f">={version}"
    for i, p in enumerate(parts):
        if p != 0 or i == len(parts) - 1:
            upper = parts[:i] + [p + 1]
            break
    upper += [0] * (max(len(parts), 2) - len(upper))
    return f">={version},<{'.'.join(map(str, upper))}"


def _tilde(version: str) -> str:
    """``~1.2.3`` -> ``>=1.2.3,<1.3.0``; ``~1`` -> ``>=1,<2``."""
    parts = _parts(version)
    if not parts:
        return f">={version}"
    upper = [parts[0] + 1] if len(parts) == 1 else [parts[0], parts[1] + 1]
    upper += [0] * (max(len(parts), 2) - len(upper))
    return f">={version},<{'.'.join(map(str, upper))}"


def _poetry(poetry: dict[str, Any], lines: list[str], path: str, deps: list[Dependency],
            problems: list[Problem], indexes: list[IndexSetting]) -> None:
    tables: list[tuple[str, str, Any]] = [("[tool.poetry.dependencies]", "", poetry.get("dependencies")),
                                          ("[tool.poetry.dev-dependencies]", "dev", poetry.get("dev-dependencies"))]
    for name, group in sorted(_table(poetry.get("group")).items()):
        tables.append((f"[tool.poetry.group.{name}.dependencies]", name, _table(group).get("dependencies")))
    for header, group, table in tables:
        start = (header_line(lines, header) or 1) - 1
        for name, value in _table(table).items():
            if name.lower() in _POETRY_SKIP:
                continue
            line = _key_line(lines, name, start) or start + 1
            for entry in value if isinstance(value, list) else [value]:
                dep = _poetry_dep(name, entry, path, line, group)
                (problems if isinstance(dep, Problem) else deps).append(dep)  # type: ignore[arg-type]
    start = (header_line(lines, "[[tool.poetry.source]]") or 1) - 1
    for source in poetry.get("source", []) if isinstance(poetry.get("source"), list) else []:
        if not isinstance(source, dict):
            continue
        url = str(source.get("url", ""))
        priority = str(source.get("priority", ""))
        if not priority:  # Poetry < 1.5 flags
            priority = "secondary" if source.get("secondary") else "default" if source.get("default") else "primary"
        src_line = _quoted_line(lines, url, start) if url else None
        indexes.append(IndexSetting(url=url, kind="poetry-source", source=path, line=src_line, priority=priority,
                                    name=str(source.get("name", ""))))


def _poetry_dep(name: str, entry: Any, path: str, line: int, group: str) -> Dependency | Problem:
    norm = normalize(name)
    if isinstance(entry, str):
        spec = poetry_constraint(entry)
        raw = f"{name} = {entry!r}"
        return _poetry_result(norm, spec, path, line, group, raw=raw)
    if not isinstance(entry, dict):
        return Problem("invalid-requirement", f"Poetry dependency {clip(name, 80)} is not a string or table",
                       path, line=line)
    extras = tuple(sorted(str(e) for e in entry.get("extras", []) if isinstance(e, str)))
    marker = str(entry.get("markers", ""))
    raw = clip(f"{name} = {entry!r}")
    if "git" in entry:
        ref = entry.get("rev") or entry.get("tag") or entry.get("branch") or ""
        url = f"git+{entry['git']}" + (f"@{ref}" if ref else "")
        return Dependency(name=norm, version="", specifier="", source=path, line=line, group=group,
                          extras=extras, marker=marker, url=url, raw=raw)
    for key in ("url", "path"):
        if key in entry:
            return Dependency(name=norm, version="", specifier="", source=path, line=line, group=group,
                              extras=extras, marker=marker, url=str(entry[key]),
                              editable=bool(entry.get("develop")), raw=raw)
    spec = poetry_constraint(str(entry.get("version", "*")))
    return _poetry_result(norm, spec, path, line, group, extras=extras, marker=marker,
                          index=str(entry.get("source", "")), raw=raw)


def _poetry_result(name: str, spec: str, path: str, line: int, group: str, **fields: Any) -> Dependency:
    version = ""
    if "||" not in spec and spec.startswith("==") and "," not in spec and "*" not in spec:
        version = spec[2:]
    return Dependency(name=name, version=version, specifier=spec, source=path, line=line, group=group, **fields)


# -- uv -----------------------------------------------------------------------------------------


def _uv(uv: dict[str, Any], lines: list[str], path: str, deps: list[Dependency], problems: list[Problem],
        indexes: list[IndexSetting], settings: list[tuple[str, str, int | None]]) -> None:
    start = (header_line(lines, "[tool.uv]") or 1) - 1
    for table, prefix in ((uv, "[tool.uv]"), (_table(uv.get("pip")), "[tool.uv.pip]")):
        tstart = (header_line(lines, prefix) or start + 1) - 1
        strategy = table.get("index-strategy")
        if isinstance(strategy, str):
            settings.append(("index-strategy", strategy, _key_line(lines, "index-strategy", tstart)))
        for key, kind in (("index-url", "index-url"), ("extra-index-url", "extra-index-url"),
                          ("find-links", "find-links")):
            values = table.get(key)
            for url in values if isinstance(values, list) else [values] if isinstance(values, str) else []:
                indexes.append(IndexSetting(url=str(url), kind=kind, source=path,
                                            line=_quoted_line(lines, str(url), tstart)))
    istart = (header_line(lines, "[[tool.uv.index]]") or 1) - 1
    for index in uv.get("index", []) if isinstance(uv.get("index"), list) else []:
        if not isinstance(index, dict) or "url" not in index:
            continue
        url = str(index["url"])
        priority = "explicit" if index.get("explicit") else "default" if index.get("default") else ""
        indexes.append(IndexSetting(url=url, kind="uv-index", source=path, line=_quoted_line(lines, url, istart),
                                    priority=priority, name=str(index.get("name", ""))))
    for key, header, group in (("dev-dependencies", "[tool.uv]", "dev"),
                               ("constraint-dependencies", "[tool.uv]", "constraint"),
                               ("override-dependencies", "[tool.uv]", "override")):
        values = uv.get(key)
        if not isinstance(values, list):
            continue
        hstart = (header_line(lines, header) or 1) - 1
        for value in values:
            if isinstance(value, str):
                dep = from_pep508(value, source=path, line=_quoted_line(lines, value, hstart), group=group,
                                  constraint=group == "constraint", direct=group != "constraint")
                (problems if isinstance(dep, Problem) else deps).append(dep)  # type: ignore[arg-type]
