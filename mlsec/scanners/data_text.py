"""Text datasets (CSV, TSV, JSON, JSON Lines, and their gzip/bz2/xz variants).

Three checks, all on streamed text with bounded memory:

* **formula injection** (CSV/TSV only; they end up in spreadsheets): cells that a spreadsheet
  runs as a formula -- ``=...``, or ``+``/``-``/``@`` followed by a function call, and DDE
  payloads like ``=cmd|' /C calc'!A0`` -- also behind a leading TAB or CR. Negative numbers,
  phone numbers, Markdown bullets and ``@handles`` are not formulas;
* **personal data** (:mod:`mlsec.detect.pii`) and **credentials** (:mod:`mlsec.detect.secrets`),
  counted per kind and per column (CSV header, or the JSON key a value belongs to).

Reports never contain a value: counts, masked samples (first characters and length), the line
of the first occurrence. Column names come from the file too, so a header cell that itself
looks like personal data is replaced by its position (``column 3``).

Big files: content is read in full up to a byte budget (``MLSEC_DATA_BUDGET_MB``, default 256;
0 means no limit); above it, evenly spaced byte windows adding up to the budget are read,
each starting at a line boundary, and the coverage (bytes and rows scanned versus total) is
recorded in the findings' evidence, an INFO finding and the ``dataset.coverage`` fact.
Compressed files are read from the start up to the same budget of decompressed text.

Cells are not checked one by one: the values of each column are joined per batch of rows and
each detector runs once per column and batch, which is what makes pure-Python detection fast
enough for gigabyte files.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import json
import lzma
import os
import re
import time
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from mlsec import __version__
from mlsec.detect.pii import find_pii
from mlsec.detect.pii import mask as pii_mask
from mlsec.engine.context import DeadlineExceeded
from mlsec.fsio import open_regular
from mlsec.model import Artifact, Fact, Finding, Location, Severity, Skip
from mlsec.registry import ScanContext, register

BUDGET_ENV = "MLSEC_DATA_BUDGET_MB"
DEFAULT_BUDGET_MB = 256
WINDOWS = 16                 # byte windows spread over a file that exceeds the budget
BATCH_CHARS = 4 << 20        # text per column batch before the detectors run
BATCH_ROWS = 4096
MAX_LINE = 8 << 20           # a longer physical line is read in pieces (never whole)
MAX_FIELD = 64 << 20         # csv field size limit while scanning (default is 128 KiB)
MAX_COLUMNS = 1000           # distinct columns/keys tracked; the rest are pooled
MAX_SAMPLES = 3
MAX_BAD_ROWS = 1000

TEXT_FORMATS = frozenset({"csv", "tsv", "json", "jsonl"})
def _gzip(fh: IO[bytes]) -> IO[bytes]:
    return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]


def _bz2(fh: IO[bytes]) -> IO[bytes]:
    return bz2.BZ2File(fh, "rb")


def _xz(fh: IO[bytes]) -> IO[bytes]:
    return lzma.LZMAFile(fh, "rb")


COMPRESSED: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {"gzip": _gzip, "bz2": _bz2, "xz": _xz, "lzma": _xz}
_INNER_EXT = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# JSON files that are configuration, not data: no personal-data check (credentials still are).
CONFIG_JSON = re.compile(
    r"(^|/)(package(-lock)?|composer|tsconfig[\w.-]*|jsconfig|\.?eslintrc|\.?babelrc|config|"
    r"generation_config|tokenizer(_config)?|special_tokens_map|vocab|added_tokens|preprocessor_config|"
    r"adapter_config|dataset_infos?|state|[\w.-]*\.config|launch|settings|manifest)\.json$",
    re.IGNORECASE,
)

OTHER_COLUMNS = "(other columns)"


# --- budget and coverage ------------------------------------------------------------------

def data_budget() -> int:
    """Content bytes to read per file before sampling (``MLSEC_DATA_BUDGET_MB``; 0 = no limit)."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_BUDGET_MB
    except ValueError:
        mb = DEFAULT_BUDGET_MB
    if mb <= 0:
        return 1 << 62
    return max(1, int(mb * (1 << 20)))


@dataclass
class Coverage:
    """How much of a dataset's content was read (bytes of the file, rows when known)."""

    bytes_scanned: int = 0
    bytes_total: int = 0
    rows_scanned: int = 0
    rows_total: int | None = None
    rows_estimated: bool = False
    note: str = ""

    @property
    def complete(self) -> bool:
        """True when every byte (and so every row) was read."""
        return self.bytes_scanned >= self.bytes_total and not self.rows_estimated

    def describe(self) -> str:
        """``bytes 104857600/1073741824; rows 1000000/~10000000`` (``~``: estimated)."""
        text = f"bytes {self.bytes_scanned}/{self.bytes_total}"
        if self.rows_total is not None:
            text += f"; rows {self.rows_scanned}/{'~' if self.rows_estimated else ''}{self.rows_total}"
        elif self.rows_scanned:
            text += f"; rows {self.rows_scanned}/?"
        return text


