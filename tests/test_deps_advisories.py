"""The offline advisory store and matching: OSV fixtures made for the tests, and the real PyPA snapshot."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlsec.deps import Dependency, advisories, resolved_versions
from mlsec.deps.match import cvss_score, match, severity_of
from mlsec.model import Package, Severity
from tests.conftest import FIXTURES, SHARED, scan_path

OSV = FIXTURES / "deps" / "osv"
PYPA = SHARED / "data" / "pypa-advisory-db"
NOW = dt.datetime(2024, 9, 10, tzinfo=dt.UTC)


@pytest.fixture
def store(tmp_path: Path) -> advisories.AdvisoryStore:
    advisories.update(OSV, tmp_path / "adv.sqlite", now=NOW)
    got, info = advisories.open_store(tmp_path / "adv.sqlite")
    assert got is not None and info.usable
    return got


def ids(dep: Dependency, store: advisories.AdvisoryStore) -> list[str]:
    return sorted(m.advisory.id for m in match(dep, store))


def pinned(name: str, version: str) -> Dependency:
    return Dependency(name, version, f"=={version}", "requirements.txt", line=1)


def test_import_records_source_date_and_counts(tmp_path: Path) -> None:
    report = advisories.update(OSV, tmp_path / "adv.sqlite", now=NOW)
    assert (report.advisories, report.packages, report.withdrawn) == (5, 3, 1)
    assert report.files_skipped == 1 and report.errors == ("broken.yaml: ParserError",)
    assert report.imported_at == "2024-09-10T00:00:00Z" and report.source == str(OSV.resolve())
    info = advisories.info(tmp_path / "adv.sqlite", now=NOW + dt.timedelta(days=45), max_age=30)
    assert info.usable and info.data_date == "2024-09-01T00:00:00Z" and info.age_days == 54 and info.stale
    assert "Warning: the data is 54 days old (limit 30)" in "\n".join(info.lines())
    assert not advisories.info(tmp_path / "adv.sqlite", now=NOW, max_age=30).stale


def test_missing_and_unusable_databases_are_described_not_raised(tmp_path: Path) -> None:
    info = advisories.info(tmp_path / "none.sqlite")
    assert not info.exists and "No advisory database" in info.lines()[0]
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    junk = advisories.info(tmp_path / "junk.sqlite")
    assert junk.exists and not junk.usable and "unusable" in junk.lines()[0]
    assert advisories.open_store(tmp_path / "junk.sqlite")[0] is None


def test_a_source_without_pypi_advisories_keeps_the_old_database(tmp_path: Path) -> None:
    db = tmp_path / "adv.sqlite"
    advisories.update(OSV, db, now=NOW)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.json").write_text(json.dumps({"id": "N-1", "affected": [{"package": {"ecosystem": "npm", "name": "a"}}]}))
    with pytest.raises(advisories.AdvisoryDbError, match="no OSV advisories for PyPI"):
        advisories.update(empty, db)
    with pytest.raises(advisories.AdvisoryDbError, match="no such file"):
        advisories.update(tmp_path / "nope.zip", db)
    assert advisories.info(db).advisories == 5


def test_env_overrides_locate_the_database_and_the_age_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEC_CACHE_DIR", str(tmp_path / "cache"))
    assert advisories.default_path() == tmp_path / "cache" / "advisories.sqlite"
    monkeypatch.setenv("MLSEC_ADVISORY_DB", str(tmp_path / "x.sqlite"))
    assert advisories.default_path() == tmp_path / "x.sqlite"
    monkeypatch.setenv("MLSEC_ADVISORY_MAX_AGE_DAYS", "7")
    assert advisories.max_age_days() == 7 and advisories.max_age_days(90) == 90


def test_ranges_listed_versions_and_last_affected(store: advisories.AdvisoryStore) -> None:
    assert ids(pinned("demo-lib", "2.5.1"), store) == ["TEST-2024-0001"]
    assert ids(pinned("Demo_Lib", "2.0.5"), store) == ["TEST-2024-0001", "TEST-2024-0002"]  # name normalized
    assert ids(pinned("demo-lib", "2.1.0"), store) == ["TEST-2024-0001", "TEST-2024-0002"]  # last_affected is inclusive
    assert ids(pinned("demo-lib", "2.1.1"), store) == ["TEST-2024-0001"]
    assert ids(pinned("demo-lib", "1.5.2"), store) == ["TEST-2024-0001", "TEST-2024-0002"]
    assert ids(pinned("demo-lib", "1.5.3"), store) == ["TEST-2024-0001"]
    assert ids(pinned("demo-lib", "2.6.0"), store) == []  # fixed; the withdrawn advisory never matches
    assert ids(pinned("demo-lib", "2.0.0+cpu"), store) == ["TEST-2024-0001", "TEST-2024-0002"]  # local label


def test_unparsable_versions_fall_back_to_the_listed_versions(store: advisories.AdvisoryStore) -> None:
    assert ids(pinned("oldpkg", "0.1-bulbasaur"), store) == ["TEST-2024-0003"]
    assert ids(pinned("oldpkg", "1.0.0"), store) == ["TEST-2024-0003"]  # canonical 1.0 == 1.0.0
    assert ids(pinned("oldpkg", "1.1"), store) == []


def test_ranges_report_advisories_the_range_allows_as_medium(store: advisories.AdvisoryStore) -> None:
    dep = Dependency("demo-lib", "", ">=2.1", "pyproject.toml", line=3)
    (m0, m1) = sorted(match(dep, store), key=lambda m: m.advisory.id)
    assert (m0.advisory.id, m0.in_range, m0.example, m0.severity) == ("TEST-2024-0001", True, "2.1", Severity.MEDIUM)
    assert (m1.advisory.id, m1.example) == ("TEST-2024-0002", "2.1")
    assert ids(Dependency("demo-lib", "", ">=2.6", "p"), store) == []
    assert ids(Dependency("demo-lib", "", ">=2.2,<2.6 || >=3", "p"), store) == ["TEST-2024-0001"]
    assert ids(Dependency("demo-lib", "", "", "p"), store) == ["TEST-2024-0001", "TEST-2024-0002"]  # any version


def test_vcs_local_and_unknown_conda_entries_are_not_matched(store: advisories.AdvisoryStore) -> None:
    assert ids(Dependency("demo-lib", "", "", "r", url="git+https://x/demo-lib@main"), store) == []
    assert ids(Dependency("demo-lib", "2.0.0", "==2.0.0", "e", ecosystem="conda"), store) == []
    conda = Dependency("demo-lib-conda", "2.0.0", "==2.0.0", "e", ecosystem="conda", pypi_name="demo-lib")
    assert ids(conda, store) == ["TEST-2024-0001", "TEST-2024-0002"]


def test_severity_mapping() -> None:
    adv = advisories.Advisory
    assert cvss_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") == 9.8
    assert cvss_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H") == 10.0
    assert cvss_score("CVSS:3.0/AV:L/AC:L/PR:L/UI:R/S:U/C:L/I:N/A:N") == 2.8
    assert cvss_score("AV:N/AC:L/Au:N/C:P/I:P/A:P") == 7.5
    assert cvss_score("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N") is None
    assert cvss_score("CVSS:3.1/AV:X") is None
    assert severity_of(adv("A", (), "", cvss="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")) == Severity.CRITICAL
    assert severity_of(adv("A", (), "", cvss="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"), in_range=True) == \
        Severity.MEDIUM
    assert severity_of(adv("A", (), "", severity_text="MODERATE")) == Severity.MEDIUM
    assert severity_of(adv("A", (), "")) == Severity.HIGH
    assert severity_of(adv("MAL-1", (), ""), in_range=True) == Severity.CRITICAL


def test_zip_and_loopback_url_sources(tmp_path: Path) -> None:
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(OSV.glob("*.json")):
            zf.write(path, path.name)
    report = advisories.update(archive, tmp_path / "z.sqlite", now=NOW)
    assert report.advisories == 4 and report.packages == 3
    with _serve(tmp_path) as base:
        report = advisories.update(f"{base}/all.zip", tmp_path / "u.sqlite", now=NOW)
    assert report.advisories == 4 and report.source.endswith("/all.zip")
    assert not list(tmp_path.glob(".download-*"))
    with pytest.raises(advisories.AdvisoryDbError, match="plain http"):
        advisories.update("http://advisories.example.com/all.zip", tmp_path / "h.sqlite")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _serve:
    """A loopback HTTP server over a directory (no network leaves the machine)."""

    def __init__(self, directory: Path) -> None:
        handler = lambda *a, **k: _Quiet(*a, directory=str(directory), **k)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_resolved_versions_takes_the_lowest_pin() -> None:
    pkgs = [Package("torch", "2.6.0", "uv.lock"), Package("torch", "2.4.1", "requirements.txt"),
            Package("numpy", "", "pyproject.toml", specifier=">=1"), Package("pytorch", "1.0", "e.yml", ecosystem="conda"),
            Package("legacy", "0.1-bulbasaur", "r.txt")]
    assert resolved_versions(pkgs) == {"legacy": "0.1-bulbasaur", "torch": "2.4.1"}


# -- through the scanner ----------------------------------------------------------------------------


def test_scan_without_database_is_incomplete_never_clean(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("demo-lib==2.0.0\n")
    result = scan_path(tmp_path)
    assert [(s.path, s.code) for s in result.skipped] == [("requirements.txt", "no-advisory-db")]
    assert "NOT checked for known vulnerabilities" in result.skipped[0].reason
    assert [(p.name, p.version, p.purl) for p in result.packages] == [("demo-lib", "2.0.0", "pkg:pypi/demo-lib@2.0.0")]
    assert not [f for f in result.findings if f.rule_id == "MLSEC-DEP-001"]


def test_scan_reports_the_bom_evidence_contract(tmp_path: Path) -> None:
    from mlsec.hashing import cache_dir

    advisories.update(OSV, cache_dir() / "advisories.sqlite")
    (tmp_path / "requirements.txt").write_text("# app\ndemo-lib==2.0.0 --hash=sha256:00\n")
    result = scan_path(tmp_path)
    assert result.skipped == ()
    vulns = sorted((f for f in result.findings if f.rule_id == "MLSEC-DEP-001"), key=lambda f: f.key)
    assert [f.location.line for f in vulns] == [2, 2]
    first = dict(vulns[0].evidence)
    assert first == {
        "advisory": "TEST-2024-0001", "aliases": "CVE-2099-0001,GHSA-test-0001-0001", "package": "demo-lib",
        "version": "2.0.0", "purl": "pkg:pypi/demo-lib@2.0.0", "fixed": "2.6.0",
        "cvss": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "summary": "Arbitrary code execution when loading crafted checkpoints",
    }
    assert vulns[0].severity == Severity.CRITICAL and "fixed in 2.6.0" in vulns[0].message
    second = dict(vulns[1].evidence)
    assert second["severity"] == "MODERATE" and vulns[1].severity == Severity.MEDIUM and "cvss" not in second
    assert "2.0.0" in vulns[0].key and "|TEST-2024-0001" in vulns[0].key
    assert "MLSEC-DEP-003" in {f.rule_id for f in result.findings}  # fixture data is from 2024


def test_stale_finding_follows_the_configured_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlsec.hashing import cache_dir

    advisories.update(OSV, cache_dir() / "advisories.sqlite")
    (tmp_path / "requirements.txt").write_text("six==1.16.0 --hash=sha256:00\n")
    monkeypatch.setenv("MLSEC_ADVISORY_MAX_AGE_DAYS", "100000")
    assert not scan_path(tmp_path).findings
    monkeypatch.setenv("MLSEC_ADVISORY_MAX_AGE_DAYS", "30")
    (stale,) = scan_path(tmp_path).findings
    assert stale.rule_id == "MLSEC-DEP-003" and stale.severity == Severity.LOW
    assert stale.key == "advisory-db-stale" and "days old" in stale.message


# -- the real PyPA snapshot --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pypa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[advisories.AdvisoryStore]:
    if not (PYPA / "vulns").is_dir():
        pytest.skip(f"PyPA advisory snapshot not present at {PYPA}")
    db = tmp_path_factory.mktemp("pypa") / "adv.sqlite"
    report = advisories.update(PYPA, db)
    assert report.advisories > 2500 and report.packages > 600
    store, _ = advisories.open_store(db)
    assert store is not None
    yield store


def test_pypa_old_ml_pins_yield_their_known_pysec_ids(pypa: advisories.AdvisoryStore, tmp_path: Path) -> None:
    from mlsec.deps import manifests
    from mlsec.deps.match import match_all

    (tmp_path / "requirements.txt").write_text("tensorflow==2.4.0\npillow==9.0.0\nmlflow==2.1.0\n")
    m = manifests.parse(str(tmp_path / "requirements.txt"), "requirements.txt")
    found: dict[str, set[str]] = {}
    for hit in match_all(m.dependencies, pypa):
        found.setdefault(hit.dependency.name, set()).add(hit.advisory.id)
    assert {"PYSEC-2022-168", "PYSEC-2022-42979", "PYSEC-2023-175"} <= found["pillow"]  # CVE-2022-24303, -45198, 2023-50447
    assert len(found["pillow"]) == 4
    assert found["mlflow"] == {"PYSEC-2023-252", "PYSEC-2023-253", "PYSEC-2023-260", "PYSEC-2023-28", "PYSEC-2023-29",
                               "PYSEC-2023-68", "PYSEC-2023-69", "PYSEC-2024-51"}  # PYSEC-2023-70 was fixed in 2.0.1
    assert len(found["tensorflow"]) > 100 and "PYSEC-2021-149" in found["tensorflow"]


def test_pypa_fixed_versions_yield_none(pypa: advisories.AdvisoryStore) -> None:
    for name, version in (("pillow", "10.4.0"), ("mlflow", "2.16.2"), ("tensorflow", "2.17.0")):
        assert match(pinned(name, version), pypa) == [], name


# -- --online through pip-audit's OSV service, against a loopback OSV-compatible endpoint --------------


class _OsvHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        vulns = []
        if query["package"]["name"] == "demo-lib" and query["version"] == "2.0.0":
            record = json.loads((OSV / "TEST-2024-0001.json").read_text())
            record["affected"][0]["package"]["name"] = "demo-lib"  # pip-audit compares names verbatim
            vulns = [record]
        body = json.dumps({"vulns": vulns} if vulns else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_online_adapter_reports_matches_and_skips_never_clean(tmp_path: Path) -> None:
    pytest.importorskip("pip_audit", reason="pip-audit (the 'online' extra) is not installed")
    from mlsec.deps import online

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OsvHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    deps = [pinned("demo-lib", "2.0.0"), pinned("six", "1.16.0"), Dependency("torch", "", ">=2", "r")]
    try:
        result = online.audit(deps, service="osv", osv_url=url, cache_dir=tmp_path / "pa")
    finally:
        server.shutdown()
        server.server_close()
    # pip-audit keeps ids as a set; the adapter names the record PYSEC > MAL > GHSA > other > CVE.
    assert [(m.dependency.name, m.advisory.id, m.fixed) for m in result.matches] == [
        ("demo-lib", "GHSA-test-0001-0001", ("2.6.0",))]
    assert set(result.matches[0].advisory.aliases) == {"CVE-2099-0001", "TEST-2024-0001"}
    assert [(d.name, "not pinned" in why) for d, why in result.skipped] == [("torch", True)]
    # The service is gone now: every pinned dependency is skipped with the reason, none is "clean".
    down = online.audit(deps[:2], service="osv", osv_url=url, cache_dir=tmp_path / "pa2", timeout=2)
    assert down.matches == () and [d.name for d, _ in down.skipped] == ["demo-lib", "six"]
    assert all("unreachable" in why for _, why in down.skipped)


def test_online_skips_become_scan_skips(tmp_path: Path) -> None:
    pytest.importorskip("pip_audit", reason="pip-audit (the 'online' extra) is not installed")
    from mlsec.deps import manifests
    from mlsec.scanners.deps import analyse

    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    m = manifests.parse(str(tmp_path / "requirements.txt"), "requirements.txt")
    out = list(analyse(m, store=None, db_info=advisories.info(tmp_path / "none.sqlite"), online=True,
                       online_service="osv", osv_url="http://127.0.0.1:9/v1/query"))
    skips = [o for o in out if type(o).__name__ == "Skip"]
    assert [(s.code, "six==1.16.0 was not checked online" in s.reason) for s in skips] == [("online-skipped", True)]
