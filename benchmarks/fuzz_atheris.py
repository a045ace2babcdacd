"""Coverage-guided fuzzing of mlsec's parsers with atheris (libFuzzer), on demand only.

Why: ``tests/test_fuzz.py`` (and its long run, ``benchmarks/fuzz.py``) damage fixtures at random
with hypothesis; it never learns which bytes reach new code. libFuzzer keeps every input that
covers a new branch of an instrumented mlsec module and mutates those, so it gets deep into the
hand-written readers (pickle opcodes, zip central directories, GGUF metadata, protobuf wire
format, Parquet's Thrift footer...). Not part of the test suite: nothing here is collected.

Each input goes through the same entry point as ``tests/test_fuzz.py``: the bytes are written to
one file under a scratch directory, named for the target (the name routes name-based parsers:
manifests, notebooks, extension hints), and ``mlsec.pipeline.run`` scans it. A target with
several routes (``manifests``, ``text``, ``images``, ``all``) uses the first input byte to pick
the file name and scans the rest. Seeds are the committed ``fixtures/`` files (256 KiB at most,
as in test_fuzz, plus tarballs built from them), copied into a temporary corpus directory; the
repository is never written to.

What counts as a crash (libFuzzer saves the input under ``--crash-dir``, default
``/tmp/atheris-crashes``): an exception escaping ``run``; an ``ErrorRecord`` in the result (a
scanner raised: the scanner is run again outside the pipeline's isolation so the crash shows the
original traceback); a scanner that used up the per-input time budget (``--budget``, the
artifact timeout: an ``ErrorRecord`` with ``DeadlineExceeded``, raised as ``ScanHang``); a file
the result does not account for; and what libFuzzer itself catches (a hang past ``-timeout``,
memory past ``-rss_limit_mb``, a deadly signal in a C extension). If the fuzzing process is
killed by a signal libFuzzer does not catch, the input it was on is kept as
``<target>-killed-<SIGNAL>-<sha1>``. Findings and skips, whatever they say, are fine.
``--ignore TEXT`` lets a run go on past a known bug (an ``ErrorRecord`` whose message contains
TEXT). Instrumented code runs about 3-5x slower than plain: time a ``ScanHang`` input again
with the plain interpreter before calling it a hang.

Run it (its own virtualenv: atheris is not a dependency of mlsec; no torch needed)::

    python3.11 -m venv /tmp/atheris-venv
    /tmp/atheris-venv/bin/pip install atheris -e '.[formats,data]'
    /tmp/atheris-venv/bin/python benchmarks/fuzz_atheris.py --list
    /tmp/atheris-venv/bin/python benchmarks/fuzz_atheris.py --target pickle -max_total_time=300

Arguments starting with ``-`` that are not this script's go to libFuzzer (``-max_total_time``,
``-runs``, ``-max_len``, ``-dict``...); ``-fork``/``-jobs`` above 1 use more cores. Positional
paths also go to libFuzzer: files are run once each (reproduce a crash with
``--target pickle /tmp/atheris-crashes/pickle-crash-<sha1>``); directories are corpus
directories read along with the seeds, the first one receiving the new inputs (keep one outside
the repository, e.g. ``/tmp/atheris-corpus/pickle``, to resume a run).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pkgutil
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
MAX_SEED = 256 << 10  # as in tests/test_fuzz.py
LAST_INPUT = "last-input"  # in the scratch directory, beside the scan directory


def _import_all_of_mlsec() -> None:
    """Import every mlsec module now (under instrumentation): the scanners and readers load lazily."""
    import mlsec

    for mod in pkgutil.walk_packages(mlsec.__path__, "mlsec."):
        if not mod.name.endswith("__main__"):
            __import__(mod.name)


with atheris.instrument_imports(include=["mlsec"]):
    _import_all_of_mlsec()
    from mlsec.discover import Candidate, discover
    from mlsec.engine.context import Limits
    from mlsec.model import Artifact, ErrorRecord, ScanResult
    from mlsec.pipeline import Options, run
    from mlsec.registry import ScanContext, scanners


class ToolBug(Exception):
    """A scanner failed in a way the pipeline could only record as an ErrorRecord."""


class ScanHang(Exception):
    """A scanner used up the per-input time budget (cooperative timeout)."""


@dataclass(frozen=True)
class Route:
    """The file name an input is scanned as, and the fixtures that seed it."""

    name: str
    seeds: tuple[str, ...]  # globs under fixtures/
    extra: Callable[[], list[bytes]] | None = None  # seeds built from fixtures at start-up


def _tarballs() -> list[bytes]:
    """Tar and tar.gz seeds (no tar fixture is committed): a pickle and a .npy member each."""
    out = []
    for mode in ("w", "w:gz"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            for rel in ("benign/plain/builtins_p4.pkl", "benign/numpy/array.npy"):
                tar.add(FIXTURES / rel, arcname=f"model/{Path(rel).name}")
        out.append(buf.getvalue())
    return out


MANIFEST_ROUTES = (
    Route("requirements.txt", ("deps/requirements/requirements.txt", "deps/requirements/base.txt",
                               "demo/requirements.txt")),
    Route("constraints.txt", ("deps/requirements/constraints.txt",)),
    Route("pyproject.toml", ("deps/projects/**/pyproject.toml",)),
    Route("setup.cfg", ("deps/projects/setup.cfg",)),
    Route("poetry.lock", ("deps/locks/poetry.lock",)),
    Route("uv.lock", ("deps/locks/uv.lock",)),
    Route("Pipfile.lock", ("deps/locks/Pipfile.lock",)),
    Route("pylock.toml", ("deps/locks/pylock.toml",)),
    Route("environment.yml", ("deps/projects/environment.yml",)),
)
TEXT_ROUTES = (
    Route("data.csv", ("**/*.csv",)),
    Route("data.tsv", ("**/*.tsv",)),
    Route("data.jsonl", ("**/*.jsonl",)),
    Route("data.json", ("data/text/*.json",)),
)
IMAGE_ROUTES = tuple(Route(f"image.{ext}", (f"**/*.{ext}",)) for ext in ("png", "jpg", "gif", "webp", "tiff"))

TARGETS: dict[str, tuple[Route, ...]] = {
    "pickle": (Route("model.pkl", ("benign/**/*.pkl", "demo/**/*.pkl", "**/*.joblib")),),
    "container": (Route("model.pt", ("**/*.pt", "**/*.bin", "**/*.npz", "**/*.keras", "**/*.gz"),
                        _tarballs),),
    "numpy": (Route("array.npy", ("**/*.npy",)),),
    "safetensors": (Route("model.safetensors", ("**/*.safetensors",)),),
    "gguf": (Route("model.gguf", ("**/*.gguf",)),),
    "onnx": (Route("model.onnx", ("**/*.onnx",)),),
    "savedmodel": (Route("saved_model.pb", ("**/*.pb",)),),
    "hdf5": (Route("model.h5", ("**/*.h5",)),),
    "7z": (Route("bundle.7z", ("**/*.7z",)),),
    "parquet": (Route("data.parquet", ("**/*.parquet",)),),
    "arrow": (Route("data.arrow", ("**/*.arrow", "**/*.feather")),),
    "notebook": (Route("notebook.ipynb", ("**/*.ipynb",)),),
    "code": (Route("train.py", ("**/*.py",)),),
    "manifests": MANIFEST_ROUTES,
    "text": TEXT_ROUTES,
    "images": IMAGE_ROUTES,
}
TARGETS["all"] = tuple(r for routes in list(TARGETS.values()) for r in routes)


def seeds(routes: tuple[Route, ...]) -> list[bytes]:
    """Seed inputs for a target: each fixture of each route (prefixed with its route byte when
    the target has several routes)."""
    out: list[bytes] = []
    for i, route in enumerate(routes):
        found = {p for pattern in route.seeds for p in FIXTURES.glob(pattern)
                 if p.is_file() and p.stat().st_size <= MAX_SEED and "__pycache__" not in p.parts}
        datas = [p.read_bytes() for p in sorted(found)] + (route.extra() if route.extra else [])
        prefix = bytes([i]) if len(routes) > 1 else b""
        out += [prefix + d for d in datas]
    return out


def write_corpus(directory: Path, inputs: list[bytes]) -> None:
    """One file per seed input."""
    for i, data in enumerate(inputs):
        (directory / f"seed-{i:04d}").write_bytes(data)


class Harness:
    """The fuzz target: one input -> one file -> one pipeline run -> a verdict."""

    def __init__(self, routes: tuple[Route, ...], workdir: Path, budget: float,
                 ignore: tuple[str, ...] = ()) -> None:
        self.routes = routes
        self.workdir = workdir
        self.options = Options(use_cache=False, limits=Limits(timeout=budget))
        self.ignore = ignore

    def route(self, data: bytes) -> tuple[Route, bytes]:
        """The route for an input and the bytes to scan (the first byte picks among several)."""
        if len(self.routes) == 1 or not data:
            return self.routes[0], data
        return self.routes[data[0] % len(self.routes)], data[1:]

    def __call__(self, data: bytes) -> None:
        (self.workdir.parent / LAST_INPUT).write_bytes(data)  # the parent keeps it if the child is killed
        route, body = self.route(data)
        path = self.workdir / route.name
        path.write_bytes(body)
        result = run([str(path)], self.options)
        check(result, path, self.options, self.ignore)


def check(result: ScanResult, path: Path, options: Options, ignore: tuple[str, ...] = ()) -> None:
    """Raise on a tool bug; findings and skips are fine, and so are errors matching ``ignore``."""
    if not result.artifacts and not result.skipped:
        raise ToolBug(f"{path.name}: the result accounts for no artifact and no skip")
    for error in result.errors:
        if any(text in error.message for text in ignore):
            continue
        if error.message.startswith("DeadlineExceeded"):
            raise ScanHang(f"{error.scanner} on {path.name}: {error.message}")
        rerun(error, path, options)
        raise ToolBug(f"{error.scanner} on {path.name}: {error.message} (not raised again outside run)")


def rerun(error: ErrorRecord, path: Path, options: Options) -> None:
    """Run the failing scanner again without the pipeline's isolation: its exception escapes
    with the original traceback (the pipeline keeps only its message)."""
    cand = next(c for c in discover([str(path)]) if isinstance(c, Candidate))
    artifact = Artifact(cand.path, cand.kind, cand.format, cand.size, "", cand.fs_path)
    ctx = ScanContext(limits=options.limits, engines=options.engines)
    scanner = next(s for s in scanners() if s.name == error.scanner)
    for _ in scanner.scan(artifact, ctx):
        pass


def fuzz(target: str, workdir: Path, budget: float, ignore: tuple[str, ...], lf_args: list[str]) -> None:
    """Child process: hand over to libFuzzer (never returns)."""
    atheris.Setup([sys.argv[0], *lf_args], Harness(TARGETS[target], workdir, budget, ignore))
    atheris.Fuzz()


def libfuzzer_args(rest: list[str], corpus: Path | None, crash_dir: Path, target: str,
                   budget: float) -> list[str]:
    """libFuzzer's arguments: the user's, plus safe defaults (crashes outside the repo, a hang
    limit above the cooperative budget, final stats) and the seed corpus when none was given."""
    args = list(rest)
    given = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    if "-artifact_prefix" not in given:
        crash_dir.mkdir(parents=True, exist_ok=True)
        args.append(f"-artifact_prefix={crash_dir}/{target}-")
    if "-timeout" not in given:
        args.append(f"-timeout={int(budget * 3 + 10)}")
    if "-print_final_stats" not in given:
        args.append("-print_final_stats=1")
    if corpus is not None:
        args.append(str(corpus))
    return args


def keep_last_input(last: Path, crash_dir: Path, target: str, signum: int) -> None:
    """Copy the child's last input to the crash directory, named for the signal that killed it."""
    if not last.exists():
        return
    data = last.read_bytes()
    crash_dir.mkdir(parents=True, exist_ok=True)
    dest = crash_dir / f"{target}-killed-{signal.Signals(signum).name}-{hashlib.sha1(data).hexdigest()}"
    dest.write_bytes(data)
    print(f"child killed by {signal.Signals(signum).name}; last input kept in {dest}", file=sys.stderr)


