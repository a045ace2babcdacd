#!/usr/bin/env python3
"""Benchmark mlsec against the hashing floor and its peers on two ~1 GiB model files.

What is measured
    Every tool runs as a whole process (interpreter start-up and imports included, exactly what
    a user or a CI job pays), on the same two files:

    * a PyTorch zip checkpoint: ``torch.save`` of a state dict of four float32 tensors
      totalling ``--size-mb`` MiB (the pickle is tiny; the bytes are raw storages in the zip);
    * a PyTorch zip checkpoint shaped like a real model: a 24-layer transformer state dict
      (385 tensors, about 32 KiB of pickle) of the same size;
    * a plain pickle of one NumPy float32 array of ``--size-mb`` MiB
      (``pickle.dump(arr, f, protocol=4)``: the array bytes are one BINBYTES8 opcode in the
      pickle stream itself).

    Tools, each timed ``--runs`` times (min and median wall clock, fork to reap) with the peak
    RSS of every run from ``os.wait4`` on the tool's process (``ru_maxrss``, KiB on Linux; the
    tool is forked by a small trampoline process, see ``measure``):

    * ``openssl dgst -sha256 FILE`` -- the floor: mlsec hashes every artifact, so no scan that
      reports a SHA-256 can be faster than reading and hashing every byte once;
    * ``mlsec scan FILE --format json --no-cache -q`` -- a cold scan (hash + inspection);
    * ``mlsec scan FILE --format json -q`` run twice in a row, the second run measured -- a
      re-scan of an unchanged file, where the digest comes from mlsec's hash cache
      (``MLSEC_CACHE_DIR`` points inside the work dir, emptied at start);
    * ``picklescan -p FILE`` and ``modelscan -p FILE`` when installed (reported as
      "not installed" otherwise).

Why
    mlsec promises that inspecting a model costs about what hashing it costs, and that memory
    stays flat whatever the file size (large byte strings are skipped, never materialized).
    Peers load whole pickles into memory. This script measures both claims on files large
    enough for the difference to show, and records exit codes: mlsec and the peers exit
    non-zero when they report issues, so an exit code of 1 is a result, not a failure.

Conditions
    Files are generated once into ``--workdir`` (reused when present with the right size) and
    read once before timing, so every tool sees a warm page cache: the numbers compare CPU and
    memory behaviour, not disk speed. Runs are interleaved (round-robin over tools) so drift in
    machine load affects every tool alike.

This is run on demand (see ``benchmarks/README.md``); it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIB = 1 << 20
COLS = 1024                 # float32 columns per row: 4 KiB rows
N_TENSORS = 4               # tensors in the state dict
SIZE_SLACK = MIB            # serialization overhead accepted when reusing a file
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out" / "big_files.json"

KIND_TORCH = "torch"
KIND_LAYERS = "torch-layers"
KIND_NUMPY = "numpy"
HIDDEN = 960                # width of the transformer-shaped state dict
LAYERS = 24                 # its blocks: 16 tensors each, like BERT-large's 24 layers


# --------------------------------------------------------------------------------------------
# File generation
# --------------------------------------------------------------------------------------------


def file_name(kind: str, size_mb: int) -> str:
    """Name of the generated file for a kind and size."""
    return {KIND_TORCH: f"checkpoint_{size_mb}mb.pt", KIND_LAYERS: f"transformer_{size_mb}mb.pt"}.get(
        kind, f"array_{size_mb}mb.pkl")


def payload_bytes(size_mb: int) -> int:
    """Tensor/array bytes the file must hold (the serialization adds a little on top)."""
    return size_mb * MIB


def is_current(path: Path, size_mb: int) -> bool:
    """A previously generated file is reused when its size fits the requested payload."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    return payload_bytes(size_mb) <= size < payload_bytes(size_mb) + SIZE_SLACK


def generate_torch(out: Path, size_mb: int) -> None:
    """``torch.save`` of a state dict of N_TENSORS float32 tensors totalling ``size_mb`` MiB.

    Peak memory is the tensors themselves (``size_mb`` MiB): torch.save writes each storage
    straight into the zip, without a second copy.
    """
    import torch

    torch.manual_seed(0)
    rows = size_mb * MIB // (4 * COLS * N_TENSORS)
    state = {}
    for i in range(N_TENSORS):
        # uniform_ fills in place: no temporary the size of the tensor.
        state[f"layers.{i}.weight"] = torch.empty(rows, COLS, dtype=torch.float32).uniform_(-1.0, 1.0)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(state, tmp)  # zip format (the default since PyTorch 1.6)
    os.replace(tmp, out)


