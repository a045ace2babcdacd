"""Bounded fuzzing of every parser, through the real pipeline, seeded with every fixture.

Each example takes a committed fixture (models of every format, archives, manifests, lockfiles,
code, notebooks, datasets), damages it (truncation, bit flips, inserted or duplicated chunks,
huge length fields), keeps its name (so name-routed parsers run too), and scans it. Whatever
the bytes, the scan must account for the file with findings or skips and raise nothing (an
ErrorRecord means a reader crashed or hung past the time limit). ``benchmarks/fuzz.py`` runs the
same property for longer: ``MLSEC_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsec.engine.context import Limits
from mlsec.pipeline import Options, run
from tests.conftest import FIXTURES

MAX_SEED = 256 << 10
SEEDS = sorted(
    p for p in FIXTURES.rglob("*")
    if p.is_file() and p.stat().st_size <= MAX_SEED and "__pycache__" not in p.parts and not p.name.endswith(".md")
)
EXAMPLES = int(os.environ.get("MLSEC_FUZZ_EXAMPLES", "150"))
OPTIONS = Options(use_cache=False, limits=Limits(timeout=20))


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    seed = draw(st.sampled_from(SEEDS))
    data = bytearray(seed.read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "duplicate", "huge"]))
        if not data:
            data = bytearray(draw(st.binary(max_size=64)))
            continue
        at = draw(st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[at:]
        elif op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif op == "duplicate":
            end = min(len(data), at + draw(st.integers(1, 512)))
            data[at:at] = data[at:end]
        else:  # a length field blown up: 2^31, 2^32-1, 2^63, or -1
            value = draw(st.sampled_from([1 << 31, (1 << 32) - 1, 1 << 63, (1 << 64) - 1]))
            data[at : at + 8] = struct.pack("<Q", value)
    return seed.relative_to(FIXTURES).as_posix().replace("/", "__"), bytes(data)


def test_there_are_seeds_of_every_kind() -> None:
    suffixes = {p.suffix for p in SEEDS}
    assert {".pkl", ".pt", ".npy", ".txt", ".json"} <= suffixes, suffixes


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=damaged())
def test_damaged_inputs_give_findings_or_skips_never_errors(case: tuple[str, bytes]) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        result = run([str(path)], OPTIONS)
    assert result.errors == (), (name, len(data), result.errors)
    assert len(result.artifacts) + len(result.skipped) >= 1
