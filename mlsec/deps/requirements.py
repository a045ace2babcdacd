"""pip requirements files: ``-r``/``-c`` includes, hashes, markers, extras, URLs, editables, options.

Why not pip-requirements-parser: it follows a self-include until Python's recursion limit
(a two-line file yields 982 copies of its requirement), reads absolute includes anywhere and has
not been released since 2022. The pip format is small; this reader follows pip's rules
(``join_lines``, ``#`` comments after whitespace, per-requirement options after the first
`` -`` token) and hands every requirement to ``packaging`` (PEP 508). What it does differently
on purpose: includes are followed only as local files, at most :data:`MAX_DEPTH` deep and
:data:`MAX_FILES` in all, each once (cycles are reported); remote includes are never fetched
(offline); ``${VAR}`` is left as written (expanding it would copy secrets from the scanning
machine into reports).
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import unquote

from mlsec.deps import Dependency, IndexSetting, Manifest, Problem
from mlsec.deps.manifests import clip, from_pep508, normalize, read_text

MAX_DEPTH = 10
MAX_FILES = 100

_COMMENT = re.compile(r"(^|\s+)#.*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_VCS = re.compile(r"^(git|hg|svn|bzr)\+", re.IGNORECASE)
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9_.\-\[\],]+)")
_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<ver>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_SDIST = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+?)-(?P<ver>\d[^-/]*?)\.(tar\.gz|tar\.bz2|tar\.xz|tgz|zip)$")
_INDEX_OPTIONS = {"-i": "index-url", "--index-url": "index-url", "--extra-index-url": "extra-index-url",
                  "-f": "find-links", "--find-links": "find-links", "--trusted-host": "trusted-host"}
_FLAG_OPTIONS = {"--no-index", "--pre", "--prefer-binary", "--require-hashes", "--only-binary", "--no-binary",
                 "--use-feature", "-Z", "--always-unzip", "--config-settings", "--global-option", "--install-option"}
# Options taking a value (so the value is not taken for a requirement).
_VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "--only-binary",
                  "--no-binary", "--use-feature", "--config-settings", "--global-option", "--install-option",
                  *_INDEX_OPTIONS}


@dataclass
class Collected:
    """What one parse collects across the scanned file and everything it includes."""

    root_dir_rel: str
    deps: list[Dependency] = field(default_factory=list)
    indexes: list[IndexSetting] = field(default_factory=list)
    settings: list[tuple[str, str, int | None]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    files: int = 0
    tried: list[str] = field(default_factory=list)  # include paths looked for, found or not


def parse(fs_path: str, path: str) -> Manifest:
    """Parse a requirements file and everything it includes with ``-r``/``-c``."""
    state = Collected(root_dir_rel=posixpath.dirname(path))
    state.seen.add(os.path.realpath(fs_path))
    text, problem = read_text(fs_path, path)
    if problem is not None:
        state.problems.append(problem)
        if problem.fatal:
            return Manifest(path=path, format="requirements", problems=(problem,))
    _parse_text(text, fs_path, path, state, depth=0, via_line=None, constraint=False)
    return Manifest(
        path=path,
        format="requirements",
        dependencies=tuple(state.deps),
        indexes=tuple(state.indexes),
        settings=tuple(state.settings),
        problems=tuple(state.problems),
        read_files=tuple(state.tried),
    )


def parse_entries(entries: list[tuple[int, str]], fs_path: str, path: str) -> Collected:
    """Requirement lines that live inside another format (conda's ``pip:`` list), one per entry.

    Includes resolve relative to ``fs_path``'s directory, like pip run from there.
    """
    state = Collected(root_dir_rel=posixpath.dirname(path))
    state.seen.add(os.path.realpath(fs_path))
    for number, text in entries:
        line = _COMMENT.sub("", text).strip()
        if not line:
            continue
        if line.startswith("-"):
            _option_line(line, number, fs_path, path, state, depth=0, via_line=None, constraint=False)
        else:
            _requirement_line(line, number, path, state, via_line=None, constraint=False, editable=False)
    return state


def logical_lines(text: str) -> list[tuple[int, str]]:
    """pip's ``join_lines`` + comment stripping: (first physical line number, content) pairs."""
    out: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        if not line.endswith("\\") or _COMMENT.match(line):
            if _COMMENT.match(line):
                line = " " + line  # a comment ends a continuation
            parts.append(line)
            joined = _COMMENT.sub("", "".join(parts)).strip()
            if joined:
                out.append((start, joined))
            parts = []
        else:
            parts.append(line[:-1])
    if parts:  # a trailing backslash on the last line
        joined = _COMMENT.sub("", "".join(parts)).strip()
        if joined:
            out.append((start, joined))
    return out


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:  # unbalanced quotes: fall back to whitespace, as pip's optparse would see it
        return text.split()


def _parse_text(text: str, fs_path: str, rel: str, state: Collected, *, depth: int, via_line: int | None,
                constraint: bool) -> None:
    for number, line in logical_lines(text):
        if line.startswith("-"):
            _option_line(line, number, fs_path, rel, state, depth=depth, via_line=via_line, constraint=constraint)
        else:
            _requirement_line(line, number, rel, state, via_line=via_line, constraint=constraint, editable=False)


def _option_line(line: str, number: int, fs_path: str, rel: str, state: Collected, *, depth: int,
                 via_line: int | None, constraint: bool) -> None:
    tokens = _split(line)
    if not tokens:
        return
    opt, value = tokens[0], (tokens[1] if len(tokens) > 1 else "")
    if "=" in opt and opt.startswith("--"):
        opt, value = opt.split("=", 1)
    elif len(opt) > 2 and opt[:2] in ("-r", "-c", "-e", "-i", "-f") and not opt.startswith("--"):
        opt, value = opt[:2], opt[2:]  # -rbase.txt
    anchor = via_line if via_line is not None else number
    if opt in ("-r", "--requirement", "-c", "--constraint"):
        _include(value, opt in ("-c", "--constraint") or constraint, number, fs_path, rel, state,
                 depth=depth, via_line=anchor)
    elif opt in ("-e", "--editable"):
        _requirement_line(value, number, rel, state, via_line=via_line, constraint=constraint, editable=True)
    elif opt in _INDEX_OPTIONS:
        kind = _INDEX_OPTIONS[opt]
        if not value:
            state.problems.append(Problem("unknown-option", f"{opt} without a value", rel, line=number, via_line=via_line))
            return
        state.indexes.append(IndexSetting(url=value, kind=kind, source=rel, line=number, via_line=via_line,
                                          verify_tls=kind != "trusted-host"))
    elif opt == "--no-index":
        state.settings.append(("no-index", "true", number))
    elif opt == "--require-hashes":
        state.settings.append(("require-hashes", "true", number))
    elif opt in _FLAG_OPTIONS:
        return
    else:
        state.problems.append(Problem("unknown-option", f"option not understood: {clip(opt, 60)}", rel,
                                      line=number, via_line=via_line))


def _include(target: str, constraint: bool, number: int, fs_path: str, rel: str, state: Collected, *,
             depth: int, via_line: int) -> None:
    what = "constraints file" if constraint else "requirements file"
    if not target:
        state.problems.append(Problem("include-missing", "-r/-c without a file name", rel, line=number, via_line=via_line))
        return
    if _SCHEME.match(target):
        state.problems.append(Problem(
            "remote-include", f"remote {what} {clip(target, 120)} was not fetched (mlsec works offline); "
            "its requirements were not checked", rel, line=number, via_line=via_line))
        return
    if "\0" in target:  # os.path.realpath (and open) raise ValueError on a NUL byte
        state.problems.append(Problem("include-missing", f"{what} {clip(target, 120)!r} has a NUL byte in its "
                                      "name; not followed", rel, line=number, via_line=via_line))
        return
    if depth + 1 > MAX_DEPTH or state.files >= MAX_FILES:
        state.problems.append(Problem("include-depth", f"{what} {clip(target, 120)} not followed: more than "
                                      f"{MAX_DEPTH} levels or {MAX_FILES} files of includes", rel,
                                      line=number, via_line=via_line))
        return
    child_fs = os.path.join(os.path.dirname(fs_path), os.path.expanduser(target))
    child_rel = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target.replace("\\", "/")))
    state.tried.append(child_fs)
    real = os.path.realpath(child_fs)
    if real in state.seen:
        state.problems.append(Problem("include-cycle", f"{what} {clip(target, 120)} is included more than once "
                                      "(an include cycle); read once", rel, line=number, via_line=via_line))
        return
    if not os.path.isfile(child_fs):
        state.problems.append(Problem("include-missing", f"{what} {clip(target, 120)} not found; its requirements "
                                      "were not checked", rel, line=number, via_line=via_line))
        return
    state.seen.add(real)
    state.files += 1
    text, problem = read_text(child_fs, child_rel)
    if problem is not None:
        state.problems.append(Problem(problem.code, problem.message, rel, line=number, via_line=via_line))
        if problem.fatal:
            return
    _parse_text(text, child_fs, child_rel, state, depth=depth + 1, via_line=via_line, constraint=constraint)


