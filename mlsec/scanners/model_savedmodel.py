"""TensorFlow SavedModel (``saved_model.pb``), frozen GraphDefs and ``keras_metadata.pb``.

TensorFlow runs the graph it loads, and some ops reach outside the tensor world: they read and
write files (``ReadFile``, ``WriteFile``, ``MatchingFiles``, file readers and datasets, summary
writers, ``PrintV2`` to ``file://``, debug ops with dump URLs), or call back into Python
(``PyFunc``, ``EagerPyFunc``). Those are reported with the op, the node and the function that
holds it. Save/restore and table-initialisation ops are normal in every SavedModel, so they are
reported only when a constant path feeding them is absolute, climbs out with ``..`` or is a URL.

The protobuf is read with the minimal wire-format reader shared with the ONNX reader (no
TensorFlow import): ``SavedModel.meta_graphs[].graph_def`` nodes and ``library.function[]``
bodies, asset file names, and, for ``keras_metadata.pb``, the Keras JSON of each layer (Lambda
layers and custom objects, as in ``.keras`` files). Tensor contents are skipped.

:class:`SavedModelDirectoryScanner` looks at what sits next to ``saved_model.pb`` (not cached):
asset files that are symlinks out of the model directory.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

from mlsec import __version__
from mlsec.engine import dispatch
from mlsec.engine.context import Inspection
from mlsec.engine.stream import Stream, bytes_stream
from mlsec.model import Artifact, Finding, Skip
from mlsec.registry import ScanContext, register
from mlsec.scanners.model_onnx import LEN, ProtoError, WireReader, fields, text

# op -> what it does; always reported.
RISKY_OPS: dict[str, str] = {
    "ReadFile": "reads a file", "WriteFile": "writes a file", "MatchingFiles": "lists files by glob",
    "PyFunc": "calls a Python function", "PyFuncStateless": "calls a Python function",
    "EagerPyFunc": "calls a Python function",
    "ImmutableConst": "memory-maps a file",
    "WholeFileReader": "reads files", "WholeFileReaderV2": "reads files",
    "TextLineReader": "reads files", "TextLineReaderV2": "reads files",
    "FixedLengthRecordReader": "reads files", "FixedLengthRecordReaderV2": "reads files",
    "TFRecordReader": "reads files", "TFRecordReaderV2": "reads files", "LMDBReader": "reads files",
    "TextLineDataset": "reads files", "TFRecordDataset": "reads files", "TFRecordDatasetV2": "reads files",
    "FixedLengthRecordDataset": "reads files", "FixedLengthRecordDatasetV2": "reads files",
    "LMDBDataset": "reads files", "ExperimentalLMDBDataset": "reads files",
    "SqlDataset": "runs SQL on a database file", "ExperimentalSqlDataset": "runs SQL on a database file",
    "CSVDataset": "reads files", "CSVDatasetV2": "reads files", "ExperimentalCSVDataset": "reads files",
    "LoadDataset": "reads files", "SaveDataset": "writes files", "SaveDatasetV2": "writes files",
    "SnapshotDataset": "writes files", "SnapshotDatasetV2": "writes files",
    "DatasetToTFRecord": "writes files", "ExperimentalDatasetToTFRecord": "writes files",
    "CreateSummaryFileWriter": "writes files", "CreateSummaryDbWriter": "writes a database file",
}
# op -> attribute whose non-empty (or non-default) value makes the op touch files or the network.
ATTR_OPS: dict[str, tuple[str, ...]] = {
    "PrintV2": ("output_stream",),
    "DebugIdentity": ("debug_urls",), "DebugNanCount": ("debug_urls",), "DebugNumericSummary": ("debug_urls",),
    "DebugIdentityV2": ("dump_root",), "DebugIdentityV3": ("debug_urls",),
    "DecodeProtoV2": ("descriptor_source",),
}
# Normal in SavedModels; reported only with odd constant paths.
PATH_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
                      "ShardedFilename", "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
                      "LoadAndRemapMatrix", "ReadFile", "WriteFile", "MatchingFiles"})
_MAX_STRINGS = 16
_MAX_STRING = 4096


@dataclass
class _Node:
    name: str = ""
    op: str = ""
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, list[str]] = field(default_factory=dict)  # string-valued attrs only
    strings: list[str] = field(default_factory=list)           # DT_STRING tensor values (Const)


def odd_path(path: str) -> str:
    """Why a path used by a file op is suspicious, or ""."""
    p = path.replace("\\", "/")
    if "://" in p:
        return "URL"
    if p.startswith("/") or (len(p) > 1 and p[1] == ":"):
        return "absolute path"
    if ".." in p.split("/"):
        return "'..' component"
    return ""


class _Graph:
    """Reads the parts of SavedModel / GraphDef messages that matter."""

    def __init__(self, r: WireReader, insp: Inspection, member: str | None) -> None:
        self.r, self.insp, self.member = r, insp, member
        self.node_count = 0
        self.assets: list[str] = []

    # -- messages --------------------------------------------------------------------------------
    def saved_model(self) -> None:
        for fno, wt, v in fields(self.r, None):
            if fno == 2 and wt == LEN:
                self.meta_graph(self.r.tell() + v)

    def meta_graph(self, end: int) -> None:
        r = self.r
        for fno, wt, v in fields(r, end):
            if fno == 2 and wt == LEN:
                self.graph_def(r.tell() + v)
            elif fno == 6 and wt == LEN:
                for afno, awt, av in fields(r, r.tell() + v):
                    if afno == 2 and awt == LEN:
                        self.assets.append(text(r, av, _MAX_STRING))

    def graph_def(self, end: int | None) -> None:
        r = self.r
        nodes: list[_Node] = []
        for fno, wt, v in fields(r, end):
            if fno == 1 and wt == LEN:
                nodes.append(self.node(r.tell() + v))
            elif fno == 2 and wt == LEN:
                for lfno, lwt, lv in fields(r, r.tell() + v):
                    if lfno == 1 and lwt == LEN:
                        self.function(r.tell() + lv)
        self.check(nodes, "graph")

    def function(self, end: int) -> None:
        r = self.r
        name = ""
        nodes: list[_Node] = []
        for fno, wt, v in fields(r, end):
            if fno == 1 and wt == LEN:
                for sfno, swt, sv in fields(r, r.tell() + v):
                    if sfno == 1 and swt == LEN:
                        name = text(r, sv, 512)
            elif fno == 3 and wt == LEN:
                nodes.append(self.node(r.tell() + v))
        self.check(nodes, f"function {name or '?'}")

    def node(self, end: int) -> _Node:
        r = self.r
        node = _Node()
        self.node_count += 1
        if self.node_count & 0x3FF == 0:
            self.insp.check_time()
        for fno, wt, v in fields(r, end):
            if fno == 1 and wt == LEN:
                node.name = text(r, v, 512)
            elif fno == 2 and wt == LEN:
                node.op = text(r, v, 256)
            elif fno == 3 and wt == LEN and len(node.inputs) < 64:
                node.inputs.append(text(r, v, 512))
            elif fno == 5 and wt == LEN:
                self.attr_entry(r.tell() + v, node)
        return node

    def attr_entry(self, end: int, node: _Node) -> None:
        r = self.r
        key = ""
        for fno, wt, v in fields(r, end):
            if fno == 1 and wt == LEN:
                key = text(r, v, 256)
            elif fno == 2 and wt == LEN:
                self.attr_value(r.tell() + v, key, node)

    def attr_value(self, end: int, key: str, node: _Node) -> None:
        r = self.r
        for fno, wt, v in fields(r, end):
            if fno == 2 and wt == LEN:       # s
                self._keep(node.attrs.setdefault(key, []), r, v)
            elif fno == 1 and wt == LEN:     # list: s repeated (field 2)
                for lfno, lwt, lv in fields(r, r.tell() + v):
                    if lfno == 2 and lwt == LEN:
                        self._keep(node.attrs.setdefault(key, []), r, lv)
            elif fno == 8 and wt == LEN and key == "value":  # Const tensor: string_val (field 8)
                for tfno, twt, tv in fields(r, r.tell() + v):
                    if tfno == 8 and twt == LEN:
                        self._keep(node.strings, r, tv)

    @staticmethod
    def _keep(out: list[str], r: WireReader, n: int) -> None:
        if len(out) < _MAX_STRINGS and n <= _MAX_STRING:
            out.append(r.read(n).decode("utf-8", "replace"))

    # -- checks ----------------------------------------------------------------------------------
    def check(self, nodes: list[_Node], scope: str) -> None:
        consts = {n.name: n.strings for n in nodes if n.op == "Const" and n.strings}
        for n in nodes:
            where = {"op": n.op, "node": n.name, "scope": scope}
            if n.op in RISKY_OPS:
                self.insp.add("MLSEC-TF-001", f"Op {n.op} (node {n.name!r} in {scope}) {RISKY_OPS[n.op]}",
                              key=f"op {n.op} {scope} {n.name}", member=self.member, evidence=where)
            elif n.op in ATTR_OPS:
                values = [v for a in ATTR_OPS[n.op] for v in n.attrs.get(a, []) if v]
                if n.op == "PrintV2":
                    values = [v for v in values if v.startswith("file://")]
                elif n.op == "DecodeProtoV2":
                    values = [v for v in values if v != "local://" and not v.startswith("bytes://")]
                if values:
                    self.insp.add("MLSEC-TF-001", f"Op {n.op} (node {n.name!r} in {scope}) writes or reads "
                                  f"{values[0][:200]!r}", key=f"op {n.op} {scope} {n.name}", member=self.member,
                                  evidence={**where, "target": values[0][:200]})
            if n.op in PATH_OPS:
                for inp in n.inputs:
                    src = inp.lstrip("^").split(":", 1)[0]
                    for value in consts.get(src, ()):
                        why = odd_path(value)
                        if why:
                            self.insp.add("MLSEC-TF-002", f"Op {n.op} (node {n.name!r} in {scope}) uses path "
                                          f"{value[:200]!r} ({why})", key=f"path {n.op} {scope} {n.name}",
                                          member=self.member, evidence={**where, "path": value[:200], "reason": why})

    def check_assets(self) -> None:
        for asset in self.assets:
            why = odd_path(asset)
            if why:
                self.insp.add("MLSEC-TF-002", f"Asset file name {asset[:200]!r} leaves the SavedModel's assets "
                              f"directory ({why})", key=f"asset {asset}", member=self.member,
                              evidence={"asset": asset[:200], "reason": why})


def _metadata(r: WireReader, insp: Inspection, member: str | None, depth: int) -> None:
    """``keras_metadata.pb`` (SavedMetadata): each node's Keras JSON goes through the Keras checks."""
    from mlsec.scanners.model_keras import check_config_text

    for fno, wt, v in fields(r, None):
        if fno != 1 or wt != LEN:
            continue
        ident, meta = "", b""
        for nfno, nwt, nv in fields(r, r.tell() + v):
            if nfno == 3 and nwt == LEN:
                ident = text(r, nv, 256)
            elif nfno == 4 and nwt == LEN and nv <= 64 << 20:
                meta = r.read(nv)
        if meta:
            check_config_text(meta, insp, member, f"keras_metadata {ident or '?'}", depth)


