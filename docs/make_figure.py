"""Render docs/orthoview.png: the example volume's YX, ZX and ZY mid-planes with mask outlines.

    python docs/make_figure.py [masks.tif]     # default: segments examples/embryo_small.tif first

Pure numpy + zlib PNG writer (no plotting library).
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_png(path: Path, rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def panel(img2d: np.ndarray, lab2d: np.ndarray, zoom_rows: int = 1) -> np.ndarray:
    img2d = np.repeat(img2d, zoom_rows, axis=0)
    lab2d = np.repeat(lab2d, zoom_rows, axis=0)
    lo, hi = np.percentile(img2d, (1, 99.5))
    g = np.clip((img2d - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = np.stack([g, g, g], -1)
    edge = np.zeros(lab2d.shape, bool)  # a mask pixel with a differently labelled 4-neighbour
    edge[:-1] |= lab2d[:-1] != lab2d[1:]
    edge[1:] |= lab2d[1:] != lab2d[:-1]
    edge[:, :-1] |= lab2d[:, :-1] != lab2d[:, 1:]
    edge[:, 1:] |= lab2d[:, 1:] != lab2d[:, :-1]
    edge &= lab2d > 0
    rng = np.random.default_rng(0)
    colors = rng.integers(80, 256, (int(lab2d.max()) + 1, 3))
    rgb[edge] = colors[lab2d[edge]]
    return rgb


def main(argv):
    from nucseg_rt.io import read_volume

    img, info = read_volume(ROOT / "examples" / "embryo_small.tif")
    if argv:
        masks, _ = read_volume(argv[0])
    else:
        from nucseg_rt import Segmenter

        masks = Segmenter("nuclei_3d").segment(img, anisotropy=4.0, diameter=30.0).masks
    z, y, x = (s // 2 for s in img.shape)
    aniso = 4
    yx = panel(img[z].astype(np.float32), masks[z])
    zx = panel(img[:, y].astype(np.float32), masks[:, y], aniso)
    zy = panel(img[:, :, x].astype(np.float32), masks[:, :, x], aniso)
    gap = np.full((yx.shape[0] + zx.shape[0] + 8, 8, 3), 255.0)
    left = np.concatenate([yx, np.full((8, yx.shape[1], 3), 255.0), zx], 0)
    right = np.concatenate([zy.transpose(1, 0, 2), np.full((left.shape[0] - zy.shape[1], zy.shape[0], 3), 255.0)], 0)
    fig = np.concatenate([left, gap, right], 1)
    fig = np.repeat(np.repeat(fig, 2, axis=0), 2, axis=1)
    out = ROOT / "docs" / "orthoview.png"
    write_png(out, fig)
    print(f"wrote {out} ({fig.shape[1]}x{fig.shape[0]}), {int(masks.max())} nuclei")


if __name__ == "__main__":
    main(sys.argv[1:])
