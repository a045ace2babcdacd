"""Never-execute proof: scan every hostile sample under a CPython audit hook; nothing may happen.

The scan runs in a fresh interpreter (``sys.executable -c``) that installs ``sys.addaudithook``
*before* importing mlsec, then runs the real pipeline (``mlsec.pipeline.run``) over the hostile
corpus of :mod:`tests.hostile_corpus` — every pickle protocol and evasion, PyTorch, joblib,
NumPy, Keras, ONNX, TensorFlow, GGUF, safetensors, Hugging Face directories, archives, code,
notebooks, requirements and datasets. The hook records anything that would mean an artifact's
content was executed or acted on:

* processes: ``os.system``, ``subprocess.Popen``, ``os.exec*``, ``os.posix_spawn``,
  ``os.spawn*``, ``os.fork``, ``os.kill``; environment changes (``LD_PRELOAD``...); native
  libraries loaded from outside Python's installation (``ctypes.dlopen``);
* deserialization: ``pickle.find_class`` (mlsec never unpickles), ``marshal.loads`` outside
  the import system (Keras Lambda bytecode must stay bytes), code and function objects built
  from data (``code.__new__``, ``function.__new__``);
* ``exec`` of a code object that is neither a module being imported nor a stdlib helper's
  generated code (dataclasses, namedtuple, typing's ForwardRef), or whose constants mention the
  canary; ``compile`` of anything but a parse into a tree (``ast.parse``, or ``compile`` with
  ``ast.PyCF_ONLY_AST``: how the code scanners read scanned code, and nothing can run), imports
  and those helpers;
* ``import`` of a module mlsec does not need: one on a deny list of modules only an exploit
  would pull in (``webbrowser``, ``runpy``, ``pty``, the ML libraries whose loaders are
  attacked...), a module a payload names imported during the scan other than by a library's
  own import statements, or a module that is neither the standard library nor a distribution
  mlsec depends on or imports. ``importlib.import_module`` raises no ``import`` event, so the
  module body's ``exec`` is checked the same way;
* the network: every ``socket.*`` event, ``urllib.Request``, ``http.client.*``,
  ``webbrowser.open``...;
* files: ``open`` outside the corpus, the cache and temporary directories, Python's own
  installation and mlsec's package and rules (so the ONNX samples' external-data target outside
  the corpus must never be read); any write, ``mkdir``, ``remove``, ``rename``... outside the
  cache and temporary directories; SQLite databases outside the cache.

mlsec reads HDF5 files with h5py in a child process (so that a file that crashes libhdf5 cannot
end the scan). That child is the one process start allowed, with exactly mlsec's own command
line (``hdf5_client.default_command()``: this interpreter, its flags) except that the worker's
file is replaced by this same hook followed by the worker's own main loop. The reader object is
swapped in-process by the driver, as nothing outside the process can choose that command. The
child reports its events in a file when its stdin closes; they count like the scan's, and the
test requires a report from every child started.

The few exceptions are listed below with the reason for each. The test fails on any recorded
event, if the canary file exists, and unless every hostile sample got at least one HIGH or
CRITICAL finding: the proof only means something if the scanner really read every payload. A
second test runs one harmless action of each watched kind in the same child (negative
controls) and requires each to be reported, so a hook that silently saw nothing cannot pass.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical

from tests.hostile_corpus import PAYLOAD_MODULES, Sample, hostile_samples

# Scanner module each sample format needs; a sample whose scanner is absent is left out.
SCANNER_OF = {
    "keras": "mlsec.scanners.model_keras", "keras-h5": "mlsec.scanners.model_keras",
    "onnx": "mlsec.scanners.model_onnx", "savedmodel": "mlsec.scanners.model_savedmodel",
    "gguf": "mlsec.scanners.model_gguf", "safetensors": "mlsec.scanners.model_safetensors",
    "hf-dir": "mlsec.scanners.model_dir", "7z": "mlsec.scanners.archive_7z",
    "python": "mlsec.scanners.code_ml", "notebook": "mlsec.scanners.notebook",
    "requirements": "mlsec.scanners.deps", "csv": "mlsec.scanners.data_text",
    "png": "mlsec.scanners.data_image", "hf-dataset": "mlsec.scanners.data_dir",
}

# Modules that only an exploit would make a scanner import: code runners, debuggers, browsers,
# mail/FTP/telnet clients and servers, and the ML libraries whose loaders the corpus attacks
# (mlsec parses their formats itself and must never hand a file to them). Any phase, even a
# failed attempt. (ctypes and multiprocessing are not here: py7zr's dependencies import them;
# what they could do -- load native code, start processes -- is watched instead.)
DENIED_MODULES = sorted({
    "webbrowser", "runpy", "pty", "pdb", "bdb", "code", "codeop", "cProfile", "profile", "timeit", "pydoc",
    "antigravity", "this", "turtle", "tkinter", "idlelib", "smtplib", "ftplib", "telnetlib", "imaplib",
    "poplib", "socketserver", "http.server", "xmlrpc",
    "torch", "tensorflow", "keras", "tf_keras", "transformers", "datasets", "pandas", "sklearn", "joblib",
    "dill", "cloudpickle", "jinja2", "onnx", "onnxruntime", "safetensors", "gguf", "llama_cpp", "modelscan",
})

# Denied or unlisted modules that a library imports from its own module body, whoever imports
# the library, with no scanned content involved (``*``: a name prefix). Allowed only below that
# module's body, i.e. while the library itself is being imported:
# * pyarrow's compiled core (pyarrow.lib, imported by pyarrow/__init__.py) imports cloudpickle
#   when it is installed, for pyarrow's own serialization of Python objects, which mlsec never
#   uses (a schema that declares the pickled extension type is refused before pyarrow runs);
# * pyarrow.compute imports its vendored numpydoc parser, which imports pydoc (for docstring
#   rendering), whose body reads the interpreter's sysconfig data module.
LIBRARY_IMPORTS = [("cloudpickle", "/pyarrow/__init__.py"), ("pydoc", "/pyarrow/compute.py"),
                   ("_sysconfigdata_*", "/pyarrow/compute.py")]

# Stdlib helpers that generate Python source and compile or exec it. Their text comes from
# their own templates and from names in library code, never from a scanned file (and any text
# that mentions the canary is reported whoever compiles it).
SYNTH_CALLERS = [
    ("/dataclasses.py", "_create_fn"),           # @dataclass methods (__init__, __eq__, ...)
    ("/collections/__init__.py", "namedtuple"),  # namedtuple's __new__
    ("/typing.py", "__init__"),                  # ForwardRef: string annotations of library code
    ("/typing.py", "_evaluate"),                 # ForwardRef evaluation (get_type_hints)
]

# Processes a dependency starts when it is imported, with a fixed command line: the stdlib
# ``platform`` module runs ``file -b <python>`` (platform.architecture(), called by
# pycryptodomex, py7zr's AES) and ``uname -p`` (platform.processor()). Allowed only when the
# call comes from platform.py and names no scanned file.
PLATFORM_PROBES = ["file", "uname"]

# Files read by libraries for their own set-up, never chosen by a scanned file: psutil (py7zr
# sizes its buffers from free memory) reads /proc; the interpreter and libraries read the
# rest.
READ_FILES = ["/dev/null", "/dev/urandom", "/etc/localtime", "/proc/meminfo", "/proc/stat", "/proc/cpuinfo"]

# Executed by the child interpreter before anything else: json to read the settings, then the
# hook. Everything the hook needs is computed by the parent and passed in, so the child imports
# nothing before the hook is live (an import done early would be hidden from the hook later).
HOOK = r"""
import sys
import json as _json
_cfg = _json.loads(sys.argv[1])
_os = sys.modules["os"]
_getframe = sys._getframe