def _looks_like_graphdef(stream: Stream) -> bool:
    """A GraphDef starts with a NodeDef (field 1, length-delimited) whose first field is its name."""
    head = stream.peek(64)
    if len(head) < 4 or head[0] != 0x0A:
        return False
    r = WireReader(bytes_stream(head))
    try:
        r.varint()
        r.varint()
        return r.varint() == 0x0A
    except ProtoError:
        return False


@dispatch.handles("protobuf")
def inspect_protobuf(stream: Stream, insp: Inspection, member: str | None, depth: int) -> None:
    """Route a ``.pb`` by name and shape: SavedModel, keras_metadata, or a frozen GraphDef."""
    name = posixpath.basename((member or insp.path).rsplit("!", 1)[-1])
    if name == "fingerprint.pb":
        return  # hashes of the other files; nothing executable
    r = WireReader(stream)
    g = _Graph(r, insp, member)
    try:
        if name == "keras_metadata.pb":
            _metadata(r, insp, member, depth)
            return
        first = stream.peek(1)
        if not first:
            insp.add("MLSEC-TF-003", "Empty protobuf file", key="malformed", member=member)
            return
        if first[0] == 0x08 or name == "saved_model.pb":
            g.saved_model()
        elif _looks_like_graphdef(stream):
            g.graph_def(None)
        else:
            insp.skip(f"{name}: protobuf of an unknown schema (not a SavedModel or GraphDef); not inspected",
                      "unknown-protobuf")
            return
    except ProtoError as exc:
        insp.add("MLSEC-TF-003", f"Malformed TensorFlow protobuf: {exc}", key="malformed", member=member,
                 evidence={"error": str(exc)[:200]})
    g.check_assets()


