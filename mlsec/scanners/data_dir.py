"""Hugging Face-style dataset directories: loading scripts, dataset cards, ``dataset_info.json``.

A directory is a dataset directory when it holds ``dataset_info.json``/``dataset_infos.json``/
``dataset_dict.json`` (or ``state.json`` next to ``.arrow`` files, as ``save_to_disk`` writes
them), or a ``README.md`` whose YAML front matter is a dataset card (``dataset_info``,
``configs``, ``task_categories``, ``size_categories``, ``source_datasets``... and no model-card
keys). Then:

* every ``*.py`` at its top is a **loading script**: ``load_dataset`` runs it with
  ``trust_remote_code=True`` (older ``datasets`` ran it without asking) -- HIGH. A Python file
  anywhere that defines a ``datasets`` builder class is one too. The code scanners still scan
  the file as code; this finding is about the execution path;
* the **dataset card** is read (``yaml.safe_load`` of the front matter only, at most 1 MiB):
  no licence -> LOW, no source -> INFO, and its declarations become facts for the ML-BOM
  (``dataset.license``, ``dataset.source``, ``dataset.classification``, ``dataset.owner``),
  attached to the directory and to every data file under it;
* ``dataset_info.json`` gives ``dataset.rows`` (sum of the splits' ``num_examples``),
  ``dataset.columns`` (features), and the licence and homepage when the card is silent.

Everything read here is attacker-controlled: sizes are capped, YAML is parsed safely, only plain
strings are taken out, and problems become missing values, never exceptions.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mlsec import __version__
from mlsec.fsio import open_regular
from mlsec.model import Artifact, Fact, Finding, Location, Skip
from mlsec.registry import ScanContext, register
from mlsec.scanmemo import Scope

MAX_FILE = 1 << 20
MAX_ITEMS = 64
MAX_TEXT = 256
MAX_WALK = 10_000        # entries looked at under a dataset directory (for facts)
WALK_DEPTH = 4

CARD_NAMES = ("readme.md",)
INFO_NAMES = ("dataset_info.json", "dataset_infos.json")
NOT_DATA = frozenset({*INFO_NAMES, "dataset_dict.json", "state.json"})  # save_to_disk bookkeeping
MARKERS = ("dataset_info.json", "dataset_infos.json", "dataset_dict.json")
DATASET_KEYS = frozenset({"dataset_info", "configs", "task_categories", "task_ids", "size_categories",
                          "source_datasets", "annotations_creators", "language_creators", "multilinguality",
                          "paperswithcode_id", "pretty_name", "train-eval-index", "viewer"})
MODEL_KEYS = frozenset({"pipeline_tag", "library_name", "base_model", "model-index", "model_name"})
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet", ".arrow", ".feather", ".txt",
                 ".png", ".jpg", ".jpeg", ".gif", ".webp", ".tif", ".tiff", ".gz", ".bz2", ".xz", ".zst",
                 ".zip", ".tar", ".npy", ".npz", ".pkl", ".pickle", ".avro", ".orc", ".wav", ".mp3", ".flac")
_BUILDER = re.compile(
    rb"class\s+\w+\s*\(\s*(?:datasets\.)?(?:GeneratorBasedBuilder|ArrowBasedBuilder|BeamBasedBuilder|"
    rb"DatasetBuilder)\b"
)
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".cache"})


# --- reading ------------------------------------------------------------------------------

def _read(fs_path: str) -> bytes | None:
    try:
        with open_regular(fs_path) as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError:
        return None
    return None if len(data) > MAX_FILE else data


def front_matter(text: str) -> str | None:
    """The YAML between a leading ``---`` line and the next ``---``/``...`` line, if any."""
    text = text.lstrip("\ufeff")
    if not text.startswith("---"):
        return None
    lines = text.splitlines()
    if lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], 1):
        if line.strip() in ("---", "..."):
            return "\n".join(lines[1:i])
    return None


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return "".join(ch for ch in str(value) if ch.isprintable()).strip()[:MAX_TEXT]
    return ""


def _texts(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items[:MAX_ITEMS]:
        text = _text(item)
        if text and text not in out:
            out.append(text)
    return tuple(out)


@dataclass(frozen=True)
class Card:
    """What a dataset card (or dataset_info.json) declares; empty means "not stated"."""

    present: bool = False          # a README.md with parseable front matter
    is_dataset: bool = False       # dataset-card keys, no model-card keys
    licenses: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    classification: str = ""
    owners: tuple[str, ...] = ()
    problem: str = ""


@functools.lru_cache(maxsize=256)
def _card_cached(fs_path: str, mtime_ns: int, size: int) -> Card:
    data = _read(fs_path)
    if data is None:
        return Card(problem="card is unreadable or larger than 1 MiB")
    body = front_matter(data.decode("utf-8", "replace"))
    if body is None:
        return Card()
    import yaml  # only when a card has front matter

    try:
        doc = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        return Card(present=True, problem=f"invalid YAML front matter{where}")
    except RecursionError:
        return Card(present=True, problem="front matter nests too deeply")
    if not isinstance(doc, dict):
        return Card(present=True, problem="front matter is not a mapping")
    keys = {str(k) for k in doc}
    licenses = _texts(doc.get("license")) or _texts(doc.get("license_name")) or _texts(doc.get("license_details"))
    owners: tuple[str, ...] = ()
    for name in ("owner", "owners", "maintainer", "maintainers", "point_of_contact", "contact"):
        owners = _texts(doc.get(name))
        if owners:
            break
    classification = ""
    for name in ("classification", "data_classification", "confidentiality", "sensitivity"):
        classification = _text(doc.get(name))
        if classification:
            break
    return Card(
        present=True,
        is_dataset=bool(keys & DATASET_KEYS) and not keys & MODEL_KEYS,
        licenses=licenses,
        sources=_texts(doc.get("source_datasets")),
        classification=classification,
        owners=owners,
    )


def read_card(fs_path: str) -> Card:
    """Parse the card at ``fs_path`` (cached by path, mtime and size)."""
    try:
        st = os.stat(fs_path)
    except OSError:
        return Card()
    return _card_cached(fs_path, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class Info:
    """What ``dataset_info.json`` / ``dataset_infos.json`` declare."""

    rows: int | None = None
    columns: int | None = None
    license: str = ""
    homepage: str = ""
    problem: str = ""


@functools.lru_cache(maxsize=256)
def _info_cached(fs_path: str, mtime_ns: int, size: int) -> Info:
    data = _read(fs_path)
    if data is None:
        return Info(problem="unreadable or larger than 1 MiB")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return Info(problem="not valid JSON")
    if not isinstance(doc, dict):
        return Info(problem="not a JSON object")
    if fs_path.endswith("dataset_infos.json"):  # {config name: info}
        doc = next((v for v in doc.values() if isinstance(v, dict)), {})
    splits = doc.get("splits")
    rows = None
    if isinstance(splits, dict):
        splits = list(splits.values())
    if isinstance(splits, list):
        counts = [s.get("num_examples") for s in splits[:MAX_ITEMS] if isinstance(s, dict)]
        valid = [c for c in counts if isinstance(c, int) and not isinstance(c, bool) and c >= 0]
        if counts and len(valid) == len(counts):
            rows = sum(valid)
    features = doc.get("features")
    columns = len(features) if isinstance(features, (dict, list)) else None
    return Info(rows=rows, columns=columns, license=_text(doc.get("license")), homepage=_text(doc.get("homepage")))


def read_info(fs_path: str) -> Info:
    """Parse ``dataset_info.json`` (cached by path, mtime and size)."""
    try:
        st = os.stat(fs_path)
    except OSError:
        return Info()
    return _info_cached(fs_path, st.st_mtime_ns, st.st_size)


# --- what a directory is -----------------------------------------------------------------

@dataclass(frozen=True)
class DatasetDir:
    """Why a directory is a dataset directory, and what it declares about itself."""

    reason: str
    card_path: str | None      # fs path of README.md, if any
    info_path: str | None      # fs path of dataset_info(s).json, if any
    card: Card = field(default_factory=Card)
    info: Info = field(default_factory=Info)


def _entries(fs_dir: str) -> dict[str, str]:
    try:
        names = os.listdir(fs_dir)
    except OSError:
        return {}
    return {n.lower(): n for n in names}


def _ignore(_path: str) -> None:
    return None


def dataset_dir(fs_dir: str, note: Callable[[str], None] = _ignore) -> DatasetDir | None:
    """Classify ``fs_dir``: a DatasetDir when it is a dataset directory, else None.

    ``note`` is told every folder and file this reads (ScanContext.note_read, for the memo).
    """
    note(fs_dir)
    names = _entries(fs_dir)
    card_name = names.get("readme.md")
    card_path = os.path.join(fs_dir, card_name) if card_name else None
    info_name = names.get("dataset_info.json") or names.get("dataset_infos.json")
    info_path = os.path.join(fs_dir, info_name) if info_name else None
    for path in (card_path, info_path):
        if path:
            note(path)
    card = read_card(card_path) if card_path else Card()
    info = read_info(info_path) if info_path else Info()
    marker = next((names[m] for m in MARKERS if m in names), None)
    if marker is None and "state.json" in names and any(n.endswith(".arrow") for n in names):
        marker = names["state.json"]
    if marker is not None:
        return DatasetDir(f"next to {marker}", card_path, info_path, card, info)
    if card.is_dataset:
        return DatasetDir(f"next to the dataset card {card_name}", card_path, info_path, card, info)
    return None


def data_files(fs_dir: str, rel_dir: str, note: Callable[[str], None] = _ignore) -> list[str]:
    """Repo-relative paths of data files under a dataset directory (bounded walk; ``note`` is
    told each folder listed)."""
    out: list[str] = []
    seen = 0
    stack = [(fs_dir, rel_dir, 0)]
    while stack and seen < MAX_WALK:
        fs, rel, depth = stack.pop()
        note(fs)
        try:
            entries = sorted(os.scandir(fs), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_WALK:
                break
            name = entry.name
            if name.startswith(".") or name in _SKIP_DIRS:
                continue
            child = posixpath.join(rel, name) if rel else name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth + 1 < WALK_DEPTH:
                        stack.append((entry.path, child, depth + 1))
                elif entry.is_file() and name.lower().endswith(DATA_SUFFIXES) and name.lower() not in NOT_DATA:
                    out.append(child)
            except OSError:
                continue
    return sorted(out)


# --- the scanner -----------------------------------------------------------------------

def _kind_of(artifact: Artifact) -> str | None:
    name = posixpath.basename(artifact.path).lower()
    if name in CARD_NAMES:
        return "card"
    if name in INFO_NAMES:
        return "info"
    if name.endswith(".py"):
        return "script"
    return None


@register
class DataDirScanner:
    """Loading scripts, dataset cards and dataset_info.json in dataset directories."""

    name = "mlsec-data-dir"
    version = f"{__version__}+data1"
    # Not cacheable: what a file means depends on its neighbours.

    def context_scope(self, artifact: Artifact) -> Scope:
        """Nothing beyond the neighbours it reads, which scan() notes (see ScanContext.note_read)."""
        return Scope.FILE

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """README.md, dataset_info(s).json and Python files (scan() decides if they matter)."""
        return _kind_of(artifact) is not None

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip | Fact]:
        """Classify the directory, then report what this file means for it."""
        kind = _kind_of(artifact)
        fs_dir = os.path.dirname(artifact.fs_path) or "."
        rel_dir = posixpath.dirname(artifact.path)
        ddir = dataset_dir(fs_dir, ctx.note_read)
        if kind == "script":
            yield from self._script(artifact, ddir)
        elif ddir is not None and kind == "card":
            yield from self._card(artifact, ddir, fs_dir, rel_dir, ctx.note_read)
        elif ddir is not None and kind == "info":
            yield from self._info(artifact, ddir, rel_dir)

    def _finding(self, artifact: Artifact, rule: str, message: str, key: str, evidence: dict[str, str],
                 line: int | None = None) -> Finding:
        from mlsec import catalog

        return Finding(
            rule_id=rule,
            severity=catalog.rules()[rule].severity,
            message=message,
            path=artifact.path,
            scanner=self.name,
            location=Location(line=line),
            key=key,
            evidence=tuple(sorted(evidence.items())),
        )

    def _script(self, artifact: Artifact, ddir: DatasetDir | None) -> Iterator[Finding]:
        reason = ddir.reason if ddir is not None else ""
        data = None
        if ddir is None:
            data = _read(artifact.fs_path)
            if data is None or not _BUILDER.search(data):
                return
            reason = "defines a datasets builder class"
        else:
            data = _read(artifact.fs_path)
        builder = _BUILDER.search(data) if data else None
        line = data.count(b"\n", 0, builder.start()) + 1 if data and builder else None
        evidence = {"reason": reason}
        if builder is not None:
            evidence["builder"] = builder.group(0).decode("ascii", "replace").split("(")[-1].strip()
        yield self._finding(
            artifact,
            "MLSEC-DATA-011",
            f"Dataset loading script ({reason}): load_dataset runs this code (trust_remote_code=True)",
            key="loading-script",
            evidence=evidence,
            line=line,
        )

    def _facts(self, targets: list[str], card: Card, info: Info) -> Iterator[Fact]:
        licenses = card.licenses or ((info.license,) if info.license else ())
        sources = card.sources or ((info.homepage,) if info.homepage else ())
        for target in targets:
            if licenses:
                yield Fact(target, "dataset.license", ",".join(licenses), self.name)
            if sources:
                yield Fact(target, "dataset.source", ",".join(sources), self.name)
            if card.classification:
                yield Fact(target, "dataset.classification", card.classification, self.name)
            for owner in card.owners:
                yield Fact(target, "dataset.owner", owner, self.name)

    def _gaps(self, artifact: Artifact, card: Card, info: Info) -> Iterator[Finding]:
        licenses = [x for x in card.licenses or ((info.license,) if info.license else ()) if x.lower() != "unknown"]
        if not licenses:
            said = "says unknown" if card.licenses or info.license else "declares none"
            yield self._finding(artifact, "MLSEC-DATA-012", f"Dataset licence: the card {said}", key="no-license",
                                evidence={"field": "license"})
        if not (card.sources or info.homepage):
            yield self._finding(artifact, "MLSEC-DATA-013",
                                "Dataset source: the card declares no source_datasets (and no homepage)",
                                key="no-source", evidence={"field": "source_datasets"})

    def _card(self, artifact: Artifact, ddir: DatasetDir, fs_dir: str, rel_dir: str,
              note: Callable[[str], None]) -> Iterator[Finding | Fact]:
        card = ddir.card
        if card.problem:
            yield self._finding(artifact, "MLSEC-DATA-015", f"Dataset card: {card.problem}", key="card-malformed",
                                evidence={"problem": card.problem})
        if card.present or ddir.info_path is None:  # else dataset_info.json speaks for the dataset
            yield from self._gaps(artifact, card, ddir.info)
        targets = [rel_dir or "."] + data_files(fs_dir, rel_dir, note)
        yield from self._facts(targets, card, ddir.info)

    def _info(self, artifact: Artifact, ddir: DatasetDir, rel_dir: str) -> Iterator[Finding | Fact]:
        info = read_info(artifact.fs_path)
        if info.problem:
            yield self._finding(artifact, "MLSEC-DATA-015", f"{posixpath.basename(artifact.path)}: {info.problem}",
                                key="info-malformed", evidence={"problem": info.problem})
        for target in (artifact.path, rel_dir or "."):
            if info.rows is not None:
                yield Fact(target, "dataset.rows", str(info.rows), self.name)
            if info.columns is not None:
                yield Fact(target, "dataset.columns", str(info.columns), self.name)
        if ddir.card_path is None or not ddir.card.present:
            # No card to speak for the dataset: this file does, gaps included.
            yield from self._gaps(artifact, Card(), info)
            yield from self._facts([artifact.path, rel_dir or "."], Card(), info)

