"""Write the labelled corpus (hostile and benign ML files) that ``peers.py`` runs every tool on.

The generator itself lives in ``tests/hostile_corpus.py`` so that the never-execute test and
this benchmark count the same samples; this script loads it by path (the benchmarks are not a
package) and adds the layout the benchmark wants:

    OUT/hostile/<sample id>/...    byte-crafted hostile samples (canary payloads)
    OUT/benign/<sample id>/...     byte-crafted benign samples + copies of the committed fixtures
    OUT/outside/secret.bin         what the ONNX external-data samples point at (outside the corpus)
    OUT/CANARY                     must never exist: every payload would create it
    OUT/manifest.json              one object per sample: id, technique, format, hostile, path...

No torch, NumPy or other ML library is needed: hostile samples are written byte by byte, and the
benign ones are either written by the standard library or were made by the real libraries and
committed under ``fixtures/``. Usage::

    python benchmarks/corpus.py benchmarks/out/peers/corpus
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def generator() -> ModuleType:
    """``tests/hostile_corpus.py``, imported by path."""
    path = REPO / "tests" / "hostile_corpus.py"
    spec = importlib.util.spec_from_file_location("hostile_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("hostile_corpus", module)  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


def build(out: Path, large_mb: int = 16) -> list[Any]:
    """(Re)write the corpus under ``out``; return the samples, paths relative to ``out``.

    ``large_mb`` sizes the tensor-sized samples (one hostile, three benign)."""
    gen = generator()
    if out.exists():
        shutil.rmtree(out)
    (out / "outside").mkdir(parents=True)
    outside = out / "outside" / "secret.bin"
    outside.write_bytes(b"not for a model to read\n")
    hostile = gen.hostile_samples(out / "hostile", out.resolve() / "CANARY", outside.resolve(), large_mb)
    benign = gen.benign_samples(out / "benign", REPO, large_mb)
    samples = [_prefixed(gen, s, "hostile") for s in hostile] + [_prefixed(gen, s, "benign") for s in benign]
    gen.write_manifest(out / "manifest.json", samples)
    return samples


def _prefixed(gen: ModuleType, sample: Any, folder: str) -> Any:
    fields = sample.to_dict() | {"path": f"{folder}/{sample.path}", "target": f"{folder}/{sample.target}"}
    return gen.Sample(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="directory to (re)create")
    parser.add_argument("--large-mb", type=int, default=16, help="size of the tensor-sized samples")
    args = parser.parse_args()
    samples = build(args.out, args.large_mb)
    hostile = sum(s.hostile for s in samples)
    print(f"{len(samples)} samples ({hostile} hostile, {len(samples) - hostile} benign) in {args.out}")


if __name__ == "__main__":
    main()