# --- tallies ------------------------------------------------------------------------------

@dataclass
class _Stat:
    count: int = 0
    line: int | None = None
    samples: list[str] = field(default_factory=list)
    extra: set[str] = field(default_factory=set)


PII_RULES = {
    "credit_card": "MLSEC-DATA-004", "us_ssn": "MLSEC-DATA-004", "iban": "MLSEC-DATA-004",
    "email": "MLSEC-DATA-005", "phone": "MLSEC-DATA-005", "ip_address": "MLSEC-DATA-006",
}
_LABELS = {
    "credit_card": "payment card number", "us_ssn": "US social security number", "iban": "IBAN",
    "email": "e-mail address", "phone": "phone number", "ip_address": "public IP address",
    "formula": "cell starting a spreadsheet formula",
    "dde": "cell with a DDE, command or data-exfiltrating formula",
}
_SECRET_UNAVAILABLE: list[str] = []


def _secret_finder() -> Callable[[str], list[Any]] | None:
    """The shared credential detector, imported on first use (None if it cannot be imported)."""
    try:
        from mlsec.detect.secrets import find_secrets
    except ImportError as exc:  # the detector ships with mlsec; this only guards a broken install
        if not _SECRET_UNAVAILABLE:
            _SECRET_UNAVAILABLE.append(str(exc))
        return None
    return find_secrets


class Tally:
    """Counts and masked samples of sensitive values per (category, kind, column).

    Only masked forms ever enter a tally. Column names are cleaned by :meth:`column_name`
    before they get here.
    """

    def __init__(self, secrets: bool = True) -> None:
        self.stats: dict[tuple[str, str, str], _Stat] = {}
        self._secrets = _secret_finder() if secrets else None
        self.secrets_checked = self._secrets is not None
        self._names: dict[str, str] = {}
        self._columns: set[str] = set()
        # Raw key names that are themselves personal data or credentials -> their masked hits.
        self.sensitive_names: dict[str, list[tuple[str, str, str]]] = {}

    # -- names ---------------------------------------------------------------------------
    def column_name(self, raw: str, index: int | None = None) -> str:
        """A column or key name safe to print: never a value that looks sensitive."""
        cached = self._names.get(raw)
        if cached is not None:
            return cached
        name = "".join(ch if ch.isprintable() else " " for ch in raw).strip()
        if len(name) > 64:
            name = name[:61] + "..."
        hits = [("pii", h.kind, h.masked) for h in find_pii(raw)]
        if self._secrets is not None:
            hits += [("secret", h.kind, h.masked) for h in self._secrets(raw)]
        if hits and len(self.sensitive_names) < 4 * MAX_COLUMNS:
            self.sensitive_names[raw] = hits
        if hits or not name:
            name = f"column {index + 1}" if index is not None else "(unnamed key)"
        if len(self._names) < 4 * MAX_COLUMNS:
            self._names[raw] = name
        return name

    def _stat(self, category: str, kind: str, column: str) -> _Stat:
        key = (category, kind, column)
        stat = self.stats.get(key)
        if stat is None:
            if column not in self._columns:
                if len(self._columns) >= MAX_COLUMNS:
                    return self._stat(category, kind, OTHER_COLUMNS)
                self._columns.add(column)
            stat = self.stats[key] = _Stat()
        return stat

    def record(self, category: str, kind: str, column: str, masked: str, line: int | None,
               extra: Iterable[str] = ()) -> None:
        """Count one hit (``masked`` must already be masked)."""
        stat = self._stat(category, kind, column)
        stat.count += 1
        if stat.line is None or (line is not None and line < stat.line):
            stat.line = line
        if len(stat.samples) < MAX_SAMPLES and masked not in stat.samples:
            stat.samples.append(masked)
        for item in extra:
            if len(stat.extra) < 8:
                stat.extra.add(item)

    # -- detection -------------------------------------------------------------------------
    def scan_column(self, column: str, values: Sequence[str], lines: Sequence[int | None] | None,
                    formulas: bool = False) -> None:
        """Run the detectors once over a batch of one column's values."""
        if not values:
            return
        blob = "\n".join(values)
        if not blob.strip():
            return
        starts: list[int] | None = None

        def line_of(offset: int) -> int | None:
            nonlocal starts
            if lines is None:
                return None
            if starts is None:
                starts = list(itertools.accumulate((len(v) + 1 for v in values[:-1]), initial=0))
            return lines[bisect_right(starts, offset) - 1]

        for hit in find_pii(blob):
            self.record("pii", hit.kind, column, hit.masked, line_of(hit.start))
        if self._secrets is not None and not _NUMERIC_BLOB.fullmatch(blob):
            for shit in self._secrets(blob):
                self.record("secret", shit.kind, column, shit.masked, line_of(shit.start))
        if formulas and _FORMULA_CANDIDATE.search(blob):
            for i, value in enumerate(values):
                verdict = classify_formula(value)
                if verdict is not None:
                    kind, functions = verdict
                    self.record("formula", kind, column, _mask_formula(value),
                                lines[i] if lines is not None else None, functions)

    @property
    def sensitive_kinds(self) -> list[str]:
        """Kinds of personal data found, plus ``secret`` when credentials were found."""
        kinds = {k for (cat, k, _c) in self.stats if cat == "pii"}
        if any(cat == "secret" for (cat, _k, _c) in self.stats):
            kinds.add("secret")
        return sorted(kinds)

    def findings(self, path: str, scanner: str, coverage: Coverage,
                 location: Callable[[int | None], Location] | None = None) -> list[Finding]:
        """One finding per (kind, column), worst first; evidence holds counts and masked samples."""
        out = []
        for (category, kind, column), stat in sorted(self.stats.items()):
            if category == "pii":
                rule, label = PII_RULES[kind], _LABELS[kind]
            elif category == "secret":
                rule, label = "MLSEC-DATA-007", f"credential ({kind})"
            else:
                rule, label = ("MLSEC-DATA-003" if kind == "dde" else "MLSEC-DATA-002"), _LABELS[kind]
            plural = label if stat.count == 1 else _plural(label)
            evidence = {
                "kind": kind,
                "column": column,
                "count": str(stat.count),
                "masked_samples": ", ".join(stat.samples),
                "coverage": coverage.describe(),
            }
            if stat.extra:
                evidence["functions"] = ",".join(sorted(stat.extra))
            if category == "secret":
                evidence["secret_rule"] = _secret_rule(kind)
            loc = location(stat.line) if location else Location(line=stat.line, pointer=column)
            out.append(Finding(
                rule_id=rule,
                severity=_severity(rule),
                message=f"{stat.count} {plural} in column {column!r}"
                        + ("" if coverage.complete else " (sampled content)"),
                path=path,
                scanner=scanner,
                location=loc,
                key=f"{category}|{kind}|{column}",
                evidence=tuple(sorted((k, v) for k, v in evidence.items() if v)),
            ))
        return out


