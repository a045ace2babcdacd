"""GGUF (llama.cpp) models: header, metadata and tensor table, with every count bounded.

A GGUF file is magic ``GGUF``, a version (1-3), a tensor count and a key/value count, the
key/value metadata, the tensor table, then aligned tensor data. Both byte orders exist (the
version tells which). Loaders allocate from the counts and lengths they read, so an absurd
count is a finding here, never an allocation: strings and arrays are skipped by length after
checking the length against what is left of the file.

The one place GGUF runs code is ``tokenizer.chat_template``: a Jinja template that runtimes
render for every chat. llama-cpp-python rendered it with an unsandboxed Jinja environment
(CVE-2024-34359), so a template that walks ``__class__``/``__globals__``/``__builtins__`` or
reaches ``os``/``popen`` runs commands on the machine that loads the model. Templates are
checked by :func:`template_risks`, a small Jinja-aware lexer (tag contents only, string
escapes decoded, concatenated literals joined) that also serves ``tokenizer_config.json``.

A file that starts with ``GGUF`` but has an invalid header is also run through the pickle
engine when it parses as a pickle: ``GGUF`` is a valid pickle opcode prefix (BINFLOAT), so such
a polyglot is a pickle to anything that calls ``pickle.load`` on it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from mlsec.engine import dispatch
from mlsec.engine.context import Inspection
from mlsec.engine.stream import Stream
from mlsec.model import Severity

MAX_KV = 1 << 16              # metadata entries; real files have tens to a few hundred
MAX_TENSORS = 1 << 20         # tensors; the largest real models have a few thousand
MAX_KEY = 1 << 16             # bytes in a key (llama.cpp keys are short dotted names)
MAX_STRING = 1 << 30          # one string value
MAX_ARRAY = 1 << 28           # elements of one array (vocabularies are ~10^5-10^6)
MAX_NESTING = 4               # arrays of arrays
MAX_DIMS = 8                  # GGML_MAX_DIMS is 4
MAX_TEMPLATE = 1 << 20        # template bytes inspected
TEMPLATE_KEY = "tokenizer.chat_template"

# value type -> fixed size in bytes (8 STRING and 9 ARRAY are variable)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_INT_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 10: "Q", 11: "q"}
# ggml tensor type -> (elements per block, bytes per block); from ggml's type traits.
GGML_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}


class GGUFError(Exception):
    """The header cannot be read any further (truncated, impossible count or length)."""


class _Reader:
    """Buffered reads over the stream: vocabularies are 10^5-10^6 tiny strings, and one
    ``Stream.read`` per length field would be one system call each."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.order = "<"
        self._buf = b""
        self._i = 0
        self.pos = 0
        self.length_total = stream.length

    def _ensure(self, n: int) -> bool:
        while len(self._buf) - self._i < n:
            chunk = self.stream.read(max(1 << 16, n - (len(self._buf) - self._i)))
            if not chunk:
                return False
            self._buf = self._buf[self._i :] + chunk
            self._i = 0
        return True

    def take(self, n: int) -> bytes:
        if not self._ensure(n):
            raise GGUFError(f"file ends inside the header (offset {self.pos}, {n} bytes wanted)")
        out = self._buf[self._i : self._i + n]
        self._i += n
        self.pos += n
        return out

    def skip(self, n: int) -> bool:
        """Skip ``n`` bytes; False when the file ends first."""
        avail = len(self._buf) - self._i
        if n <= avail:
            self._i += n
            self.pos += n
            return True
        self._buf, self._i = b"", 0
        done = self.stream.skip(n - avail)
        self.pos += avail + done
        return done == n - avail

    def u32(self) -> int:
        return int(struct.unpack(self.order + "I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(self.order + "Q", self.take(8))[0])

    def left(self) -> int | None:
        return None if self.length_total is None else self.length_total - self.pos

    def length(self, what: str, limit: int, unit: int = 1) -> int:
        n = self.u64()
        left = self.left()
        if n > limit or (left is not None and n * unit > left):
            room = f"{left} bytes remain" if left is not None else f"limit {limit}"
            raise GGUFError(f"{what} of {n} is impossible ({room})")
        return n

    def string(self, what: str, keep: int) -> tuple[str, int]:
        """(first ``keep`` bytes decoded, full length); the rest is skipped."""
        n = self.length(f"{what} length", MAX_STRING)
        head = self.take(min(n, keep))
        if n > keep and not self.skip(n - keep):
            raise GGUFError(f"file ends inside {what}")
        return head.decode("utf-8", "replace"), n


def _bad(insp: Inspection, member: str | None, message: str, key: str, offset: int | None = None,
         severity: Severity | None = None, evidence: dict[str, str] | None = None) -> None:
    insp.add("MLSEC-GGUF-002", message, key=key, member=member, offset=offset, severity=severity, evidence=evidence)


@dispatch.handles("gguf")
def inspect_gguf(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Walk header, metadata and tensor table; check templates, counts and tensor extents."""
    from mlsec.engine.pickle import looks_like_pickle
    from mlsec.sniff import HEAD_SIZE

    head = stream.peek(HEAD_SIZE)
    r = _Reader(stream)
    try:
        r.take(4)
        version = r.u32()
        if version not in (1, 2, 3):
            swapped = struct.unpack(">I", struct.pack("<I", version))[0]
            if swapped not in (2, 3):
                raise GGUFError(f"unknown GGUF version {version}")
            r.order, version = ">", swapped
        if version == 1:
            raise GGUFError("GGUF version 1 (32-bit counts) is obsolete and no current loader reads it")
        n_tensors = r.u64()
        n_kv = r.u64()
        if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
            raise GGUFError(f"implausible counts: {n_tensors} tensors, {n_kv} metadata entries")
        alignment = _metadata(r, n_kv, insp, member)
        _tensors(r, n_tensors, alignment, insp, member)
    except GGUFError as exc:
        _bad(insp, member, f"Malformed GGUF header: {exc}", key="malformed", offset=r.pos,
             evidence={"error": str(exc)[:200]})
        if stream.seekable and looks_like_pickle(head):
            # GGUF magic is also a pickle prefix: what would pickle.load do with this file?
            whole = stream.window(0, stream.length or 0)
            dispatch.run_format("pickle", whole, insp, member, depth)


def _metadata(r: _Reader, n_kv: int, insp: Inspection, member: str | None) -> int:
    alignment = 32
    for _ in range(n_kv):
        insp.check_time()
        key, _n = r.string("key", MAX_KEY)
        if _n > MAX_KEY:
            raise GGUFError(f"metadata key of {_n} bytes")
        vtype = r.u32()
        if vtype == 8 and key.startswith(TEMPLATE_KEY):
            offset = r.pos
            text, full = r.string(f"value of {key}", MAX_TEMPLATE)
            check_template(text, insp, member, key, offset, truncated=full > MAX_TEMPLATE)
        elif key == "general.alignment" and vtype == 4:
            alignment = r.u32()
            if alignment == 0 or alignment & (alignment - 1) or alignment > 1 << 16:
                raise GGUFError(f"general.alignment {alignment} is not a power of two up to 65536")
        else:
            _skip_value(r, vtype, key, 0)
    return alignment


def _skip_value(r: _Reader, vtype: int, key: str, nesting: int) -> None:
    if vtype in _FIXED:
        r.take(_FIXED[vtype])
    elif vtype == 8:
        n = r.length(f"string in {key}", MAX_STRING)
        if not r.skip(n):
            raise GGUFError(f"file ends inside a string of {key}")
    elif vtype == 9:
        if nesting >= MAX_NESTING:
            raise GGUFError(f"arrays nested deeper than {MAX_NESTING} in {key}")
        etype = r.u32()
        if etype in _FIXED:
            count = r.length(f"array {key}", MAX_ARRAY, _FIXED[etype])
            if not r.skip(count * _FIXED[etype]):
                raise GGUFError(f"file ends inside array {key}")
        elif etype in (8, 9):
            count = r.length(f"array {key}", MAX_ARRAY, 8 if etype == 8 else 12)
            for _ in range(count):
                _skip_value(r, etype, key, nesting + 1)
        else:
            raise GGUFError(f"unknown array element type {etype} in {key}")
    else:
        raise GGUFError(f"unknown value type {vtype} for {key}")


def _tensors(r: _Reader, n_tensors: int, alignment: int, insp: Inspection, member: str | None) -> None:
    spans: list[tuple[int, int, str]] = []
    for _ in range(n_tensors):
        name, _n = r.string("tensor name", 256)
        n_dims = r.u32()
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions")
        dims = [r.u64() for _ in range(n_dims)]
        ttype = r.u32()
        offset = r.u64()
        if ttype not in GGML_TYPES:
            _bad(insp, member, f"Tensor {name!r} has unknown ggml type {ttype}", key=f"type {name}",
                 severity=Severity.LOW, evidence={"tensor": name, "type": str(ttype)})
            continue
        if offset % alignment:
            _bad(insp, member, f"Tensor {name!r} offset {offset} is not aligned to {alignment}",
                 key=f"align {name}", evidence={"tensor": name, "offset": str(offset)})
        block, size = GGML_TYPES[ttype]
        count = 1
        for d in dims:
            count *= d
        if count % block:
            _bad(insp, member, f"Tensor {name!r}: {count} elements is not a whole number of {block}-element blocks",
                 key=f"blocks {name}", evidence={"tensor": name})
            continue
        spans.append((offset, offset + count // block * size, name))
    header_end = r.pos
    data_start = header_end + (-header_end % alignment)
    total = r.length_total
    spans.sort()
    prev_end, prev_name = 0, ""
    for start, end, name in spans:
        if total is not None and data_start + end > total:
            _bad(insp, member, f"Tensor {name!r} data ends at {data_start + end}, past the end of the file ({total})",
                 key=f"extent {name}", evidence={"tensor": name, "offset": str(start), "bytes": str(end - start)})
            break
        if start < prev_end:
            _bad(insp, member, f"Tensors {prev_name!r} and {name!r} overlap", key=f"overlap {name}",
                 evidence={"tensor": name, "other": prev_name})
        prev_end, prev_name = max(prev_end, end), name


# ---------------------------------------------------------------------------------------------
# chat templates
# ---------------------------------------------------------------------------------------------

_TAG = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
_RAW = re.compile(r"\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}", re.DOTALL)
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_TOKEN = re.compile(r"""(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"""
                    r"""|(?P<op>\.|\||\[|\]|\(|\)|~|\+|\*|,)""", re.DOTALL)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{1,3}|.)", re.DOTALL)
# Attribute names that lead from a template value to Python internals or the OS.
DANGEROUS_ATTRS = frozenset({"os", "popen", "subprocess", "import_module", "builtins", "globals", "getattr",
                             "mro", "subclasses", "func_globals", "gi_frame", "f_back", "f_globals", "f_builtins",
                             "load_module", "check_output", "Popen"})
# String literals that only make sense as a way to name those internals (not 'system', a chat role).
DANGEROUS_LITERALS = frozenset({"popen", "subprocess", "builtins", "func_globals", "f_globals", "check_output",
                                "import_module", "getattr", "os.system", "os.popen"})
# Global helpers every Jinja environment exposes; their attributes lead to __init__.__globals__.
JINJA_GLOBALS = frozenset({"cycler", "joiner", "namespace", "lipsum", "range", "dict", "self", "config",
                           "request", "url_for", "get_flashed_messages", "loop"})
_LOADING_STATEMENTS = ("import", "include", "extends", "from")
_DANGEROUS_WORDS = re.compile(r"__[A-Za-z]+__|\b(?:os|popen|subprocess|builtins|import|eval|exec|system)\b")


@dataclass(frozen=True)
class TemplateRisk:
    """One reason a template is dangerous to render."""

    severity: Severity
    what: str      # short identity for the finding key
    detail: str    # human explanation with the offending text


def _unescape(literal: str) -> str:
    body = literal[1:-1]

    def one(m: re.Match[str]) -> str:
        seq = m.group(1)
        if seq[0] in "xuU":
            return chr(int(seq[1:], 16))
        if seq[0].isdigit():
            return chr(int(seq, 8))
        return {"n": "\n", "t": "\t", "r": "\r"}.get(seq, seq)

    return _ESCAPE.sub(one, body)


def template_risks(template: str) -> list[TemplateRisk]:
    """What in a Jinja template reaches Python internals (empty for ordinary chat templates)."""
    risks: dict[str, TemplateRisk] = {}

    def add(severity: Severity, what: str, detail: str) -> None:
        if what not in risks or risks[what].severity < severity:
            risks[what] = TemplateRisk(severity, what, detail)

    source = _COMMENT.sub("", _RAW.sub("", template))
    for m in _TAG.finditer(source):
        expr = m.group(1) if m.group(1) is not None else m.group(2)
        if m.group(2) is not None:
            words = expr.strip().lstrip("-+").split(None, 1)
            if words and words[0] in _LOADING_STATEMENTS:
                add(Severity.HIGH, f"statement {words[0]}",
                    f"'{{% {words[0]} %}}' loads other templates through the environment's loader")
        tokens = [(t.lastgroup, t.group()) for t in _TOKEN.finditer(expr)]
        # Join literals concatenated with ~ or + so that '__cla' ~ 'ss__' is seen whole.
        joined: list[tuple[str | None, str]] = []
        for kind, value in tokens:
            if kind == "str":
                value = _unescape(value)
                if len(joined) >= 2 and joined[-1] in (("op", "~"), ("op", "+")) and joined[-2][0] == "lit":
                    joined.pop()
                    value = joined.pop()[1] + value
                joined.append(("lit", value))
            else:
                joined.append((kind, value))
        for i, (kind, value) in enumerate(joined):
            prev = joined[i - 1] if i else (None, "")
            if kind == "name" and prev == ("op", "."):
                owner = joined[i - 2][1] if i >= 2 else ""
                if value.startswith("_"):
                    add(Severity.CRITICAL, f"attr {value}", f"attribute access '.{value}' (from {owner or '?'}) "
                        "reaches Python internals")
                elif value in DANGEROUS_ATTRS:
                    add(Severity.CRITICAL, f"attr {value}", f"attribute access '.{value}' reaches the OS or the "
                        "interpreter")
                elif (owner in JINJA_GLOBALS and owner != "loop" and (i < 3 or joined[i - 3] != ("op", "."))
                      and value not in ("cycle", "next", "reset", "current")):
                    add(Severity.HIGH, f"global {owner}.{value}",
                        f"attribute chain through Jinja global '{owner}.{value}'")
            elif kind == "name" and prev == ("op", "|") and value == "attr":
                add(Severity.CRITICAL, "filter attr", "the 'attr' filter reads arbitrary attributes (a sandbox "
                    "escape technique); benign chat templates never use it")
            elif kind == "lit":
                if "__" in value or value.strip() in DANGEROUS_LITERALS:
                    add(Severity.CRITICAL, f"literal {value[:40]}", f"string literal {value[:60]!r} names Python "
                        "internals (used as an attribute or item key)")
                elif value and set(value) == {"_"}:
                    add(Severity.HIGH, "literal underscores", "a string of only underscores: a building block "
                        "for computed dunder names")
                elif "%c" in value:
                    add(Severity.HIGH, "literal %c", "'%c' format string: builds names from character codes")
            elif kind == "name" and value in ("__import__", "__builtins__", "__globals__"):
                add(Severity.CRITICAL, f"name {value}", f"name '{value}' reaches Python internals")
    return sorted(risks.values(), key=lambda r: (-r.severity, r.what))


def check_template(text: str, insp: Inspection, member: str | None, key: str, offset: int | None,
                   truncated: bool = False, rule: str = "MLSEC-GGUF-001", cap: Severity | None = None) -> None:
    """Report each risk of a chat template (``cap`` lowers severities for sandboxed runtimes)."""
    if truncated:
        insp.add(
            "MLSEC-GGUF-002",
            f"{key} is longer than {MAX_TEMPLATE} bytes; only the beginning was inspected",
            key=f"template-size {key}",
            member=member,
            offset=offset,
        )
    for risk in template_risks(text):
        severity = risk.severity if cap is None else min(risk.severity, cap)
        snippet = _snippet(text, risk)
        insp.add(
            rule,
            f"Chat template {key} can reach Python internals when rendered: {risk.detail}",
            key=f"template {key} {risk.what}",
            member=member,
            offset=offset,
            severity=severity,
            evidence={"template": key, "risk": risk.what, "snippet": snippet},
        )


def _snippet(text: str, risk: TemplateRisk) -> str:
    needle = risk.what.split(" ", 1)[-1].split(".")[-1]
    at = text.find(needle)
    if at < 0:
        m = _DANGEROUS_WORDS.search(text)
        at = m.start() if m else 0
    start = max(0, at - 40)
    return " ".join(text[start : at + 60].split())[:120]