def _norm(path):
    try:
        path = _os.fspath(path)
    except TypeError:
        return None
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    return _os.path.realpath(_os.path.join(_os.getcwd(), path))


def _under(path, roots):
    return path is not None and any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


CODE_ROOTS, READ_ROOTS, WRITE_ROOTS = _cfg["code_roots"], _cfg["read_roots"], _cfg["write_roots"]
CORPUS, CANARY = _cfg["corpus"], _cfg["canary"]
ALLOWED_TOP, DENIED, PAYLOAD = set(_cfg["allowed_top"]), _cfg["denied"], set(_cfg["payload_modules"])
SYNTH = [tuple(x) for x in _cfg["synth_callers"]]
LIBRARY_IMPORTS = [tuple(x) for x in _cfg["library_imports"]]
READ_FILES, PROBES = set(_cfg["read_files"]), set(_cfg["platform_probes"])
PROCESS = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
           "os.startfile", "os.kill", "os.killpg", "sys.remote_exec"}
NETWORK = ("socket.", "urllib.Request", "http.client.", "ftplib.", "smtplib.", "imaplib.", "poplib.", "nntplib.",
           "telnetlib.", "webbrowser.open")
FS_WRITES = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.symlink", "os.link", "os.truncate", "os.chmod",
             "os.chown", "os.chflags", "os.lchflags", "os.utime", "os.setxattr", "os.removexattr", "shutil.copyfile",
             "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.move", "shutil.rmtree",
             "shutil.make_archive", "shutil.unpack_archive", "tempfile.mkstemp", "tempfile.mkdtemp"}
