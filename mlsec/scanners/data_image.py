"""Images in datasets (JPEG, PNG, GIF, WebP, TIFF): GPS metadata, appended data, pixel bombs.

The structure is walked from the headers -- JPEG segments, PNG chunks, GIF blocks, RIFF chunks,
TIFF IFDs -- with seeks, never decoding pixels and without Pillow:

* **GPS location**: an EXIF GPS IFD with a non-zero latitude or longitude (JPEG APP1, PNG
  ``eXIf``, WebP ``EXIF``, TIFF IFD0), or GPS properties in an XMP packet. Coordinates are
  never reported, only that they are there;
* **data after the end marker** (JPEG EOI, PNG IEND, GIF trailer, end of the WebP RIFF): viewers
  ignore it, so it is where polyglots hide a zip or a pickle. The trailing bytes are sniffed;
  a format the model engine reads (pickle, zip, tar, compressed streams, NumPy...) is handed to
  it through :mod:`mlsec.engine.dispatch`, like data after a pickle's STOP, and the finding is
  HIGH. Camera trailers (a second JPEG for MPF, a motion-photo MP4, Samsung's SEF block,
  padding) are not findings;
* **decompression bombs**: declared dimensions beyond twice Pillow's ``MAX_IMAGE_PIXELS``.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, BinaryIO, cast

from mlsec import __version__
from mlsec.engine import dispatch
from mlsec.engine.context import DeadlineExceeded, Inspection
from mlsec.engine.stream import StreamError, file_stream
from mlsec.fsio import open_regular
from mlsec.model import Artifact, Finding, Severity, Skip
from mlsec.registry import ScanContext, register
from mlsec.sniff import ARCHIVE_FORMATS, HEAD_SIZE, sniff

BOMB_PIXELS = 2 * 89_478_485      # Pillow raises DecompressionBombError above this
MAX_SEGMENTS = 1_000_000          # JPEG segments / PNG chunks / GIF blocks / RIFF chunks walked
MAX_META = 1 << 20                # metadata block read into memory (EXIF, XMP)
MAX_IFD_ENTRIES = 4096
MAX_NESTED_IMAGES = 4             # MPF: JPEGs appended after JPEGs
_SCAN = 1 << 20
_XMP_GPS = re.compile(rb"GPS(?:Latitude|Longitude)\s*[=>]\s*[\"']?\s*-?[1-9]|GPS(?:Latitude|Longitude)\s*[=>]\s*[\"']?\s*-?0*[.,]?\d*[1-9]")
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class Malformed(Exception):
    """The image structure is broken at some point (what was read before still counts)."""


@dataclass
class ImageInfo:
    """What the structure walk learned about one image."""

    end: int | None = None               # offset just past the end marker (None: no marker / TIFF)
    width: int | None = None
    height: int | None = None
    gps: list[str] = field(default_factory=list)   # where GPS data was found (EXIF, XMP)
    problem: str = ""


def _read_at(fh: IO[bytes], offset: int, n: int) -> bytes:
    fh.seek(offset)
    return fh.read(n)


# --- EXIF / TIFF ------------------------------------------------------------------------

def tiff_gps(read: Callable[[int, int], bytes], info: ImageInfo, source: str = "EXIF",
             dims: bool = False) -> None:
    """Look for a GPS IFD with coordinates in TIFF-structured data (EXIF blocks, TIFF files).

    ``read(offset, n)`` reads from the start of the TIFF header. With ``dims`` the image
    width and height of IFD0 are recorded too (TIFF files).
    """
    head = read(0, 8)
    if len(head) < 8 or head[:4] not in (b"II*\x00", b"MM\x00*"):
        return
    e = "<" if head[:2] == b"II" else ">"
    entries = _ifd(read, e, struct.unpack(e + "I", head[4:8])[0])
    if dims:
        info.width = _short_or_long(entries.get(0x100), e)
        info.height = _short_or_long(entries.get(0x101), e)
    gps_ptr = _short_or_long(entries.get(0x8825), e)
    if not gps_ptr:
        return
    gps = _ifd(read, e, gps_ptr)
    for tag in (2, 4):  # GPSLatitude, GPSLongitude: three RATIONALs
        entry = gps.get(tag)
        if entry is None or entry[0] not in (5, 10) or entry[1] < 1:
            continue
        count = min(entry[1], 3)
        raw = read(struct.unpack(e + "I", entry[2])[0], 8 * count)
        values = struct.unpack(e + "I" * (len(raw) // 4), raw[: len(raw) // 4 * 4]) if raw else ()
        if any(values[i] for i in range(0, len(values), 2)):
            info.gps.append(source)
            return


def _ifd(read: Callable[[int, int], bytes], e: str, offset: int) -> dict[int, tuple[int, int, bytes]]:
    """Entries of the IFD at ``offset``: tag -> (type, count, 4-byte value or offset)."""
    raw = read(offset, 2)
    if len(raw) < 2:
        return {}
    (n,) = struct.unpack(e + "H", raw)
    n = min(n, MAX_IFD_ENTRIES)
    data = read(offset + 2, 12 * n)
    out = {}
    for i in range(len(data) // 12):
        tag, typ, count = struct.unpack(e + "HHI", data[12 * i:12 * i + 8])
        out[tag] = (typ, count, data[12 * i + 8:12 * i + 12])
    return out


def _short_or_long(entry: tuple[int, int, bytes] | None, e: str) -> int | None:
    if entry is None:
        return None
    typ, _count, value = entry
    if typ == 3:
        return int(struct.unpack(e + "H", value[:2])[0])
    if typ in (4, 13):
        return int(struct.unpack(e + "I", value)[0])
    return None


def _exif_block(data: bytes, info: ImageInfo) -> None:
    if data.startswith(b"Exif\x00\x00"):
        data = data[6:]
    tiff_gps(lambda off, n: data[off:off + n] if off >= 0 else b"", info)


def _xmp_block(data: bytes, info: ImageInfo) -> None:
    if _XMP_GPS.search(data) and "XMP" not in info.gps:
        info.gps.append("XMP")


# --- formats ------------------------------------------------------------------------------

def walk_jpeg(fh: IO[bytes], start: int, size: int, info: ImageInfo, insp: Inspection | None = None) -> None:
    """Walk JPEG segments from ``start`` (the SOI) to the EOI; set ``info.end``."""
    pos = start + 2
    for _ in range(MAX_SEGMENTS):
        if insp is not None:
            insp.check_time()
        head = _read_at(fh, pos, 4)
        if len(head) < 2:
            info.problem = "file ends before the JPEG end marker"
            return
        if head[0] != 0xFF:
            raise Malformed(f"no JPEG marker at offset {pos}")
        marker = head[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            info.end = pos + 2
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        if len(head) < 4:
            info.problem = "file ends inside a JPEG segment header"
            return
        (length,) = struct.unpack(">H", head[2:4])
        if length < 2:
            raise Malformed(f"JPEG segment length {length} at offset {pos}")
        body = pos + 4
        if marker == 0xE1:
            data = _read_at(fh, body, min(length - 2, MAX_META))
            if data.startswith(b"Exif\x00\x00"):
                _exif_block(data, info)
            elif data.startswith(b"http://ns.adobe.com/xap/1.0/"):
                _xmp_block(data, info)
        elif marker in _SOF:
            data = _read_at(fh, body, 5)
            if len(data) == 5:
                info.height, info.width = struct.unpack(">HH", data[1:5])
        pos = body + length - 2
        if marker == 0xDA:  # entropy-coded data follows: find the next real marker
            found = _next_marker(fh, pos, size)
            if found is None:
                info.problem = "file ends inside the JPEG image data"
                return
            pos = found
    raise Malformed("too many JPEG segments")


def _next_marker(fh: IO[bytes], pos: int, size: int) -> int | None:
    while pos < size:
        chunk = _read_at(fh, pos, _SCAN + 1)
        if len(chunk) < 2:
            return None
        m = _JPEG_MARKER.search(chunk)
        if m is not None:
            return pos + m.start()
        pos += len(chunk) - 1 if len(chunk) > 1 else 1
        if len(chunk) <= _SCAN:
            return None
    return None


def walk_png(fh: IO[bytes], size: int, info: ImageInfo, insp: Inspection | None = None) -> None:
    """Walk PNG chunks to IEND; set ``info.end``."""
    pos = 8
    for _ in range(MAX_SEGMENTS):
        if insp is not None:
            insp.check_time()
        head = _read_at(fh, pos, 8)
        if len(head) < 8:
            info.problem = "file ends before the PNG IEND chunk"
            return
        length, ctype = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF or pos + 12 + length > size:
            raise Malformed(f"PNG chunk {ctype!r} at offset {pos} runs past the end of the file")
        if ctype == b"IHDR" and length >= 8:
            info.width, info.height = struct.unpack(">II", _read_at(fh, pos + 8, 8))
        elif ctype == b"eXIf":
            _exif_block(_read_at(fh, pos + 8, min(length, MAX_META)), info)
        elif ctype == b"iTXt" and length > 17:
            data = _read_at(fh, pos + 8, min(length, MAX_META))
            if data.startswith(b"XML:com.adobe.xmp\x00"):
                _xmp_block(data, info)
        elif ctype == b"IEND":
            info.end = pos + 12 + length
            return
        pos += 12 + length
    raise Malformed("too many PNG chunks")


def walk_gif(fh: IO[bytes], size: int, info: ImageInfo, insp: Inspection | None = None) -> None:
    """Walk GIF blocks to the trailer (0x3B); set ``info.end``."""
    head = _read_at(fh, 0, 13)
    if len(head) < 13:
        raise Malformed("GIF header is truncated")
    info.width, info.height, flags = struct.unpack("<HHB", head[6:11])
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    buf = _Buffered(fh, size)
    for _ in range(MAX_SEGMENTS):
        if insp is not None:
            insp.check_time()
        kind = buf.byte(pos)
        if kind is None:
            info.problem = "file ends before the GIF trailer"
            return
        if kind == 0x3B:
            info.end = pos + 1
            return
        if kind == 0x21:
            pos = buf.sub_blocks(pos + 2)
        elif kind == 0x2C:
            desc = buf.read(pos + 1, 9)
            if len(desc) < 9:
                info.problem = "file ends inside a GIF image descriptor"
                return
            lflags = desc[8]
            pos += 10 + (3 << ((lflags & 7) + 1) if lflags & 0x80 else 0)
            pos = buf.sub_blocks(pos + 1)  # skip the LZW minimum code size byte
        else:
            raise Malformed(f"unknown GIF block 0x{kind:02x} at offset {pos}")
        if pos < 0:
            info.problem = "file ends inside GIF data"
            return
    raise Malformed("too many GIF blocks")


class _Buffered:
    """Random access through a 1 MiB window (GIF sub-blocks are at most 255 bytes)."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh, self.size = fh, size
        self.base, self.data = 0, b""

    def read(self, pos: int, n: int) -> bytes:
        if not (self.base <= pos and pos + n <= self.base + len(self.data)):
            self.base, self.data = pos, _read_at(self.fh, pos, max(n, _SCAN))
        return self.data[pos - self.base:pos - self.base + n]

    def byte(self, pos: int) -> int | None:
        b = self.read(pos, 1)
        return b[0] if b else None

    def sub_blocks(self, pos: int) -> int:
        """Skip data sub-blocks starting at ``pos``; return the offset after the terminator, -1 at EOF."""
        while True:
            n = self.byte(pos)
            if n is None:
                return -1
            pos += 1 + n
            if n == 0:
                return pos
            if pos > self.size:
                return -1


