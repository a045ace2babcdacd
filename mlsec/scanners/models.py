"""The model scanner: runs mlsec's own format readers over model and archive artifacts.

It covers every format that has a reader in ``mlsec.engine.dispatch`` (pickle, joblib,
PyTorch, NumPy, Keras HDF5 and ``.keras``, TensorFlow protobufs, ONNX, safetensors, GGUF,
zip/tar/7z archives and compressed streams); nested content is dispatched by the readers
themselves. Checks that need other files of a directory (ONNX external data, SavedModel
assets, Hugging Face layouts) are separate, uncached scanners.
"""

from __future__ import annotations

from collections.abc import Iterator

from mlsec import __version__
from mlsec.engine import dispatch
from mlsec.engine.context import DeadlineExceeded, Inspection
from mlsec.engine.stream import StreamError, file_stream
from mlsec.fsio import open_regular
from mlsec.model import Artifact, Finding, Skip
from mlsec.registry import ScanContext, register


@register
class ModelScanner:
    """mlsec's own format readers for models and the containers that carry them."""

    name = "mlsec-models"
    version = f"{__version__}+2"
    cacheable = True  # findings depend on the file's bytes and name only

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """Any artifact whose sniffed format has a reader."""
        return "mlsec" in ctx.engines and artifact.format in dispatch.formats()

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        """Inspect the file; a timeout keeps the partial findings, then raises."""
        insp = Inspection(path=artifact.path, scanner=self.name, limits=ctx.limits)
        error: Exception | None = None
        with open_regular(artifact.fs_path) as fh:
            try:
                dispatch.inspect(file_stream(fh), insp, None, 0, artifact.path)
            except DeadlineExceeded as exc:
                error = exc
            except StreamError as exc:  # a stream error no reader claimed: still a finding
                insp.add("MLSEC-ARCHIVE-002", f"Unreadable content: {exc}", key="stream-error")
        yield from insp.findings
        yield from insp.skips
        if error is not None:
            raise error
