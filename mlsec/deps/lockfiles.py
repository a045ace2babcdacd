"""Lockfiles: ``poetry.lock``, ``uv.lock``, ``Pipfile.lock`` and PEP 751 ``pylock.toml``.

Lockfiles hold resolved versions of every package, transitive ones included, so they are the
best input for advisory matching. Each reader keeps what the checks need: exact version, the
index or source each package came from (and whether that source is a VCS checkout pinned to a
commit), artifact hashes and, where the format says so, whether a package is a direct
dependency. Workspace members (uv ``virtual``/``editable``/``directory`` sources, pylock
``directory``) are the project itself, not dependencies, and are left out.

Lines: tomllib keeps no positions, but every format writes one ``[[package]]``
(``[[packages]]``) header per entry in order, so the n-th header is the n-th entry; when the
counts disagree (hand-edited inline tables) the ``name = "..."`` line is searched instead.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from mlsec.deps import Dependency, IndexSetting, Manifest, Problem
from mlsec.deps.manifests import clip, find_line, normalize, read_text

PYPI_SIMPLE = "https://pypi.org/simple"


def _load_toml(fs_path: str, path: str, fmt: str) -> tuple[dict[str, Any], list[str], Manifest | None, list[Problem]]:
    text, problem = read_text(fs_path, path)
    if problem is not None and problem.fatal:
        return {}, [], Manifest(path=path, format=fmt, locked=True, problems=(problem,)), []
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        bad = Problem("syntax", f"not valid TOML: {clip(str(exc), 160)}", path,
                      line=int(m.group(1)) if m else None, fatal=True)
        return {}, [], Manifest(path=path, format=fmt, locked=True, problems=(bad,)), []
    return doc, text.splitlines(), None, [problem] if problem is not None else []


def _entry_lines(lines: list[str], header: str, entries: list[Any]) -> list[int | None]:
    pattern = re.compile(r"^\s*" + re.escape(header) + r"\s*(#.*)?$")
    headers = [i + 1 for i, text in enumerate(lines) if pattern.match(text)]
    if len(headers) == len(entries):
        return list(headers)
    out: list[int | None] = []
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        out.append(find_line(lines, f'name = "{name}"') if isinstance(name, str) else None)
    return out


def _hashes(*items: Any) -> tuple[str, ...]:
    out: set[str] = set()
    for item in items:
        if isinstance(item, dict):
            value = item.get("hash")
            if isinstance(value, str) and ":" in value:
                out.add(value)
            for algo, digest in _dict(item.get("hashes")).items():
                out.add(f"{algo}:{digest}")
    return tuple(sorted(out))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _bad_entry(path: str, line: int | None, what: str) -> Problem:
    return Problem("invalid-requirement", f"lock entry without {what}", path, line=line)


# -- poetry.lock --------------------------------------------------------------------------------


def parse_poetry(fs_path: str, path: str) -> Manifest:
    """``[[package]]`` entries with ``[package.source]`` (legacy index, git, url, directory)."""
    doc, lines, failed, problems = _load_toml(fs_path, path, "poetry.lock")
    if failed is not None:
        return failed
    packages = _list(doc.get("package"))
    deps: list[Dependency] = []
    indexes: dict[str, IndexSetting] = {}
    for entry, line in zip(packages, _entry_lines(lines, "[[package]]", packages)):
        entry = _dict(entry)
        name, version = entry.get("name"), entry.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            problems.append(_bad_entry(path, line, "a name and version"))
            continue
        source = _dict(entry.get("source"))
        kind = str(source.get("type", ""))
        if kind == "directory":
            continue
        url, index = "", ""
        if kind == "git":
            commit = str(source.get("resolved_reference") or source.get("reference") or "")
            url = f"git+{source.get('url', '')}" + (f"@{commit}" if commit else "")
        elif kind in ("url", "file"):
            url = str(source.get("url", ""))
        elif kind == "legacy":
            index = str(source.get("url", ""))
            if index:
                indexes.setdefault(index, IndexSetting(url=index, kind="lock-index", source=path, line=line,
                                                       name=str(source.get("reference", ""))))
        groups = [g for g in _list(entry.get("groups")) if isinstance(g, str)]
        deps.append(Dependency(
            name=normalize(name), version=version, specifier=f"=={version}",
            source=path, line=line, url=url, index=index, hashes=_hashes(*_list(entry.get("files"))),
            group="" if not groups or "main" in groups else groups[0], direct=False,
            raw=f"{name} {version}",
        ))
    return Manifest(path=path, format="poetry.lock", dependencies=tuple(deps), indexes=tuple(indexes.values()),
                    problems=tuple(problems), locked=True)


# -- uv.lock ------------------------------------------------------------------------------------


_UV_WORKSPACE = ("virtual", "editable", "directory")


def parse_uv(fs_path: str, path: str) -> Manifest:
    """``[[package]]`` entries; ``source`` says registry, git (with the commit), url, path or workspace."""
    doc, lines, failed, problems = _load_toml(fs_path, path, "uv.lock")
    if failed is not None:
        return failed
    packages = _list(doc.get("package"))
    roots: set[str] = set()
    dev: set[str] = set()
    for entry in packages:
        entry = _dict(entry)
        if any(k in _dict(entry.get("source")) for k in _UV_WORKSPACE):
            main = _list(entry.get("dependencies")) + [
                d for ds in _dict(entry.get("optional-dependencies")).values() for d in _list(ds)]
            dev_deps = [d for ds in _dict(entry.get("dev-dependencies")).values() for d in _list(ds)]
            for dep in main + dev_deps:
                if isinstance(_dict(dep).get("name"), str):
                    roots.add(normalize(dep["name"]))
                    if dep in dev_deps and dep not in main:
                        dev.add(normalize(dep["name"]))
    deps: list[Dependency] = []
    indexes: dict[str, IndexSetting] = {}
    for entry, line in zip(packages, _entry_lines(lines, "[[package]]", packages)):
        entry = _dict(entry)
        name = entry.get("name")
        source = _dict(entry.get("source"))
        if any(k in source for k in _UV_WORKSPACE):
            continue
        version = entry.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            if isinstance(name, str) and "git" in source:
                version = ""
            else:
                problems.append(_bad_entry(path, line, "a name and version"))
                continue
        url, index = "", ""
        if "registry" in source:
            index = str(source["registry"])
            if index.rstrip("/") != PYPI_SIMPLE:
                indexes.setdefault(index, IndexSetting(url=index, kind="lock-index", source=path, line=line))
        elif "git" in source:
            url = "git+" + str(source["git"])
        elif "url" in source:
            url = str(source["url"])
        elif "path" in source:
            url = str(source["path"])
        norm = normalize(name)
        deps.append(Dependency(
            name=norm, version=version, specifier=f"=={version}" if version else "", source=path, line=line,
            url=url, index=index, hashes=_hashes(entry.get("sdist"), *_list(entry.get("wheels"))),
            direct=norm in roots, group="dev" if norm in dev else "", raw=f"{name} {version}".strip(),
        ))
    return Manifest(path=path, format="uv.lock", dependencies=tuple(deps), indexes=tuple(indexes.values()),
                    problems=tuple(problems), locked=True)


# -- pylock.toml (PEP 751) ----------------------------------------------------------------------


def parse_pylock(fs_path: str, path: str) -> Manifest:
    """``[[packages]]`` with ``index``, ``vcs`` (``commit-id``), ``archive``, ``sdist``/``wheels`` hashes."""
    doc, lines, failed, problems = _load_toml(fs_path, path, "pylock.toml")
    if failed is not None:
        return failed
    if not str(doc.get("lock-version", "")).startswith("1"):
        problems.append(Problem("unknown-option", f"lock-version {clip(str(doc.get('lock-version')), 20)} is not "
                                "PEP 751 1.x; read as 1.0", path, line=find_line(lines, "lock-version")))
    packages = _list(doc.get("packages"))
    deps: list[Dependency] = []
    indexes: dict[str, IndexSetting] = {}
    for entry, line in zip(packages, _entry_lines(lines, "[[packages]]", packages)):
        entry = _dict(entry)
        name = entry.get("name")
        if not isinstance(name, str):
            problems.append(_bad_entry(path, line, "a name"))
            continue
        if "directory" in entry:
            continue
        version = entry.get("version") if isinstance(entry.get("version"), str) else ""
        url, index = "", str(entry.get("index", ""))
        if index and index.rstrip("/") not in (PYPI_SIMPLE, "https://pypi.org"):
            indexes.setdefault(index, IndexSetting(url=index, kind="lock-index", source=path, line=line))
        vcs = _dict(entry.get("vcs"))
        if vcs:
            commit = str(vcs.get("commit-id", ""))
            url = f"{vcs.get('type', 'git')}+{vcs.get('url', vcs.get('path', ''))}" + (f"@{commit}" if commit else "")
            version = ""
        archive = _dict(entry.get("archive"))
        if archive:
            url = str(archive.get("url", archive.get("path", "")))
        deps.append(Dependency(
            name=normalize(name), version=str(version), specifier=f"=={version}" if version else "", source=path,
            line=line, url=url, index=index, marker=str(entry.get("marker", "")),
            hashes=_hashes(archive, entry.get("sdist"), *_list(entry.get("wheels"))), direct=False,
            raw=f"{name} {version}".strip(),
        ))
    return Manifest(path=path, format="pylock.toml", dependencies=tuple(deps), indexes=tuple(indexes.values()),
                    problems=tuple(problems), locked=True)


# -- Pipfile.lock -------------------------------------------------------------------------------


def parse_pipfile(fs_path: str, path: str) -> Manifest:
    """JSON ``_meta.sources`` plus ``default``/``develop`` maps of ``name -> {version, hashes, index, git, ref}``."""
    text, problem = read_text(fs_path, path)
    if problem is not None and problem.fatal:
        return Manifest(path=path, format="Pipfile.lock", locked=True, problems=(problem,))
    problems: list[Problem] = [problem] if problem is not None else []
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        return Manifest(path=path, format="Pipfile.lock", locked=True, problems=(
            Problem("syntax", f"not valid JSON: {clip(str(exc), 160)}", path, line=line, fatal=True),))
    if not isinstance(doc, dict):
        return Manifest(path=path, format="Pipfile.lock", locked=True, problems=(
            Problem("syntax", "not a Pipfile.lock (the top level is not an object)", path, fatal=True),))
    lines = text.splitlines()
    meta = _dict(doc.get("_meta"))
    sources: dict[str, str] = {}
    indexes: list[IndexSetting] = []
    for i, src in enumerate(_list(meta.get("sources"))):
        src = _dict(src)
        url = str(src.get("url", ""))
        sources[str(src.get("name", ""))] = url
        indexes.append(IndexSetting(url=url, kind="pipfile-source", source=path, line=find_line(lines, f'"{url}"'),
                                    name=str(src.get("name", "")), priority="primary" if i == 0 else "secondary",
                                    verify_tls=src.get("verify_ssl") is not False))
    deps: list[Dependency] = []
    for section, group in (("default", ""), ("develop", "dev")):
        start = (find_line(lines, f'"{section}"') or 1) - 1
        for name, entry in sorted(_dict(doc.get(section)).items()):
            entry = _dict(entry)
            line = find_line(lines, f'"{name}"', start)
            if "path" in entry or "file" in entry and not str(entry.get("file", "")).startswith(("http:", "https:")):
                continue  # a local project, not a published package
            spec = str(entry.get("version", ""))
            version = spec[2:] if spec.startswith("==") and "*" not in spec else ""
            url = ""
            if "git" in entry:
                url = f"git+{entry['git']}" + (f"@{entry['ref']}" if entry.get("ref") else "")
                version = ""
            elif "file" in entry:
                url = str(entry["file"])
            index_name = str(entry.get("index", ""))
            deps.append(Dependency(
                name=normalize(name), version=version, specifier=spec if spec != "*" else "", source=path, line=line,
                url=url, index=sources.get(index_name, index_name), marker=str(entry.get("markers", "")),
                hashes=tuple(sorted(h for h in _list(entry.get("hashes")) if isinstance(h, str))),
                extras=tuple(sorted(e for e in _list(entry.get("extras")) if isinstance(e, str))),
                group=group, direct=False, raw=clip(f"{name} {spec}".strip()),
            ))
    return Manifest(path=path, format="Pipfile.lock", dependencies=tuple(deps), indexes=tuple(indexes),
                    problems=tuple(problems), locked=True)
