"""Render resources/enclave.svg into the icon files installers need (PNG sizes, Windows ICO, macOS ICNS).

    QT_QPA_PLATFORM=offscreen python packaging/make_icons.py

Uses Qt's SVG renderer (already a dependency); ICO and ICNS are written with PNG payloads, which both formats allow,
so no image library is needed. Output: resources/icons/enclave-<size>.png, enclave.ico, enclave.icns (Briefcase's
naming for ``icon = "icons/enclave"``).
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "resources" / "enclave.svg"
OUT = ROOT / "resources" / "icons"
PNG_SIZES = (16, 32, 64, 128, 256, 512, 1024)
ICO_SIZES = (16, 32, 48, 64, 128, 256)
# ICNS chunk types with PNG payloads: https://en.wikipedia.org/wiki/Apple_Icon_Image_format
ICNS_TYPES = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09", 1024: b"ic10"}


def render_png(size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(SOURCE))
    if not renderer.isValid():
        raise SystemExit(f"cannot read {SOURCE}")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data.data())


def ico(images: dict[int, bytes]) -> bytes:
    header = struct.pack("<HHH", 0, 1, len(images))
    offset = 6 + 16 * len(images)
    entries, payload = b"", b""
    for size, png in sorted(images.items()):
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICO directory entry
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(png), offset + len(payload))
        payload += png
    return header + entries + payload


def icns(images: dict[int, bytes]) -> bytes:
    chunks = b"".join(ICNS_TYPES[size] + struct.pack(">I", len(png) + 8) + png for size, png in sorted(images.items()))
    return b"icns" + struct.pack(">I", len(chunks) + 8) + chunks


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    OUT.mkdir(parents=True, exist_ok=True)
    pngs = {size: render_png(size) for size in sorted(set(PNG_SIZES) | set(ICO_SIZES))}
    for size in PNG_SIZES:
        (OUT / f"enclave-{size}.png").write_bytes(pngs[size])
    (OUT / "enclave.ico").write_bytes(ico({s: pngs[s] for s in ICO_SIZES}))
    (OUT / "enclave.icns").write_bytes(icns({s: pngs[s] for s in ICNS_TYPES}))
    print(f"wrote {len(PNG_SIZES)} PNGs, enclave.ico and enclave.icns to {OUT.relative_to(ROOT)}")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