def _plural(label: str) -> str:
    if label.startswith("cell "):
        return "cells " + label[5:]
    if label.startswith("credential"):
        return "credentials" + label[len("credential"):]
    return label + ("es" if label.endswith("ss") else "s")


def _secret_rule(kind: str) -> str:
    try:
        from mlsec.detect.secrets import rule_for_kind
        return rule_for_kind(kind)
    except (ImportError, KeyError):
        return ""


def _severity(rule_id: str) -> Severity:
    from mlsec import catalog

    return catalog.rules()[rule_id].severity


# --- formulas -----------------------------------------------------------------------------

_FORMULA_LEAD = "=+-@\t\r"
# Cheap column-level test: a cell (line) starting with "=", or "+"/"-"/"@" and holding a letter,
# a pipe or a parenthesis somewhere. Pure numbers and phone numbers never pass.
_FORMULA_CANDIDATE = re.compile(r"(?m)^[\t\r]*(?:=|[+@-](?=[^\n]*[A-Za-z|(]))")
_NUMERIC_BLOB = re.compile(r"[\d\s.,:+eE%$()/-]*")
_NUMBER = re.compile(r"[+-]?\s*(?:\d[\d,_ ]*)?(?:\.\d+)?(?:[eE][+-]?\d+)?%?")
_PHONE_LIKE = re.compile(r"\+?[\d\s().-]{6,}")
_DDE = re.compile(
    r"""[\w.\\]+\s*\|\s*['"][^'"\n]*['"]?\s*!"""
    r"|\b(?:cmd|powershell|pwsh|mshta|msexcel|rundll32|regsvr32|wscript|cscript|certutil|bitsadmin)\b\s*\|"
    r"|\bDDE(?:AUTO)?\s*\(",
    re.IGNORECASE,
)
_DANGEROUS = (r"(HYPERLINK|WEBSERVICE|IMPORTXML|IMPORTDATA|IMPORTHTML|IMPORTFEED|IMPORTRANGE|IMAGE|FILTERXML|"
              r"CALL|REGISTER(?:\.ID)?|EXEC|RTD|SHELL)\s*\(")
_DANGEROUS_FN = re.compile(r"\b" + _DANGEROUS, re.IGNORECASE)
_SIGNED_DANGEROUS = re.compile(r"[+\-@]\s*" + _DANGEROUS, re.IGNORECASE)
# After a + - @ sign: operands and operators, then an upper-case function call.
_SIGNED_CALL = re.compile(r"[+\-@]\s*(?:[\w.$:]+\s*[-+*/^&]\s*)*([A-Z][A-Z0-9._]*)\s*\(")
_RULE_ART = re.compile(r"[=\-_~*#<>.: ]*")
_FUNCTION_NAMES = re.compile(r"\b([A-Za-z][A-Za-z0-9._]{1,30})\s*\(")


