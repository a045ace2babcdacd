"""Jupyter notebooks: the code cells as one module, the outputs as text, findings per cell.

Code cells are joined into one virtual module (an import in cell 1 applies in cell 5, as it
does in the kernel) with a line map back to (cell, line). IPython syntax is neutralised line by
line so that line numbers stay put: line magics, shell escapes (``!cmd``), ``x = !cmd`` and
help queries (``obj?``) become ``pass``/``None``; a cell magic (``%%bash``) blanks its cell
unless its body is Python (``%%time``, ``%%capture``...). Shell text is still read: package
installs (``!pip install``, ``%pip install``) are reported and become packages for the BOM, and
``http://`` downloads in shell lines are reported like their Python counterparts.

The module goes through the ML rules and, when it is an engine, bandit (which has no notebook
support of its own). Cell sources, markdown and every text output (streams, results, HTML,
tracebacks) are searched for secrets. A finding's location names the cell
(``member="cell 3"``, counting every cell from 1, markdown included), ``line`` is the line
inside that cell and, for outputs, ``pointer="output 2"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mlsec import __version__, catalog
from mlsec.fsio import open_regular
from mlsec.model import Artifact, ArtifactKind, Finding, Location, Package, Severity, Skip
from mlsec.registry import ScanContext, register
from mlsec.scanners.secrets import secret_findings

MAX_NOTEBOOK_BYTES = 64 << 20    # notebooks carry images; beyond this it is not a notebook to read
MAX_OUTPUT_CHARS = 1 << 20       # per output: enough for any log, not for a dumped dataset
_PY_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug", "px", "autopx", "memit", "mprun"})
_SHELL_CELL_MAGICS = frozenset({"bash", "sh", "script", "system", "!"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_ASSIGN_MAGIC = re.compile(r"^(\s*)([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*)\s*=\s*[!%]")
_HELP = re.compile(r"^\s*(?:\?{1,2}[\w.]*|[\w.]+\?{1,2})\s*$")
_PIP = re.compile(r"(?:^|[;&|]\s*|\s)(?:python3?\s+-m\s+)?(?:uv\s+)?pip3?\s+install\s+(?P<args>[^;&|#\n]*)")
_HTTP = re.compile(r"\bhttp://[^\s'\"<>|;]+")
_REQ = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?P<spec>(?:[<>=!~]=?|===)\s*[^;\s]+(?:\s*,\s*[<>=!~]=?\s*[^;,\s]+)*)?$")
_OPTS_WITH_VALUE = frozenset({"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url",
                              "--extra-index-url", "-f", "--find-links", "--trusted-host", "-t", "--target",
                              "--prefix", "--root", "--platform", "--python-version", "--implementation", "--abi",
                              "--src", "--upgrade-strategy", "--progress-bar", "--cache-dir", "--log"})


@dataclass
class _Cell:
    index: int                      # 1-based, every cell counted
    anchor: str                     # cell id when the notebook has them (nbformat 4.5), else the index
    kind: str
    source: str
    outputs: list[Any] = field(default_factory=list)


@dataclass
class _ShellLine:
    cell: _Cell
    line: int
    text: str


@dataclass
class _Module:
    """The virtual module built from the code cells, and how to map its lines back."""

    lines: list[str] = field(default_factory=list)
    origin: list[tuple[_Cell, int]] = field(default_factory=list)  # module line i+1 -> (cell, line)
    shell: list[_ShellLine] = field(default_factory=list)
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)  # cell index -> module line range

    def source(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    def where(self, line: int) -> tuple[str | None, int, str]:
        if 1 <= line <= len(self.origin):
            cell, cell_line = self.origin[line - 1]
            return f"cell {cell.index}", cell_line, f"cell:{cell.anchor}|"
        return None, line, ""


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return ""


def _cells(doc: Any) -> list[_Cell]:
    """Cells of an nbformat 4 (``cells``) or 3 (``worksheets[].cells``, ``input``) document."""
    if not isinstance(doc, dict):
        raise TypeError("top level is not a JSON object")
    raw = doc.get("cells")
    if raw is None and isinstance(doc.get("worksheets"), list):
        raw = [c for ws in doc["worksheets"] if isinstance(ws, dict) for c in ws.get("cells", []) or []]
    if not isinstance(raw, list):
        raise TypeError("no 'cells' list")
    out = []
    for i, c in enumerate(raw, 1):
        if not isinstance(c, dict):
            continue
        kind, ident, outputs = c.get("cell_type"), c.get("id"), c.get("outputs")
        source = _text(c.get("source", c.get("input", "")))
        out.append(_Cell(i, ident if isinstance(ident, str) and ident else str(i),
                         kind if isinstance(kind, str) else "unknown", source,
                         outputs if isinstance(outputs, list) else []))
    return out


def _language(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return "python"
    for key, sub in (("kernelspec", "language"), ("language_info", "name")):
        block = meta.get(key)
        if isinstance(block, dict) and isinstance(block.get(sub), str):
            return block[sub].lower()
    return "python"


def _neutralise(cell: _Cell, module: _Module) -> list[str]:
    """Python lines for one cell, same count as the cell's lines; shell text goes to ``module.shell``."""
    lines = cell.source.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = list(lines)
    first = lines[0].strip() if lines else ""
    if first.startswith("%%"):
        magic = first[2:].split(maxsplit=1)[0] if len(first) > 2 else ""
        out[0] = "pass"
        if magic not in _PY_CELL_MAGICS:
            out = ["pass"] * len(lines)
            if magic in _SHELL_CELL_MAGICS:
                module.shell.extend(_ShellLine(cell, i, t) for i, t in enumerate(lines[1:], 2))
            return out
    continued = False
    magic_indent = ""  # continuation lines of a magic take the indentation of its first line
    for i, line in enumerate(lines):
        if i == 0 and first.startswith("%%"):
            continue
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if continued:
            out[i] = magic_indent + "pass"
            module.shell[-1].text += " " + stripped.rstrip("\\")
            continued = line.rstrip().endswith("\\")
            continue
        if stripped.startswith(("!", "%")) and not stripped.startswith("!="):
            out[i] = indent + "pass"
            magic_indent = indent
            module.shell.append(_ShellLine(cell, i + 1, stripped.lstrip("!%").rstrip("\\")))
            continued = line.rstrip().endswith("\\")
            continue
        m = _ASSIGN_MAGIC.match(line)
        if m:
            out[i] = f"{m.group(1)}{m.group(2)} = None"
            module.shell.append(_ShellLine(cell, i + 1, line[m.end():]))
            continue
        if _HELP.match(line):
            out[i] = indent + "pass"
    return out


