"""Dependency scanner speed: import the PyPA advisory snapshot, then match 500 pinned requirements.

    python benchmarks/deps_match.py [--db-source PATH] [--repeat 3]

1. ``mlsec.deps.advisories.update`` on the full snapshot (``../shared/data/pypa-advisory-db``
   next to the repository by default): YAML parse + SQLite build, seconds.
2. A requirements.txt of 500 pinned requirements (500 distinct packages of the snapshot, each at
   a version one of its advisories lists, so most of them match), parsed and matched cold (fresh
   process state: empty lookup caches) — the target is under 1 s for the matching.
3. The whole scanner on that file through the pipeline (parse + match + supply-chain checks).

Prints a table and writes nothing else; run on demand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlsec.deps import advisories, manifests
from mlsec.deps.match import match_all


def pins(db: Path, count: int) -> list[str]:
    """``name==version`` for ``count`` distinct packages, each at a version an advisory lists."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT package, versions FROM affected ORDER BY package, advisory").fetchall()
    con.close()
    chosen: dict[str, str] = {}
    for package, versions in rows:
        listed = json.loads(versions)
        if package not in chosen and listed:
            chosen[package] = listed[len(listed) // 2]
    names = sorted(chosen)[:count]
    return [f"{n}=={chosen[n]}" for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db-source", default=str(REPO.parent / "shared" / "data" / "pypa-advisory-db"))
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlsec-deps-bench-"))
    os.environ["MLSEC_CACHE_DIR"] = str(work / "cache")
    db = Path(os.environ["MLSEC_CACHE_DIR"]) / "advisories.sqlite"

    imports = []
    for _ in range(args.repeat):
        report = advisories.update(args.db_source, db)
        imports.append(report.seconds)
    print(f"snapshot: {report.advisories} advisories, {report.packages} packages, "
          f"{report.files_read} files, db {db.stat().st_size / 1e6:.1f} MB")

    lines = pins(db, args.count)
    req = work / "requirements.txt"
    req.write_text("\n".join(lines) + "\n")
    parse_t, match_t, hits = [], [], 0
    for _ in range(args.repeat):
        advisories._STORES.clear()  # cold: a fresh store with empty per-package caches
        from mlsec.deps import match as match_mod

        match_mod._version.cache_clear()
        match_mod._canonical.cache_clear()
        t0 = time.perf_counter()
        manifest = manifests.parse(str(req), "requirements.txt")
        t1 = time.perf_counter()
        store, _ = advisories.open_store(db)
        assert store is not None
        found = match_all(manifest.dependencies, store)
        t2 = time.perf_counter()
        parse_t.append(t1 - t0)
        match_t.append(t2 - t1)
        hits = len(found)

    from mlsec.pipeline import Options, run

    scan_t = []
    for _ in range(args.repeat):
        advisories._STORES.clear()
        t0 = time.perf_counter()
        result = run([str(req)], Options(use_cache=False))
        scan_t.append(time.perf_counter() - t0)

    print(f"{len(lines)} pinned requirements -> {hits} advisory matches, "
          f"{len(result.findings)} findings through the scanner")
    print(f"{'step':<44} {'best s':>8} {'median s':>9}")
    for label, values in (("import snapshot (update)", imports), ("parse requirements.txt", parse_t),
                          ("match 500 pins (cold store)", match_t), ("scanner end to end (pipeline.run)", scan_t)):
        vals = sorted(values)
        print(f"{label:<44} {vals[0]:>8.3f} {vals[len(vals) // 2]:>9.3f}")


if __name__ == "__main__":
    main()