def classify_formula(cell: str) -> tuple[str, list[str]] | None:
    """``("dde"|"formula", function names)`` when a spreadsheet would run ``cell``, else None.

    ``dde`` covers DDE/command payloads and functions that fetch URLs or call code (the
    exfiltration and execution cases); ``formula`` any other formula.
    """
    if not cell or cell[0] not in _FORMULA_LEAD:
        return None
    s = cell.lstrip("\t\r\n")
    if not s or s[0] not in "=+-@":
        return None
    dangerous = bool(_DDE.search(s) or _DANGEROUS_FN.search(s))
    if s[0] == "=":
        rest = s[1:].lstrip(" ")
        if not rest or _RULE_ART.fullmatch(rest) or (rest[0] in "=>" and not dangerous):
            return None  # "=====" rules, "== Heading ==", "=> arrow"
    else:
        if _NUMBER.fullmatch(s) or _PHONE_LIKE.fullmatch(s):
            return None
        if not (_DDE.search(s) or _SIGNED_CALL.match(s) or _SIGNED_DANGEROUS.match(s)):
            return None  # "- a list item", "@handle says", "+1 more"
    functions = sorted({m.group(1).upper() for m in _FUNCTION_NAMES.finditer(s[:4096])})[:8]
    return ("dde" if dangerous else "formula"), functions


def _mask_formula(value: str) -> str:
    """Masked like personal data (the cell may hold some), with a leading TAB/CR made visible."""
    s = value.lstrip("\t\r\n")
    prefix = "".join({"\t": "\\t", "\r": "\\r", "\n": "\\n"}[c] for c in value[: len(value) - len(s)])
    return prefix + pii_mask(s)


# --- reading text -------------------------------------------------------------------------

def _encoding(head: bytes) -> str:
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if len(head) >= 64 and head[1:64:2].count(0) > 24 and head[0:64:2].count(0) < 4:
        return "utf-16-le"
    return "utf-8"


@dataclass
class _Segment:
    """A piece of text to scan: the whole file (streamed) or one sampled byte window."""

    lines: Iterator[str]
    first_line: int | None   # physical line number of its first line, when known
    offset: int              # byte offset of its first byte


def _stream_lines(text: IO[str]) -> Iterator[str]:
    while True:
        line = text.readline(MAX_LINE)
        if not line:
            return
        yield line


