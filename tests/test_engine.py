"""Unit tests of the pickle engine on hand-written opcode streams.

Hostile end-to-end samples live in test_hostile.py; these pin down the machine itself:
value tracking through the memo, call detection, name normalization, damage handling and the
flat-memory treatment of big byte strings.
"""

from __future__ import annotations

import pickle
import struct

import pytest

from mlsec.engine.context import Inspection, Limits
from mlsec.engine.pickle import Blob, PickleMachine, looks_like_pickle, normalize, preview
from mlsec.engine.stream import bytes_stream
from mlsec.model import Severity


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def run(data: bytes, limits: Limits = Limits()) -> tuple[Inspection, object]:
    insp = Inspection(path="t.pkl", scanner="test", limits=limits)
    info = PickleMachine(bytes_stream(data), insp).run()
    return insp, info


def test_call_through_memo_is_attributed_to_the_global() -> None:
    # STACK_GLOBAL os.system, MEMOIZE, POP, then BINGET 0 and REDUCE: the callable travels via the memo.
    data = b"\x80\x04" + _s("os") + _s("system") + b"\x93\x94" + b"0" + b"h\x00" + _s("id") + b"\x85R."
    insp, info = run(data)
    (f,) = insp.findings
    assert f.rule_id == "MLSEC-PICKLE-001" and f.severity == Severity.CRITICAL
    ev = dict(f.evidence)
    assert ev["global"] == "os.system" and ev["call"] == "os.system('id',)"


def test_import_without_call_of_unknown_global_is_medium() -> None:
    data = b"\x80\x02cmypkg.sub\nHelper\nq\x00."
    insp, _ = run(data)
    (f,) = insp.findings
    assert (f.rule_id, f.severity) == ("MLSEC-PICKLE-003", Severity.MEDIUM)


def test_call_of_unknown_global_is_high() -> None:
    data = b"\x80\x02cmypkg.sub\nmake\n)R."
    insp, _ = run(data)
    (f,) = insp.findings
    assert (f.rule_id, f.severity) == ("MLSEC-PICKLE-002", Severity.HIGH)


def test_allowlisted_globals_are_silent() -> None:
    import collections

    insp, info = run(pickle.dumps(collections.OrderedDict(a=1), protocol=2))
    assert insp.findings == [] and info.stopped  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [("__builtin__", "eval", ("builtins", "eval")), ("copy_reg", "_reconstructor", ("copyreg", "_reconstructor")),
     ("UserDict", "UserDict", ("collections", "UserDict")), ("numpy", "ndarray", ("numpy", "ndarray"))],
)
def test_python2_names_are_mapped(module: str, name: str, expected: tuple[str, str]) -> None:
    assert normalize(module, name) == expected


def test_dotted_name_chain_reaching_a_denied_module_is_critical() -> None:
    data = b"\x80\x04" + _s("torch") + _s("serialization.load") + b"\x93" + _s("x") + b"\x85R."
    insp, _ = run(data)
    assert [f.severity for f in insp.findings] == [Severity.CRITICAL]


def test_dunder_traversal_is_flagged() -> None:
    data = b"\x80\x04" + _s("collections") + _s("OrderedDict.__init__.__globals__") + b"\x93."
    insp, _ = run(data)
    assert [f.rule_id for f in insp.findings] == ["MLSEC-PICKLE-004"]


def test_damage_keeps_what_was_seen_before() -> None:
    data = b"\x80\x02cos\nsystem\nq\x00\xff\xff"
    insp, info = run(data)
    rules = {f.rule_id for f in insp.findings}
    assert rules == {"MLSEC-PICKLE-001", "MLSEC-PICKLE-005"}
    damage = [f for f in insp.findings if f.rule_id == "MLSEC-PICKLE-005"][0]
    assert damage.location.offset == 15 and "unknown opcode 0xff" in damage.message


def test_missing_stop_is_damage() -> None:
    insp, info = run(pickle.dumps([1, 2, 3], protocol=2)[:-1])
    assert [f.rule_id for f in insp.findings] == ["MLSEC-PICKLE-005"]
    assert "missing STOP" in insp.findings[0].message