def generate_torch_layers(out: Path, size_mb: int) -> None:
    """``torch.save`` of a transformer-shaped state dict (LAYERS blocks of 16 tensors plus an
    embedding that fills the file to ``size_mb`` MiB): the shape of a real checkpoint, whose
    pickle names hundreds of tensors, where the four-tensor file above has an almost empty one.
    """
    import torch

    torch.manual_seed(0)
    h = HIDDEN
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes[p + f"attention.self.{name}.weight"] = (h, h)
            shapes[p + f"attention.self.{name}.bias"] = (h,)
        shapes[p + "attention.output.dense.weight"] = (h, h)
        shapes[p + "attention.output.dense.bias"] = (h,)
        shapes[p + "attention.output.LayerNorm.weight"] = (h,)
        shapes[p + "attention.output.LayerNorm.bias"] = (h,)
        shapes[p + "intermediate.dense.weight"] = (4 * h, h)
        shapes[p + "intermediate.dense.bias"] = (4 * h,)
        shapes[p + "output.dense.weight"] = (h, 4 * h)
        shapes[p + "output.dense.bias"] = (h,)
        shapes[p + "output.LayerNorm.weight"] = (h,)
        shapes[p + "output.LayerNorm.bias"] = (h,)
    used = sum(4 * math.prod(s) for s in shapes.values())
    rows = -(-(payload_bytes(size_mb) - used) // (4 * h))  # round up: at least the payload
    state = {"embeddings.word_embeddings.weight": torch.empty(rows, h).uniform_(-1.0, 1.0)}
    state.update({k: torch.empty(*v).uniform_(-1.0, 1.0) for k, v in shapes.items()})
    tmp = out.with_name(out.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)


def generate_numpy(out: Path, size_mb: int) -> None:
    """``pickle.dump(arr, f, protocol=4)`` of one float32 array of ``size_mb`` MiB.

    The array is filled in 64 MiB blocks (no float64 temporary). Protocol 4 pickles an ndarray
    through ``tobytes()``, so peak memory while dumping is twice the array; that copy is
    inherent to the format being benchmarked.
    """
    import pickle

    import numpy as np

    rows = size_mb * MIB // (4 * COLS)
    arr = np.empty((rows, COLS), dtype=np.float32)
    rng = np.random.default_rng(0)
    block = max(1, (64 * MIB) // (4 * COLS))
    for start in range(0, rows, block):
        rng.random(out=arr[start : start + block], dtype=np.float32)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(arr, fh, protocol=4)
    os.replace(tmp, out)


GENERATORS: dict[str, tuple[str, Callable[[Path, int], None]]] = {
    KIND_TORCH: ("torch", generate_torch),
    KIND_LAYERS: ("torch", generate_torch_layers),
    KIND_NUMPY: ("numpy", generate_numpy),
}


def ensure_file(kind: str, workdir: Path, size_mb: int, fallback_python: str) -> Path:
    """Generate the file unless a file of the right size is already there.

    Generation runs in this interpreter when it can import the needed library, else in
    ``fallback_python`` (``--torch-python``) through a subprocess running this same script.
    """
    path = workdir / file_name(kind, size_mb)
    if is_current(path, size_mb):
        log(f"reusing {path.name} ({path.stat().st_size:,} bytes)")
        return path
    module, func = GENERATORS[kind]
    log(f"generating {path.name} ({size_mb} MiB of float32) ...")
    t0 = time.perf_counter()
    if importlib.util.find_spec(module) is not None:
        func(path, size_mb)
    else:
        if os.path.abspath(fallback_python) == os.path.abspath(sys.executable):  # venvs share a realpath
            raise SystemExit(
                f"error: {module} is not importable here; pass --torch-python PATH "
                f"(an interpreter that has {module})"
            )
        cmd = [fallback_python, str(Path(__file__).resolve()), "--generate", kind,
               "--size-mb", str(size_mb), "--gen-out", str(path)]
        log(f"  {module} not importable here; generating with {fallback_python}")
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    if not is_current(path, size_mb):
        raise SystemExit(f"error: generated {path} has an unexpected size")
    log(f"  done in {time.perf_counter() - t0:.1f}s: {path.stat().st_size:,} bytes")
    return path


def warm_page_cache(path: Path) -> None:
    """Read the file once so every tool starts from the same warm page cache."""
    buf = bytearray(8 * MIB)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One measured process."""

    seconds: float
    max_rss_kib: int | None  # None when the run was killed at the deadline
    exit_code: int           # negative: killed by that signal
    timed_out: bool


@dataclass(frozen=True)
class Tool:
    """A command line to benchmark on each file (``argv`` is None when not installed)."""

    name: str
    argv: tuple[str, ...] | None
    ok_codes: frozenset[int]                # exit codes that mean "ran to completion"
    prime: bool = False                     # run once unmeasured right before each measured run
    env: dict[str, str] = field(default_factory=dict)

    def command(self, path: Path) -> list[str]:
        assert self.argv is not None
        return [part.replace("{file}", str(path)) for part in self.argv]


# Why a trampoline: Python's subprocess starts children with vfork(), and on exec() Linux folds
# the *parent's* peak RSS into the child's ru_maxrss; wait4() straight from this script would
# report this script's own high-water mark for every tool (verified: 318 MB for ``openssl`` after
# the parent had touched 300 MB). So a fresh ``python -S`` (about 5 MB) fork()s the tool, waits
# for it with wait4() and reports ru_maxrss (KiB on Linux), the exit status and the wall clock
# from fork to reap. Peak RSS below about 5 MB cannot be resolved; no tool here is that small.
_TRAMPOLINE = """\
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(sys.argv[1], "w") as fh:
    fh.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {seconds!r}")
"""


def measure(cmd: Sequence[str], env: dict[str, str], stdout: Path, stderr: Path, timeout: float,
            cwd: Path) -> Run:
    """Run ``cmd`` (an absolute executable path first) to completion through the trampoline.

    The deadline is enforced with a pidfd on the trampoline (readable when it exits, before it
    is reaped), so the kill can never hit a recycled pid; the tool and the trampoline share a
    new session and are killed together. ``cwd`` is the work dir, so that no settings file in
    the caller's directory (e.g. ``modelscan-settings.toml``) changes what a tool does.
    """
    report = stdout.with_suffix(".rusage")
    report.unlink(missing_ok=True)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-S", "-c", _TRAMPOLINE, str(report), *cmd],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                cwd=cwd, start_new_session=True)
        timed_out = False
        pidfd = os.pidfd_open(proc.pid) if hasattr(os, "pidfd_open") else None
        if pidfd is not None:
            try:
                ready, _, _ = select.select([pidfd], [], [], timeout)
                if not ready:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
            finally:
                os.close(pidfd)
        proc.wait()
    if timed_out or not report.exists():
        return Run(seconds=timeout, max_rss_kib=None, exit_code=-signal.SIGKILL, timed_out=True)
    rss, code, seconds = report.read_text().split()
    return Run(seconds=float(seconds), max_rss_kib=int(rss), exit_code=int(code), timed_out=False)


@dataclass
class Row:
    """Aggregated result of one tool on one file."""

    tool: str
    file: str
    status: str                          # ok | not installed | timeout | unexpected exit
    median_s: float | None = None
    min_s: float | None = None
    peak_rss_mb: float | None = None     # max over runs, MiB
    exit_codes: list[int] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def finish(self, ok_codes: frozenset[int]) -> None:
        secs = [r.seconds for r in self.runs]
        self.median_s = statistics.median(secs)
        self.min_s = min(secs)
        rss = [r.max_rss_kib for r in self.runs if r.max_rss_kib is not None]
        self.peak_rss_mb = max(rss) / 1024 if rss else None
        self.exit_codes = sorted({r.exit_code for r in self.runs})
        if any(r.timed_out for r in self.runs):
            self.status = "timeout"
        elif not set(self.exit_codes) <= ok_codes:
            self.status = "unexpected exit"


def tail(path: Path, limit: int = 2000) -> str:
    """Last ``limit`` characters of a log file."""
    data = path.read_bytes()[-limit:]
    return data.decode("utf-8", "replace")


def openssl_digest(stdout: Path) -> str | None:
    """Hex digest from ``openssl dgst`` output (``SHA2-256(file)= hex``)."""
    text = stdout.read_text("utf-8", "replace").strip()
    return text.rsplit("= ", 1)[-1].strip() if "= " in text else None


def mlsec_details(stdout: Path) -> dict[str, Any]:
    """What mlsec reported: digest, rules found, errors, skips (from its JSON report)."""
    try:
        report = json.loads(stdout.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return {"json_error": str(exc)}
    artifacts = report.get("artifacts") or [{}]
    return {
        "sha256": artifacts[0].get("sha256"),
        "rules": sorted({f.get("rule_id") for f in report.get("findings", [])}),
        "findings": len(report.get("findings", [])),
        "errors": report.get("errors", []),
        "skipped": report.get("skipped", []),
    }


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------


def find_command(name: str, extra_dirs: Sequence[str]) -> str | None:
    """``name`` in ``--peer-bin`` dirs first, then on PATH (absolute: tools run in the work dir)."""
    for d in extra_dirs:
        found = shutil.which(name, path=d)
        if found:
            return os.path.abspath(found)
    found = shutil.which(name)
    return os.path.abspath(found) if found else None


def python_package_version(script: str, package: str) -> str | None:
    """Version of ``package`` as seen by the interpreter in a console script's shebang."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline().decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    interpreter = first[2:].strip().split()[0]
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    try:
        out = subprocess.run([interpreter, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def build_tools(args: argparse.Namespace, cache_dir: Path) -> tuple[list[Tool], dict[str, str | None]]:
    """The tools to run, and their versions (None when not installed)."""
    peer_dirs = [str(Path(d)) for d in args.peer_bin]
    base_env = dict(os.environ)
    mlsec_env = {**base_env, "MLSEC_CACHE_DIR": str(cache_dir)}
    versions: dict[str, str | None] = {}

    openssl = find_command("openssl", [])
    if openssl:
        versions["openssl"] = subprocess.run([openssl, "version"], check=False, capture_output=True, text=True).stdout.strip()
    mlsec = find_command("mlsec", peer_dirs) or shutil.which("mlsec", path=str(Path(sys.executable).parent))
    if mlsec is None:
        raise SystemExit("error: mlsec not found on PATH (activate the venv or pass --peer-bin)")
    versions["mlsec"] = subprocess.run([mlsec, "--version"], check=False, capture_output=True, text=True).stdout.strip()
    picklescan = find_command("picklescan", peer_dirs)
    modelscan = find_command("modelscan", peer_dirs)
    versions["picklescan"] = picklescan and python_package_version(picklescan, "picklescan")
    versions["modelscan"] = modelscan and python_package_version(modelscan, "modelscan")

    tools = [
        Tool("openssl sha256", (openssl, "dgst", "-sha256", "{file}") if openssl else None,
             frozenset({0}), env=base_env),
        Tool("mlsec (cold)", (mlsec, "scan", "{file}", "--format", "json", "--no-cache", "-q"),
             frozenset({0, 1}), env=mlsec_env),
        Tool("mlsec (warm cache)", (mlsec, "scan", "{file}", "--format", "json", "-q"),
             frozenset({0, 1}), prime=True, env=mlsec_env),
        # picklescan: 0 clean, 1 dangerous globals found; modelscan: 0 clean, 1 issues found.
        Tool("picklescan", (picklescan, "-p", "{file}") if picklescan else None, frozenset({0, 1}), env=base_env),
        Tool("modelscan", (modelscan, "-p", "{file}") if modelscan else None, frozenset({0, 1}), env=base_env),
    ]
    return tools, versions


def benchmark(tools: list[Tool], files: dict[str, Path], runs: int, logdir: Path, timeout: float) -> list[Row]:
    """Round-robin over tools for each file; return one Row per (tool, file)."""
    rows: list[Row] = []
    for label, path in files.items():
        log(f"warming the page cache with {path.name}")
        warm_page_cache(path)
        active = [t for t in tools if t.argv is not None]
        by_tool = {t.name: Row(t.name, label, "ok") for t in active}
        for r in range(1, runs + 1):
            for tool in active:
                slug = f"{path.stem}.{re.sub(r'[^a-z0-9]+', '-', tool.name.lower()).strip('-')}.{r}"
                out, err = logdir / f"{slug}.out", logdir / f"{slug}.err"
                cmd = tool.command(path)
                if tool.prime:
                    measure(cmd, tool.env, out, err, timeout, path.parent)
                run = measure(cmd, tool.env, out, err, timeout, path.parent)
                row = by_tool[tool.name]
                row.runs.append(run)
                log(f"  [{r}/{runs}] {tool.name:<20} {label:<18} {run.seconds:8.2f}s "
                    f"{_num(run.max_rss_kib and run.max_rss_kib / 1024, '8.1f')} MB  exit {run.exit_code}")
                if r == 1:
                    row.details["stdout_tail"] = tail(out, 600)
                    row.details["stderr_tail"] = tail(err, 600)
                    if tool.name.startswith("mlsec"):
                        row.details.update(mlsec_details(out))
                    elif tool.name.startswith("openssl"):
                        row.details["sha256"] = openssl_digest(out)
        for tool in tools:
            if tool.argv is None:
                rows.append(Row(tool.name, label, "not installed"))
            else:
                row = by_tool[tool.name]
                row.finish(tool.ok_codes)
                rows.append(row)
        floor = next((r for r in rows if r.file == label and r.tool.startswith("openssl") and r.median_s), None)
        for row in rows:
            if row.file != label or row.median_s is None:
                continue
            if floor is not None and floor.median_s:
                row.details["x_openssl"] = round(row.median_s / floor.median_s, 3)
            if row.tool.startswith("mlsec") and floor is not None and "sha256" in row.details:
                row.details["sha256_matches_openssl"] = row.details["sha256"] == floor.details.get("sha256")
    return rows


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown_table(rows: list[Row]) -> str:
    """The results as a markdown table."""
    lines = [
        "| tool | file | median s | min s | peak RSS MB | exit code |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        if row.status == "not installed":
            lines.append(f"| {row.tool} | {row.file} | not installed | | | |")
            continue
        codes = ", ".join(str(c) for c in row.exit_codes)
        if row.status != "ok":
            codes += f" ({row.status})"
        lines.append(
            f"| {row.tool} | {row.file} | {_num(row.median_s, '.2f')} | {_num(row.min_s, '.2f')} "
            f"| {_num(row.peak_rss_mb, '.0f')} | {codes} |"
        )
    return "\n".join(lines)


def ratios(rows: list[Row]) -> str:
    """One line per tool and file: median time relative to openssl."""
    out = []
    for row in rows:
        x = row.details.get("x_openssl")
        if x is not None and not row.tool.startswith("openssl"):
            out.append(f"- {row.tool} on {row.file}: {x:.3f}x openssl (median time)")
    return "\n".join(out)


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries the table."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--workdir", type=Path, help="where the big files live (default: a temp dir, removed at exit)")
    p.add_argument("--size-mb", type=int, default=1024, help="payload size of each file in MiB (default 1024)")
    p.add_argument("--runs", type=int, default=3, help="measured runs per tool and file (default 3)")
    p.add_argument("--torch-python", default=sys.executable,
                   help="interpreter with torch (and numpy), used when this one cannot import them")
    p.add_argument("--peer-bin", action="append", default=[], metavar="DIR",
                   help="directory searched before PATH for mlsec, picklescan and modelscan (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default benchmarks/out/big_files.json)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before a single run is killed")
    # Internal: generate one file in this interpreter (used through --torch-python).
    p.add_argument("--generate", choices=sorted(GENERATORS), help=argparse.SUPPRESS)
    p.add_argument("--gen-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.size_mb < 1 or args.runs < 1:
        p.error("--size-mb and --runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate:
        GENERATORS[args.generate][1](args.gen_out, args.size_mb)
        return 0

    temp = args.workdir is None
    workdir = (Path(tempfile.mkdtemp(prefix="mlsec-bench-")) if temp else args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        cache_dir = workdir / "mlsec-cache"
        shutil.rmtree(cache_dir, ignore_errors=True)  # the first warm-cache priming run is a true miss
        logdir = workdir / "logs"
        logdir.mkdir(exist_ok=True)
        files = {
            f"torch zip {args.size_mb} MiB": ensure_file(KIND_TORCH, workdir, args.size_mb, args.torch_python),
            f"torch zip, {LAYERS}-layer state dict {args.size_mb} MiB":
                ensure_file(KIND_LAYERS, workdir, args.size_mb, args.torch_python),
            f"pickle {args.size_mb} MiB": ensure_file(KIND_NUMPY, workdir, args.size_mb, args.torch_python),
        }
        file_info = {label: {"name": path.name, "bytes": path.stat().st_size} for label, path in files.items()}
        tools, versions = build_tools(args, cache_dir)
        rows = benchmark(tools, files, args.runs, logdir, args.timeout)
    finally:
        if temp:
            shutil.rmtree(workdir, ignore_errors=True)

    table = markdown_table(rows)
    print(table)
    print()
    print(ratios(rows))
    result = {
        "schema_version": 1,
        "benchmark": "big_files",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "size_mb": args.size_mb,
        "runs": args.runs,
        "method": "wall clock fork-to-reap and ru_maxrss from wait4 in a fresh trampoline process "
                  "(see measure()); page cache warm; runs interleaved across tools",
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": versions,
        "files": file_info,
        "results": [asdict(r) for r in rows],
        "table_markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