def _segments(fh: IO[bytes], size: int, budget: int, cov: Coverage) -> Iterator[_Segment]:
    """The whole file when it fits the budget, else evenly spaced windows cut at line ends."""
    peek = getattr(fh, "peek", None)
    head = peek(4096)[:4096] if peek is not None else b""
    enc = _encoding(head)
    cov.bytes_total = size
    if size <= budget:
        text = io.TextIOWrapper(fh, encoding=enc, errors="replace", newline="")
        try:
            yield _Segment(_stream_lines(text), 1, 0)
        finally:
            text.detach()
        cov.bytes_scanned = size
        return
    if enc.startswith("utf-16"):  # windows would need 2-byte alignment: read the head only
        head_window = _Window(fh, 0, budget & ~1, size, finish_line=False)
        text = io.TextIOWrapper(io.BufferedReader(head_window, 1 << 20), encoding=enc, errors="replace",
                                newline="")
        try:
            yield _Segment(_stream_lines(text), 1, 0)
        finally:
            text.detach()
        cov.bytes_scanned = head_window.count
        cov.note = "head only (UTF-16)"
        return
    count = max(1, min(WINDOWS, budget // (1 << 20)))
    width = budget // count
    stride = (size - width) / max(1, count - 1) if count > 1 else 0
    prev_end = 0
    for i in range(count):
        start = max(prev_end, int(i * stride))
        if start >= size:
            break
        fh.seek(start)
        if start > 0:  # resynchronise on the next line break
            partial = fh.readline(1 << 20)
            if not partial.endswith(b"\n"):
                continue
            start += len(partial)
        window = _Window(fh, start, min(size, start + width), size)
        text = io.TextIOWrapper(io.BufferedReader(window, 1 << 20), encoding=enc if start == 0 else "utf-8",
                                errors="replace", newline="")
        try:
            yield _Segment(_stream_lines(text), 1 if start == 0 else None, start)
        finally:
            text.detach()
        cov.bytes_scanned += window.count
        prev_end = start + window.count


class _Window(io.RawIOBase):
    """Bytes ``[start, end)`` of a file, then on to the end of the line that ``end`` cuts."""

    def __init__(self, fh: IO[bytes], start: int, end: int, size: int, finish_line: bool = True) -> None:
        self._fh, self._pos, self._end, self._size = fh, start, end, size
        self._finish = finish_line
        self._done = False
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._done or self._pos >= self._size or (self._pos >= self._end and not self._finish):
            return 0
        self._fh.seek(self._pos)
        if self._pos < self._end:
            data = self._fh.read(min(len(b), self._end - self._pos))
        else:  # past the window: finish the current line (at most 1 MiB more)
            data = self._fh.read(min(len(b), 1 << 16))
            cut = data.find(b"\n")
            if cut >= 0 or self._pos - self._end > 1 << 20:
                data = data[: cut + 1] if cut >= 0 else data
                self._done = True
        if not data:
            return 0
        b[: len(data)] = data
        self._pos += len(data)
        self.count += len(data)
        return len(data)


# --- CSV / TSV ----------------------------------------------------------------------------

def _delimiter(first_line: str, default: str) -> str:
    if default == "\t":
        return "\t"
    counts = {d: first_line.count(d) for d in ",;\t|"}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


@dataclass
class TextResult:
    """What a text dataset scan found, before it becomes findings and facts."""

    tally: Tally
    coverage: Coverage
    columns: int | None = None
    rows_exact: bool = False
    problems: list[tuple[str, int | None]] = field(default_factory=list)  # (message, line)
    timed_out: str = ""  # set when the time budget ran out (what was read is still reported)


class _Deadline(Exception):
    pass


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise _Deadline


def scan_csv(fh: IO[bytes], size: int, *, tsv: bool = False, budget: int | None = None,
             secrets: bool = True, deadline: float | None = None) -> TextResult:
    """Scan delimited text: formulas, personal data and credentials per column.

    ``deadline`` (a ``time.monotonic()`` value): past it, the scan stops and ``timed_out`` is set.
    """
    budget = data_budget() if budget is None else budget
    cov = Coverage()
    tally = Tally(secrets)
    result = TextResult(tally, cov)
    try:
        return _scan_csv(fh, size, tsv, budget, deadline, result)
    except _Deadline:
        result.timed_out = "time budget exhausted while reading CSV"
        return result


def _scan_csv(fh: IO[bytes], size: int, tsv: bool, budget: int, deadline: float | None,
              result: TextResult) -> TextResult:
    cov, tally = result.coverage, result.tally
    names: list[str] = []
    header_done = False
    delimiter = ""
    rows = 0
    bad = 0
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, MAX_FIELD))
    try:
        for seg in _segments(fh, size, budget, cov):
            first = next(seg.lines, "")
            if not first:
                continue
            delimiter = delimiter or _delimiter(first, "\t" if tsv else ",")
            reader = csv.reader(itertools.chain([first], seg.lines), delimiter=delimiter)
            batch: list[list[str]] = []
            where: list[int | None] = []
            held = 0
            base = (seg.first_line or 1) - 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    bad += 1
                    if bad == 1:
                        result.problems.append((f"unparsable record ({exc})", base + reader.line_num))
                    if bad > MAX_BAD_ROWS:
                        message = f"more than {MAX_BAD_ROWS} unparsable records; the rest was not read"
                        result.problems.append((message, base + reader.line_num))
                        cov.bytes_scanned = min(cov.bytes_scanned, size - 1)
                        return _finish_csv(result, names, rows, header_done, size)
                    continue
                if not header_done:
                    header_done = True
                    if _is_header(row, tally):
                        names = [tally.column_name(c, i) for i, c in enumerate(row)]
                        continue
                    names = [f"column {i + 1}" for i in range(len(row))]
                rows += 1
                batch.append(row)
                where.append(base + reader.line_num if seg.first_line is not None else None)
                held += sum(map(len, row))
                if held >= BATCH_CHARS or len(batch) >= BATCH_ROWS:
                    _flush(tally, names, batch, where)
                    batch, where, held = [], [], 0
                    _check(deadline)
            _flush(tally, names, batch, where)
    finally:
        csv.field_size_limit(old_limit)
    return _finish_csv(result, names, rows, header_done, size)


def _finish_csv(result: TextResult, names: list[str], rows: int, header_done: bool, size: int) -> TextResult:
    cov = result.coverage
    cov.rows_scanned = rows
    if cov.bytes_scanned >= size:
        cov.rows_total = rows
        result.rows_exact = True
    elif cov.bytes_scanned:
        cov.rows_total = int(rows * size / cov.bytes_scanned)
        cov.rows_estimated = True
    result.columns = len(names) if header_done else None
    return result


def _is_header(row: list[str], tally: Tally) -> bool:
    """A first row is a header unless a cell is a number, a formula or a sensitive value."""
    for cell in row:
        stripped = cell.strip()
        if not stripped:
            continue
        if _NUMBER.fullmatch(stripped) or classify_formula(cell) or find_pii(cell):
            return False
    return bool(row)


def _flush(tally: Tally, names: list[str], batch: list[list[str]], where: list[int | None]) -> None:
    if not batch:
        return
    lines = where if where[0] is not None else None
    for i, values in enumerate(itertools.zip_longest(*batch, fillvalue="")):
        name = names[i] if i < len(names) else f"column {i + 1}"
        tally.scan_column(name, values, lines, formulas=True)


