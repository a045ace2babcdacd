"""Supply-chain checks on a parsed manifest: pinning, hashes, index configuration, direct references, names.

Each check returns :class:`Issue` values (rule id, message, stable key, line, evidence); the
scanner turns them into Findings. What is checked where:

* **unpinned** (MLSEC-DEP-004) and **unhashed** (MLSEC-DEP-005): concrete install lists only
  (requirements files, the ``pip:`` list of an environment file). ``*.in`` files are pip-tools
  inputs, meant to hold ranges, and pyproject/setup.cfg declare ranges on purpose; lockfiles
  are pinned by construction. A requirement pinned by a ``-c`` constraints file counts as pinned.
* **dependency confusion** (MLSEC-DEP-006): ``--extra-index-url`` and ``--find-links`` URLs
  (pip takes the highest version across all of them: the torchtriton mechanism), Poetry
  ``supplemental``/``secondary`` sources, uv ``index-strategy = unsafe-*``.
* **insecure transport** (MLSEC-DEP-007): ``http://`` indexes, channels, sources and direct
  URLs (loopback excepted), ``--trusted-host``, Pipfile ``verify_ssl = false``.
* **mutable direct references** (MLSEC-DEP-008): VCS references that are not a full commit
  hash, downloads without a hash.
* **names** (MLSEC-DEP-009/010): typosquats of popular ML packages, known-bad names and
  placeholder names, from ``rules/deps/popular.toml``.

URLs are shown with any credentials removed (``https://***@host/...``).
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from mlsec.deps import Dependency, IndexSetting, Manifest
from mlsec.model import Severity

_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_AFFIXES_PRE = ("py-", "python-")
_AFFIXES_POST = ("-python", "-gpu", "-nightly", "-cpu", "-dev", "-lib", "-sdk", "-py", "-ai", "-tools")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_INSTALL_LISTS = ("requirements", "environment.yml")


@dataclass(frozen=True, slots=True)
class Issue:
    """One supply-chain problem, ready to become a Finding."""

    rule_id: str
    message: str
    key: str
    line: int | None
    evidence: tuple[tuple[str, str], ...]
    severity: Severity | None = None  # None: the catalog's severity


@dataclass(frozen=True, slots=True)
class NameLists:
    """``rules/deps/popular.toml``."""

    popular: frozenset[str]
    allowlist: frozenset[str]
    placeholders: dict[str, str]
    known_bad: dict[str, str]
    conda_to_pypi: dict[str, str]


@functools.cache
def name_lists() -> NameLists:
    """Load the popular-name list, its allowlist, placeholders, known-bad names and conda renames."""
    from mlsec.catalog import data_dir
    from mlsec.deps.manifests import normalize

    with (data_dir("rules") / "deps" / "popular.toml").open("rb") as fh:
        doc = tomllib.load(fh)
    popular = frozenset(normalize(n) for n in doc.get("popular", []))
    return NameLists(
        popular=popular,
        allowlist=frozenset(normalize(n) for n in doc.get("allowlist", [])),
        placeholders={normalize(k): str(v) for k, v in doc.get("placeholders", {}).items()},
        known_bad={normalize(k): str(v) for k, v in doc.get("known_bad", {}).items()},
        conda_to_pypi={n: n for n in popular} | {normalize(k): normalize(str(v)) for k, v in
                                                  doc.get("conda_to_pypi", {}).items()},
    )


def conda_to_pypi() -> dict[str, str]:
    """conda name -> PyPI name, where the mapping is obvious."""
    return name_lists().conda_to_pypi


def redact(url: str) -> str:
    """A URL without its user name and password (index URLs often carry tokens)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # host[:port] as written: .port raises on "h:x"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _plain_http(url: str) -> bool:
    text = url.lower()
    for prefix in ("git+", "hg+", "svn+", "bzr+"):
        text = text.removeprefix(prefix)
    if not text.startswith("http://"):
        return False
    try:
        return (urlsplit(text).hostname or "") not in _LOOPBACK
    except ValueError:
        return True


def check(manifest: Manifest) -> list[Issue]:
    """All supply-chain issues of one manifest, in file order."""
    issues: list[Issue] = []
    issues += _pinning(manifest)
    issues += _indexes(manifest)
    for dep in manifest.dependencies:
        issues += _direct_reference(dep)
        issues += _name(dep)
    return issues


# -- pinning and hashes --------------------------------------------------------------------------


def _is_install_list(manifest: Manifest) -> bool:
    return manifest.format in _INSTALL_LISTS and not manifest.path.lower().endswith(".in")


def constraint_pins(manifest: Manifest) -> dict[str, Dependency]:
    """Names pinned by ``-c`` constraints files of this manifest."""
    return {d.name: d for d in manifest.dependencies if d.constraint and d.version}


