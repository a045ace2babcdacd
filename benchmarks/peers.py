"""Peer benchmark: mlsec, modelscan, picklescan, fickling and modelaudit on one labelled corpus.

The corpus comes from ``benchmarks/corpus.py`` (hostile samples byte-crafted technique by
technique, every payload aimed at a canary file; benign samples written by the standard library
or made by the real libraries and committed under ``fixtures/``). Each tool runs as a whole
process (its CLI, start-up included) on each sample, with a per-sample timeout, and its verdict
is read from its structured output where it has one. The peers live in their own virtualenv
(``--venv``, created and filled with the pinned versions below when missing), so their
dependencies never meet mlsec's; mlsec runs from the interpreter running this script.

What counts as "flagged" is each tool's own failing verdict, the one that would stop a CI job:

* **mlsec**: a finding at HIGH or CRITICAL in ``--format json`` (what exit code 1 means with the
  default ``--fail-on high``). Error: exit 3 or ``errors[]`` not empty.
* **modelscan** (``-r json``): any issue (its exit 1; every modelscan issue is an unsafe
  operator). Error: ``errors[]`` not empty (modelscan then exits 2 even when it also found
  issues, so the JSON is read). Exit 3 ("no supported files") is "not scanned".
* **picklescan**: ``Dangerous globals`` above 0 in its summary (its exit 1; "suspicious"
  globals do not fail it). Error: exit 2 / an ``ERROR`` line.
* **fickling** ``--check-safety``: exit 1 (anything above ``LIKELY_SAFE``). Error: exit 2 (the
  file did not parse as a pickle). Its CLI takes one file, so a directory sample is run file by
  file and flagged if any file is.
* **modelaudit** (``--format json``): an issue at ``warning`` or ``critical``, or a failed
  security check (its exit 1). Error: ``has_errors``, or exit 2 (an operational error or an
  "inconclusive" file). Also shown: **modelaudit (critical only)**, the same run counting only
  ``critical`` issues.

Timeouts are errors, and a hostile sample that errors is not detected. MB/s is the corpus size
divided by the tool's total wall time over all samples (small files: mostly start-up).
The canary must not exist afterwards: no tool may have executed a payload.

Usage (from the repository root, mlsec installed in the running interpreter)::

    python benchmarks/peers.py                     # venv in benchmarks/out/peers-venv
    python benchmarks/peers.py --tools mlsec,picklescan --timeout 30
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus

OUT = HERE / "out"
# Pinned peers, with the extras that let each read every format it supports: modelscan needs
# TensorFlow for Keras and SavedModel files (about 1.5 GB of venv in all), modelaudit h5py,
# onnx, safetensors and py7zr, picklescan py7zr. No torch: every peer reads PyTorch files
# without it.
PEER_REQUIREMENTS = [
    "modelscan[h5py,tensorflow]==0.8.8",
    "tensorflow==2.21.0",
    "picklescan[7z]==1.0.5",
    "fickling==0.1.12",
    "modelaudit[h5,onnx,safetensors,sevenzip]==0.2.54",
]
# Nothing leaves the machine: telemetry off, no hub look-ups.
QUIET_ENV = {"PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
             "TF_CPP_MIN_LOG_LEVEL": "3"}


@dataclass
class Verdict:
    """One tool on one sample."""

    flagged: bool = False
    error: bool = False
    unscanned: bool = False
    timeout: bool = False
    seconds: float = 0.0
    detail: str = ""
    variants: dict[str, bool] = field(default_factory=dict)  # other readings of the same run


@dataclass
class Tool:
    name: str
    version: str
    run: Callable[[Path, Path, int], Verdict]  # (sample path, scratch dir, timeout)
    variants: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Running one process
# ---------------------------------------------------------------------------------------------


def _exec(argv: list[str], cwd: Path, timeout: int,
          env: dict[str, str] | None = None) -> tuple[int | None, str, str, float]:
    """(exit code or None on timeout, stdout, stderr, wall seconds)."""
    full_env = {**os.environ, **QUIET_ENV, "HOME": str(cwd), **(env or {})}
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return None, out, "", time.perf_counter() - started
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started


def _timed_out(seconds: float) -> Verdict:
    return Verdict(timeout=True, error=True, seconds=seconds, detail="timeout")


def _tail(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text[-n:]


# ---------------------------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------------------------


def mlsec_tool() -> Tool:
    import mlsec

    exe = Path(sys.executable).with_name("mlsec")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlsec"]

    def run(path: Path, scratch: Path, timeout: int) -> Verdict:
        argv = base + ["scan", str(path), "--format", "json", "--no-cache", "-q"]
        rc, out, err, secs = _exec(argv, scratch, timeout, {"MLSEC_CACHE_DIR": str(scratch / "cache")})
        if rc is None:
            return _timed_out(secs)
        try:
            doc = json.loads(out)
        except ValueError:
            return Verdict(error=True, seconds=secs, detail=f"exit {rc}: {_tail(err)}")
        high = [f for f in doc.get("findings", []) if f.get("severity") in ("high", "critical")]
        top = sorted({f"{f['rule_id']}" for f in high})
        return Verdict(flagged=bool(high), error=rc == 3 or bool(doc.get("errors")), seconds=secs,
                       unscanned=not doc.get("artifacts"), detail=", ".join(top[:4]) or f"exit {rc}")

    return Tool("mlsec", mlsec.__version__, run)


def modelscan_tool(venv: Path) -> Tool:
    def run(path: Path, scratch: Path, timeout: int) -> Verdict:
        report = scratch / "modelscan.json"
        report.unlink(missing_ok=True)
        rc, out, err, secs = _exec([str(venv / "bin" / "modelscan"), "-p", str(path), "-r", "json", "-o", str(report)],
                                   scratch, timeout)
        if rc is None:
            return _timed_out(secs)
        try:
            doc = json.loads(report.read_text())
        except (OSError, ValueError):
            return Verdict(error=True, seconds=secs, detail=f"exit {rc}: {_tail(out + err)}")
        issues = doc.get("issues") or []
        errors = doc.get("errors") or []
        scanned = (doc.get("summary", {}).get("scanned") or {}).get("total_scanned", 0)
        detail = ", ".join(sorted({f"{i.get('severity')} {i.get('module')}.{i.get('operator')}" for i in issues})[:3])
        if errors and not detail:
            detail = _tail(str(errors[0].get("description", "")), 120)
        return Verdict(flagged=bool(issues), error=bool(errors), unscanned=rc == 3 and not errors and not scanned,
                       seconds=secs, detail=detail or f"exit {rc}")

    return Tool("modelscan", _venv_version(venv, "modelscan"), run)


_DANGEROUS = re.compile(r"Dangerous globals: (\d+)")


def picklescan_tool(venv: Path) -> Tool:
    def run(path: Path, scratch: Path, timeout: int) -> Verdict:
        rc, out, err, secs = _exec([str(venv / "bin" / "picklescan"), "-p", str(path)], scratch, timeout)
        if rc is None:
            return _timed_out(secs)
        m = _DANGEROUS.search(out)
        dangerous = int(m.group(1)) if m else 0
        found = re.findall(r"dangerous import '([^']+)'", out)
        error = rc == 2 or "ERROR" in out or m is None
        detail = ", ".join(sorted(set(found))[:3]) or (_tail(out + err, 120) if error else f"exit {rc}")
        return Verdict(flagged=dangerous > 0, error=error, seconds=secs, detail=detail,
                       unscanned="Scanned files: 0" in out)

    return Tool("picklescan", _venv_version(venv, "picklescan"), run)


_FICKLING_ORDER = ["LIKELY_SAFE", "POSSIBLY_UNSAFE", "SUSPICIOUS", "LIKELY_UNSAFE", "LIKELY_OVERTLY_MALICIOUS",
                   "OVERTLY_MALICIOUS"]


def _fickling_severity(report: Path) -> str:
    """Worst severity in fickling's JSON file (one object appended per stacked pickle)."""
    try:
        text = report.read_text()
    except OSError:
        return ""
    decoder, pos, found = json.JSONDecoder(), 0, []
    while pos < len(text):
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        found.append(str(obj.get("severity", "")) if isinstance(obj, dict) else "")
        while pos < len(text) and text[pos].isspace():
            pos += 1
    ranked = [f for f in found if f in _FICKLING_ORDER]
    return max(ranked, key=_FICKLING_ORDER.index) if ranked else ""


