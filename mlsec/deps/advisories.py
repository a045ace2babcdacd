"""The offline advisory store: OSV records for PyPI in an indexed SQLite file.

Why a local store: pip-audit and uv audit only ask online services, and offline pip-audit
silently reports "No known vulnerabilities found". mlsec imports OSV data once
(``mlsec db update --from PATH_OR_URL``: an OSV ``all.zip``, a directory of OSV JSON or YAML
files such as the PyPA advisory database, or a single OSV file; a URL only when given
explicitly) and matches against it without the network. The store records where the data
came from, when it was imported and how recent the data is, so a stale database is reported.

Layout: ``meta`` (key/value), ``advisory`` (one row per OSV id) and ``affected`` (one row per
PyPI package an advisory names, indexed by PEP 503 name) holding the ECOSYSTEM ranges as
ordered intervals and the listed versions canonicalized. The file is built next to its target
and renamed into place, so a scan never sees a half-written database, and scans open it
read-only.

Location: ``MLSEC_ADVISORY_DB`` if set, else ``advisories.sqlite`` in the cache directory
(``MLSEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlsec``); every function also takes an explicit
path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsec.deps.manifests import normalize

SCHEMA_VERSION = 1
DEFAULT_MAX_AGE_DAYS = 30
MAX_RECORD_BYTES = 16 << 20        # one OSV record; the largest PyPI records are a few hundred KB
MAX_DOWNLOAD_BYTES = 2 << 30       # an OSV all.zip for PyPI is tens of MB
DOWNLOAD_TIMEOUT = 60.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class AdvisoryDbError(Exception):
    """The source could not be imported (the CLI turns this into exit 2 with the message)."""


# -- where, and how old --------------------------------------------------------------------------


def default_path() -> Path:
    """``MLSEC_ADVISORY_DB``, else ``<cache dir>/advisories.sqlite``."""
    from mlsec.hashing import advisory_db_path

    return advisory_db_path()


def max_age_days(value: int | None = None) -> int:
    """The staleness limit: ``value``, else ``MLSEC_ADVISORY_MAX_AGE_DAYS``, else 30 (bad values: 30)."""
    if value is not None:
        return value
    try:
        return max(0, int(os.environ.get("MLSEC_ADVISORY_MAX_AGE_DAYS", DEFAULT_MAX_AGE_DAYS)))
    except ValueError:
        return DEFAULT_MAX_AGE_DAYS


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _parse_time(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# -- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advisory:
    """What a finding needs from one OSV record."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    cvss: str = ""           # CVSS vector (v3.x preferred, else v4.0, else v2)
    severity_text: str = ""  # the advisory's own word (GHSA: LOW/MODERATE/HIGH/CRITICAL)
    published: str = ""
    modified: str = ""


@dataclass(frozen=True, slots=True)
class Interval:
    """One affected stretch of an ECOSYSTEM range: ``introduced <= v < fixed`` or ``<= last_affected``."""

    introduced: str
    end: str = ""
    end_kind: str = ""       # "fixed", "last_affected", "limit" or "" (no upper bound)


