"""The long fuzz run: the property of tests/test_fuzz.py with many more examples.

    .venv/bin/python benchmarks/fuzz.py [--examples 20000]

Prints the number of examples, the wall time and pytest's verdict; a failure shows the
smallest damaged input hypothesis found (the seed fixture and the bytes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20000)
    args = ap.parse_args()
    env = {**os.environ, "MLSEC_FUZZ_EXAMPLES": str(args.examples)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests/test_fuzz.py", "-p", "no:cacheprovider"],
                          cwd=REPO, env=env, check=False)
    print(f"{args.examples} examples in {time.perf_counter() - start:.1f} s: "
          f"{'no crash, no hang' if proc.returncode == 0 else 'FAILED'}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