def _pinning(manifest: Manifest) -> list[Issue]:
    if not _is_install_list(manifest):
        return []
    pins = constraint_pins(manifest)
    installs = [d for d in manifest.dependencies
                if not d.constraint and d.ecosystem == "pypi" and d.name and not _local(d)]
    out = []
    for dep in installs:
        if dep.url or dep.version or dep.name in pins:
            continue
        allowed = dep.specifier or "any version"
        out.append(Issue(
            "MLSEC-DEP-004",
            f"{dep.name} is not pinned ({allowed}): each install may resolve a different, possibly "
            "vulnerable or compromised, version",
            f"unpinned|{dep.name}", dep.report_line,
            _ev(package=dep.name, specifier=dep.specifier or "*", declared_in=declared_in(dep)),
        ))
    hash_mode = manifest.setting("require-hashes") == "true" or any(d.hashes for d in installs)
    if not hash_mode:
        if installs:
            first = min((d.report_line or 0 for d in installs), default=0) or None
            out.append(Issue(
                "MLSEC-DEP-005",
                f"none of the {len(installs)} requirements carries a --hash: pip cannot verify that the "
                "downloaded files are the ones that were reviewed",
                "no-hashes", first, _ev(requirements=str(len(installs))),
            ))
    else:
        for dep in installs:
            if not dep.hashes and not _local(dep):
                out.append(Issue(
                    "MLSEC-DEP-005",
                    f"{dep.name} has no --hash while the file uses hash-checking mode: pip refuses to "
                    "install it, or it is installed unverified if it is moved to another file",
                    f"missing-hash|{dep.name}", dep.report_line,
                    _ev(package=dep.name, declared_in=declared_in(dep)),
                ))
    return out


def _local(dep: Dependency) -> bool:
    return bool(dep.url) and "://" not in dep.url and not re.match(r"^(git|hg|svn|bzr)\+", dep.url)


# -- indexes -------------------------------------------------------------------------------------


def _indexes(manifest: Manifest) -> list[Issue]:
    out: list[Issue] = []
    for idx in manifest.indexes:
        shown = redact(idx.url)
        if idx.kind == "trusted-host" or not idx.verify_tls:
            out.append(Issue(
                "MLSEC-DEP-007", f"TLS verification is disabled for {shown} ({_kind_text(idx)}): anyone on the "
                "network path can replace packages", f"no-tls|{shown}", idx.report_line,
                _ev(url=shown, setting=idx.kind, declared_in=declared_in(idx)),
            ))
        elif _plain_http(idx.url):
            out.append(Issue(
                "MLSEC-DEP-007", f"{_kind_text(idx)} {shown} uses plain http: anyone on the network path can "
                "replace packages", f"http-index|{shown}", idx.report_line,
                _ev(url=shown, setting=idx.kind, declared_in=declared_in(idx)),
            ))
        confusion = ""
        if idx.kind == "extra-index-url":
            confusion = "pip and uv pip take the highest version of a name across all indexes"
        elif idx.kind == "find-links" and "://" in idx.url:
            confusion = "pip merges --find-links pages with the index and takes the highest version"
        elif idx.kind == "poetry-source" and idx.priority in ("supplemental", "secondary"):
            confusion = (f"Poetry falls back to the {idx.priority} source for names the primary source lacks, "
                         "or (secondary) searches both")
        if confusion:
            out.append(Issue(
                "MLSEC-DEP-006", f"{_kind_text(idx)} {shown}: {confusion}, so a public package with an internal "
                "package's name and a higher version is installed instead (dependency confusion)",
                f"extra-index|{shown}", idx.report_line,
                _ev(url=shown, setting=idx.kind, priority=idx.priority, declared_in=declared_in(idx)),
            ))
    for key, value, line in manifest.settings:
        if key == "index-strategy" and value.startswith("unsafe-"):
            out.append(Issue(
                "MLSEC-DEP-006", f"uv index-strategy = {value!r} looks a name up on every index instead of the "
                "first one that has it, which re-opens dependency confusion", f"index-strategy|{value}", line,
                _ev(setting="index-strategy", value=value),
            ))
    return out


def _kind_text(idx: IndexSetting) -> str:
    return {
        "index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
        "trusted-host": "--trusted-host", "poetry-source": f"Poetry source {idx.name!r}".replace(" ''", ""),
        "uv-index": "uv index", "pipfile-source": "Pipfile source", "conda-channel": "conda channel",
        "lock-index": "locked index",
    }.get(idx.kind, idx.kind)


# -- direct references ---------------------------------------------------------------------------