@dataclass(frozen=True, slots=True)
class Affected:
    """One advisory's statement about one PyPI package."""

    advisory: Advisory
    package: str
    intervals: tuple[Interval, ...]
    versions: frozenset[str]  # canonicalized listed versions
    fixed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DbInfo:
    """What ``mlsec db info`` shows. ``lines()`` is the wording to print."""

    path: str
    exists: bool
    source: str = ""
    imported_at: str = ""      # ISO 8601 UTC
    data_date: str = ""        # newest ``modified`` among the records
    advisories: int = 0
    packages: int = 0
    withdrawn: int = 0
    schema_version: int = 0
    age_days: int | None = None
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    problem: str = ""          # why the file is unusable ("" when usable)

    @property
    def usable(self) -> bool:
        """True when scans can match against this database."""
        return self.exists and not self.problem

    @property
    def stale(self) -> bool:
        """True when the data is older than the configured limit."""
        return self.usable and self.age_days is not None and self.age_days > self.max_age_days

    def lines(self) -> tuple[str, ...]:
        """Human wording for ``mlsec db info``."""
        if not self.exists:
            return (f"No advisory database at {self.path}.",
                    "Dependency scans cannot check for known vulnerabilities (they report the files as skipped).",
                    ("Create one with: mlsec db update --from PATH_OR_URL "
                     "(an OSV all.zip for PyPI, or a directory of OSV JSON/YAML files)."))
        if self.problem:
            return (f"Advisory database at {self.path} is unusable: {self.problem}.",
                    "Re-create it with: mlsec db update --from PATH_OR_URL")
        age = "unknown age" if self.age_days is None else f"{self.age_days} days old"
        out = [
            f"Advisory database: {self.path}",
            f"Source:     {self.source}",
            f"Imported:   {self.imported_at}",
            f"Data as of: {self.data_date or 'unknown'} ({age}; limit {self.max_age_days} days)",
            (f"Contents:   {self.advisories} advisories for {self.packages} PyPI packages"
             f" ({self.withdrawn} withdrawn, not matched)"),
        ]
        if self.stale:
            out.append(f"Warning: the data is {self.age_days} days old (limit {self.max_age_days}); "
                       "update it with: mlsec db update --from PATH_OR_URL")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``mlsec db update`` did. ``lines()`` is the wording to print."""

    path: str
    source: str
    imported_at: str
    data_date: str
    advisories: int
    packages: int
    withdrawn: int
    files_read: int
    files_skipped: int
    seconds: float
    errors: tuple[str, ...] = ()  # the first few unreadable records, "<file>: <why>"

    def lines(self) -> tuple[str, ...]:
        """Human wording for ``mlsec db update``."""
        out = [
            (f"Imported {self.advisories} advisories for {self.packages} PyPI packages from {self.source} "
             f"in {self.seconds:.1f} s."),
            f"Database: {self.path} (data as of {self.data_date or 'unknown'}; {self.withdrawn} withdrawn).",
        ]
        if self.files_skipped:
            out.append(f"Skipped {self.files_skipped} of {self.files_read} files that are not OSV records for PyPI"
                       + (f"; unreadable: {'; '.join(self.errors)}" if self.errors else "") + ".")
        return tuple(out)


# -- import --------------------------------------------------------------------------------------


def update(source: str | os.PathLike[str], db_path: Path | None = None, *, now: dt.datetime | None = None,
           on_progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import OSV records from ``source`` (zip, directory, file or URL) into a fresh database.

    Raises :class:`AdvisoryDbError` when the source cannot be read or holds no PyPI advisory;
    the existing database is then left as it was.
    """
    started = time.monotonic()
    target = Path(db_path) if db_path is not None else default_path()
    text = os.fspath(source)
    tmp_download: Path | None = None
    if "://" in text:
        tmp_download = _download(text, target.parent)
        local, label = tmp_download, text
    else:
        local, label = Path(text), str(Path(text).resolve())
        if not local.exists():
            raise AdvisoryDbError(f"{text}: no such file or directory")
    try:
        return _build(local, label, target, now or _utcnow(), started, on_progress)
    finally:
        if tmp_download is not None:
            tmp_download.unlink(missing_ok=True)


