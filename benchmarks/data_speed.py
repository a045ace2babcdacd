#!/usr/bin/env python3
"""Throughput and memory of mlsec's dataset scanners on a ~1 GiB CSV and a ~1 GiB Parquet file.

What is measured
    ``mlsec scan FILE --format json --no-cache -q --exit-zero`` as a whole process (start-up,
    SHA-256 of the file, and the dataset scanner), on two generated files:

    * ``people.csv`` -- an export-like table (id, user, amount, timestamp, comment, country) of
      random words, where 1 % of the users are e-mail addresses and 0.1 % of the comments carry
      a phone number;
    * ``people.parquet`` -- the same columns written by pyarrow (snappy, row groups of
      ``--row-group`` rows), ``--size-mb`` MiB on disk.

    Each file is scanned in two modes:

    * ``full``: ``MLSEC_DATA_BUDGET_MB=0`` -- every byte (CSV) / every row group (Parquet) is read;
    * ``sampled``: ``MLSEC_DATA_BUDGET_MB=--budget-mb`` (default 256, mlsec's default) -- evenly
      spaced byte windows / row groups up to the budget.

    Reported per run: wall time (fork to reap), throughput as *file* MiB per second, the coverage
    mlsec recorded (``dataset.coverage``), the number of findings, and the peak RSS of the mlsec
    process (``ru_maxrss`` via the trampoline in ``big_files.py``, so the parent's memory is never
    charged to the child). The target is a peak RSS under 500 MB in every mode.

Why
    Datasets are the largest artifacts an ML project has. mlsec promises bounded memory whatever
    the size (streaming, batches of rows, pyarrow record batches) and a bounded time above the
    budget (sampling), and it records what it did not read. This script checks both promises on
    files big enough for the difference to show.

Conditions
    Files are generated once into ``--workdir`` (reused when present and large enough) and read
    once before timing, so the page cache is warm: the numbers are CPU and memory, not disk.
    The Parquet file needs pyarrow, in this interpreter or in ``--gen-python``; mlsec's content
    check of Parquet needs pyarrow in the interpreter that runs ``mlsec`` (the ``data`` extra),
    otherwise the Parquet rows only measure the footer check and say so.

Run on demand (not part of the test suite)::

    python benchmarks/data_speed.py                      # 1 GiB files in benchmarks/out/data
    python benchmarks/data_speed.py --size-mb 64 --runs 1  # a quick smoke run
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from big_files import measure  # the shared trampoline: fork, wait4, timeouts

_WORD_TEXT = ("data model train test value order price note see item the quick brown fox jumps over lazy dog "
              "alpha beta gamma delta epsilon shipment invoice customer region north south east west")
WORDS = _WORD_TEXT.split()
COUNTRIES = ("DE", "FR", "US", "GB", "JP", "BR", "IN")


def _rows(start: int, count: int, rng: random.Random) -> list[list[str]]:
    out = []
    for i in range(start, start + count):
        user = f"user{i}@mail.example.org" if i % 100 == 0 else f"user_{i}"
        comment = " ".join(rng.choices(WORDS, k=rng.randint(6, 24)))
        if i % 1000 == 0:
            comment += " call +44 20 7946 0958"
        out.append([str(i), user, f"{rng.uniform(-1000, 1000):.2f}",
                    f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T{i % 24:02d}:{i % 60:02d}:00", comment,
                    COUNTRIES[i % len(COUNTRIES)]])
    return out


def make_csv(path: Path, size: int) -> None:
    rng = random.Random(1)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "user", "amount", "ts", "comment", "country"])
        i = 0
        while fh.tell() < size:
            w.writerows(_rows(i, 20_000, rng))
            i += 20_000
    tmp.rename(path)


_PARQUET_GEN = textwrap.dedent("""
    import os, random, sys
    sys.path.insert(0, sys.argv[4])
    import pyarrow as pa, pyarrow.parquet as pq
    from data_speed import _rows
    path, size, group = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(2)
    names = ["id", "user", "amount", "ts", "comment", "country"]
    schema = pa.schema([("id", pa.int64()), ("user", pa.string()), ("amount", pa.float64()),
                        ("ts", pa.string()), ("comment", pa.string()), ("country", pa.string())])
    i = 0
    with pq.ParquetWriter(path + ".tmp", schema, compression="snappy") as w:
        while True:
            rows = _rows(i, group, rng)
            cols = list(zip(*rows))
            w.write_table(pa.table({"id": [int(x) for x in cols[0]], "user": cols[1],
                                    "amount": [float(x) for x in cols[2]], "ts": cols[3],
                                    "comment": cols[4], "country": cols[5]}, schema=schema))
            i += group
            if os.path.getsize(path + ".tmp") >= size:
                break
    os.rename(path + ".tmp", path)