def vcs_commit(url: str) -> str:
    """The full commit hash a VCS URL is pinned to (``@<sha>`` or uv's ``#<sha>``), else ""."""
    body = url.split("#", 1)
    fragment = body[1] if len(body) > 1 else ""
    if _COMMIT.match(fragment.lower()):
        return fragment.lower()
    try:
        path = urlsplit(re.sub(r"^(git|hg|svn|bzr)\+", "", body[0])).path
    except ValueError:  # "[x]" or an unclosed "[" as host: urlsplit raises; no commit to find
        return ""
    if "@" in path:
        ref = path.rsplit("@", 1)[1]
        if _COMMIT.match(ref.lower()) or (url.lower().startswith("svn+") and ref.isdigit()):
            return ref.lower()
    return ""


def _direct_reference(dep: Dependency) -> list[Issue]:
    if not dep.url or _local(dep):
        return []
    name = dep.name or redact(dep.url)
    shown = redact(dep.url)
    out = []
    if _plain_http(dep.url):
        out.append(Issue(
            "MLSEC-DEP-007", f"{name} is downloaded over plain http ({shown}): anyone on the network path can "
            "replace it", f"http-url|{name}", dep.report_line, _ev(package=name, url=shown,
                                                                   declared_in=declared_in(dep)),
        ))
    if re.match(r"^(git|hg|svn|bzr)\+", dep.url, re.IGNORECASE):
        if not vcs_commit(dep.url):
            out.append(Issue(
                "MLSEC-DEP-008", f"{name} comes from {shown} without a full commit hash: the branch or tag can be "
                "moved to different code at any time", f"vcs-ref|{name}", dep.report_line,
                _ev(package=name, url=shown, declared_in=declared_in(dep)),
            ))
    elif not dep.hashes and "://" in dep.url and not re.search(r"[#&](sha256|sha384|sha512)=[0-9a-fA-F]+", dep.url):
        out.append(Issue(
            "MLSEC-DEP-008", f"{name} is downloaded from {shown} without a hash: the file behind the URL can "
            "change without notice", f"url-hash|{name}", dep.report_line,
            _ev(package=name, url=shown, declared_in=declared_in(dep)),
        ))
    return out


# -- names ---------------------------------------------------------------------------------------


def one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein (optimal string alignment) distance exactly 1, in linear time."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1:]


def typosquat_target(name: str, lists: NameLists | None = None) -> tuple[str, str] | None:
    """(popular name imitated, how) when ``name`` looks like a typosquat of a popular ML package."""
    lists = lists or name_lists()
    if name in lists.popular or name in lists.allowlist or len(name) < 5:
        return None
    squashed = name.replace("-", "")
    parts = sorted(name.split("-"))
    bases = [name] + [name.removeprefix(pre) for pre in _AFFIXES_PRE if name.startswith(pre)]
    stripped = set(bases) | {b.removesuffix(post) for b in bases for post in _AFFIXES_POST if b.endswith(post)}
    stripped.discard(name)
    for target in sorted(lists.popular):
        if squashed == target.replace("-", ""):
            return target, "the same name with different separators"
        if "-" in name and parts == sorted(target.split("-")):
            return target, "the same words in a different order"
    for target in sorted(lists.popular):
        if target in stripped:
            return target, "the popular name with a decorating prefix or suffix"
    for target in sorted(lists.popular):
        if len(target) >= 5 and one_edit(name, target):
            return target, "one character away (typo, swap, extra or missing letter)"
    return None


def _name(dep: Dependency) -> list[Issue]:
    if dep.ecosystem != "pypi" or not dep.name or dep.constraint or _local(dep):
        return []
    lists = name_lists()
    ev = _ev(package=dep.name, declared_in=declared_in(dep))
    if dep.name in lists.known_bad:
        return [Issue("MLSEC-DEP-009", f"{dep.name}: {lists.known_bad[dep.name]}", f"known-bad|{dep.name}",
                      dep.report_line, ev + (("reason", "known-bad"),), Severity.HIGH)]
    if dep.name in lists.placeholders:
        real = lists.placeholders[dep.name]
        return [Issue("MLSEC-DEP-010", f"{dep.name} is not the real project on PyPI (a placeholder or an import "
                      f"name); the package is {real}", f"placeholder|{dep.name}", dep.report_line,
                      ev + (("use", real),))]
    hit = typosquat_target(dep.name, lists)
    if hit is None:
        return []
    target, how = hit
    return [Issue("MLSEC-DEP-009", f"{dep.name} looks like a typosquat of {target} ({how})",
                  f"typosquat|{dep.name}", dep.report_line, ev + (("imitates", target), ("how", how)))]


# -- helpers -------------------------------------------------------------------------------------


def declared_in(item: Dependency | IndexSetting) -> str:
    """``file:line`` when the entry came from an included file (the finding points at the include)."""
    if item.via_line is None:
        return ""
    return f"{item.source}:{item.line}" if item.line else item.source


def _ev(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in pairs.items() if v))