# --- JSON / JSON Lines --------------------------------------------------------------------

# A JSON string (no raw newline can occur in one), and whether a colon follows (then it is a key).
_JSON_STRING = re.compile(r'"([^"\\\n]*(?:\\.[^"\\\n]*)*)"(\s*:)?')
_STRING_REST = re.compile(r'[^"\\\n]*(?:\\.[^"\\\n]*)*"')
_JSON_CHUNK = 4 << 20
ROOT = "$"
KEY_NAMES = "(key names)"  # personal data or credentials used as JSON object keys


def _decode_json_string(raw: str) -> str:
    if "\\" not in raw:
        return raw
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


class _LineCounter:
    """Counts non-blank lines (JSON Lines records) as they stream past."""

    def __init__(self) -> None:
        self.records = 0
        self._open = False  # inside a line longer than MAX_LINE (read in pieces)

    def wrap(self, lines: Iterator[str]) -> Iterator[str]:
        for piece in lines:
            complete = piece.endswith("\n")
            if not self._open and piece.strip():
                self.records += 1
                self._open = not complete
            elif self._open and complete:
                self._open = False
            yield piece
        self._open = False


def scan_json(fh: IO[bytes], size: int, *, lines_format: bool, budget: int | None = None,
              secrets: bool = True, pii: bool = True, deadline: float | None = None) -> TextResult:
    """Scan JSON or JSON Lines without parsing whole documents (bounded memory, no recursion).

    A lexer walks string tokens; a string followed by ``:`` is a key, any other string a value
    attributed to the most recent key. Nesting does not matter for that and cannot be abused.
    """
    budget = data_budget() if budget is None else budget
    result = TextResult(Tally(secrets), Coverage())
    try:
        return _scan_json(fh, size, lines_format, budget, pii, deadline, result)
    except _Deadline:
        result.timed_out = "time budget exhausted while reading JSON"
        return result


def _scan_json(fh: IO[bytes], size: int, lines_format: bool, budget: int, pii: bool, deadline: float | None,
               result: TextResult) -> TextResult:
    cov, tally = result.coverage, result.tally
    counter = _LineCounter()
    for seg in _segments(fh, size, budget, cov):
        key = ROOT
        carry = ""
        skipping = False  # inside a string longer than MAX_LINE: skip to its end
        line = seg.first_line
        for piece, final in _chunked(counter.wrap(seg.lines)):
            text = carry + piece
            carry = ""
            if skipping:
                m = _STRING_REST.match(text)
                if m is None:
                    if line is not None:
                        line += text.count("\n")
                    continue
                skipping = False
                if line is not None:
                    line += text.count("\n", 0, m.end())
                text = text[m.end():]
            values: dict[str, list[str]] = {}
            where: dict[str, list[int | None]] = {}
            # A key's colon may sit at the start of the next piece: leave the tail for then.
            cutoff = len(text) if final else max(0, len(text) - 256)
            last = 0
            nl_pos = 0
            for m in _JSON_STRING.finditer(text):
                if m.end() > cutoff:
                    break
                last = m.end()
                raw = m.group(1)
                if m.group(2):
                    decoded = _decode_json_string(raw)
                    key = tally.column_name(decoded) if raw else "(empty key)"
                    for category, kind, masked in tally.sensitive_names.get(decoded, ()):
                        tally.record(category, kind, KEY_NAMES, masked, line)
                    continue
                if not raw:
                    continue
                if line is not None:
                    line += text.count("\n", nl_pos, m.start())
                    nl_pos = m.start()
                values.setdefault(key, []).append(_decode_json_string(raw))
                where.setdefault(key, []).append(line)
            if not final:
                quote = text.find('"', last)
                if quote >= 0:
                    carry = text[quote:]
                    if len(carry) > MAX_LINE:
                        # One enormous string: scan what is here, then skip to its end.
                        whole = _JSON_STRING.match(carry)
                        cut = whole.end() if whole is not None else len(carry)
                        values.setdefault(key, []).append(carry[1:cut])
                        where.setdefault(key, []).append(line)
                        skipping = whole is None
                        carry = carry[cut:]
            if line is not None:
                line += text.count("\n", nl_pos, len(text) - len(carry))
            for k, vals in values.items():
                _scan_json_values(tally, k, vals, where[k], pii)
            _check(deadline)
    if lines_format:
        records = counter.records
        cov.rows_scanned = records
        if cov.bytes_scanned >= size:
            cov.rows_total = records
            result.rows_exact = True
        elif cov.bytes_scanned:
            cov.rows_total = int(records * size / cov.bytes_scanned)
            cov.rows_estimated = True
        result.columns = _top_level_columns(fh, size) if fh.seekable() else None
    return result


