"""Keras models: the JSON architecture inside HDF5 ``.h5`` files and Keras 3 ``.keras`` zips.

Keras rebuilds a model from a JSON config, and that config can carry code:

* a ``Lambda`` layer stores its function as marshalled bytecode (base64) or as a reference to
  a Python function; loading runs it (Keras 3 refuses bytecode in ``safe_mode``, but legacy
  HDF5 loading ignored ``safe_mode`` before Keras 3.11.3, CVE-2025-9905);
* every object names a ``module`` and ``class_name``; a module outside Keras makes the loader
  import it (and a callable such as ``os.system`` is simply called: CVE-2025-1550);
* ``TorchModuleWrapper`` embeds a whole ``torch.save`` pickle in base64 (``torch.load`` with
  ``weights_only=False`` when ``safe_mode`` is off): it is decoded and sent through the pickle
  engine like any other PyTorch file.

HDF5 is read through h5py (optional extra ``mlsec[formats]``), attributes only: the root's
``model_config``/``training_config``. Datasets (weights) are never read, so no HDF5 filter
plugin is loaded. Attributes are size-checked before they are read. h5py and libhdf5 (C) run
in a separate, reused process (:mod:`mlsec.engine.hdf5_client`), never in mlsec's: a file that
crashes or hangs libhdf5 is reported (MLSEC-KERAS-006, MLSEC-SCAN-001) and the scan goes on.
The configs the child returns are checked here. The ``.keras`` zip is read by mlsec's own zip
reader, which hands ``config.json`` here.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from typing import Any

from mlsec.engine import dispatch, hdf5_client
from mlsec.engine.context import Inspection, join_member, random_access
from mlsec.engine.hdf5_worker import FileWindow
from mlsec.engine.stream import Stream, bytes_stream
from mlsec.model import Severity

MAX_CONFIG = 64 << 20        # bytes of JSON config parsed
MAX_NODES = 2_000_000        # JSON values walked
MAX_DEPTH = 200              # JSON nesting walked
KERAS_MODULES = ("keras", "tensorflow", "tf_keras", "keras_nlp", "keras_hub", "keras_cv", "keras_rs")
# Modules whose callables run commands, code or I/O when a config names them.
DANGEROUS_MODULES = frozenset({"os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "pty", "runpy",
                               "importlib", "pickle", "_pickle", "marshal", "ctypes", "code", "codeop",
                               "webbrowser", "commands", "pdb", "bdb", "asyncio", "multiprocessing",
                               "urllib", "requests", "http", "tempfile", "pathlib", "io", "posixpath",
                               "ntpath", "platform", "pydoc", "timeit", "torch.hub", "numpy.f2py"})
DANGEROUS_BUILTINS = frozenset({"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
                                "breakpoint", "input", "globals", "locals", "vars", "exit", "quit", "help"})
# Layer classes Keras (2 and 3) ships: a config layer with another class name and no module is custom code.
KNOWN_LAYERS = frozenset(["Activation", "ActivityRegularization", "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D", "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D", "Add", "AdditiveAttention", "AlphaDropout", "Attention", "AugMix", "AutoContrast", "Average", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "AvgPool1D", "AvgPool2D", "AvgPool3D", "BatchNormalization", "Bidirectional", "CategoryEncoding", "CenterCrop", "Concatenate", "ContrastLimitedAdaptiveHistogramEqualization", "Conv1D", "Conv1DTranspose", "Conv2D", "Conv2DTranspose", "Conv3D", "Conv3DTranspose", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "Convolution1D", "Convolution1DTranspose", "Convolution2D", "Convolution2DTranspose", "Convolution3D", "Convolution3DTranspose", "Cropping1D", "Cropping2D", "Cropping3D", "CuDNNGRU", "CuDNNLSTM", "CutMix", "Dense", "DenseFeatures", "DepthwiseConv1D", "DepthwiseConv2D", "Discretization", "Dot", "Dropout", "ELU", "EinsumDense", "Embedding", "Equalization", "Flatten", "FlaxLayer", "Functional", "GRU", "GRUCell", "GaussianDropout", "GaussianNoise", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GroupNormalization", "GroupQueryAttention", "HashedCrossing", "Hashing", "Identity", "InputLayer", "IntegerLookup", "JaxLayer", "LSTM", "LSTMCell", "Lambda", "Layer", "LayerNormalization", "LeakyReLU", "Masking", "MaxNumBoundingBoxes", "MaxPool1D", "MaxPool2D", "MaxPool3D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Maximum", "MelSpectrogram", "Minimum", "MixUp", "Model", "MultiHeadAttention", "Multiply", "Normalization", "PReLU", "Permute", "Pipeline", "RMSNormalization", "RNN", "RandAugment", "RandomBrightness", "RandomColorDegeneration", "RandomColorJitter", "RandomContrast", "RandomCrop", "RandomElasticTransform", "RandomErasing", "RandomFlip", "RandomGaussianBlur", "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective", "RandomPosterization", "RandomRotation", "RandomSaturation", "RandomSharpness", "RandomShear", "RandomTranslation", "RandomZoom", "ReLU", "RepeatVector", "Rescaling", "Reshape", "Resizing", "ReversibleEmbedding", "STFTSpectrogram", "SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D", "Sequential", "SimpleRNN", "SimpleRNNCell", "SlicingOpLambda", "Softmax", "Solarization", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "SpectralNormalization", "StackedRNNCells", "StringLookup", "Subtract", "TFOpLambda", "TFSMLayer", "TensorFlowOpLayer", "TextVectorization", "TimeDistributed", "TorchModuleWrapper", "UnitNormalization", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Wrapper", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D"])
# TFOpLambda functions (tf.keras 2) that read or write files or call Python.
RISKY_TF_FUNCTIONS = re.compile(r"^(?:tf\.)?(?:io\.(?:read_file|write_file|matching_files|gfile)|"
                                r"py_function|numpy_function|compat\.v1\.py_func|raw_ops\.(?:ReadFile|WriteFile|"
                                r"PyFunc|EagerPyFunc|PyFuncStateless|MatchingFiles)|debugging\.experimental|"
                                r"print|summary\.)")
_NAMES = re.compile(rb"[A-Za-z_][A-Za-z0-9_.]{2,63}")


def _module_root_known(module: str) -> bool:
    return module.split(".", 1)[0] in KERAS_MODULES


def bytecode_names(b64: str) -> str:
    """Identifiers visible in base64 marshalled bytecode (never unmarshalled), for evidence."""
    try:
        raw = base64.b64decode(b64[: 1 << 20], validate=False)
    except (binascii.Error, ValueError):
        return ""
    seen: list[str] = []
    for m in _NAMES.finditer(raw):
        word = m.group().decode("ascii")
        if word not in seen:
            seen.append(word)
        if len(seen) >= 20:
            break
    return ", ".join(seen)


class ConfigCheck:
    """Walks one Keras JSON config and reports code-carrying objects."""

    def __init__(self, insp: Inspection, member: str | None, source: str, depth: int, legacy_h5: bool) -> None:
        self.insp, self.member, self.source, self.depth, self.legacy = insp, member, source, depth, legacy_h5
        self.class_names: set[str] = set()

    def run(self, config: Any) -> None:
        """Walk every object of the config (bounded)."""
        stack: list[tuple[Any, str, int]] = [(config, "", 0)]
        nodes = 0
        while stack:
            obj, path, level = stack.pop()
            nodes += 1
            if nodes > MAX_NODES or level > MAX_DEPTH:
                self.insp.add("MLSEC-KERAS-004", f"Keras config in {self.source} is too large or too deeply nested "
                              "to inspect completely", key=f"config-size {self.source}", member=self.member)
                return
            if isinstance(obj, dict):
                self.visit(obj, path)
                for k, v in obj.items():
                    if isinstance(v, dict | list):
                        stack.append((v, f"{path}/{k}", level + 1))
            elif isinstance(obj, list):
                for i, v in enumerate(obj):
                    if isinstance(v, dict | list):
                        stack.append((v, f"{path}/{i}", level + 1))

    def visit(self, obj: dict[str, Any], path: str) -> None:
        """Check one JSON object that may describe a Keras object."""
        cls = obj.get("class_name")
        if not isinstance(cls, str):
            return
        self.class_names.add(cls)
        cfg = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        name = str(cfg.get("name", "")) if isinstance(cfg, dict) else ""
        module = obj.get("module")
        if cls == "Lambda":
            self.lambda_layer(cfg, name, path)
        elif cls == "__lambda__" and not path.endswith("/config/function"):  # inside a Lambda: reported there
            code = cfg.get("code", "") if isinstance(cfg, dict) else ""
            self.code_finding("lambda function", name or path, path, code if isinstance(code, str) else "")
        elif cls == "TorchModuleWrapper":
            self.torch_module(cfg, name, path)
        elif cls == "TFOpLambda" and isinstance(cfg, dict):
            fn = str(cfg.get("function", ""))
            if RISKY_TF_FUNCTIONS.match(fn):
                self.insp.add("MLSEC-KERAS-003", f"TFOpLambda layer {name!r} calls tf.{fn} (file or Python access "
                              "when the model runs)", key=f"tfop {fn}", member=self.member, severity=Severity.HIGH,
                              pointer=path, evidence={"layer": name, "function": fn, "source": self.source})
        if isinstance(module, str) and module:
            self.module_ref(module, cls, obj, name, path)
        elif module is None and "layers" in path.rsplit("/", 2)[-2:-1] and cls not in KNOWN_LAYERS:
            self.insp.add("MLSEC-KERAS-002", f"Layer {name or '?'!r} has custom class {cls!r}: loading needs its code "
                          "(custom_objects)", key=f"custom-class {cls}", member=self.member, severity=Severity.MEDIUM,
                          pointer=path, evidence={"class_name": cls, "layer": name, "source": self.source})
        registered = obj.get("registered_name")
        if (isinstance(registered, str) and ">" in registered and not module
                and registered.split(">", 1)[0].lower() not in KERAS_MODULES):
            self.insp.add("MLSEC-KERAS-002", f"Object {registered!r} is a registered custom object: loading runs its "
                          "code", key=f"registered {registered}", member=self.member, pointer=path,
                          evidence={"registered_name": registered, "class_name": cls, "source": self.source})

    def module_ref(self, module: str, cls: str, obj: dict[str, Any], name: str, path: str) -> None:
        """A ``module`` outside Keras: imported at load time; dangerous callables are CRITICAL."""
        if _module_root_known(module):
            return
        target = obj.get("config") if cls == "function" else cls
        target = target if isinstance(target, str) else cls
        qual = f"{module}.{target}"
        root = module.split(".", 1)[0]
        dangerous = (module in DANGEROUS_MODULES or root in DANGEROUS_MODULES
                     or (module in ("builtins", "__builtin__") and target in DANGEROUS_BUILTINS))
        if dangerous:
            self.insp.add("MLSEC-KERAS-003", f"Config names {qual}: loading the model imports and calls it",
                          key=f"dangerous {qual}", member=self.member, pointer=path,
                          evidence={"module": module, "name": target, "class_name": cls, "source": self.source})
        elif module != "builtins":
            self.insp.add("MLSEC-KERAS-002", f"Config object {cls!r} comes from module {module!r}: loading imports "
                          "code outside Keras", key=f"module {qual}", member=self.member, pointer=path,
                          evidence={"module": module, "class_name": cls, "layer": name, "source": self.source,
                                    "registered_name": str(obj.get("registered_name") or "")})

    def lambda_layer(self, cfg: Any, name: str, path: str) -> None:
        """A Lambda layer: bytecode (Keras 2 list or Keras 3 ``__lambda__``) or a named function."""
        if not isinstance(cfg, dict):
            cfg = {}
        fn = cfg.get("function")
        code = ""
        kind = str(cfg.get("function_type", ""))
        if isinstance(fn, list) and fn and isinstance(fn[0], str):
            code, kind = fn[0], kind or "lambda"
        elif isinstance(fn, dict) and fn.get("class_name") == "__lambda__":
            inner = fn.get("config")
            code, kind = str(inner.get("code", "") if isinstance(inner, dict) else ""), "lambda"
        elif isinstance(fn, dict):
            kind = f"function {fn.get('module', '?')}.{fn.get('config', '?')}"
        elif isinstance(fn, str):
            kind = f"function {cfg.get('module', '?')}.{fn}" if kind != "lambda" else "lambda"
            code = fn if kind == "lambda" else ""
        self.code_finding(f"Lambda layer ({kind or 'unknown function'})", name or "?", path, code)

    def code_finding(self, what: str, name: str, path: str, code: str) -> None:
        """CRITICAL: code that Keras runs when it deserializes the config."""
        if self.legacy:
            note = "legacy HDF5 loading ignored safe_mode before Keras 3.11.3 (CVE-2025-9905)"
        else:
            note = "Keras 3 refuses bytecode only while safe_mode=True (the default)"
        evidence = {"layer": name, "kind": what, "safe_mode": note, "source": self.source}
        if code:
            evidence["bytecode_bytes"] = str(len(code) * 3 // 4)
            names = bytecode_names(code)
            if names:
                evidence["names"] = names
        self.insp.add("MLSEC-KERAS-001", f"{what} {name!r} runs Python code when the model is loaded",
                      key=f"lambda {name} {path}", member=self.member, pointer=path, evidence=evidence)

    def torch_module(self, cfg: Any, name: str, path: str) -> None:
        """TorchModuleWrapper: a base64 ``torch.save`` archive; decode it and run the pickle engine."""
        blob = cfg.get("module") if isinstance(cfg, dict) else None
        if not isinstance(blob, str):
            return
        self.insp.add("MLSEC-KERAS-005", f"TorchModuleWrapper layer {name!r} embeds a pickled PyTorch module "
                      "(torch.load with weights_only=False when safe_mode is off)", key=f"torch-module {name} {path}",
                      member=self.member, pointer=path, evidence={"layer": name, "base64_chars": str(len(blob))})
        limit = self.insp.limits.keep_bytes
        if len(blob) > limit * 4 // 3 + 4:
            self.insp.add("MLSEC-SCAN-001", f"Embedded torch module of layer {name!r} is too large to inspect",
                          key=f"torch-module-size {name}", member=self.member)
            return
        try:
            data = base64.b64decode(blob, validate=False)
        except (binascii.Error, ValueError):
            self.insp.add("MLSEC-KERAS-004", f"Embedded torch module of layer {name!r} is not valid base64",
                          key=f"torch-module-b64 {name}", member=self.member)
            return
        label = join_member(self.member, f"{path}/module")
        dispatch.inspect(bytes_stream(data), self.insp, label, self.depth + 1, "module.pt")


def check_config_text(raw: bytes | str, insp: Inspection, member: str | None, source: str, depth: int,
                      legacy_h5: bool = False) -> ConfigCheck | None:
    """Parse a JSON config (bounded) and check it; bad JSON is a finding."""
    if len(raw) > MAX_CONFIG:
        insp.add("MLSEC-KERAS-004", f"Keras config {source} is larger than {MAX_CONFIG} bytes; not inspected",
                 key=f"config-size {source}", member=member)
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        insp.add("MLSEC-KERAS-004", f"Keras config {source} is not valid JSON: {str(exc)[:120]}",
                 key=f"config-json {source}", member=member)
        return None
    check = ConfigCheck(insp, member, source, depth, legacy_h5)
    check.run(value)
    return check


def inspect_keras_config(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """``config.json`` of a ``.keras`` zip (called by the zip reader)."""
    raw = stream.read(MAX_CONFIG + 1)
    check_config_text(raw, insp, member, "config.json", depth)


def is_keras_zip(names: Iterator[str] | list[str]) -> bool:
    """A Keras 3 archive: ``config.json`` and ``metadata.json`` at the top level."""
    top = set(names)
    return "config.json" in top and ("metadata.json" in top or "model.weights.h5" in top)


# ---------------------------------------------------------------------------------------------
# HDF5 (h5py in an isolated child process, attributes only)
# ---------------------------------------------------------------------------------------------

_ATTRS = ("model_config", "training_config")
_MAX_ATTR = 64 << 20


class WindowFile(FileWindow):
    """Seekable read-only file object over a window of a stream's file (py7zr reads 7z archives through it)."""

    def __init__(self, stream: Stream) -> None:
        super().__init__(stream.raw, stream.absolute_start, stream.length or 0)


