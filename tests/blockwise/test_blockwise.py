"""Blockwise segmentation: the plan, global normalisation, mask ownership, the merge, and
blockwise vs whole-volume labels with the bundled model (several block sizes, seams, determinism,
resume)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

pytest.importorskip("zarr")

from helpers import block_tiff, block_volume, blockwise_masks, bundled_segmenter, split_nuclei, whole_masks  # noqa: E402
from nucseg_rt.prep import axes
from nucseg_rt.blockwise import blocks
from nucseg_rt.blockwise.plan import BASE_BYTES, choose_block_size, estimate_bytes, plan_run
from nucseg_rt.blockwise import run as large  # noqa: E402
from nucseg_rt.blockwise.merge import merge_blocks  # noqa: E402
from nucseg_rt.errors import InvalidInputError  # noqa: E402
from nucseg_rt.io import open_volume  # noqa: E402
from nucseg_rt.eval.metrics import average_precision  # noqa: E402
from nucseg_rt.prep.intensity import _percentile_bounds  # noqa: E402

DIAMETER = 30.0


# --- plan ---------------------------------------------------------------------------------------


def test_plan_tiles_the_volume_once():
    plan = blocks.plan_blocks((23, 101, 77), "10,40,32", diameter=30, anisotropy=2)
    assert plan.grid == (3, 3, 3) and plan.halo == (19, 38, 38)
    seen = np.zeros(plan.shape, int)
    for i in range(len(plan)):
        seen[tuple(slice(a, b) for a, b in plan.core_box(i))] += 1
        read = plan.read_box(i)
        assert all(0 <= a <= c0 and c1 <= b <= s for (a, b), (c0, c1), s
                   in zip(read, plan.core_box(i), plan.shape))
    assert (seen == 1).all()


@pytest.mark.parametrize("value, expected", [("48", (48, 48, 48)), ("16,64,80", (16, 64, 80)),
                                             (32, (32, 32, 32)), ((8, 9, 10), (8, 9, 10))])
def test_parse_block_size(value, expected):
    assert blocks.parse_block_size(value) == expected


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5", "4,4", "8,8,8,8", "7"])
def test_parse_block_size_bad(value):
    with pytest.raises(InvalidInputError, match="block_size"):
        blocks.parse_block_size(value)


def test_block_size_from_memory_budget():
    kw = dict(anisotropy=1.0, rescale=1.0, halo=(38, 38, 38))
    assert choose_block_size((64, 256, 256), 2 * 10**9, **kw) is None  # fits whole
    block = choose_block_size((400, 2000, 2000), 2 * 10**9, **kw)
    read = [min(s, b + 2 * h) for s, b, h in zip((400, 2000, 2000), block, kw["halo"])]
    assert estimate_bytes(read, anisotropy=1, rescale=1) <= 2 * 10**9 - BASE_BYTES
    assert block[1] >= 64 and block[1] % 16 == 0


def test_plan_run_whole_blocks_or_refused():
    """One decision: whole when it fits (or without blockwise settings), blocks when not (or
    when a block size or a scheduler asks), refused when even the smallest block cannot fit."""
    scale = dict(anisotropy=1.0, rescale=1.0, diameter=30.0)
    gib = 2**30
    fits = plan_run((64, 256, 256), settings=large.LargeSettings(max_memory=2 * gib), **scale)
    assert (fits.mode, fits.block) == ("whole", None) and fits.budget == 2 * gib
    big = plan_run((400, 2000, 2000), settings=large.LargeSettings(max_memory=2 * gib), **scale)
    assert big.mode == "blocks" and big.block == choose_block_size(
        (400, 2000, 2000), 2 * gib, halo=(38, 38, 38), anisotropy=1.0, rescale=1.0)
    given = plan_run((64, 256, 256), settings=large.LargeSettings(block_size=32), **scale)
    assert (given.mode, given.block) == ("blocks", (32, 32, 32))
    spread = plan_run((64, 600, 600), settings=large.LargeSettings(scheduler="local", workers=1,
                                                                   max_memory=64 * gib), **scale)
    assert spread.mode == "blocks" and spread.block == (64, 256, 256)
    huge = plan_run((64, 256, 256), settings=large.LargeSettings(max_memory=2 * gib),
                    **dict(scale, anisotropy=1e6))
    assert huge.mode == "refused" and huge.smallest_bytes + BASE_BYTES > huge.budget
    assert plan_run((64, 256, 256), **dict(scale, anisotropy=1e9)).mode == "refused"
    assert plan_run((64, 256, 256), **scale).mode == "whole"  # no settings: whole or refused


def test_plan_run_warns_about_implausible_settings():
    """Issue 22 item 5: `anisotropy` 300 on 30 x 256 x 256 (a Z step beyond any microscope, a
    network grid 300 times the input) is said before the work; realistic settings are not."""
    plain = dict(rescale=1.0, diameter=30.0)
    assert plan_run((30, 256, 256), anisotropy=11.5, rescale=2.0, diameter=15.0).warnings == ()
    slip = plan_run((30, 256, 256), anisotropy=300.0, **plain).warnings
    assert len(slip) == 2 and "beyond any microscope" in slip[0], slip
    assert "network grid of 9000 x 256 x 256 voxels, 300 times the 30 x 256 x 256 input" in slip[1]
    small = plan_run((30, 256, 256), anisotropy=4.0, rescale=5.0, diameter=6.0).warnings
    assert len(small) == 1 and "500 times" in small[0] and "`diameter` 6 px" in small[0], small


# --- global normalisation equals a whole-volume run's ---------------------------------------------


@pytest.mark.parametrize("shape, dtype", [((9, 60, 70), np.uint16), ((60, 450, 420), np.uint16),
                                          ((7, 50, 61), np.int16), ((5, 40, 30), np.uint8)])
def test_global_bounds_equal_whole_volume_bounds(shape, dtype):
    """Histogram path; (60, 450, 420) > 224**3 voxels: the strided subsample."""
    rng = np.random.default_rng(4)
    vol = (rng.gamma(2.0, 300.0, shape) - (500 if dtype == np.int16 else 0)).clip(
        np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    x, _ = axes.to_zyxc(vol, nchan=2)
    expected = _percentile_bounds(x[..., 0], 1.0, 99.0)
    with open_volume(vol) as lazy:
        bounds = blocks.global_bounds(lazy, nchan=2, slab_bytes=2**20)
    assert tuple(bounds[0]) == tuple(float(v) for v in expected)
    assert tuple(bounds[1]) == (0.0, 1.0)  # the zero channel stays zero


def test_global_bounds_two_channels_float():
    rng = np.random.default_rng(5)
    vol = rng.normal(10, 3, (6, 2, 40, 50)).astype(np.float32)
    x, _ = axes.to_zyxc(vol, channel_axis=1, chan=2, chan2=1, nchan=2)
    with open_volume(vol, channel_axis=1) as lazy:
        bounds = blocks.global_bounds(lazy, chan=2, chan2=1, nchan=2)
    for c in range(2):
        assert tuple(bounds[c]) == tuple(float(v) for v in _percentile_bounds(x[..., c], 1, 99))


# --- ownership and merge -------------------------------------------------------------------------


def test_select_masks_owned_and_candidates():
    masks = np.zeros((10, 40, 40), np.uint16)
    masks[2:6, 4:10, 4:10] = 3     # centre (3.5, 6.5, 6.5) + offset 20 in X -> x 26.5: owned
    masks[2:6, 4:10, 22:30] = 5    # centre x 25.5 + 20 = 45.5: outside core, within margin
    masks[2:6, 4:10, 34:40] = 9    # touches the block's inner face at x = 39: not a candidate
    read_box, core_box = ((0, 10), (0, 40), (20, 60)), ((0, 10), (0, 40), (20, 40))
    offset, labels, owned = blocks.select_masks(masks, read_box, core_box, (10, 40, 100),
                                                   (4, 16, 16))
    assert list(owned) == [True, False]
    assert tuple(offset) == (2, 4, 24) and labels.shape == (4, 6, 26)
    assert set(np.unique(labels)) == {0, 1, 2}


def _write_block(workdir, index, offset, labels, owned):
    np.savez_compressed(blocks.block_file(workdir, index), offset=np.array(offset),
                        labels=labels, owned=np.array(owned), core=np.zeros((3, 2), int))


def test_merge_paints_a_nucleus_seen_by_two_blocks_once(tmp_path):
    plan = blocks.BlockPlan((8, 20, 40), (8, 20, 20), (0, 0, 10))
    a = np.zeros((4, 10, 12), np.uint16)
    a[:, :, :] = 1                         # nucleus at x 14..25, owned by block 0
    b = np.zeros((4, 10, 12), np.uint16)
    b[:, :, 1:] = 1                        # the same nucleus one voxel narrower, owned by block 1
    b2 = np.zeros((4, 10, 4), np.uint16)
    b2[:] = 1                              # a nucleus only block 1 saw, as a candidate
    _write_block(tmp_path, 0, (2, 5, 14), a, [True])
    np.savez_compressed(blocks.block_file(tmp_path, 1), offset=np.array((2, 5, 14)),
                        labels=np.concatenate([b, b2 * 2], axis=2)[:, :, :16],
                        owned=np.array([True, False]), core=np.zeros((3, 2), int))
    out = np.zeros(plan.shape, np.uint32)
    stats = merge_blocks(plan, tmp_path, out, min_size=1)
    assert stats.n_labels == 2 and stats.duplicates == 1 and stats.candidates_painted == 1
    assert set(np.unique(out)) == {0, 1, 2}
    assert (out[2:6, 5:15, 14:26] == 1).all() and (out[2:6, 5:15, 26:30] == 2).all()


# --- blockwise vs whole volume ---------------------------------------------------------------------


def _blockwise(folder, case, block, name="masks.tif", **kw):
    img, aniso = block_volume(case)
    res = large.segment_blockwise(block_tiff(case), folder / name, bundled_segmenter(),
                                  diameter=DIAMETER, anisotropy=aniso,
                                  settings=large.LargeSettings(),
                                  block_size=blocks.parse_block_size(block), **kw)
    return res, tifffile.imread(res.path)


@pytest.mark.parametrize("case, block", [
    ("iso", "64"), ("iso", "48"),  # 48: AP 0.91 with min_size 15 (block-edge specks)
    ("iso", "12,64,128"), ("aniso2", "64")])  # 12,64,128: seams in Z and Y, 4 blocks
def test_blockwise_matches_whole_volume(case, block):
    whole = whole_masks(case)
    res, masks = blockwise_masks(case, block)
    assert res.n_blocks > 1 and masks.shape == whole.shape
    assert int(masks.max()) == res.n_nuclei == len(np.unique(masks)) - 1  # consecutive ids
    ap = average_precision(whole, masks)[0]
    # a few voxels more or less at a block seam may move a mask across the size filter: the only
    # difference allowed is a mask within 20 % of min_size that one side kept and the other not
    # (the bundled model of 2026-12-07 at aniso2-64: one border-cut nucleus of 720 voxels, min
    # size 707, of 17)
    borderline = _unmatched_sizes(whole, masks)
    assert ap[0] >= 0.98 or all(size < 1.2 * res.min_size for size in borderline), (ap, borderline, res)
    assert ap[0] >= 0.9, (ap, res)
    assert split_nuclei(whole, masks) == []
    assert not res.path.with_name(res.path.name + ".blocks").exists()


def _unmatched_sizes(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Voxel counts of the masks of ``a`` and of ``b`` that match no mask of the other (IoU < 0.5)."""
    t, p = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    na, nb = int(t.max()) + 1, int(p.max()) + 1
    inter = np.bincount(t * nb + p, minlength=na * nb).reshape(na, nb)
    sa, sb = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(sa[:, None] + sb[None, :] - inter, 1)
    return ([int(sa[i]) for i in range(1, na) if iou[i, 1:].max(initial=0) < 0.5]
            + [int(sb[j]) for j in range(1, nb) if iou[1:, j].max(initial=0) < 0.5])


