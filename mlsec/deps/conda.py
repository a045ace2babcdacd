"""conda ``environment.yml``: conda match specs, channels, and the nested ``pip:`` list.

OSV has no conda ecosystem, so conda packages are inventory (``pkg:conda/...``) unless their
PyPI project is obviously the same (a name on the popular list, or a known rename such as
``pytorch`` -> ``torch`` in ``rules/deps/popular.toml``); those are matched against PyPI
advisories under the PyPI name. The ``pip:`` list goes through the requirements reader, so
``-r`` includes, options and URLs behave exactly as in a requirements file.

conda specs: ``[channel::]name[ =fuzzy | ==exact | =version=build | version build | >=a,<b |
[version='...']]``. ``=1.26`` means ``1.26.*``; ``=1.26.4`` (three parts or more) and
``==1.26.4`` are taken as that version.
"""

from __future__ import annotations

import re
from typing import Any

from mlsec.deps import Dependency, IndexSetting, Manifest, Problem
from mlsec.deps.manifests import clip, find_line, normalize, read_text

MAX_YAML_BYTES = 1 << 20  # environment files are a few KB; YAML is parsed only below this

_SPEC = re.compile(r"^(?:(?P<channel>[^:\s]+)::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<rest>.*)$")
_BRACKET_VERSION = re.compile(r"version\s*=\s*['\"]([^'\"]+)['\"]")


def parse(fs_path: str, path: str) -> Manifest:
    """Read conda dependencies, channels and the pip section of an environment file."""
    import yaml

    from mlsec.deps import requirements
    from mlsec.deps.supply_chain import conda_to_pypi

    text, problem = read_text(fs_path, path)
    if problem is not None and problem.fatal:
        return Manifest(path=path, format="environment.yml", problems=(problem,))
    if len(text) > MAX_YAML_BYTES:
        return Manifest(path=path, format="environment.yml", problems=(Problem(
            "too-large", f"{path} is larger than {MAX_YAML_BYTES >> 10} KB; not an environment file mlsec parses",
            path, fatal=True),))
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        return Manifest(path=path, format="environment.yml", problems=(Problem(
            "syntax", f"not valid YAML: {clip(str(exc), 160)}", path,
            line=mark.line + 1 if mark is not None else None, fatal=True),))
    if not isinstance(doc, dict):
        return Manifest(path=path, format="environment.yml", problems=(Problem(
            "syntax", "not a conda environment file (the top level is not a mapping)", path, fatal=True),))
    lines = text.splitlines()
    problems: list[Problem] = [problem] if problem is not None else []
    deps: list[Dependency] = []
    indexes: list[IndexSetting] = []
    settings: list[tuple[str, str, int | None]] = []
    for channel in _list(doc.get("channels")):
        if isinstance(channel, str):
            indexes.append(IndexSetting(url=channel, kind="conda-channel", source=path,
                                        line=find_line(lines, channel, (find_line(lines, "channels") or 1) - 1)))
    start = (find_line(lines, "dependencies") or 1) - 1
    renames = conda_to_pypi()
    tried: list[str] = []
    for item in _list(doc.get("dependencies")):
        if isinstance(item, dict):
            pip_list = item.get("pip")
            if isinstance(pip_list, list):
                pip_start = (find_line(lines, "pip:", start) or start + 1) - 1
                entries = []
                for entry in pip_list:
                    if isinstance(entry, str):
                        where = find_line(lines, entry, pip_start) or pip_start + 1
                        entries.append((where, entry))
                        pip_start = where  # entries are in order; keeps duplicates on their own lines
                got = requirements.parse_entries(entries, fs_path, path)
                deps += [_pip_group(d) for d in got.deps]
                indexes += got.indexes
                settings += got.settings
                problems += got.problems
                tried += got.tried
            continue
        if not isinstance(item, str):
            continue
        line = find_line(lines, item, start)
        dep = _conda_dep(item, path, line, renames)
        if isinstance(dep, Problem):
            problems.append(dep)
        elif dep is not None:
            deps.append(dep)
    return Manifest(path=path, format="environment.yml", dependencies=tuple(deps), indexes=tuple(indexes),
                    settings=tuple(settings), problems=tuple(problems), read_files=tuple(tried))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _pip_group(dep: Dependency) -> Dependency:
    from dataclasses import replace

    return replace(dep, group=dep.group or "pip")


def conda_spec(rest: str) -> tuple[str, str]:
    """(exact version or "", PEP 440-style specifier) for the version part of a conda spec."""
    rest = rest.strip()
    if rest.startswith("["):
        m = _BRACKET_VERSION.search(rest)
        rest = m.group(1) if m else ""
    elif " " in rest and not rest.startswith(("=", "<", ">", "!", "~")):
        rest = rest.split()[0]  # "1.26.4 py311_0": version then build
    if not rest:
        return "", ""
    if "|" in rest:
        return "", " || ".join(conda_spec(part)[1] for part in rest.split("|"))
    if rest.startswith("==") and "*" not in rest:
        version = rest[2:].split("=")[0]
        return version, f"=={version}"
    if rest.startswith("=") and not rest.startswith("=="):
        body = rest[1:]
        version, _, build = body.partition("=")
        if "*" in version:
            return "", f"=={version}"
        if build or version.count(".") >= 2:
            return version, f"=={version}"
        return "", f"=={version}.*"
    if rest[0].isdigit():
        version = rest.split("=")[0]
        if "*" in version:
            return "", f"=={version}"
        return version, f"=={version}"
    return "", rest.replace(" ", "")


def _conda_dep(item: str, path: str, line: int | None, renames: dict[str, str]) -> Dependency | Problem | None:
    m = _SPEC.match(item.strip())
    if not m:
        return Problem("invalid-requirement", f"not a conda package spec: {clip(item, 120)}", path, line=line)
    name = normalize(m.group("name"))
    if name in ("python", "pip"):
        return None  # the interpreter and installer, not dependencies with PyPI advisories
    version, spec = conda_spec(m.group("rest"))
    channel = m.group("channel") or ""
    return Dependency(name=name, version=version, specifier=spec, source=path, line=line, ecosystem="conda",
                      index=channel, pypi_name=renames.get(name, ""), raw=clip(item.strip()))