def _requirement_line(line: str, number: int, rel: str, state: Collected, *, via_line: int | None,
                      constraint: bool, editable: bool) -> None:
    # pip: everything from the first token that starts with "-" is per-requirement options.
    words = line.split(" ")
    cut = next((i for i, w in enumerate(words) if w.startswith("-") and i > 0), len(words))
    spec, options = " ".join(words[:cut]).strip(), " ".join(words[cut:])
    if not spec:
        return
    hashes = tuple(sorted(set(_hashes(options))))
    common = _Common(source=rel, line=number, via_line=via_line, hashes=hashes, editable=editable,
                     constraint=constraint)
    if _is_direct_url(spec) or _is_path(spec):
        state.deps.append(_direct_dependency(spec, common, vcs=bool(_VCS.match(spec))))
        return
    dep = from_pep508(spec, source=rel, line=number, via_line=via_line, hashes=hashes, editable=editable,
                      group="constraint" if constraint else "", constraint=constraint, direct=not constraint)
    if isinstance(dep, Problem):
        state.problems.append(dep)
    else:
        state.deps.append(dep)


@dataclass(frozen=True, slots=True)
class _Common:
    source: str
    line: int
    via_line: int | None
    hashes: tuple[str, ...]
    editable: bool
    constraint: bool


