"""``setup.cfg`` (setuptools declarative config): ``install_requires``, ``extras_require``, ``setup_requires``.

Read with ``configparser`` (no interpolation, so ``%`` in markers is harmless); values are
newline- or semicolon-free lists of PEP 508 strings. Lines are found by searching the text
below the section header, as configparser keeps no positions. ``file:`` directives
(setuptools' ``install_requires = file: requirements.in``) are reported, not followed: the named
file is scanned on its own when it is a requirements file.
"""

from __future__ import annotations

import configparser

from mlsec.deps import Dependency, Manifest, Problem
from mlsec.deps.manifests import clip, find_line, from_pep508, header_line, read_text

_KEYS = (("options", "install_requires", ""), ("options", "setup_requires", "build"),
         ("options", "tests_require", "test"))


def parse(fs_path: str, path: str) -> Manifest:
    """Read the requirement lists of a setup.cfg."""
    text, problem = read_text(fs_path, path)
    if problem is not None and problem.fatal:
        return Manifest(path=path, format="setup.cfg", problems=(problem,))
    parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=", ":"))
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        return Manifest(path=path, format="setup.cfg", problems=(
            Problem("syntax", f"not a valid setup.cfg: {clip(str(exc), 160)}", path, line=line, fatal=True),))
    lines = text.splitlines()
    deps: list[Dependency] = []
    problems: list[Problem] = [problem] if problem is not None else []
    entries = [(s, k, g) for s, k, g in _KEYS]
    if parser.has_section("options.extras_require"):
        entries += [("options.extras_require", key, f"extra:{key}") for key in parser.options("options.extras_require")]
    for section, key, group in entries:
        if not parser.has_option(section, key):
            continue
        start = (header_line(lines, f"[{section}]") or 1) - 1
        value = parser.get(section, key)
        if value.strip().startswith("file:"):
            problems.append(Problem("unknown-option", f"{key} = {clip(value.strip(), 80)} is read from another "
                                    "file; scan that file too", path, line=find_line(lines, key, start)))
            continue
        for item in value.splitlines():
            item = item.split(" #", 1)[0].strip()
            if not item or item.startswith("#"):
                continue
            line = find_line(lines, item, start) or find_line(lines, key, start)
            dep = from_pep508(item, source=path, line=line, group=group)
            (problems if isinstance(dep, Problem) else deps).append(dep)  # type: ignore[arg-type]
    return Manifest(path=path, format="setup.cfg", dependencies=tuple(deps), problems=tuple(problems))