def _download(url: str, directory: Path) -> Path:
    """Fetch an explicitly given URL: HTTPS, or plain HTTP to this machine only."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "http" and (parts.hostname or "") not in _LOOPBACK:
        raise AdvisoryDbError(f"{url}: refusing plain http for advisory data (use https)")
    if parts.scheme not in ("https", "http"):
        raise AdvisoryDbError(f"{url}: unsupported URL scheme {parts.scheme!r}")
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / f".download-{os.getpid()}.tmp"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, open(dest, "wb") as out:
            total = 0
            while chunk := resp.read(1 << 20):
                total += len(chunk)
                if total > MAX_DOWNLOAD_BYTES:
                    raise AdvisoryDbError(f"{url}: larger than {MAX_DOWNLOAD_BYTES >> 20} MB")
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        raise AdvisoryDbError(f"{url}: download failed: {exc}") from exc
    except AdvisoryDbError:
        dest.unlink(missing_ok=True)
        raise
    return dest


def _records(local: Path, errors: list[str], counts: list[int]) -> Iterator[dict[str, Any]]:
    """Every OSV document in a zip, a directory tree or one file (counts = [read, skipped])."""
    if local.is_dir():
        for root, dirs, files in os.walk(local):  # never follows directory symlinks
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith((".json", ".yaml", ".yml")):
                    yield from _one_file(Path(root) / name, errors, counts)
    elif zipfile.is_zipfile(local):
        try:
            with zipfile.ZipFile(local) as zf:
                for info in zf.infolist():
                    if info.is_dir() or not info.filename.lower().endswith((".json", ".yaml", ".yml")):
                        continue
                    counts[0] += 1
                    if info.file_size > MAX_RECORD_BYTES:
                        counts[1] += 1
                        _note(errors, f"{info.filename}: larger than {MAX_RECORD_BYTES >> 20} MB")
                        continue
                    try:
                        with zf.open(info) as fh:
                            data = fh.read(MAX_RECORD_BYTES + 1)
                    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
                        counts[1] += 1
                        _note(errors, f"{info.filename}: {exc}")
                        continue
                    doc = _decode(info.filename, data, errors)
                    if doc is None:
                        counts[1] += 1
                    else:
                        yield doc
        except (zipfile.BadZipFile, OSError) as exc:
            raise AdvisoryDbError(f"{local}: not a readable zip: {exc}") from exc
    else:
        yield from _one_file(local, errors, counts)


def _one_file(path: Path, errors: list[str], counts: list[int]) -> Iterator[dict[str, Any]]:
    counts[0] += 1
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise OSError(f"larger than {MAX_RECORD_BYTES >> 20} MB")
        data = path.read_bytes()
    except OSError as exc:
        counts[1] += 1
        _note(errors, f"{path.name}: {exc}")
        return
    doc = _decode(path.name, data, errors)
    if doc is None:
        counts[1] += 1
    else:
        yield doc


def _decode(name: str, data: bytes, errors: list[str]) -> dict[str, Any] | None:
    try:
        if name.lower().endswith(".json"):
            doc = json.loads(data)
        else:
            import yaml

            # The C build of PyYAML's *safe* loader: same safe constructors as yaml.safe_load, 10x faster
            # on the PyPA database (2.5 s instead of 28 s). Advisory files are small config-like text.
            # The safe loader's C build (10x faster on the PyPA snapshot); same semantics as
            # yaml.safe_load: plain data only, never Python objects.
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(data)
            try:
                doc = loader.get_single_data()
            finally:
                loader.dispose()
    except Exception as exc:  # noqa: BLE001 - any parse failure of one record: note it and go on
        _note(errors, f"{name}: {type(exc).__name__}")
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("id"), str) else None


def _note(errors: list[str], text: str) -> None:
    if len(errors) < 5:
        errors.append(text)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _time(value: Any) -> str:
    """OSV timestamps as RFC 3339 UTC text (YAML may have parsed an unquoted one into a datetime)."""
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat() + "T00:00:00Z"
    return _str(value)


def _canonical(version: str) -> str:
    """Canonical form for listed-version comparison (``1.0.0`` == ``1.0``); legacy strings lowercased."""
    from packaging.utils import canonicalize_version

    try:
        return canonicalize_version(version, strip_trailing_zero=True)
    except Exception:  # noqa: BLE001 - packaging raises different errors across versions
        return version.strip().lower()


def _pick_cvss(doc: dict[str, Any]) -> str:
    vectors = {}
    for item in doc.get("severity") or []:
        if isinstance(item, dict):
            vectors[_str(item.get("type")).upper()] = _str(item.get("score"))
    for kind in ("CVSS_V3", "CVSS_V4", "CVSS_V2"):
        if vectors.get(kind):
            return vectors[kind]
    return ""


def _severity_text(doc: dict[str, Any]) -> str:
    for holder in (doc.get("database_specific"), doc.get("ecosystem_specific")):
        if isinstance(holder, dict) and isinstance(holder.get("severity"), str):
            return holder["severity"].upper()
    return ""


def _intervals(events: list[Any]) -> tuple[list[Interval], list[str]]:
    """OSV events in their written order -> intervals; also the fixed versions."""
    out: list[Interval] = []
    fixed: list[str] = []
    start: str | None = None
    limit = ""
    for event in events:
        if not isinstance(event, dict):
            continue
        if "introduced" in event:
            if start is not None:
                out.append(Interval(start))
            start = _str(event["introduced"])
        elif "fixed" in event:
            fixed.append(_str(event["fixed"]))
            if start is not None:
                out.append(Interval(start, _str(event["fixed"]), "fixed"))
                start = None
        elif "last_affected" in event:
            if start is not None:
                out.append(Interval(start, _str(event["last_affected"]), "last_affected"))
                start = None
        elif "limit" in event:
            limit = _str(event["limit"])
    if start is not None:
        out.append(Interval(start, limit, "limit" if limit else ""))
    return out, fixed


def _rows(doc: dict[str, Any]) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]] | None:
    affected_rows: list[tuple[Any, ...]] = []
    advisory_id = doc["id"]
    for affected in doc.get("affected") or []:
        if not isinstance(affected, dict):
            continue
        pkg = affected.get("package")
        if not isinstance(pkg, dict) or _str(pkg.get("ecosystem")).split(":")[0].lower() != "pypi":
            continue
        name = normalize(_str(pkg.get("name")))
        if not name:
            continue
        intervals: list[Interval] = []
        fixed: list[str] = []
        for rng in affected.get("ranges") or []:
            if isinstance(rng, dict) and _str(rng.get("type")).upper() == "ECOSYSTEM":
                got, fx = _intervals(rng.get("events") or [])
                intervals += got
                fixed += fx
        versions = sorted({_canonical(_str(v)) for v in affected.get("versions") or [] if v is not None})
        affected_rows.append((
            advisory_id, name,
            json.dumps([[i.introduced, i.end, i.end_kind] for i in intervals], separators=(",", ":")),
            json.dumps(versions, separators=(",", ":")),
            json.dumps(list(dict.fromkeys(fixed)), separators=(",", ":")),
        ))
    if not affected_rows:
        return None
    summary = _str(doc.get("summary")).strip() or _str(doc.get("details")).strip().split("\n", 1)[0]
    aliases = sorted({a for a in doc.get("aliases") or [] if isinstance(a, str)})
    advisory_row = (
        advisory_id, ",".join(aliases), summary[:300], _pick_cvss(doc), _severity_text(doc),
        _time(doc.get("published")), _time(doc.get("modified")), _time(doc.get("withdrawn")),
    )
    return advisory_row, affected_rows


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE advisory (id TEXT PRIMARY KEY, aliases TEXT, summary TEXT, cvss TEXT, severity TEXT,
                       published TEXT, modified TEXT, withdrawn TEXT);
CREATE TABLE affected (advisory TEXT NOT NULL, package TEXT NOT NULL, ranges TEXT, versions TEXT, fixed TEXT);
"""