def fickling_tool(venv: Path) -> Tool:
    def one(file: Path, scratch: Path, timeout: int) -> Verdict:
        report = scratch / "fickling.json"
        report.unlink(missing_ok=True)
        argv = [str(venv / "bin" / "fickling"), "--check-safety", "--json-output", str(report), str(file)]
        rc, _out, err, secs = _exec(argv, scratch, timeout)
        if rc is None:
            return _timed_out(secs)
        severity = _fickling_severity(report)
        if rc == 1 and severity:  # exit 1 without a report is a crash (an uncaught exception)
            return Verdict(flagged=True, seconds=secs, detail=severity)
        if rc == 0:
            return Verdict(seconds=secs, detail=severity or "LIKELY_SAFE")
        return Verdict(error=True, seconds=secs, detail=f"exit {rc}: {_tail(err, 100)}")

    def run(path: Path, scratch: Path, timeout: int) -> Verdict:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        parts = [one(f, scratch, timeout) for f in files]
        return Verdict(flagged=any(p.flagged for p in parts), error=any(p.error for p in parts),
                       timeout=any(p.timeout for p in parts), seconds=sum(p.seconds for p in parts),
                       detail="; ".join(p.detail for p in parts)[:200])

    return Tool("fickling", _venv_version(venv, "fickling"), run)


