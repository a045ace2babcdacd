"""Format detection from leading bytes.

File extensions are attacker-controlled and often wrong (``pytorch_model.bin`` is a zip,
``model.pt`` may be a bare pickle, ``data.pkl.gz`` a gzip). mlsec decides the format from the
content; the extension is only a fallback hint when the bytes are not recognized, so that a
``.pkl`` full of garbage is still inspected (and reported as damaged) rather than ignored.
"""

from __future__ import annotations

import struct

HEAD_SIZE = 4096

LFS_PREFIX = b"version https://git-lfs.github.com/spec/v1"

# Extension hints for files whose bytes are not recognized (lower-case suffix -> format).
EXTENSION_HINTS: dict[str, str] = {
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "pickle",
    ".dill": "pickle",
    ".pt": "pickle",
    ".pth": "pickle",
    ".ckpt": "pickle",
    ".bin": "pickle",
    ".npy": "numpy",
    ".npz": "zip",
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".7z": "7z",
    ".onnx": "onnx",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".keras": "zip",
    ".pb": "protobuf",
    ".tflite": "tflite",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
}

MODEL_FORMATS = frozenset(
    {"pickle", "numpy", "hdf5", "safetensors", "gguf", "onnx", "joblib-zf", "torch-legacy-tar", "protobuf",
     "tflite"}
)
ARCHIVE_FORMATS = frozenset({"zip", "tar", "gzip", "bz2", "xz", "lzma", "zlib", "zstd", "lz4", "7z"})
DATA_FORMATS = frozenset({"parquet", "arrow", "csv", "tsv", "jsonl", "json", "png", "jpeg", "gif", "webp", "tiff"})


def _is_tar(head: bytes) -> bool:
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    # Old (v7) tar: no magic; validate the header checksum.
    return tar_checksum_ok(head)


def tar_checksum_ok(head: bytes) -> bool:
    """Does ``head`` start with a tar header whose checksum is right (what tarfile requires)?"""
    if len(head) < 512:
        return False
    try:
        stored = int(head[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    block = bytearray(head[:512])
    block[148:156] = b" " * 8
    return stored == sum(block) and head[0] != 0


def _is_zlib(head: bytes) -> bool:
    """A zlib header (CMF/FLG checksum) that also starts a valid deflate stream.

    The two-byte check alone accepts text: ``x = 1`` and ``x^`` pass it, which would turn a
    Python file into an "archive". Inflating the first bytes settles it cheaply.
    """
    if not (len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0):
        return False
    import zlib

    try:
        zlib.decompressobj().decompress(head[:256], 64)
    except zlib.error:
        return False
    return True


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= 100_000_000 and head[8:9] == b"{"


def sniff(head: bytes) -> str:
    """Name the format of content starting with ``head`` (read at least HEAD_SIZE bytes).

    Returns one of: pickle, zip, tar, 7z, gzip, bz2, xz, lzma, zlib, zstd, lz4, numpy, hdf5,
    safetensors, gguf, joblib-zf, tflite, parquet, arrow, png, jpeg, gif, webp, tiff,
    lfs-pointer, empty, text, binary. Formats without magic (ONNX and TensorFlow protobufs,
    CSV, JSON) come from :func:`hinted` on the file name.
    """
    if not head:
        return "empty"
    if head.startswith(LFS_PREFIX):
        return "lfs-pointer"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(b"ZF0x"):
        return "joblib-zf"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1"):
        return "arrow"
    if head[:4] == b"\xff\xff\xff\xff" and len(head) >= 8 and head[8:9] in (b"\x10", b"\x14"):
        return "arrow"  # Arrow IPC stream format: continuation marker, then a flatbuffer message
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    # safetensors before pickle: a header length whose low byte is a pickle opcode (128 = PROTO)
    # also parses as a pickle prefix; the safetensors reader reads such files as a pickle too.
    if head[8:10] == b'{"' and _is_safetensors(head):
        return "safetensors"
    # Pickle before tar: a pickle can carry b"ustar" at offset 257 inside a string, and the
    # loader runs it; a real tar header (a file name, then NULs) never parses as opcodes.
    from mlsec.engine.pickle import looks_like_pickle  # here: files known from the memo are not sniffed

    if looks_like_pickle(head):
        return "pickle"
    if _is_tar(head):
        return "tar"
    if _is_safetensors(head):
        return "safetensors"
    # LZMA "alone" format: properties byte 0x5D then a little-endian dictionary size.
    if head[:1] == b"\x5d" and len(head) >= 13 and head[1:5] in (b"\x00\x00\x80\x00", b"\x00\x00\x00\x01", b"\x00\x00\x00\x04", b"\x00\x00\x10\x00", b"\x00\x00\x01\x00", b"\x00\x00\x20\x00", b"\x00\x00\x40\x00", b"\x00\x00\x00\x02", b"\x00\x00\x00\x08"):
        return "lzma"
    if _is_zlib(head):
        return "zlib"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sniffed head is still text.
        if exc.start >= len(head) - 3 and b"\0" not in head:
            return "text"
    return "binary"


def hinted(fmt: str, name: str) -> str:
    """Fall back to the extension hint when the bytes were not recognized.

    Text stays text unless the name says it is a text format (CSV, JSON...): a ``.pkl`` that is
    really text is still sent to the pickle reader, which reports it as damaged.
    """
    if fmt not in ("text", "binary"):
        return fmt
    lower = name.lower()
    for ext, hint in EXTENSION_HINTS.items():
        if lower.endswith(ext):
            return hint
    return fmt


def manifest_format(name: str) -> str | None:
    """The manifest format for a file name, or None when it is not a dependency file mlsec reads.

    By name, unlike everything else here: dependency files are text with no magic bytes.
    """
    low = name.rsplit("/", 1)[-1].lower()
    if low == "pyproject.toml":
        return "pyproject"
    if low == "setup.cfg":
        return "setup.cfg"
    if low == "poetry.lock":
        return "poetry.lock"
    if low == "uv.lock":
        return "uv.lock"
    if low == "pipfile.lock":
        return "Pipfile.lock"
    if low == "pylock.toml" or (low.startswith("pylock.") and low.endswith(".toml")):
        return "pylock.toml"
    if low in ("environment.yml", "environment.yaml") or (
        low.startswith("environment") and low.endswith((".yml", ".yaml"))
    ):
        return "environment.yml"
    if low.endswith((".txt", ".in")) and (
        "requirements" in low or "constraints" in low or "/requirements/" in "/" + name.lower().replace("\\", "/")
    ):
        return "requirements"
    return None
