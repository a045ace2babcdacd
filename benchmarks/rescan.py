"""Re-scan of an unchanged tree vs the first scan (issue target: at least 10x faster).

Writes a 2,000-file project (Python modules, notebooks-free code, pickled models made with the
standard library, NumPy headers, CSV and JSON data, requirements files), then runs
``mlsec scan`` as a whole process with an empty cache (cold) and again with the warm cache
(hashes and per-file results reused), and prints both times and the ratio. Run from the
repository root with mlsec installed:

    .venv/bin/python benchmarks/rescan.py [--files 2000] [--runs 3] [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODE = '''"""Module {i}."""
import json
import os


def load_{i}(path):
    with open(path) as fh:
        return json.load(fh)


def train_{i}(data, lr=0.01):
    total = 0.0
    for row in data:
        total += sum(row) * lr
    return total
'''


def build(root: Path, files: int, seed: int = 3) -> None:
    rnd = random.Random(seed)
    for i in range(files):
        kind = i % 5
        folder = root / ["src", "models", "data", "data", "src"][kind] / f"d{i % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if kind in (0, 4):
            (folder / f"mod_{i}.py").write_text(CODE.format(i=i))
        elif kind == 1:
            obj = {"weights": [rnd.random() for _ in range(200)], "classes": list(range(10)), "name": f"m{i}"}
            (folder / f"model_{i}.pkl").write_bytes(pickle.dumps(obj, protocol=4))
        elif kind == 2:
            rows = "\n".join(f"{j},{rnd.random():.4f},user{j}" for j in range(200))
            (folder / f"table_{i}.csv").write_text("id,score,name\n" + rows + "\n")
        else:
            (folder / f"meta_{i}.json").write_text(json.dumps({"id": i, "tags": ["a", "b"], "size": rnd.randint(1, 99)}))
    (root / "requirements.txt").write_text("numpy==1.26.4\nscikit-learn==1.4.2\n")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"mlsec failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--mlsec", default=shutil.which("mlsec") or "mlsec")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        build(root, args.files)
        cmd = [args.mlsec, "scan", str(root), "--format", "json", "-q", "-o", os.devnull, "-j", str(args.jobs)]
        cold, warm = [], []
        for run in range(args.runs):
            env = {**os.environ, "MLSEC_CACHE_DIR": str(Path(tmp) / f"cache{run}")}
            cold.append(timed(cmd, env))
            warm.append(timed(cmd, env))
        c, w = sorted(cold)[len(cold) // 2], sorted(warm)[len(warm) // 2]
        print(json.dumps({"files": args.files, "jobs": args.jobs, "cold_s": round(c, 3), "warm_s": round(w, 3),
                          "speedup": round(c / w, 1), "cold_runs": [round(x, 3) for x in cold],
                          "warm_runs": [round(x, 3) for x in warm]}, indent=2))


if __name__ == "__main__":
    main()
