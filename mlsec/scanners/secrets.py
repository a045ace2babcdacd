"""Secrets in source code, configuration, ``.env`` files, scripts and docs.

The detector (:mod:`mlsec.detect.secrets`, patterns in ``rules/secrets.toml``) is shared with
the notebook and dataset scanners; this scanner decides which files are worth reading whole:
Python source, configuration and environment files, shell scripts, Dockerfiles, key files and
small docs. Data files are left to the dataset scanners (which call the same detector with
their own sampling), notebooks to the notebook scanner (which maps hits to cells).

A finding shows the kind of secret and a masked value (first four characters and the length);
the raw value never reaches a finding, a cache entry or a report. Its key is the kind and the
occurrence in the file, so the fingerprint neither moves with lines nor derives from the value.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator

from mlsec import __version__, catalog
from mlsec.detect.secrets import find_secrets, rule_for_kind
from mlsec.fsio import open_regular
from mlsec.model import Artifact, ArtifactKind, Finding, Location, Skip
from mlsec.registry import ScanContext, register

MAX_TEXT_BYTES = 4 << 20      # configuration and docs larger than this are data, not config
MAX_CODE_BYTES = 8 << 20      # same limit as the code scanners
MAX_JSON_BYTES = 1 << 20      # JSON is only read when small and named like configuration

_CONFIG_NAMES = re.compile(
    r"""(?ix)
    ^(?: \.env(?:\..+)? | .+\.env | \.envrc | \.netrc | _netrc | \.pypirc | \.npmrc | \.git-credentials
       | credentials | config | dockerfile(?:\..+)? | containerfile | makefile | procfile | jenkinsfile
       | id_(?:rsa|dsa|ecdsa|ed25519) )$
    | \.(?:cfg|ini|conf|config|toml|ya?ml|properties|sh|bash|zsh|ps1|bat|cmd|tf|tfvars|hcl|pem|key|p8
         |md|markdown|rst|txt|j2|jinja|tpl|template|sample|example|dist)$
    """
)
_JSON_NAMES = re.compile(
    r"(?i)(?:credential|secret|token|key|service[-_]?account|config|settings|auth|\.?vscode|launch|appsettings)[^/]*\.json$"
)
_TEXT_FORMATS = frozenset({"text", "empty"})


def wants(artifact: Artifact) -> bool:
    """Does this scanner read ``artifact`` whole? (The dataset scanners ask, to avoid repeating it.)"""
    name = artifact.path.rsplit("/", 1)[-1]
    if artifact.kind is ArtifactKind.CODE:
        return True
    if artifact.kind is ArtifactKind.NOTEBOOK:
        return False
    if artifact.format == "json":
        return artifact.size <= MAX_JSON_BYTES and bool(_JSON_NAMES.search(name))
    if artifact.kind not in (ArtifactKind.OTHER, ArtifactKind.DEPENDENCIES):
        return False
    return artifact.format in _TEXT_FORMATS and bool(_CONFIG_NAMES.search(name))


_wanted = wants  # the name the dataset scanner imported first


class LineIndex:
    """Offsets to 1-based (line, column) in one text."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def __call__(self, offset: int) -> tuple[int, int]:
        i = bisect.bisect_right(self._starts, offset) - 1
        return i + 1, offset - self._starts[i] + 1


def secret_findings(text: str, path: str, scanner: str, *, member: str | None = None,
                    key_prefix: str = "", where: str = "") -> Iterator[Finding]:
    """Findings for every secret in ``text``; lines are relative to ``text``."""
    hits = find_secrets(text)
    if not hits:
        return
    index = LineIndex(text)
    rules = catalog.rules()
    seen: dict[str, int] = {}
    for h in hits:
        rule_id = rule_for_kind(h.kind)
        line, column = index(h.start)
        end_line, _ = index(max(h.start, h.end - 1))
        n = seen.get(h.kind, 0) + 1
        seen[h.kind] = n
        title = rules[rule_id].title
        yield Finding(
            rule_id=rule_id,
            severity=rules[rule_id].severity,
            message=f"{title}{where}: {h.masked}",
            path=path,
            scanner=scanner,
            location=Location(line=line, end_line=end_line if end_line != line else None, column=column, member=member),
            key=f"{key_prefix}{h.kind}#{n}",
            evidence=(("kind", h.kind), ("masked", h.masked)),
        )


@register
class SecretsScanner:
    """Credentials in code, configuration and environment files."""

    name = "mlsec-secrets"
    cacheable = True

    @property
    def version(self) -> str:
        """Changes with the secret patterns."""
        from mlsec.scanners.code_ml import rules_digest

        return f"{__version__}+{rules_digest()}"

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Python source and configuration-like text files (see the module docstring)."""
        return "mlsec" in ctx.engines and wants(artifact)

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        """Read the file whole (they are small by construction) and report every secret."""
        limit = MAX_CODE_BYTES if artifact.kind is ArtifactKind.CODE else MAX_TEXT_BYTES
        if artifact.size > limit:
            yield Skip(artifact.path, f"larger than {limit >> 20} MiB: not searched for secrets", "too-large")
            return
        with open_regular(artifact.fs_path) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            yield Skip(artifact.path, f"larger than {limit >> 20} MiB: not searched for secrets", "too-large")
            return
        if b"\0" in data[:8192] and artifact.kind is not ArtifactKind.CODE:
            return  # binary after all (a .key in DER form, say): nothing line-based to report
        text = data.decode("utf-8", "replace")
        yield from secret_findings(text, artifact.path, self.name)