@register
class SavedModelDirectoryScanner:
    """Files next to ``saved_model.pb``: assets that are symlinks out of the model directory."""

    name = "mlsec-savedmodel-dir"
    version = f"{__version__}+1"
    cacheable = False  # depends on the directory, not only on this file

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """``saved_model.pb`` files on disk."""
        return ("mlsec" in ctx.engines and bool(artifact.fs_path)
                and posixpath.basename(artifact.path) == "saved_model.pb")

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        """Walk ``assets/`` (bounded) and report links that resolve outside the model directory."""
        base = os.path.realpath(os.path.dirname(artifact.fs_path))
        insp = Inspection(path=artifact.path, scanner=self.name, limits=ctx.limits)
        assets = os.path.join(base, "assets")
        seen = 0
        for dirpath, dirnames, filenames in os.walk(assets, followlinks=False):
            for entry in dirnames + filenames:
                seen += 1
                if seen > ctx.limits.max_members:
                    return
                full = os.path.join(dirpath, entry)
                if not os.path.islink(full):
                    continue
                real = os.path.realpath(full)
                if os.path.commonpath([real, base]) != base:
                    rel = os.path.relpath(full, base).replace(os.sep, "/")
                    insp.add("MLSEC-TF-004", f"Asset {rel} is a symlink to {os.readlink(full)!r}, outside the "
                             "SavedModel directory", key=f"asset-link {rel}",
                             evidence={"asset": rel, "target": os.readlink(full)[:200]})
        yield from insp.findings
