"""nucseg_rt_export.crops: 2D training pairs from z-stacks (needs torch: the crop maker shares
plane extraction with training, export/train_data.py)."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("torch")

from nucseg_rt.errors import InvalidInputError  # noqa: E402
from nucseg_rt.prep import normalize, smooth_sharpen  # noqa: E402
from nucseg_rt_export import crops  # noqa: E402


def _stack(shape=(9, 50, 61), seed=0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    lab = np.zeros(shape, np.uint16)
    for i in range(6):
        c = rng.uniform([1, 5, 5], np.array(shape) - [1, 5, 5])
        lab[((zz - c[0]) / 3) ** 2 + ((yy - c[1]) / 7) ** 2 + ((xx - c[2]) / 7) ** 2 < 1] = i + 1
    img = (lab > 0) * 1000 + rng.poisson(50, shape)
    return img.astype(np.uint16), lab


def test_make_crops_orientations_and_sizes():
    img, lab = _stack()
    out = crops.make_crops(img, lab, anisotropy=2.0, crop_size=32, nimg_per_tif=3, min_masks=2, ortho_step=5)
    tags = [t for t, _, _ in out]
    assert sum(t.startswith("YX") for t in tags) == 3
    assert all(im.shape == lb.shape for _, im, lb in out)
    assert all(im.dtype == np.float32 and lb.dtype == np.uint16 for _, im, lb in out)
    assert all(max(lb.shape) <= 32 for _, _, lb in out)
    zy = [lb for t, _, lb in out if t.startswith("ZY")]
    assert zy and zy[0].shape[0] == 18  # 9 planes x anisotropy 2
    # every chosen plane had >= 2 objects before cropping; deterministic by seed
    again = crops.make_crops(img, lab, anisotropy=2.0, crop_size=32, nimg_per_tif=3, min_masks=2, ortho_step=5)
    assert [t for t, _, _ in again] == tags


def test_channel_and_z_axes():
    img, lab = _stack()
    yxcz = np.stack([img, img // 2], axis=-1).transpose(1, 2, 3, 0)  # (Y, X, C, Z)
    a = crops.make_crops(img, lab, crop_size=64, nimg_per_tif=2)
    b = crops.make_crops(yxcz, lab, crop_size=64, nimg_per_tif=2, channel_axis=2, z_axis=3)
    assert [t for t, _, _ in a] == [t for t, _, _ in b]
    np.testing.assert_array_equal(a[0][1], b[0][1])


def test_sharpen_and_tile_norm_are_the_runtimes():
    """Crops are tile-normalised, then smoothed/sharpened, with the runtime's functions."""
    img, lab = _stack()
    kw = dict(crop_size=64, nimg_per_tif=2, min_masks=2, sharpen_radius=8, tile_norm=25)
    out = crops.make_crops(img, lab, **kw)  # crops larger than the planes: whole planes
    plain = crops.make_crops(img, lab, **{**kw, "sharpen_radius": 0, "tile_norm": 0})
    assert [t for t, _, _ in out] == [t for t, _, _ in plain] and len(out) >= 4
    for (tag, im, _), (_, raw, _) in zip(out, plain):
        x = normalize(raw[None, :, :, None], tile_norm=25, norm3D=False)
        ref = smooth_sharpen(x, sharpen_radius=8, smooth_radius=6)[0, :, :, 0]
        np.testing.assert_array_equal(im, ref, err_msg=tag)
    flat = crops.tile_normalize(np.full((30, 30), 5.0, np.float32), 10)
    assert flat.shape == (30, 30) and not flat.any()  # a constant plane becomes zeros
    with pytest.raises(InvalidInputError, match=r"\(Y, X\) plane"):
        crops.smooth_sharpen(np.zeros((2, 30, 30), np.float32), sharpen_radius=4)


def test_cli_writes_cellpose_pairs(tmp_path):
    img, lab = _stack()
    tifffile.imwrite(tmp_path / "emb1.tif", img)
    tifffile.imwrite(tmp_path / "emb1_masks.tif", lab)
    out = tmp_path / "train"
    assert crops.main([str(tmp_path), "--out", str(out), "--anisotropy", "2", "--crop-size", "32",
                       "--nimg-per-tif", "2", "--min-masks", "1", "--ortho-step", "4"]) == 0
    imgs = sorted(out.glob("*_img.tif"))
    assert imgs and len(imgs) == len(list(out.glob("*_masks.tif")))
    for f in imgs:
        m = f.with_name(f.name.replace("_img.tif", "_masks.tif"))
        assert tifffile.imread(f).shape == tifffile.imread(m).shape
    io = pytest.importorskip("cellpose.io")
    names = io.get_image_files(str(out), "_masks", imf="_img")
    labels = io.get_label_files(names, "_masks", imf="_img")
    labels = labels[0] if isinstance(labels, tuple) else labels
    assert len(names) == len(imgs) and all(Path(p).exists() for p in labels)


def test_bad_inputs(tmp_path):
    img, lab = _stack()
    with pytest.raises(InvalidInputError, match="`anisotropy`"):
        crops.make_crops(img, lab, anisotropy=0)
    with pytest.raises(InvalidInputError, match="labels shape"):
        crops.make_crops(img, lab[:-1])
    with pytest.raises(InvalidInputError, match="`channel_axis`"):
        crops.make_crops(img[None], lab)
    tifffile.imwrite(tmp_path / "a.tif", img)
    with pytest.raises(InvalidInputError, match="no label file"):
        crops.main([str(tmp_path / "a.tif"), "--out", str(tmp_path / "o")])