def inside_repo(path: Path) -> bool:
    """Whether ``path`` is in the repository (crashes and corpora must never be written there)."""
    return path.resolve().is_relative_to(REPO)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--target", choices=sorted(TARGETS), help="which parser route(s) to fuzz")
    ap.add_argument("--list", action="store_true", help="list the targets, their file names and seed counts")
    ap.add_argument("--budget", type=float, default=5.0, help="seconds per input (the artifact timeout)")
    ap.add_argument("--crash-dir", type=Path, default=Path("/tmp/atheris-crashes"))
    ap.add_argument("--ignore", action="append", default=[], metavar="TEXT",
                    help="an ErrorRecord whose message contains TEXT is a known bug, not a crash")
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)  # set by the parent for the child
    args, rest = ap.parse_known_args()
    if args.list:
        for name, routes in TARGETS.items():
            print(f"{name:12} {len(seeds(routes)):4} seeds  {' '.join(r.name for r in routes)}")
        return
    if args.target is None:
        ap.error("--target is required (see --list)")
    if inside_repo(args.crash_dir) or any(not a.startswith("-") and inside_repo(Path(a)) and Path(a).is_dir()
                                          for a in rest):
        ap.error("crash and corpus directories must be outside the repository")
    if args.workdir is not None:
        fuzz(args.target, args.workdir, args.budget, tuple(args.ignore), rest)
        return
    sys.exit(parent(args, rest))