def modelaudit_tool(venv: Path) -> Tool:
    def run(path: Path, scratch: Path, timeout: int) -> Verdict:
        report = scratch / "modelaudit.json"
        report.unlink(missing_ok=True)
        argv = [str(venv / "bin" / "modelaudit"), "scan", str(path), "--format", "json", "--no-cache", "-q",
                "-o", str(report)]
        rc, out, err, secs = _exec(argv, scratch, timeout)
        if rc is None:
            return _timed_out(secs)
        try:
            doc = json.loads(report.read_text())
        except (OSError, ValueError):
            return Verdict(error=True, seconds=secs, detail=f"exit {rc}: {_tail(out + err)}")
        issues = doc.get("issues") or []
        severities = [str(i.get("severity", "")).lower() for i in issues]
        failed_checks = [c for c in doc.get("checks") or [] if c.get("status") == "failed"
                         and str(c.get("severity", "")).lower() in ("warning", "critical")]
        critical = "critical" in severities
        flagged = critical or "warning" in severities or bool(failed_checks)
        pairs = list(zip(severities, issues))
        shown = [(s, i) for s, i in pairs if s in ("warning", "critical")] or pairs
        top = sorted({f"{s}: {i.get('message', '')[:60]}" for s, i in shown})
        # Exit 2 without has_errors is modelaudit's "inconclusive" (it could not finish the file).
        return Verdict(flagged=flagged, error=bool(doc.get("has_errors")) or rc == 2, seconds=secs,
                       unscanned=not doc.get("files_scanned"), detail="; ".join(top[:2]) or f"exit {rc}",
                       variants={"critical only": critical})

    return Tool("modelaudit", _venv_version(venv, "modelaudit"), run, variants=("critical only",))


# ---------------------------------------------------------------------------------------------
# The peers' virtualenv
# ---------------------------------------------------------------------------------------------