def _top_level_columns(fh: IO[bytes], size: int) -> int | None:
    """Distinct top-level keys of the first JSON Lines records (what "columns" means there)."""
    fh.seek(0)
    keys: set[str] = set()
    for _ in range(100):
        line = fh.readline(1 << 20)
        if not line:
            break
        if len(line) >= 1 << 20 or not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            keys.update(record)
    return len(keys) or None


def _scan_json_values(tally: Tally, key: str, vals: list[str], lines: list[int | None], pii: bool) -> None:
    if pii:
        tally.scan_column(key, vals, lines if lines[0] is not None else None)
        return
    # Credentials only (configuration files): same batching, no personal-data detector.
    finder = tally._secrets
    if finder is None:
        return
    blob = "\n".join(vals)
    starts = list(itertools.accumulate((len(v) + 1 for v in vals[:-1]), initial=0))
    for hit in finder(blob):
        idx = bisect_right(starts, hit.start) - 1
        tally.record("secret", hit.kind, key, hit.masked, lines[idx])


def _chunked(lines: Iterator[str]) -> Iterator[tuple[str, bool]]:
    """Group lines into ~4 MiB pieces; the flag marks the last piece."""
    buf: list[str] = []
    held = 0
    ready: str | None = None
    for line in lines:
        buf.append(line)
        held += len(line)
        if held >= _JSON_CHUNK:
            if ready is not None:
                yield ready, False
            ready, buf, held = "".join(buf), [], 0
    if buf:
        if ready is not None:
            yield ready, False
        ready = "".join(buf)
    yield (ready or ""), True


# --- the scanner --------------------------------------------------------------------------

def text_format(artifact: Artifact) -> tuple[str, bool] | None:
    """(format, compressed) of a text dataset artifact, or None when this is not one."""
    if artifact.format in TEXT_FORMATS:
        return artifact.format, False
    if artifact.format in COMPRESSED:
        lower = artifact.path.lower()
        stem = lower.rsplit(".", 1)[0] if "." in lower.rsplit("/", 1)[-1] else lower
        for ext, fmt in _INNER_EXT.items():
            if stem.endswith(ext):
                return fmt, True
    return None


class _CountingReader(io.RawIOBase):
    """Decompressed bytes, counted and capped; damaged compressed data ends the stream early.

    The error is kept (``error``) so the scan reports what it read and then the damage.
    """

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self._read = getattr(inner, "read1", inner.read)
        self.limit = limit
        self.count = 0
        self.error: str = ""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        room = self.limit - self.count
        if room <= 0 or self.error:
            return 0
        view = memoryview(b)[: min(len(b), room)]
        try:
            # read1: what one step of decompression gives, so damage later on loses nothing before it.
            data = self._read(len(view))
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return 0
        view[: len(data)] = data
        self.count += len(data)
        return len(data)


def scan_file(fh: IO[bytes], size: int, fmt: str, *, path: str = "", budget: int | None = None,
              secrets: bool = True, deadline: float | None = None) -> TextResult:
    """Dispatch one uncompressed text dataset to its scanner."""
    if fmt in ("csv", "tsv"):
        return scan_csv(fh, size, tsv=fmt == "tsv", budget=budget, secrets=secrets, deadline=deadline)
    return scan_json(fh, size, lines_format=fmt == "jsonl", budget=budget, secrets=secrets, deadline=deadline,
                     pii=not (fmt == "json" and CONFIG_JSON.search(path)))


def secrets_claimed(artifact: Artifact) -> bool:
    """Does the credential scanner already read this file whole (small configuration JSON)?

    Then its findings (MLSEC-SECRET-*) cover credentials and this scanner does not repeat them.
    """
    try:
        from mlsec.scanners.secrets import _wanted
    except ImportError:
        return False
    return bool(_wanted(artifact))


def scan_compressed(fh: IO[bytes], size: int, fmt: str, codec: str, *, path: str = "",
                    budget: int | None = None, secrets: bool = True, deadline: float | None = None) -> TextResult:
    """Read a compressed text dataset from its start up to the budget of decompressed text."""
    budget = data_budget() if budget is None else budget
    with COMPRESSED[codec](fh) as inner:
        counted = _CountingReader(inner, budget)
        buffered = io.BufferedReader(counted, 1 << 20)
        # The decompressed size is unknown: stream it as one segment, never sampled windows.
        result = scan_file(buffered, 1 << 62, fmt, path=path, budget=1 << 62, secrets=secrets, deadline=deadline)
        truncated = not counted.error and counted.count >= budget and bool(counted.limit and _more(inner))
    cov = result.coverage
    cov.bytes_total = size
    complete = not truncated and not counted.error
    cov.bytes_scanned = size if complete else min(size - 1, fh.tell())
    cov.note = f"{codec}: {counted.count} decompressed bytes read" + (" (budget reached)" if truncated else "")
    if counted.error:
        result.problems.append((f"compressed data is damaged after {counted.count} bytes ({counted.error})", None))
    result.rows_exact = complete and fmt != "json" and not result.timed_out
    cov.rows_estimated = False
    cov.rows_total = cov.rows_scanned if result.rows_exact else None
    return result