# Controls are compiled before the hook is set; running them is the one exec allowed by identity.
CONTROLS = [(name, compile(src, "<control %s>" % name, "exec")) for name, src in _cfg["controls"]]
CONTROL_CODE = {id(code) for _, code in CONTROLS}
_WRITE_FLAGS = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND
ALLOWED_COMMANDS = []  # the process starts allowed: set by DRIVER_MAIN, never in a worker
state = {"phase": "startup", "busy": False}
events = []
counts = {}


def _mentions_canary(obj, depth=0):
    if isinstance(obj, str):
        return CANARY in obj
    if isinstance(obj, (bytes, bytearray)):
        return CANARY.encode() in obj
    if depth < 8 and hasattr(obj, "co_consts"):
        return any(_mentions_canary(c, depth + 1) for c in obj.co_consts)
    return False


def _where(frame):
    return (frame.f_code.co_filename, frame.f_code.co_name) if frame is not None else ("?", "?")


def _stack(frame, limit=14):
    out = []
    while frame is not None and len(out) < limit:
        out.append("%s:%s" % _where(frame))
        frame = frame.f_back
    return out


def _trusted_code(filename):
    if not isinstance(filename, str) or not filename.startswith("/"):
        return False
    path = _norm(filename)
    return _under(path, CODE_ROOTS) and not _under(path, [CORPUS])


def _importer(frame):
    # The first frame above the import machinery: whoever wrote the import statement.
    while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        frame = frame.f_back
    return frame


def _in_stack(frame, suffix):
    while frame is not None:
        if frame.f_code.co_filename.endswith(suffix) and _trusted_code(frame.f_code.co_filename):
            return True
        frame = frame.f_back
    return False


def _synth(frame):
    filename, func = _where(frame)
    return _trusted_code(filename) and any(filename.endswith(f) and func == fn for f, fn in SYNTH)