def _venv_version(venv: Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "?"


def ensure_venv(venv: Path) -> None:
    """Create the peers' virtualenv and install the pinned peers unless they are already there."""
    if not (venv / "bin" / "python").exists():
        print(f"creating {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wanted = {r.split("[")[0].split("==")[0]: r.split("==")[1] for r in PEER_REQUIREMENTS}
    if all(_venv_version(venv, d) == v for d, v in wanted.items()):
        return
    print(f"installing {', '.join(PEER_REQUIREMENTS)} into {venv}", file=sys.stderr)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True)


# ---------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_all(tools: list[Tool], samples: list[Any], root: Path, timeout: int) -> dict[str, dict[str, Verdict]]:
    """Every tool on every sample, interleaved sample by sample (same cache state for all)."""
    results: dict[str, dict[str, Verdict]] = {t.name: {} for t in tools}
    for n, sample in enumerate(samples, 1):
        for tool in tools:
            with tempfile.TemporaryDirectory(prefix=f"peers-{tool.name}-") as scratch:
                results[tool.name][sample.id] = tool.run((root / sample.path).resolve(), Path(scratch), timeout)
        if n % 10 == 0 or n == len(samples):
            print(f"  {n}/{len(samples)} samples", file=sys.stderr)
    return results


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f} %" if b else "n/a"


def _hit(verdict: Verdict, variant: str | None) -> bool:
    return verdict.variants.get(variant, False) if variant else verdict.flagged


HEADER = ("| tool | version | hostile detected | detection rate | benign flagged | false-positive rate "
          "| errors / timeouts | not scanned | MB/s | median s/sample |")


def summarize(tools: list[Tool], samples: list[Any], results: dict[str, dict[str, Verdict]],
              sizes: dict[str, int]) -> tuple[str, dict[str, Any]]:
    """The markdown report and its JSON form."""
    hostile = [s for s in samples if s.hostile]
    benign = [s for s in samples if not s.hostile]
    total_mb = sum(sizes.values()) / 1e6
    data: dict[str, Any] = {}
    lines = [HEADER, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    details: list[str] = []
    for tool in tools:
        res = results[tool.name]
        for variant in (None, *tool.variants):
            label = f"{tool.name} ({variant})" if variant else tool.name
            missed = [s for s in hostile if not _hit(res[s.id], variant)]
            flagged = [s for s in benign if _hit(res[s.id], variant)]
            detected = len(hostile) - len(missed)
            errors = sum(res[s.id].error for s in samples)
            timeouts = sum(res[s.id].timeout for s in samples)
            unscanned = sum(res[s.id].unscanned and not res[s.id].error for s in samples)
            secs = [res[s.id].seconds for s in samples]
            mbps = total_mb / sum(secs) if sum(secs) else 0.0
            lines.append(f"| {label} | {tool.version} | {detected}/{len(hostile)} | {_pct(detected, len(hostile))} "
                         f"| {len(flagged)}/{len(benign)} | {_pct(len(flagged), len(benign))} | {errors} / {timeouts} "
                         f"| {unscanned} | {mbps:.2f} | {statistics.median(secs):.2f} |")
            data[label] = {
                "version": tool.version, "detected": detected, "hostile": len(hostile),
                "false_positives": len(flagged), "benign": len(benign), "errors": errors, "timeouts": timeouts,
                "not_scanned": unscanned, "mb_per_s": round(mbps, 3), "seconds": round(sum(secs), 3),
                "missed": [s.id for s in missed], "false_positive_samples": [s.id for s in flagged],
            }
            details += [f"### {label}: missed {len(missed)} hostile, flagged {len(flagged)} benign", ""]
            details += [f"- missed `{s.id}` ({s.format}): {s.technique} — {res[s.id].detail or 'no issue'}"
                        for s in missed]
            details += [f"- flagged benign `{s.id}` ({s.format}): {s.technique} — {res[s.id].detail}"
                        for s in flagged]
            details.append("")
    head = (f"{len(samples)} samples ({len(hostile)} hostile, {len(benign)} benign), {total_mb:.2f} MB.")
    return "\n".join(["## Peer benchmark", "", head, "", *lines, "", *details]), data


def main() -> int:
    parser = argparse.ArgumentParser(description="mlsec vs modelscan, picklescan, fickling and modelaudit")
    parser.add_argument("--venv", type=Path, default=OUT / "peers-venv",
                        help="the peers' virtualenv (created if missing)")
    parser.add_argument("--workdir", type=Path, default=OUT / "peers", help="corpus and results (recreated)")
    parser.add_argument("--tools", default="mlsec,modelscan,picklescan,fickling,modelaudit")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per tool and sample")
    parser.add_argument("--all-kinds", action="store_true",
                        help="also run on the code, notebook, requirements and dataset samples (not model files)")
    parser.add_argument("--no-install", action="store_true", help="use --venv as it is")
    parser.add_argument("--large-mb", type=int, default=16, help="size of the tensor-sized samples (MiB)")
    args = parser.parse_args()

    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    peers = [n for n in names if n != "mlsec"]
    if peers and not args.no_install:
        ensure_venv(args.venv)
    factories: dict[str, Callable[[], Tool]] = {
        "mlsec": mlsec_tool, "modelscan": lambda: modelscan_tool(args.venv),
        "picklescan": lambda: picklescan_tool(args.venv), "fickling": lambda: fickling_tool(args.venv),
        "modelaudit": lambda: modelaudit_tool(args.venv),
    }
    unknown = sorted(set(names) - set(factories))
    if unknown:
        parser.error(f"unknown tools: {', '.join(unknown)}")
    tools = [factories[n]() for n in names]

    root = args.workdir / "corpus"
    samples = [s for s in corpus.build(root, args.large_mb) if s.model or args.all_kinds]
    sizes = {s.id: _size(root / s.path) for s in samples}
    print(f"{len(samples)} samples; running {', '.join(f'{t.name} {t.version}' for t in tools)}", file=sys.stderr)
    started = time.perf_counter()
    results = run_all(tools, samples, root, args.timeout)
    canary = (root / "CANARY").exists()
    report, data = summarize(tools, samples, results, sizes)
    wall = time.perf_counter() - started
    report += f"\nCanary file created by a tool: {'YES' if canary else 'no'}. Wall time {wall:.0f} s.\n"
    print(report)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "report.md").write_text(report)
    detail = {t.name: {sid: vars(v) for sid, v in results[t.name].items()} for t in tools}
    (args.workdir / "results.json").write_text(json.dumps({
        "summary": data, "samples": [s.to_dict() | {"bytes": sizes[s.id]} for s in samples], "verdicts": detail,
        "python": sys.version.split()[0], "canary_created": canary}, indent=1))
    return 1 if canary else 0


if __name__ == "__main__":
    sys.exit(main())
