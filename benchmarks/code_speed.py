"""Code scanner speed on the scikit-learn source tree: mlsec (bandit, ML rules, both) vs ``bandit -r``.

Downloads the scikit-learn sdist with pip into ``benchmarks/out/code_speed/`` (git-ignored),
unpacks it, and times whole processes (interpreter start-up included) on the same tree:

* ``bandit -r TREE -f json -o FILE -q`` — plain bandit, single-threaded (it has no --jobs);
* mlsec with only bandit, only the mlsec engine (ML rules, notebooks, secrets, models), and the
  default (both), with ``--no-cache`` and ``--jobs 1`` / ``--jobs 2``;
* the default as a first run with the cache on (empty: results are written to it);
* an unchanged re-scan from the result cache (one warm-up run fills it first);
* the ML rules' AST pass alone, in-process (no start-up, no other scanner).

mlsec runs through its CLI when the CLI offers ``--engine bandit``; otherwise through a small
driver here that does what ``mlsec scan`` does (pipeline, suppression, JSON report to a file).
files/s counts the tree's ``.py`` files. Results: a markdown table on stdout and
``benchmarks/out/code_speed.json``.

    python benchmarks/code_speed.py                  # download (or reuse) the sdist, 3 runs each
    python benchmarks/code_speed.py --runs 1 --tree some/dir
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "code_speed"


def fetch_sdist(pip: list[str]) -> Path:
    """The scikit-learn sdist in OUT, downloaded once."""
    OUT.mkdir(parents=True, exist_ok=True)
    found = sorted(OUT.glob("scikit_learn-*.tar.gz"))
    if found:
        return found[-1]
    base = [*pip, "download", "--no-deps", "-d", str(OUT)]
    # As asked: no binary at all. pip then prepares the sdist's metadata, and with ":all:" it also
    # builds the build backend's own dependencies from source, which fails where no compiler
    # toolchain is available; retry with only scikit-learn itself restricted to source.
    for extra in (["--no-binary", ":all:"], ["--no-binary", "scikit-learn"]):
        proc = subprocess.run([*base, *extra, "scikit-learn"], capture_output=True, text=True, check=False)
        found = sorted(OUT.glob("scikit_learn-*.tar.gz"))
        if found:
            return found[-1]
        print(f"pip download {' '.join(extra)} failed (exit {proc.returncode}); {proc.stderr.strip()[-300:]}",
              file=sys.stderr)
    raise SystemExit("could not download the scikit-learn sdist")


def unpack(sdist: Path) -> Path:
    """Extract once next to the sdist (data filter: no links or paths outside the folder)."""
    target = OUT / sdist.name.removesuffix(".tar.gz")
    if not target.is_dir():
        with tarfile.open(sdist) as tar:
            tar.extractall(OUT, filter="data")
    return target


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed with exit {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed, proc.returncode


def cli_has_bandit(python: str) -> bool:
    proc = subprocess.run([python, "-m", "mlsec", "scan", "--help"], capture_output=True, text=True, check=False)
    return "bandit" in proc.stdout


def mlsec_cmd(python: str, tree: Path, report: Path, engines: list[str], jobs: int, cache: bool, use_cli: bool) -> list[str]:
    if use_cli:
        cmd = [python, "-m", "mlsec", "scan", str(tree), "--format", f"json:{report}", "-q", "--exit-zero", "-j", str(jobs)]
        for e in engines:
            cmd += ["--engine", e]
        return cmd + ([] if cache else ["--no-cache"])
    return [python, str(Path(__file__).resolve()), "--drive", str(tree), str(report), ",".join(engines), str(jobs),
            "cache" if cache else "no-cache"]


def drive(tree: str, report: str, engines: str, jobs: str, cache: str) -> None:
    """What ``mlsec scan TREE --format json:REPORT`` does, for CLIs without ``--engine bandit``."""
    from mlsec import gate
    from mlsec.pipeline import Options, run
    from mlsec.report import renderer

    prepared = gate.prepare(gate.Settings(start=Path(tree)))
    raw = run([tree], Options(engines=frozenset(engines.split(",")), jobs=int(jobs), use_cache=cache == "cache"))
    result, decision, _, _ = gate.decide(prepared, raw)
    from mlsec.model import Severity

    Path(report).write_text(renderer("json")(result, Severity.LOW, False, decision=decision), encoding="utf-8")


def ml_pass_alone(tree: Path, py_files: int) -> dict[str, object]:
    """The ML rules' AST pass by itself, in this process (read + parse + match; no start-up)."""
    from mlsec.scanners import code_ml

    code_ml.rules()
    start = time.perf_counter()
    for path in sorted(tree.rglob("*.py")):
        try:
            code_ml.analyze(code_ml.parse_source(path.read_bytes()))
        except code_ml.SourceError:
            pass
    elapsed = time.perf_counter() - start
    return {"row": "ML rules pass alone (in-process: read, parse, match)", "median_s": round(elapsed, 2),
            "min_s": round(elapsed, 2), "cpu_s": round(elapsed, 2), "files_per_s": round(py_files / max(elapsed, 1e-3), 1),
            "runs": [round(elapsed, 3)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="measured runs per row (median and min reported)")
    ap.add_argument("--tree", type=Path, help="scan this directory instead of the scikit-learn sdist")
    ap.add_argument("--python", default=sys.executable, help="interpreter with mlsec and bandit installed")
    ap.add_argument("--drive", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        drive(*args.drive)
        return
    bindir = Path(args.python).parent
    bandit = shutil.which("bandit", path=str(bindir)) or shutil.which("bandit")
    if bandit is None:
        raise SystemExit("bandit is not installed next to the interpreter")
    tree = args.tree or unpack(fetch_sdist([args.python, "-m", "pip"]))
    py_files = sum(1 for _ in tree.rglob("*.py"))
    OUT.mkdir(parents=True, exist_ok=True)
    cache_dir = OUT / "cache"
    env = dict(os.environ, MLSEC_CACHE_DIR=str(cache_dir))
    use_cli = cli_has_bandit(args.python)
    load_before = os.getloadavg()
    report = OUT / "report.json"
    default = ["mlsec", "bandit"]
    specs: list[tuple[str, list[str], str]] = [  # (label, command, cache handling: none/fresh/warm)
        ("bandit -r (plain, 1 process)", [bandit, "-r", str(tree), "-f", "json", "-o", str(report), "-q"], "none"),
        ("mlsec, bandit only", mlsec_cmd(args.python, tree, report, ["bandit"], 1, False, use_cli), "none"),
        ("mlsec, mlsec engine only (ML rules, notebooks, secrets...)",
         mlsec_cmd(args.python, tree, report, ["mlsec"], 1, False, use_cli), "none"),
        ("mlsec default (bandit + ML rules)", mlsec_cmd(args.python, tree, report, default, 1, False, use_cli), "none"),
        ("mlsec default, --jobs 2", mlsec_cmd(args.python, tree, report, default, 2, False, use_cli), "none"),
        ("mlsec default, --jobs 2, cache on and empty (a first run)",
         mlsec_cmd(args.python, tree, report, default, 2, True, use_cli), "fresh"),
        ("mlsec default, unchanged re-scan from cache, --jobs 1",
         mlsec_cmd(args.python, tree, report, default, 1, True, use_cli), "warm"),
        ("mlsec default, unchanged re-scan from cache, --jobs 2",
         mlsec_cmd(args.python, tree, report, default, 2, True, use_cli), "warm"),
    ]
    times: dict[str, list[float]] = {label: [] for label, _, _ in specs}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in specs}
    found: dict[str, dict[str, int]] = {}
    # Rounds interleave the rows, so that load from other processes hits every row alike.
    for round_no in range(args.runs):
        for label, cmd, cache in specs:
            if cache == "fresh":
                shutil.rmtree(cache_dir, ignore_errors=True)
            elif cache == "warm":
                timed(cmd, env)  # make sure the cache holds this exact configuration
            report.unlink(missing_ok=True)
            before = os.times()
            elapsed, _ = timed(cmd, env)
            after = os.times()
            times[label].append(elapsed)
            cpu[label].append(after.children_user - before.children_user + after.children_system - before.children_system)
            if round_no == 0 and report.exists():
                doc = json.loads(report.read_text())
                if "findings" in doc:
                    found[label] = {"findings": len(doc["findings"]), "errors": len(doc["errors"]),
                                    "bandit_findings": sum(1 for f in doc["findings"] if f["rule_id"].startswith("MLSEC-BANDIT"))}
                else:  # bandit's own report
                    found[label] = {"findings": len(doc["results"]), "bandit_findings": len(doc["results"])}
            print(f"round {round_no + 1}: {label}: {elapsed:.2f}s", file=sys.stderr)
    rows: list[dict[str, object]] = []
    for label, cmd, _ in specs:
        med = statistics.median(times[label])
        rows.append({"row": label, "median_s": round(med, 2), "min_s": round(min(times[label]), 2),
                     "cpu_s": round(statistics.median(cpu[label]), 2), "files_per_s": round(py_files / med, 1),
                     "runs": [round(t, 3) for t in times[label]], "command": " ".join(cmd), **found.get(label, {})})
    rows.append(ml_pass_alone(tree, py_files))
    base = float(rows[0]["median_s"])  # type: ignore[arg-type]
    for row in rows:
        row["speedup_vs_bandit"] = round(base / max(float(row["median_s"]), 0.01), 2)  # type: ignore[arg-type]
    meta = {"tree": str(tree.name), "py_files": py_files, "runs": args.runs, "cpus": os.cpu_count(),
            "load_before": load_before, "load_after": os.getloadavg(), "via": "cli" if use_cli else "driver",
            "python": sys.version.split()[0]}
    (HERE / "out" / "code_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{tree.name}: {py_files} Python files, {args.runs} run(s) each, {os.cpu_count()} CPUs, "
          f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}\n")
    print("| run | median s | min s | CPU s | files/s | × bandit -r | findings (bandit's) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        count = f"{row['findings']} ({row.get('bandit_findings', '')})" if "findings" in row else ""
        print(f"| {row['row']} | {row['median_s']} | {row['min_s']} | {row.get('cpu_s', '')} | {row['files_per_s']} | "
              f"{row['speedup_vs_bandit']} | {count} |")


if __name__ == "__main__":
    main()