def _build(local: Path, label: str, target: Path, now: dt.datetime, started: float,
           on_progress: Callable[[int], None] | None) -> ImportReport:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    errors: list[str] = []
    counts = [0, 0]
    db = sqlite3.connect(tmp)
    try:
        db.executescript(_SCHEMA)
        advisories: dict[str, tuple[Any, ...]] = {}
        affected: list[tuple[Any, ...]] = []
        for doc in _records(local, errors, counts):
            rows = _rows(doc)
            if rows is None:
                counts[1] += 1
                continue
            adv, aff = rows
            if adv[0] in advisories:  # the same id twice (JSON and YAML copies): keep the newer record
                if adv[6] <= advisories[adv[0]][6]:
                    continue
                affected = [r for r in affected if r[0] != adv[0]]
            advisories[adv[0]] = adv
            affected += aff
            if on_progress and len(advisories) % 1000 == 0:
                on_progress(len(advisories))
        if not advisories:
            raise AdvisoryDbError(f"{label}: no OSV advisories for PyPI packages found "
                                  f"({counts[0]} files read)")
        with db:
            db.executemany("INSERT INTO advisory VALUES (?, ?, ?, ?, ?, ?, ?, ?)", advisories.values())
            db.executemany("INSERT INTO affected VALUES (?, ?, ?, ?, ?)", affected)
            db.execute("CREATE INDEX affected_package ON affected (package)")
            withdrawn = sum(1 for a in advisories.values() if a[7])
            packages = len({r[1] for r in affected})
            data_date = max((a[6] for a in advisories.values() if a[6]), default="")
            meta = {
                "schema_version": str(SCHEMA_VERSION),
                "source": label,
                "imported_at": now.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "data_date": data_date,
                "advisories": str(len(advisories)),
                "packages": str(packages),
                "withdrawn": str(withdrawn),
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        db.close()
        os.replace(tmp, target)
    except BaseException:
        db.close()
        tmp.unlink(missing_ok=True)
        raise
    _STORES.clear()
    return ImportReport(
        path=str(target), source=label, imported_at=meta["imported_at"], data_date=data_date,
        advisories=len(advisories), packages=packages, withdrawn=withdrawn, files_read=counts[0],
        files_skipped=counts[1], seconds=time.monotonic() - started, errors=tuple(errors),
    )


# -- reading -------------------------------------------------------------------------------------


def info(db_path: Path | None = None, *, now: dt.datetime | None = None,
         max_age: int | None = None) -> DbInfo:
    """Describe the database (never raises: an unusable file is described as such)."""
    path = Path(db_path) if db_path is not None else default_path()
    limit = max_age_days(max_age)
    if not path.is_file():
        return DbInfo(path=str(path), exists=False, max_age_days=limit)
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.Error as exc:
        return DbInfo(path=str(path), exists=True, max_age_days=limit, problem=f"not an mlsec advisory database ({exc})")
    schema = int(meta.get("schema_version", "0") or 0)
    if schema != SCHEMA_VERSION:
        return DbInfo(path=str(path), exists=True, max_age_days=limit, schema_version=schema,
                      problem=f"database format {schema}, this mlsec reads format {SCHEMA_VERSION}")
    when = _parse_time(meta.get("data_date", "")) or _parse_time(meta.get("imported_at", ""))
    age = None if when is None else max(0, ((now or _utcnow()) - when).days)
    return DbInfo(
        path=str(path), exists=True, source=meta.get("source", ""), imported_at=meta.get("imported_at", ""),
        data_date=meta.get("data_date", ""), advisories=int(meta.get("advisories", "0")),
        packages=int(meta.get("packages", "0")), withdrawn=int(meta.get("withdrawn", "0")),
        schema_version=schema, age_days=age, max_age_days=limit,
    )


class AdvisoryStore:
    """Read-only access to an imported database; per-package lookups are cached."""

    def __init__(self, path: Path, db_info: DbInfo) -> None:
        self.path = path
        self.info = db_info
        self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        self._cache: dict[str, tuple[Affected, ...]] = {}

    def affected(self, package: str) -> tuple[Affected, ...]:
        """Every non-withdrawn advisory statement about ``package`` (a PEP 503 name)."""
        hit = self._cache.get(package)
        if hit is not None:
            return hit
        rows = self._db.execute(
            "SELECT a.id, a.aliases, a.summary, a.cvss, a.severity, a.published, a.modified, "
            "f.ranges, f.versions, f.fixed FROM affected f JOIN advisory a ON a.id = f.advisory "
            "WHERE f.package = ? AND (a.withdrawn IS NULL OR a.withdrawn = '') ORDER BY a.id",
            (package,),
        ).fetchall()
        out = []
        for adv_id, aliases, summary, cvss, sev, published, modified, ranges, versions, fixed in rows:
            advisory = Advisory(adv_id, tuple(a for a in (aliases or "").split(",") if a), summary or "",
                                cvss or "", sev or "", published or "", modified or "")
            out.append(Affected(
                advisory=advisory, package=package,
                intervals=tuple(Interval(*i) for i in json.loads(ranges or "[]")),
                versions=frozenset(json.loads(versions or "[]")),
                fixed=tuple(json.loads(fixed or "[]")),
            ))
        result = tuple(out)
        self._cache[package] = result
        return result

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


_STORES: dict[tuple[str, int, int], AdvisoryStore | None] = {}


def open_store(db_path: Path | None = None, *, max_age: int | None = None) -> tuple[AdvisoryStore | None, DbInfo]:
    """The store for scanning (or None) and its description; reused while the file is unchanged."""
    path = Path(db_path) if db_path is not None else default_path()
    db_info = info(path, max_age=max_age)
    if not db_info.usable:
        return None, db_info
    try:
        st = path.stat()
    except OSError:
        return None, db_info
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    store = _STORES.get(key)
    if store is None:
        try:
            store = AdvisoryStore(path, db_info)
        except sqlite3.Error:
            return None, db_info
        _STORES.clear()
        _STORES[key] = store
    return store, db_info