def test_resume_computes_only_the_missing_blocks(tmp_path):
    import threading

    from nucseg_rt.errors import Cancelled

    cancel = threading.Event()

    def stop_after_two(stage, done, total):
        if stage == "blocks" and done >= 2:
            cancel.set()

    with pytest.raises(Cancelled):
        _blockwise(tmp_path, "iso", "64", name="r.tif", progress=stop_after_two, cancel=cancel)
    workdir = tmp_path / "r.tif.blocks"
    assert len(list(workdir.glob("block_*.npz"))) == 2 and not (tmp_path / "r.tif").exists()
    res, resumed = _blockwise(tmp_path, "iso", "64", name="r.tif")
    assert (res.reused, res.computed) == (2, res.n_blocks - 2)
    np.testing.assert_array_equal(resumed, blockwise_masks("iso", "64")[1])


def test_changed_settings_do_not_reuse_blocks(tmp_path):
    plan = blocks.plan_blocks((24, 128, 128), 64, diameter=30, anisotropy=1)
    from nucseg_rt.params import InputSpec, MaskParams

    ctx = blocks.BlockContext(source=str(block_tiff("iso")), inputs=InputSpec(),
                                 params=MaskParams(min_size=15), anisotropy=1.0, diameter=30.0,
                                 resample=True, plan=plan, bounds=((0.0, 1.0),),
                                 workdir=str(tmp_path / "w"))
    changed = blocks.BlockContext(**{**ctx.__dict__, "params": MaskParams(min_size=16)})
    rescaled = blocks.BlockContext(**{**ctx.__dict__, "diameter": 25.0})
    assert ctx.fingerprint("abc") != rescaled.fingerprint("abc")  # the scale is part of it
    assert ctx.fingerprint("abc") == ctx.fingerprint("abc") != changed.fingerprint("abc")
    assert ctx.fingerprint("abc") != ctx.fingerprint("abd")  # another model
    workdir = tmp_path / "w"
    large._prepare_workdir(workdir, ctx.fingerprint("abc"), resume=True)
    (workdir / "block_000000.npz").write_bytes(b"x")
    large._prepare_workdir(workdir, ctx.fingerprint("abc"), resume=True)
    assert (workdir / "block_000000.npz").exists()          # same run: kept
    large._prepare_workdir(workdir, changed.fingerprint("abc"), resume=True)
    assert not (workdir / "block_000000.npz").exists()      # other settings: dropped
    (workdir / "block_000000.npz").write_bytes(b"x")
    large._prepare_workdir(workdir, changed.fingerprint("abc"), resume=False)
    assert not (workdir / "block_000000.npz").exists()      # --no-resume: dropped


def test_blockwise_rejects_tile_norm(tmp_path):
    from nucseg_rt.params import InputSpec, Normalization

    with pytest.raises(InvalidInputError, match="tile_norm"):
        large.segment_blockwise(block_tiff("iso"), tmp_path / "x.tif", bundled_segmenter(),
                                diameter=DIAMETER,
                                inputs=InputSpec(normalize=Normalization(tile_norm=64)),
                                settings=large.LargeSettings(), block_size=(24, 64, 64))


def test_histogram_percentile_is_numpys():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(2, 3000))
        values = rng.integers(0, int(rng.choice([5, 300, 65535])), n).astype(np.float32)
        cum = np.cumsum(np.bincount(values.astype(np.int64)))
        for q in (1.0, 99.0, float(rng.uniform(0, 100))):
            assert blocks._hist_percentile(cum, q, 0) == np.percentile(values, q)