def _hashes(options: str) -> list[str]:
    out = []
    for token in _split(options):
        if token.startswith("--hash="):
            out.append(token[len("--hash="):])
    for m in re.finditer(r"--hash\s+(\S+)", options):
        out.append(m.group(1))
    return out


def _is_direct_url(spec: str) -> bool:
    return bool(_SCHEME.match(spec) or _VCS.match(spec))


def _is_path(spec: str) -> bool:
    if spec.startswith((".", "/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", spec):
        return True
    if "@" in spec.split(";")[0]:
        return False  # name @ url is PEP 508
    return "/" in spec or "\\" in spec or spec.endswith((".whl", ".tar.gz", ".zip", ".tgz"))


def _marker_split(spec: str) -> tuple[str, str]:
    """pip: a URL requirement's marker follows ``; `` (semicolon and a space)."""
    if "; " in spec:
        target, marker = spec.split("; ", 1)
        return target.strip(), marker.strip()
    return spec.strip(), ""


def _name_from_target(target: str) -> tuple[str, str, tuple[str, ...]]:
    """(name, version, extras) from an egg fragment or an archive file name."""
    egg = _EGG.search(target)
    if egg:
        text = egg.group(1)
        extras: tuple[str, ...] = ()
        if "[" in text:
            text, _, rest = text.partition("[")
            extras = tuple(sorted(e.strip() for e in rest.rstrip("]").split(",") if e.strip()))
        return normalize(text), "", extras
    base = unquote(target.split("#", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
    for pattern in (_WHEEL, _SDIST):
        m = pattern.match(base)
        if m:
            return normalize(m.group("name")), m.group("ver"), ()
    return "", "", ()


def _direct_dependency(spec: str, c: _Common, *, vcs: bool) -> Dependency:
    """A URL, VCS or local path requirement; name and version come from ``#egg=`` or the file name."""
    target, marker = _marker_split(spec)
    name, version, extras = _name_from_target(target)
    if vcs:
        version = ""  # a VCS checkout is not a release: its version is whatever the ref holds
    hashes = c.hashes
    fragment_hash = re.search(r"[#&](sha256|sha384|sha512)=([0-9a-fA-F]+)", target)
    if fragment_hash:
        hashes = tuple(sorted({*hashes, f"{fragment_hash.group(1)}:{fragment_hash.group(2).lower()}"}))
    return Dependency(
        name=name, version=version, specifier=f"=={version}" if version else "", source=c.source, line=c.line,
        via_line=c.via_line, extras=extras, marker=marker, url=target, hashes=hashes, editable=c.editable,
        group="constraint" if c.constraint else "", constraint=c.constraint, direct=not c.constraint,
        raw=clip(spec),
    )