def _ast_only_call(frame):
    # The text of the call being made in ``frame`` passes ast.PyCF_ONLY_AST: a tree, no code.
    try:
        pos = list(frame.f_code.co_positions())[frame.f_lasti // 2]
        with open(frame.f_code.co_filename, encoding="utf-8") as fh:
            lines = fh.read().splitlines()[pos[0] - 1: pos[1]]
    except (OSError, IndexError, TypeError, ValueError):
        return False
    return "PyCF_ONLY_AST" in "\n".join(lines)


def _module_being_loaded(frame):
    # Name of the module whose body importlib is executing (spec of _load_unlocked), or None.
    depth = 0
    while frame is not None and depth < 12:
        if frame.f_code.co_name == "_load_unlocked" and frame.f_code.co_filename.startswith("<frozen importlib"):
            spec = frame.f_locals.get("spec")
            return getattr(spec, "name", None)
        frame, depth = frame.f_back, depth + 1
    return None


def _library_import(name, frame):
    # A denied module imported (directly or through its own submodules) below the package body
    # of the one library known to import it at import time (LIBRARY_IMPORTS).
    for module, body in LIBRARY_IMPORTS:
        if name == module or name.startswith(module + ".") or (module.endswith("*") and name.startswith(module[:-1])):
            while frame is not None:
                filename, func = _where(frame)
                if func == "<module>" and filename.endswith(body) and _trusted_code(filename):
                    return True
                frame = frame.f_back
    return False


def _import_problem(name, frame):
    if _library_import(name, frame):
        return None
    if any(name == d or name.startswith(d + ".") for d in DENIED):
        return "import of a module mlsec never needs"
    importer = _where(_importer(frame))
    library_body = importer[1] == "<module>" and _trusted_code(importer[0])
    if state["phase"] == "scan" and name in PAYLOAD and not library_body:
        return "scan-time import of a module a payload names"
    if name.split(".", 1)[0] not in ALLOWED_TOP:
        return "import of a module outside the stdlib and mlsec's dependencies"
    return None


def _problem(event, args, frame):
    if event in PROCESS:
        if event == "subprocess.Popen" and isinstance(args[1], (list, tuple)):
            if list(args[1]) in ALLOWED_COMMANDS and args[0] in (None, list(args[1])[0]):
                state["reader_starts"] = state.get("reader_starts", 0) + 1
                return None  # mlsec's HDF5 reader or Arrow sampler, started with this very hook (see WORKER_MAIN)
        if event == "subprocess.Popen" and _in_stack(frame, "/platform.py"):
            argv = args[1] if isinstance(args[1], (list, tuple)) else [args[0]]
            if argv and _os.path.basename(_os.fsdecode(argv[0])) in PROBES and not any(
                    CORPUS in _os.fsdecode(a) for a in argv if isinstance(a, (str, bytes))):
                return None
        return "process started"
    if event.startswith(NETWORK):
        return "network"
    if event == "ctypes.dlopen":
        lib = args[0]
        return None if lib is None or _under(_norm(lib), CODE_ROOTS) else "native library loaded from outside Python"
    if event in ("os.putenv", "os.unsetenv"):
        # numpy sets OPENBLAS_MAIN_FREE in its package body; anything else changing the
        # environment (LD_PRELOAD...) is a payload's work.
        where = _where(_importer(frame))
        return None if where[1] == "<module>" and _trusted_code(where[0]) else "environment changed"
    if event in ("pickle.find_class", "code.__new__", "function.__new__"):
        return "deserialization, or code built from data"
    if event in ("marshal.loads", "marshal.load"):
        return None if _where(frame)[0].startswith("<frozen importlib") else "marshal outside the import system"
    if event == "exec":
        code = args[0]
        if id(code) in CONTROL_CODE:
            return None
        if _mentions_canary(code):
            return "exec of code built from scanned content"
        filename = getattr(code, "co_filename", "")
        module = _module_being_loaded(frame)
        if module is not None and code.co_name == "<module>":
            # importlib.import_module() raises no "import" event; the module body's exec does.
            problem = _import_problem(module, frame)
            if problem:
                return problem
        if _trusted_code(filename) or _synth(frame):
            return None
        if filename.startswith("<frozen ") and _where(frame)[0] == "<frozen importlib._bootstrap>":
            return None  # a frozen stdlib module being imported
        return "exec of code that is neither an imported module nor a stdlib helper's"
    if event == "compile":
        source, filename = args[0], args[1]
        where = _where(frame)
        if where[1] == "parse" and where[0].endswith("/ast.py") and _trusted_code(where[0]):
            return None  # ast.parse: source to a tree (PyCF_ONLY_AST), nothing can run
        if _trusted_code(where[0]) and _ast_only_call(frame):
            return None  # compile(..., flags | ast.PyCF_ONLY_AST): the same
        if _mentions_canary(source):
            return "compile of scanned content into code"
        if (isinstance(filename, (str, bytes)) and _trusted_code(_os.fsdecode(filename))) or _synth(frame):
            return None
        return "compile outside parsing, imports and stdlib helpers"
    if event == "import":
        return _import_problem(args[0], frame)
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int):
            return None
        real = _norm(path)
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writes:
            if _under(real, WRITE_ROOTS) or real == "/dev/null":
                return None
            return "file written outside the cache and temporary directories"
        return None if _under(real, READ_ROOTS) or real in READ_FILES else "file read outside the scan roots"
    if event in FS_WRITES:
        paths = [_norm(a) for a in args if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__")]
        return None if all(_under(p, WRITE_ROOTS) for p in paths) else "file system change outside the cache"
    if event == "sqlite3.connect":
        db = args[0]
        if db in (":memory:", b":memory:") or _under(_norm(db), WRITE_ROOTS):
            return None
        return "database outside the cache"
    return None


def _short(value):
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."


def _hook(event, args):
    if state["busy"]:
        return
    state["busy"] = True
    try:
        key = state["phase"] + ":" + event
        counts[key] = counts.get(key, 0) + 1
        frame = _getframe(1)
        problem = _problem(event, args, frame)
        if problem or _cfg["debug"]:
            events.append({"phase": state["phase"], "control": state.get("control"), "event": event, "problem": problem,
                           "args": _short(args[:2] if event == "import" else args), "stack": _stack(frame),
                           "module": args[0] if event == "import" else _module_being_loaded(frame)})
    except Exception as exc:  # a bug in the hook must fail the test, not hide an event
        events.append({"phase": state["phase"], "event": event, "problem": "hook error: %r" % (exc,)})
    finally:
        state["busy"] = False


def _drop_failed_probes():
    for e in events:
        # An unknown module that never got loaded was a failed probe ("try: import x"): nothing ran.
        if ((e["problem"] or "").startswith("import of a module outside") and e["module"]
                and e["module"] not in sys.modules):
            e["problem"] = None


sys.addaudithook(_hook)
"""

# The scan process. mlsec reads HDF5 files in a child process (mlsec.engine.hdf5_client): the one
# process start allowed is that child, with this driver's hook installed in it before anything
# else (WORKER_MAIN), so what h5py does on the corpus is watched as closely as the scan itself.
# Production runs the same child with ``hdf5_client.default_command()``; no environment variable,
# file or flag can change that command, so the test swaps the reader object in-process.
DRIVER_MAIN = r"""
state["phase"] = "import"
sys.path.insert(0, _cfg["mlsec_root"])  # the mlsec under test, not another installed copy
from mlsec.pipeline import Options, run
from mlsec.registry import scanners
from mlsec.engine import arrow_client, hdf5_client
scanners()
# The production command lines (interpreter, flags) with the worker's file replaced by the hook.
ALLOWED_COMMANDS.append([*hdf5_client.default_command()[:-1], "-c", _cfg["worker_driver"], sys.argv[1]])
ALLOWED_COMMANDS.append([*arrow_client.default_command()[:-1], "-c", _cfg["arrow_worker_driver"], sys.argv[1]])
hdf5_client.set_shared(hdf5_client.HDF5Reader(ALLOWED_COMMANDS[0]))
arrow_client.set_shared(arrow_client.ArrowSampler(ALLOWED_COMMANDS[1]))
state["phase"] = "scan"
result = run([CORPUS], Options())
worker_starts = hdf5_client.shared().starts
arrow_starts = arrow_client.shared().starts
hdf5_client.STOP_TIMEOUT = 120.0  # the workers write their report when their stdin closes: let them finish
hdf5_client.shared().close()
arrow_client.shared().close()
for name, code in CONTROLS:
    # Negative controls (test of the hook itself): harmless actions of each kind watched.
    state["control"] = name
    try:
        exec(code, {"CANARY": CANARY, "CORPUS": CORPUS, "OUTSIDE": _cfg["outside"], "TMP": _cfg["tmp"]})
    except Exception as exc:
        events.append({"phase": "control", "control": name, "event": "error", "problem": None, "args": repr(exc)})
    state["control"] = None
state["phase"] = "report"
_drop_failed_probes()
workers = []
for _name in sorted(_os.listdir(_cfg["tmp"])):
    if _name.startswith(("hdf5-reader-", "arrow-sampler-")) and _name.endswith(".json"):
        with open(_os.path.join(_cfg["tmp"], _name), encoding="utf-8") as _fh:
            workers.append(_json.load(_fh))
print(_json.dumps({
    "events": events,
    "seen": counts,
    "findings": [[f.path, f.severity.name, f.rule_id] for f in result.findings],
    "errors": [[e.path, e.scanner, e.message] for e in result.errors],
    "artifacts": len(result.artifacts),
    "worker_starts": worker_starts + arrow_starts,
    "arrow_starts": arrow_starts,
    "reader_starts_seen": state.get("reader_starts", 0),
    "workers": workers,
}))
"""

# The HDF5 reader process: the same hook (ALLOWED_COMMAND stays None: it may start nothing), then
# the reader's own main loop, exactly what ``python -I mlsec/engine/hdf5_worker.py`` runs. Its
# stdout is the protocol, so it reports in a file when the scan process closes its stdin.
WORKER_MAIN = r"""
state["phase"] = "worker"
sys.path.insert(0, _cfg["mlsec_root"])  # the mlsec under test, not another installed copy
from mlsec.engine import hdf5_worker
try:
    _code = hdf5_worker.main()
finally:
    state["phase"] = "report"
    _drop_failed_probes()
    # dumps, not dump: json.dump's pure-Python encoder calls id(), an audit event, which in debug
    # mode would append to the very list being written.
    _text = _json.dumps({"events": list(events), "seen": dict(counts)})
    with open(_os.path.join(_cfg["tmp"], "hdf5-reader-%d.json" % _os.getpid()), "w", encoding="utf-8") as _fh:
        _fh.write(_text)
sys.exit(_code)
"""
# The Arrow sampler process (pyarrow reads Parquet/Arrow content there): the same, with its own main loop.
ARROW_WORKER_MAIN = WORKER_MAIN.replace("hdf5_worker", "arrow_worker").replace("hdf5-reader-", "arrow-sampler-")
DRIVER = HOOK + DRIVER_MAIN
WORKER_DRIVER = HOOK + WORKER_MAIN
ARROW_WORKER_DRIVER = HOOK + ARROW_WORKER_MAIN


def _scanner_present(sample: Sample) -> bool:
    module = SCANNER_OF.get(sample.format)
    return module is None or importlib.util.find_spec(module) is not None


def _real(path: str | Path) -> str:
    return os.path.realpath(path)


def _code_roots() -> list[str]:
    """Python's installation (stdlib, site-packages) and mlsec's package directory."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots |= {p for p in sys.path if p and Path(p).is_dir() and "site-packages" in p}
    spec = importlib.util.find_spec("mlsec")
    assert spec is not None and spec.origin is not None
    roots.add(str(Path(spec.origin).parent))
    return sorted(_real(r) for r in roots)


def code_roots_mlsec() -> str:
    """The directory of the mlsec package under test."""
    spec = importlib.util.find_spec("mlsec")
    assert spec is not None and spec.origin is not None
    return str(Path(spec.origin).parent)


def _mlsec_imports() -> set[str]:
    """Top-level modules mlsec's own source imports (lazily or not): what mlsec needs."""
    spec = importlib.util.find_spec("mlsec")
    assert spec is not None and spec.origin is not None
    tops: set[str] = set()
    for path in Path(spec.origin).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
    return tops


def _allowed_top_levels() -> list[str]:
    """The stdlib, plus every module of the distributions mlsec depends on or imports, closed
    over their own requirements (extras excluded)."""
    top_to_dists = importlib.metadata.packages_distributions()
    dist_to_tops: dict[str, set[str]] = {}
    for top, dists in top_to_dists.items():
        for d in dists:
            dist_to_tops.setdefault(canonical(d), set()).add(top)
    wanted: list[str] = [canonical(d) for top in _mlsec_imports() for d in top_to_dists.get(top, [])]
    wanted.append("mlsec")
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for req in reqs:
            parsed = Requirement(req)
            if parsed.marker is None or parsed.marker.evaluate({"extra": ""}):
                wanted.append(canonical(parsed.name))
    tops = set(sys.stdlib_module_names) | set(sys.builtin_module_names) | {"mlsec", "__main__"}
    for dist in seen:
        tops |= dist_to_tops.get(dist, set())
    # Import hooks that site-packages install at start-up (editable installs, setuptools' shim).
    tops |= {t for t in top_to_dists if t.startswith(("__editable__", "_distutils_hack"))}
    return sorted(tops)


# Negative controls: harmless actions, one per kind of event the hook watches, run in the child
# after the scan. Each must be reported, or an empty event list would prove nothing.
CONTROLS: dict[str, tuple[str, str]] = {
    # name: (source, start of the problem it must raise)
    "unpickle": ("import pickle, collections; pickle.loads(pickle.dumps(collections.OrderedDict()))",
                 "deserialization"),
    "exec-scanned-text": ("exec(compile('x = ' + repr(CANARY), 'model.py', 'exec'), {})", "compile of scanned content"),
    "compile-code": ("compile('y = 1', 'scanned.py', 'exec')", "compile outside parsing"),
    "marshal": ("import marshal; marshal.loads(marshal.dumps(1))", "marshal outside"),
    "denied-import": ("import webbrowser", "import of a module mlsec never needs"),
    "payload-import": (("import importlib, sys; importlib.import_module("
                        "[m for m in ('uuid', 'socket', 'numpy') if m not in sys.modules][0])"), "scan-time import"),
    "unknown-import": ("import sys; sys.path.insert(0, TMP); import _mlsec_control_module",
                       "import of a module outside"),
    "process": ("import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'], check=True)",
                "process started"),
    "socket": ("import socket; socket.socket().close()", "network"),
    "read-outside": ("open(OUTSIDE, 'rb').close()", "file read outside"),
    "write-corpus": ("open(CORPUS + '/written-by-control', 'w').close()", "file written outside"),
    "environment": ("import os; os.environ['LD_PRELOAD'] = '/nonexistent.so'; del os.environ['LD_PRELOAD']",
                    "environment changed"),
    "native": ("import ctypes; ctypes.CDLL('libc.so.6')", "native library"),
}


def _run_driver(tmp_path: Path, corpus: Path, canary: Path, outside: Path,
                controls: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    from mlsec.catalog import data_dir

    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    cache.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    code_roots = _code_roots()
    cfg = {
        "corpus": _real(corpus), "canary": str(canary), "outside": str(outside), "tmp": str(tmp),
        "controls": sorted((name, src) for name, (src, _) in (controls or {}).items()),
        # MLSEC_AUDIT_DEBUG=1 writes every event, with stacks, to audit_debug.json (for tuning).
        "debug": bool(os.environ.get("MLSEC_AUDIT_DEBUG")),
        "code_roots": code_roots,
        "read_roots": code_roots + [_real(p) for p in (corpus, cache, tmp, data_dir("rules"), data_dir("policies"))],
        "write_roots": [_real(cache), _real(tmp)],
        "read_files": READ_FILES,
        "platform_probes": PLATFORM_PROBES,
        "allowed_top": _allowed_top_levels(),
        "denied": DENIED_MODULES,
        "payload_modules": sorted(PAYLOAD_MODULES),
        "synth_callers": SYNTH_CALLERS,
        "library_imports": LIBRARY_IMPORTS,
        "worker_driver": WORKER_DRIVER,
        "arrow_worker_driver": ARROW_WORKER_DRIVER,
        "mlsec_root": _real(Path(code_roots_mlsec()).parent),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLSEC_"))}
    # No bytecode writes into the source tree: every write must land in the cache or TMPDIR.
    env.update(MLSEC_CACHE_DIR=str(cache), TMPDIR=str(tmp), HOME=str(tmp_path), XDG_CACHE_HOME=str(cache),
               PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cfg)], capture_output=True, text=True,
                          cwd=corpus, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if cfg["debug"]:
        (tmp_path.parent / "audit_debug.json").write_text(json.dumps(report, indent=1))
    for worker in report["workers"]:  # the HDF5 reader and Arrow sampler processes, under the same hook
        report["events"] += worker["events"]
    report["events"] = [e for e in report["events"] if e.get("problem")]
    return report


def test_scanning_every_hostile_sample_executes_nothing(tmp_path: Path) -> None:
    corpus, canary = tmp_path / "corpus", tmp_path / "CANARY"
    outside = tmp_path / "outside" / "secret.bin"
    outside.parent.mkdir()
    outside.write_bytes(bytes(16))
    samples = [s for s in hostile_samples(corpus, canary, outside) if _scanner_present(s)]
    assert len(samples) >= 50
    columnar = _columnar_files(corpus)  # their content is read by the Arrow sampler process

    report = _run_driver(tmp_path, corpus, canary, outside)

    assert report["events"] == [], json.dumps(report["events"], indent=1)[:6000]
    assert not canary.exists(), "a payload was executed during the scan"
    assert report["errors"] == []
    # The hook was live while mlsec read the corpus (else an empty event list proves nothing).
    assert report["seen"].get("scan:open", 0) >= len(samples), report["seen"]
    assert report["seen"].get("import:import", 0) > 10, report["seen"]
    rank = {"INFO": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
    worst: dict[str, int] = {}
    for path, severity, _rule in report["findings"]:
        worst[path] = max(worst.get(path, 0), rank[severity])
    missed = [f"{s.id} ({s.technique})" for s in samples if worst.get(s.target, 0) < rank["HIGH"]]
    assert missed == [], missed
    # The HDF5 samples were read by mlsec's reader process, and it ran under the hook.
    if any(s.format == "keras-h5" for s in samples):
        assert report["worker_starts"] >= 1
    assert len(report["workers"]) == report["worker_starts"], "a reader process ended without its report"
    assert report["reader_starts_seen"] == report["worker_starts"]
    for worker in report["workers"]:
        assert worker["seen"].get("worker:open", 0) >= 1 and worker["seen"].get("worker:import", 0) > 10, worker
    if columnar:
        assert report["arrow_starts"] >= 1
        for path in columnar:  # the sampler really read them: the e-mail address in each was found
            assert any(f[0] == path and f[2] == "MLSEC-DATA-005" for f in report["findings"]), path


def _columnar_files(corpus: Path) -> list[str]:
    """A Parquet file and an Arrow stream with personal data, when pyarrow can write them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return []
    columnar = corpus / "columnar"
    columnar.mkdir(exist_ok=True)
    table = pa.table({"email": ["someone@mail.example.org", "x"], "n": [1, 2]})
    pq.write_table(table, columnar / "people.parquet")
    with pa.OSFile(str(columnar / "people.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return ["columnar/people.parquet", "columnar/people.arrow"]  # as reported: relative to the scan root


def test_the_allowed_process_is_mlsecs_own_hdf5_reader() -> None:
    """What the driver's hooked command stands for: production's command runs the same main loop."""
    from mlsec.engine import hdf5_client, hdf5_worker

    command = hdf5_client.default_command()
    assert command[0] == sys.executable and command[1] == "-I" and set(command[1:-1]) <= {"-I", "-B"}
    assert Path(command[-1]) == Path(hdf5_worker.__file__).resolve()
    assert 'if __name__ == "__main__":\n    sys.exit(main())\n' in Path(command[-1]).read_text(encoding="utf-8")
    assert "_code = hdf5_worker.main()" in WORKER_MAIN and "ALLOWED_COMMAND" not in WORKER_MAIN


def test_the_allowed_process_is_mlsecs_own_arrow_sampler() -> None:
    """The same for the Arrow sampler: production's command runs the main loop the hooked one runs."""
    from mlsec.engine import arrow_client, arrow_worker

    command = arrow_client.default_command()
    assert command[0] == sys.executable and command[1] == "-I" and set(command[1:-1]) <= {"-I", "-B"}
    assert Path(command[-1]) == Path(arrow_worker.__file__).resolve()
    assert 'if __name__ == "__main__":\n    sys.exit(main())\n' in Path(command[-1]).read_text(encoding="utf-8")
    assert "_code = arrow_worker.main()" in ARROW_WORKER_MAIN and "ALLOWED_COMMAND" not in ARROW_WORKER_MAIN


def test_the_hook_reports_every_kind_of_event_it_watches(tmp_path: Path) -> None:
    corpus, canary = tmp_path / "corpus", tmp_path / "CANARY"
    outside = tmp_path / "outside" / "secret.bin"
    outside.parent.mkdir()
    outside.write_bytes(bytes(16))
    corpus.mkdir()
    (corpus / "model.pkl").write_bytes(b"\x80\x02]q\x00.")  # a clean scan, then the controls
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "_mlsec_control_module.py").write_text("VALUE = 1\n")

    report = _run_driver(tmp_path, corpus, canary, outside, CONTROLS)

    assert not [e for e in report["events"] if e["control"] is None], report["events"]
    for name, (_, expected) in CONTROLS.items():
        problems = [e["problem"] for e in report["events"] if e["control"] == name]
        assert any(p.startswith(expected) for p in problems), (name, problems)