def walk_webp(fh: IO[bytes], size: int, info: ImageInfo, insp: Inspection | None = None) -> None:
    """Walk RIFF chunks; the image ends where the RIFF size says."""
    head = _read_at(fh, 0, 12)
    (riff,) = struct.unpack("<I", head[4:8])
    end = 8 + riff + (riff & 1)
    info.end = min(end, size) if end <= size else None
    if end > size:
        info.problem = "RIFF size is larger than the file"
    pos = 12
    limit = min(end, size)
    for _ in range(MAX_SEGMENTS):
        if insp is not None:
            insp.check_time()
        if pos + 8 > limit:
            return
        fourcc, length = struct.unpack("<4sI", _read_at(fh, pos, 8))
        body = pos + 8
        if fourcc == b"VP8X" and length >= 10:
            d = _read_at(fh, body, 10)
            info.width = int.from_bytes(d[4:7], "little") + 1
            info.height = int.from_bytes(d[7:10], "little") + 1
        elif fourcc == b"VP8 " and length >= 10 and info.width is None:
            d = _read_at(fh, body + 6, 4)
            if len(d) == 4:
                w, h = struct.unpack("<HH", d)
                info.width, info.height = w & 0x3FFF, h & 0x3FFF
        elif fourcc == b"VP8L" and length >= 5 and info.width is None:
            d = _read_at(fh, body + 1, 4)
            if len(d) == 4:
                bits = int.from_bytes(d, "little")
                info.width, info.height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif fourcc == b"EXIF":
            _exif_block(_read_at(fh, body, min(length, MAX_META)), info)
        elif fourcc == b"XMP ":
            _xmp_block(_read_at(fh, body, min(length, MAX_META)), info)
        pos = body + length + (length & 1)
    raise Malformed("too many RIFF chunks")