def _more(inner: IO[bytes]) -> bool:
    try:
        return bool(inner.read(1))
    except (OSError, EOFError, lzma.LZMAError, zlib.error):
        return True


def dataset_facts(path: str, scanner: str, tally: Tally, cov: Coverage, *, rows: int | None,
                  columns: int | None) -> list[Fact]:
    """The ML-BOM facts every dataset scanner reports (shared with the Parquet/Arrow scanner)."""
    facts = [Fact(path, "dataset.coverage", cov.describe(), scanner)]
    kinds = tally.sensitive_kinds
    if kinds:
        facts.append(Fact(path, "dataset.sensitive_kinds", ",".join(kinds), scanner))
    if rows is not None:
        facts.append(Fact(path, "dataset.rows", str(rows), scanner))
    if columns is not None:
        facts.append(Fact(path, "dataset.columns", str(columns), scanner))
    return facts


def coverage_finding(path: str, scanner: str, cov: Coverage) -> Finding:
    """INFO finding that says the content was sampled, with the coverage."""
    evidence = {"coverage": cov.describe(), "budget_env": BUDGET_ENV}
    if cov.note:
        evidence["note"] = cov.note
    return Finding(
        rule_id="MLSEC-DATA-014",
        severity=_severity("MLSEC-DATA-014"),
        message=f"Content sampled, not read in full ({cov.describe()})",
        path=path,
        scanner=scanner,
        key="sampled",
        evidence=tuple(sorted(evidence.items())),
    )


@register
class DataTextScanner:
    """Formula injection, personal data and credentials in CSV/TSV/JSON/JSONL datasets."""

    name = "mlsec-data-text"
    cacheable = True  # the budget is part of the version, so a changed budget re-scans

    @property
    def version(self) -> str:
        """Scanner version plus the byte budget (both change what is reported)."""
        return f"{__version__}+data1;budget={data_budget()}"

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """CSV, TSV, JSON and JSON Lines files, plain or gzip/bz2/xz-compressed."""
        return text_format(artifact) is not None

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip | Fact]:
        """Stream the file once (or its sampled windows) and report per kind and column."""
        detected = text_format(artifact)
        assert detected is not None
        fmt, compressed = detected
        secrets = not secrets_claimed(artifact)
        if not secrets and fmt == "json" and CONFIG_JSON.search(artifact.path):
            return  # configuration: its credentials are the secrets scanner's, and it holds no records
        deadline = time.monotonic() + ctx.limits.timeout
        with open_regular(artifact.fs_path) as fh:
            size = os.fstat(fh.fileno()).st_size
            try:
                if compressed:
                    result = scan_compressed(fh, size, fmt, artifact.format, path=artifact.path, secrets=secrets,
                                             deadline=deadline)
                else:
                    result = scan_file(fh, size, fmt, path=artifact.path, secrets=secrets, deadline=deadline)
            except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
                # Damaged compressed data or an unreadable file: a finding, not a crash.
                yield Finding(
                    rule_id="MLSEC-DATA-015",
                    severity=_severity("MLSEC-DATA-015"),
                    message=f"Dataset could not be read to the end: {type(exc).__name__}: {exc}",
                    path=artifact.path,
                    scanner=self.name,
                    key="unreadable",
                )
                return
        yield from self.report(artifact.path, fmt, result)
        if result.timed_out:  # like the model engine: keep what was found, then fail closed
            raise DeadlineExceeded(f"{result.timed_out} (--timeout {ctx.limits.timeout:g}s)")

    def report(self, path: str, fmt: str, result: TextResult) -> Iterator[Finding | Skip | Fact]:
        """Findings, skips and facts for one scanned text dataset."""
        cov = result.coverage
        yield from result.tally.findings(path, self.name, cov)
        for message, line in result.problems[:5]:
            yield Finding(
                rule_id="MLSEC-DATA-015",
                severity=_severity("MLSEC-DATA-015"),
                message=f"Malformed {fmt.upper()}: {message}",
                path=path,
                scanner=self.name,
                location=Location(line=line),
                key=f"malformed {message.split(' (')[0]}",
            )
        if not cov.complete and not result.timed_out:
            yield coverage_finding(path, self.name, cov)
        if not result.tally.secrets_checked and _SECRET_UNAVAILABLE:
            reason = _SECRET_UNAVAILABLE[0] if _SECRET_UNAVAILABLE else "detector unavailable"
            yield Skip(path, f"credential check not run ({reason})", "secrets-unavailable")
        rows = cov.rows_total if result.rows_exact else None
        yield from dataset_facts(path, self.name, result.tally, cov, rows=rows, columns=result.columns)
