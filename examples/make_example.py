"""Regenerate examples/embryo_small.tif (and its ground-truth labels) from the synthetic generator.

    python examples/make_example.py

A seeded synthetic nuclei volume, 96x192x192 isotropic voxels of 0.5 um drawn with mean nucleus
diameter 30 px, sampled every 4th plane in Z (anisotropy 4: Z step 2.0 um), like a confocal
embryo stack. Needs the export extra's generator (numpy only).
"""

from pathlib import Path

import numpy as np
import tifffile

from nucseg_rt.eval.synth import make_volume

HERE = Path(__file__).resolve().parent


def main():
    img, labels, meta = make_volume((96, 192, 192), anisotropy=4.0, seed=2024, diameter_mean=30.0)
    opts = dict(imagej=True, resolution=(2.0, 2.0), compression="zlib",
                metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    tifffile.imwrite(HERE / "embryo_small.tif", img, **opts)
    tifffile.imwrite(HERE / "embryo_small_labels.tif", labels.astype(np.uint16), **opts)
    print(f"embryo_small.tif {img.shape} {img.dtype}, {meta['n_nuclei']} nuclei "
          f"({len(meta['faint_labels'])} faint)")


if __name__ == "__main__":
    main()