def _build(cells: list[_Cell]) -> _Module:
    module = _Module()
    for cell in cells:
        if cell.kind != "code":
            continue
        start = len(module.lines) + 1
        for n, line in enumerate(_neutralise(cell, module), 1):
            module.lines.append(line)
            module.origin.append((cell, n))
        module.spans[cell.index] = (start, len(module.lines))
    return module


def _parse(module: _Module) -> tuple[Any, list[int]]:
    """Parse the module; cells that do not parse on their own are blanked and listed."""
    from mlsec.scanners.code_ml import SourceError, parse_source

    try:
        return parse_source(module.source(), notebook=True), []
    except SourceError:
        pass
    bad = []
    for index, (start, end) in module.spans.items():
        chunk = "".join(line + "\n" for line in module.lines[start - 1:end])
        try:
            parse_source(chunk, notebook=True)
        except SourceError:
            bad.append(index)
            module.lines[start - 1:end] = ["pass"] * (end - start + 1)
    try:
        return parse_source(module.source(), notebook=True), sorted(bad)
    except SourceError:
        return None, sorted(module.spans)


def _requirements(args: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(name, version, specifier) of each requirement on a pip command line, plus what was not understood."""
    reqs: list[tuple[str, str, str]] = []
    other: list[str] = []
    tokens = args.replace("'", " ").replace('"', " ").split()
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
            other.append(tok)
            continue
        if tok.startswith("-"):
            skip_next = tok in _OPTS_WITH_VALUE
            if tok.split("=", 1)[0] in _OPTS_WITH_VALUE and "=" in tok:
                skip_next = False
            continue
        if tok.startswith(("$", "{")):
            continue  # a Python variable interpolated by IPython
        m = _REQ.match(tok)
        if not m:
            other.append(tok)
            continue
        name = re.sub(r"[-_.]+", "-", m.group("name")).lower()
        spec = (m.group("spec") or "").replace(" ", "")
        version = spec[2:] if spec.startswith("==") and "," not in spec and "*" not in spec else ""
        reqs.append((name, version, spec))
    return reqs, other


@register
class NotebookScanner:
    """Jupyter notebooks: ML rules and bandit over the code cells, secrets in cells and outputs."""

    name = "mlsec-notebook"
    cacheable = True

    @property
    def version(self) -> str:
        """Changes with the rules (and bandit's version, which it runs)."""
        from mlsec.scanners.code_bandit import bandit_version
        from mlsec.scanners.code_ml import rules_digest

        return f"{__version__}+{rules_digest()}+bandit{bandit_version()}"

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """``.ipynb`` files, when the mlsec or bandit engine runs."""
        return artifact.kind is ArtifactKind.NOTEBOOK and bool({"mlsec", "bandit"} & ctx.engines)

    def cache_salt(self, artifact: Artifact) -> str:
        """The project's bandit test selection also decides the output."""
        from mlsec.scanners.code_bandit import bandit_config

        return bandit_config(artifact.fs_path).digest()

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip | Package]:
        """Parse the JSON, run the passes, map everything back to cells."""
        if artifact.size > MAX_NOTEBOOK_BYTES:
            yield Skip(artifact.path, f"notebook larger than {MAX_NOTEBOOK_BYTES >> 20} MiB was not read", "too-large")
            return
        with open_regular(artifact.fs_path) as fh:
            data = fh.read(MAX_NOTEBOOK_BYTES + 1)
        text = data.decode("utf-8", "replace")
        try:
            doc = json.loads(text)
            cells = _cells(doc)
        except (ValueError, TypeError, RecursionError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            yield self._finding("MLSEC-NB-002", f"Not a readable Jupyter notebook: {reason}", artifact, "malformed",
                                Location())
            if "mlsec" in ctx.engines:  # still look for secrets in the raw text
                yield from secret_findings(text, artifact.path, self.name)
            return
        module = _build(cells)
        python = _language(doc) == "python"
        if "mlsec" in ctx.engines:
            for cell in cells:
                yield from secret_findings(cell.source, artifact.path, self.name, member=f"cell {cell.index}",
                                           key_prefix=f"cell:{cell.anchor}|src|")
                yield from self._outputs(cell, artifact)
            yield from self._shell(module, artifact)
        if not python:
            if module.spans:
                yield Skip(artifact.path, f"kernel language is {_language(doc)!r}: code rules not applied",
                           "non-python-notebook")
            return
        if not module.spans:
            return
        tree, bad = _parse(module)
        if bad:
            cells_txt = ", ".join(str(i) for i in bad)
            yield Skip(artifact.path, f"cells not valid Python after removing IPython syntax: {cells_txt}",
                       "unparsable-cells")
        if tree is None:
            return
        yield from self._code(tree, module, artifact, ctx)

    def _code(self, tree: Any, module: _Module, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        from mlsec.scanners import code_bandit, code_ml

        selection: code_bandit.BanditSelection | None = None
        if "bandit" in ctx.engines:
            selection = code_bandit.effective_selection(artifact.fs_path, ctx)
        if "mlsec" in ctx.engines and code_ml.might_match(module.source().encode("utf-8", "surrogatepass")):
            hits = code_ml.analyze(tree, selection if selection is not None else frozenset())
            yield from code_ml.hit_findings(hits, artifact.path, self.name, line_map=module.where)
        if selection is not None:
            source = module.source().encode("utf-8", "surrogatepass")
            try:
                bhits, errors = code_bandit.run_bandit(source, tree, artifact.fs_path, selection)
            except code_bandit.BanditTrouble as exc:
                yield Skip(artifact.path, f"bandit: {exc}", "bandit-incomplete")
                return
            scope = code_ml.scope_index(tree) if bhits else None
            yield from code_bandit.hit_findings(bhits, artifact.path, self.name, line_map=module.where, scope_of=scope)
            for message in errors:
                yield Skip(artifact.path, f"a bandit test failed on this notebook: {message}", "bandit-incomplete")

    def _outputs(self, cell: _Cell, artifact: Artifact) -> Iterator[Finding]:
        for j, out in enumerate(cell.outputs, 1):
            if not isinstance(out, dict):
                continue
            parts = [_text(out.get("text"))]
            bundle = out.get("data")
            if isinstance(bundle, dict):
                for mime, value in sorted(bundle.items()):
                    if mime.startswith("text/") or mime in ("application/javascript",):
                        parts.append(_text(value))
                    elif mime.endswith("json") and isinstance(value, (dict, list)):
                        parts.append(json.dumps(value, indent=1))
            if out.get("output_type") == "error":
                parts += [_text(out.get("ename")), _text(out.get("evalue"))]
                tb = out.get("traceback")
                parts += [_ANSI.sub("", t) for t in (tb if isinstance(tb, list) else [tb]) if isinstance(t, str)]
            body = "\n".join(p for p in parts if p)[:MAX_OUTPUT_CHARS]
            if not body:
                continue
            for f in secret_findings(body, artifact.path, self.name, member=f"cell {cell.index}",
                                     key_prefix=f"cell:{cell.anchor}|out{j}|", where=f" in the output of cell {cell.index}"):
                yield Finding(f.rule_id, f.severity, f.message, f.path, f.scanner,
                              Location(line=f.location.line, column=f.location.column, member=f.location.member,
                                       pointer=f"output {j}"),
                              f.key, f.evidence)

    def _shell(self, module: _Module, artifact: Artifact) -> Iterator[Finding | Package]:
        from mlsec.scanners.code_ml import sanitize

        seen: dict[str, int] = {}
        for sh in module.shell:
            anchor = f"cell:{sh.cell.anchor}|"
            command = sanitize(sh.text.strip())[:200]
            for m in _PIP.finditer(sh.text):
                reqs, other = _requirements(m.group("args"))
                n = seen[anchor + "pip"] = seen.get(anchor + "pip", 0) + 1
                unpinned = [name for name, version, _ in reqs if not version]
                for name, version, spec in reqs:
                    yield Package(name=name, version=version, path=artifact.path, specifier=spec)
                if unpinned:
                    what = ", ".join(unpinned)
                elif reqs:
                    what = "all pinned"
                else:
                    what = "from " + sanitize(" ".join(other))[:80] if other else "nothing named"
                yield Finding(
                    rule_id="MLSEC-NB-001",
                    severity=Severity.LOW if unpinned or not reqs else Severity.INFO,
                    message=f"Cell {sh.cell.index} installs packages at run time ({what})",
                    path=artifact.path, scanner=self.name,
                    location=Location(line=sh.line, member=f"cell {sh.cell.index}"),
                    key=f"{anchor}pip#{n}",
                    evidence=(("command", command), ("packages", ", ".join(r[0] for r in reqs)),
                              ("unpinned", ", ".join(unpinned))),
                )
            for m in _HTTP.finditer(sh.text):
                n = seen[anchor + "http"] = seen.get(anchor + "http", 0) + 1
                url = sanitize(m.group(0))[:120]
                yield Finding(
                    rule_id="MLSEC-CODE-016", severity=catalog.rules()["MLSEC-CODE-016"].severity,
                    message=f"Shell command in cell {sh.cell.index} fetches {url} over unencrypted http",
                    path=artifact.path, scanner=self.name,
                    location=Location(line=sh.line, member=f"cell {sh.cell.index}"),
                    key=f"{anchor}shell-http#{n}", evidence=(("command", command), ("url", url)),
                )

    def _finding(self, rule_id: str, message: str, artifact: Artifact, key: str, loc: Location) -> Finding:
        rule = catalog.rules()[rule_id]
        return Finding(rule_id, rule.severity, message, artifact.path, self.name, loc, key)