def walk_tiff(fh: IO[bytes], size: int, info: ImageInfo) -> None:
    """TIFF: GPS and dimensions from IFD0 (no end marker, so no trailing-data check)."""
    tiff_gps(lambda off, n: _read_at(fh, off, n) if 0 <= off < size else b"", info, dims=True)


# --- the scanner -----------------------------------------------------------------------

def _benign_trailer(fh: IO[bytes], start: int, size: int) -> str | None:
    """Name a known harmless trailer (camera data, padding), or None."""
    length = size - start
    head = _read_at(fh, start, 16)
    if head[4:8] == b"ftyp":
        return "MP4 motion photo"
    if length <= _SCAN:
        data = _read_at(fh, start, length)
        if not data.strip(b"\x00") or not data.strip(b"\xff") or not data.strip(b"\r\n \t\x00"):
            return "padding"
    if _read_at(fh, size - 4, 4) == b"SEFT" and b"SEFH" in _read_at(fh, start, min(length, 64)):
        return "Samsung SEF trailer"
    return None


@register
class DataImageScanner:
    """GPS metadata, data hidden after the end marker, and pixel bombs in dataset images."""

    name = "mlsec-data-image"
    version = f"{__version__}+data1"
    cacheable = True

    def applies(self, artifact: Artifact, ctx: ScanContext) -> bool:
        """JPEG, PNG, GIF, WebP and TIFF files (sniffed from their bytes)."""
        return artifact.format in ("jpeg", "png", "gif", "webp", "tiff")

    def scan(self, artifact: Artifact, ctx: ScanContext) -> Iterator[Finding | Skip]:
        """Walk the structure; report GPS, trailing data (inspecting it) and bombs."""
        insp = Inspection(path=artifact.path, scanner=self.name, limits=ctx.limits)
        error: Exception | None = None
        with open_regular(artifact.fs_path) as fh:
            size = os.fstat(fh.fileno()).st_size
            try:
                self._inspect(fh, size, artifact.format, insp)
            except DeadlineExceeded as exc:
                error = exc
        yield from insp.findings
        yield from insp.skips
        if error is not None:
            raise error

    def _inspect(self, fh: IO[bytes], size: int, fmt: str, insp: Inspection) -> None:
        info = ImageInfo()
        try:
            if fmt == "jpeg":
                walk_jpeg(fh, 0, size, info, insp)
            elif fmt == "png":
                walk_png(fh, size, info, insp)
            elif fmt == "gif":
                walk_gif(fh, size, info, insp)
            elif fmt == "webp":
                walk_webp(fh, size, info, insp)
            else:
                walk_tiff(fh, size, info)
        except (Malformed, struct.error) as exc:
            insp.add("MLSEC-DATA-015", f"Malformed {fmt.upper()} structure: {exc}", key="malformed",
                     evidence={"format": fmt})
        if info.gps:
            insp.add(
                "MLSEC-DATA-008",
                f"Image metadata holds GPS coordinates ({', '.join(info.gps)}); where it was taken travels with it",
                key="gps",
                evidence={"metadata": ",".join(info.gps), "format": fmt},
            )
        if info.width and info.height and info.width * info.height > BOMB_PIXELS:
            insp.add(
                "MLSEC-DATA-010",
                f"Declared size {info.width}x{info.height} ({info.width * info.height:,} pixels) exceeds "
                f"{BOMB_PIXELS:,}: decoding it exhausts memory",
                key="bomb",
                evidence={"width": str(info.width), "height": str(info.height)},
            )
        end = info.end
        depth = 0
        # MPF / MPO: further JPEGs appended by the camera; look past them, a payload may follow.
        while fmt == "jpeg" and end is not None and end < size and depth < MAX_NESTED_IMAGES:
            if _read_at(fh, end, 3) != b"\xff\xd8\xff":
                break
            nested = ImageInfo()
            try:
                walk_jpeg(fh, end, size, nested, insp)
            except (Malformed, struct.error):
                break
            if nested.end is None:
                end = size  # a truncated second image: nothing can follow it
                break
            end = nested.end
            depth += 1
        if end is not None and end < size:
            self._trailing(fh, end, size, fmt, insp)

    def _trailing(self, fh: IO[bytes], end: int, size: int, fmt: str, insp: Inspection) -> None:
        benign = _benign_trailer(fh, end, size)
        if benign is not None:
            return
        head = _read_at(fh, end, HEAD_SIZE)
        kind = sniff(head)
        length = size - end
        inspectable = kind in dispatch.formats()
        dangerous = inspectable or kind in ARCHIVE_FORMATS
        marker = {"jpeg": "JPEG EOI", "png": "PNG IEND", "gif": "GIF trailer", "webp": "RIFF end"}[fmt]
        insp.add(
            "MLSEC-DATA-009",
            f"{length} bytes of {kind} data follow the {marker} (offset {end})"
            + ("; inspected as an embedded payload" if inspectable else ""),
            key="trailing",
            severity=Severity.HIGH if dangerous else None,
            offset=end,
            evidence={"offset": str(end), "trailing_bytes": str(length), "trailing_format": kind},
        )
        if inspectable:
            stream = file_stream(cast(BinaryIO, fh)).window(end, length)
            try:
                dispatch.inspect(stream, insp, f"@{end}", 1)
            except StreamError as exc:
                insp.add("MLSEC-ARCHIVE-002", f"Unreadable appended data: {exc}", key="trailing-stream",
                         member=f"@{end}")