""")


def make_parquet(path: Path, size: int, group: int, python: str) -> None:
    subprocess.run([python, "-c", _PARQUET_GEN, str(path), str(size), str(group), str(HERE)], check=True)


def _warm(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


def _mlsec() -> str:
    local = Path(sys.executable).with_name("mlsec")
    found = str(local) if local.exists() else shutil.which("mlsec")
    if not found:
        raise SystemExit("mlsec is not installed in this environment (pip install -e '.[data]')")
    return found


def run_one(mlsec: str, path: Path, budget_mb: int, workdir: Path, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, MLSEC_DATA_BUDGET_MB=str(budget_mb), MLSEC_CACHE_DIR=str(workdir / "cache"))
    stdout, stderr = workdir / "scan.json", workdir / "scan.err"
    run = measure([mlsec, "scan", str(path), "--format", "json", "--no-cache", "-q", "--exit-zero",
                   "--severity", "info"], env, stdout, stderr, timeout, workdir)
    out: dict[str, Any] = {"seconds": run.seconds, "max_rss_mb": (run.max_rss_kib or 0) / 1024,
                           "exit_code": run.exit_code, "timed_out": run.timed_out}
    try:
        doc = json.loads(stdout.read_text())
    except ValueError:
        out["error"] = stderr.read_text()[-2000:]
        return out
    facts = {f["name"]: f["value"] for f in doc.get("facts", [])}
    out["coverage"] = facts.get("dataset.coverage", "")
    out["findings"] = len(doc.get("findings", []))
    out["skipped"] = [s["code"] for s in doc.get("skipped", [])]
    out["errors"] = doc.get("errors", [])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of each file in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=1, help="measured runs per file and mode (default 1)")
    parser.add_argument("--budget-mb", type=int, default=256, help="budget for the sampled mode (default 256)")
    parser.add_argument("--row-group", type=int, default=500_000, help="Parquet rows per row group")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "data", help="where the files live")
    parser.add_argument("--gen-python", default="", help="interpreter with pyarrow, to generate the Parquet file")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "data_speed.json")
    args = parser.parse_args(argv)

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mb << 20
    files = {"csv": work / f"people_{args.size_mb}mb.csv", "parquet": work / f"people_{args.size_mb}mb.parquet"}
    if not files["csv"].exists():
        print(f"generating {files['csv']} ...", flush=True)
        t0 = time.perf_counter()
        make_csv(files["csv"], size)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    gen_python = args.gen_python or (sys.executable if importlib.util.find_spec("pyarrow") else "")
    if not files["parquet"].exists():
        if not gen_python:
            print("no pyarrow to generate the Parquet file (--gen-python); skipping it")
            del files["parquet"]
        else:
            print(f"generating {files['parquet']} ...", flush=True)
            t0 = time.perf_counter()
            make_parquet(files["parquet"], size, args.row_group, gen_python)
            print(f"  {time.perf_counter() - t0:.0f} s", flush=True)

    mlsec = _mlsec()
    results: list[dict[str, Any]] = []
    for kind, path in files.items():
        _warm(path)
        mib = path.stat().st_size / (1 << 20)
        for mode, budget in (("full", 0), ("sampled", args.budget_mb)):
            runs = [run_one(mlsec, path, budget, work, args.timeout) for _ in range(args.runs)]
            secs = [r["seconds"] for r in runs]
            row = {"file": path.name, "kind": kind, "size_mib": round(mib, 1), "mode": mode,
                   "budget_mb": budget, "median_s": statistics.median(secs), "min_s": min(secs),
                   "mib_per_s": mib / statistics.median(secs),
                   "peak_rss_mb": max(r["max_rss_mb"] for r in runs), "coverage": runs[-1].get("coverage", ""),
                   "findings": runs[-1].get("findings"), "skipped": runs[-1].get("skipped"),
                   "errors": runs[-1].get("errors"), "runs": runs}
            results.append(row)
            print(f"{kind:8} {mode:8} {row['median_s']:8.1f} s {row['mib_per_s']:7.1f} MiB/s "
                  f"rss {row['peak_rss_mb']:6.0f} MB  {row['coverage']}", flush=True)

    print("\n| file | mode | median s | MiB/s (file) | coverage | findings | peak RSS MB |")
    print("|---|---|---:|---:|---|---:|---:|")
    for r in results:
        print(f"| {r['kind']} {r['size_mib']:.0f} MiB | {r['mode']} | {r['median_s']:.1f} | {r['mib_per_s']:.1f} | "
              f"{r['coverage']} | {r['findings']} | {r['peak_rss_mb']:.0f} |")
    over = [r for r in results if r["peak_rss_mb"] >= 500]
    print("\npeak RSS under 500 MB:", "yes" if not over else f"NO ({', '.join(r['file'] for r in over)})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"python": sys.version.split()[0], "results": results}, indent=2))
    return 0 if not over else 1


if __name__ == "__main__":
    sys.exit(main())