def test_big_bytes_are_skipped_not_kept() -> None:
    payload = b"\0" * (2 << 20)
    data = b"\x80\x04\x8e" + struct.pack("<Q", len(payload)) + payload + b"\x94."
    insp = Inspection(path="t", scanner="t", limits=Limits(keep_bytes=1 << 20))
    info = PickleMachine(bytes_stream(data), insp).run()
    assert info.stopped and isinstance(info.result, Blob)
    assert info.result.data is None and info.result.length == len(payload)


def test_declared_length_past_the_end_is_damage_not_a_huge_read() -> None:
    data = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b"abc"
    insp, _ = run(data)
    assert "runs past the end" in insp.findings[0].message


def test_huge_memo_index_costs_nothing() -> None:
    data = b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFFF) + b"j" + struct.pack("<I", 0xFFFFFFFF) + b"."
    insp, info = run(data)
    assert insp.findings == [] and info.stopped  # type: ignore[attr-defined]


def test_memo_limit_is_a_finding() -> None:
    data = b"\x80\x02N" + b"\x94" * 50 + b"."
    insp, _ = run(data, Limits(max_memo=10))
    assert [f.rule_id for f in insp.findings] == ["MLSEC-PICKLE-009"]


def test_deep_nesting_does_not_recurse() -> None:
    data = b"\x80\x02" + b"(" * 200_000 + b"N" + b"t" * 200_000 + b"."
    insp, info = run(data)
    assert info.stopped and insp.findings == []  # type: ignore[attr-defined]


def test_preview_is_short_and_printable() -> None:
    text = preview("\x1b[31m" + "x" * 500)
    assert len(text) <= 120 and "\x1b" not in text


@pytest.mark.parametrize("proto", range(6))
def test_sniffer_recognizes_every_protocol(proto: int) -> None:
    assert looks_like_pickle(pickle.dumps({"a": [1, 2.5, "s", b"b"]}, protocol=proto))


# Text and binary heads that happen to parse as a few opcodes (seen on a scan of 57,666 system
# files): "Copyright" is SHORT_BINBYTES, "Git 1.7" is BINFLOAT then DUP and STOP, "MATLAB" is
# BININT2 then a LONG line that is not a number.
_LOOKALIKES = [
    b"Copyright 1991, 1996, 1999, 2000 Free Software Foundation, Inc.\n" * 80,
    b"Git 1.7.12.2 Release Notes\n==========================\n\nFixes since v1.7.12.1\n" * 40,
    b"MATLAB 5.0 MAT-file, Platform: GLNX86, Created on: Thu Mar 17 2011" + b" " * 50 + b"\x00\x01IM" + b"\x00" * 4000,
]


@pytest.mark.parametrize(
    "text",
    [b"import os\n", b"# comment\n", b"name,age\n1,2\n", b"{\"a\": 1}", b"\x89PNG\r\n", *_LOOKALIKES],
)
def test_sniffer_rejects_text_and_other_formats(text: bytes) -> None:
    assert not looks_like_pickle(text[:4096])


@pytest.mark.parametrize(
    "prefix",
    [b"\x80\x00", b"\x80\x01", b"\x880", b"C\x03abc0", b"\x95" + (23).to_bytes(8, "little")],
)
def test_sniffer_accepts_any_opcode_prefix_before_an_import(prefix: bytes) -> None:
    # What the loader accepts first is not only PROTO: any opcodes that leave a valid stack.
    body = b"cposix\nsystem\n(Vid\ntR."
    data = prefix + body
    assert looks_like_pickle(data)


def test_fingerprint_ignores_offsets() -> None:
    a = b"\x80\x02cos\nsystem\n."
    b = b"\x80\x02N0cos\nsystem\n."
    fa = run(a)[0].findings[0]
    fb = run(b)[0].findings[0]
    assert fa.location.offset != fb.location.offset and fa.fingerprint == fb.fingerprint