def _bad_h5(insp: Inspection, member: str | None, message: str, key: str) -> None:
    insp.add("MLSEC-KERAS-004", message, key=key, member=member)


@dispatch.handles("hdf5")
def inspect_hdf5(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Read the Keras attributes of an HDF5 file in the isolated reader and check the configs here.

    libhdf5 never runs in this process (see :mod:`mlsec.engine.hdf5_client`): a file that
    crashes or hangs it becomes a finding on that file, and the scan goes on.
    """
    if not hdf5_client.h5py_installed():
        insp.skip("HDF5 content not inspected: h5py is not installed (pip install 'mlsec[formats]')",
                  "missing-dependency")
        return
    buffered = random_access(stream, insp, member, "HDF5 file", "hdf5-in-stream")
    if buffered is None:
        return
    request = _hdf5_request(buffered, insp, member)
    if request is None:
        return
    insp.check_time()
    budget = insp.limits.timeout - (time.monotonic() - insp.started)
    timeout = max(0.001, min(hdf5_client.REQUEST_TIMEOUT, budget))
    outcome = hdf5_client.shared().read(request, timeout)
    if isinstance(outcome, hdf5_client.Failure):
        _reader_failed(outcome, insp, member, timeout)
        return
    if outcome.open_error is not None:
        _bad_h5(insp, member, f"HDF5 file cannot be opened: {outcome.open_error[:160]}", "hdf5-open")
        return
    for attr in outcome.attrs:
        raw = _attr_value(attr, insp, member)
        if raw is not None:
            check_config_text(raw, insp, member, attr.name, depth, legacy_h5=True)


def _hdf5_request(stream: Stream, insp: Inspection, member: str | None) -> hdf5_client.Request | None:
    """A window of the file on disk when the stream is one (the child reads it in place), else the bytes."""
    # Values are cut one byte past MAX_CONFIG: check_config_text then reports "too large" as before.
    length = stream.length or 0
    on_disk = _disk_file(stream.raw)
    if on_disk is not None:
        path, identity = on_disk
        return hdf5_client.Request(_ATTRS, _MAX_ATTR, MAX_CONFIG + 1, path=path, offset=stream.absolute_start,
                                   length=length, identity=identity)
    if length > insp.limits.keep_bytes:  # in-memory streams only come that large from elsewhere
        insp.add("MLSEC-SCAN-001", "HDF5 file inside a compressed stream is too large to inspect in memory",
                 key="hdf5-in-stream", member=member)
        return None
    stream.raw.seek(stream.absolute_start)
    return hdf5_client.Request(_ATTRS, _MAX_ATTR, MAX_CONFIG + 1, data=stream.raw.read(length))


def _disk_file(raw: Any) -> tuple[str, tuple[int, int]] | None:
    """(absolute path, (st_dev, st_ino)) when ``raw`` is a regular file opened by name, else None."""
    name = getattr(raw, "name", None)
    if not isinstance(name, str | bytes):
        return None
    try:
        st = os.fstat(raw.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return os.path.abspath(os.fsdecode(name)), (st.st_dev, st.st_ino)


def _reader_failed(failure: hdf5_client.Failure, insp: Inspection, member: str | None, timeout: float) -> None:
    """The reader gave no answer about the file: a crash is HIGH, a hang a time limit, a missing h5py a skip."""
    if failure.kind == "crash":
        insp.add("MLSEC-KERAS-006", f"libhdf5 crashed on this file: the isolated HDF5 reader process "
                 f"{failure.detail}; its Keras attributes were not inspected", key="hdf5-crash", member=member,
                 evidence={"reader": "h5py (isolated process)", "outcome": failure.detail})
    elif failure.kind == "timeout":
        insp.add("MLSEC-SCAN-001", f"HDF5 reader gave no answer within {timeout:g}s (the file may hang libhdf5); "
                 "its Keras attributes were not inspected", key="hdf5-timeout", member=member,
                 evidence={"timeout_seconds": f"{timeout:g}", "transient": "true"})
    elif failure.kind == "missing-h5py":
        insp.skip(f"HDF5 content not inspected: h5py cannot be imported ({failure.detail})", "missing-dependency")
    else:
        insp.skip(f"HDF5 content not inspected: {failure.detail}", "reader-unavailable")


def _attr_value(attr: hdf5_client.Attribute, insp: Inspection, member: str | None) -> bytes | None:
    """The config text of one attribute, or None (absent, or reported as unusable)."""
    name = attr.name
    if attr.status == "value":
        return attr.value
    if attr.status == "shape":
        _bad_h5(insp, member, f"Attribute {name} has {attr.count} elements / {attr.storage} bytes; "
                "a Keras config is one string", f"attr-shape {name}")
    elif attr.status == "error":
        _bad_h5(insp, member, f"Attribute {name} cannot be read: {attr.detail[:160]}", f"attr-read {name}")
    elif attr.status == "type":
        _bad_h5(insp, member, f"Attribute {name} is not a string ({attr.detail})", f"attr-type {name}")
    return None