def parent(args: argparse.Namespace, rest: list[str]) -> int:
    """Scratch space (on tmpfs when there is one) and seeds, then libFuzzer in a child process, so
    that the scratch space is removed whatever way libFuzzer exits; returns the child's exit code."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    scratch = Path(tempfile.mkdtemp(prefix="mlsec-atheris-", dir=shm))
    try:
        workdir, corpus = scratch / "scan", scratch / "corpus"
        workdir.mkdir()
        corpus.mkdir()
        paths = [Path(a) for a in rest if not a.startswith("-")]
        own_corpus = all(p.is_dir() for p in paths)  # files given: run just those, no seeds
        if own_corpus:
            write_corpus(corpus, seeds(TARGETS[args.target]))
        env = {**os.environ, "MLSEC_CACHE_DIR": str(scratch / "cache")}
        lf_args = libfuzzer_args(rest, corpus if own_corpus else None, args.crash_dir, args.target,
                                 args.budget)
        cmd = [sys.executable, __file__, "--target", args.target, "--budget", str(args.budget),
               "--crash-dir", str(args.crash_dir), "--workdir", str(workdir),
               *(f"--ignore={text}" for text in args.ignore), *lf_args]
        code = subprocess.run(cmd, env=env, check=False).returncode
        if code < 0:  # killed by a signal libFuzzer did not catch: keep the input it was on
            keep_last_input(scratch / LAST_INPUT, args.crash_dir, args.target, -code)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return code


if __name__ == "__main__":
    main()
