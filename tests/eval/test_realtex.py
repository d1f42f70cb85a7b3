"""Real-texture 3D volumes built from 2D labelled nuclei (eval.realtex), on seeded 2D images."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.eval import realtex


def _images(seed=0, n=2, size=(96, 120)):
    """2D 'fluorescence' images with textured disc and ellipse nuclei and their labels."""
    return realtex.seeded_images(seed, n, size)


@pytest.fixture(scope="module")
def bank():
    return realtex.nucleus_bank(_images())


def test_bank_skips_border_nuclei_and_normalises_texture(bank):
    img, lab = _images()[0]
    lab = lab.copy()
    lab[:, :3][lab[:, :3] > 0] = lab[:, :3][lab[:, :3] > 0]  # nuclei are away from the borders
    border = np.zeros_like(lab)
    border[40:60, 0:10] = 1
    only_border = realtex.nucleus_bank([(img, np.maximum(lab, 0))])
    assert len(only_border) == len(np.unique(lab)) - 1
    with pytest.raises(InvalidInputError, match="no nucleus away from the image borders"):
        realtex.nucleus_bank([(img, border)])
    nu = bank[0]
    assert nu.depth.max() == pytest.approx(1.0) and (nu.depth[~nu.mask] == 0).all()
    assert 0.7 < np.median([np.median(b.texture[b.mask]) for b in bank]) < 1.3


def test_body_mid_section_is_the_2d_mask_and_shrinks_to_the_poles(bank):
    rng = np.random.default_rng(1)
    nu = bank[3]
    tex, nd = realtex._body(nu, rng)
    mid = tex.shape[0] // 2
    assert np.array_equal(nd[mid] < 1, nu.mask)
    areas = (nd < 1).sum((1, 2))
    assert areas[mid] == areas.max() and areas[0] < areas[mid] / 2 and areas[-1] < areas[mid] / 2


def test_volume_geometry_labels_and_seeds(bank):
    spec = realtex.VolumeSpec((40, 96, 96), 16.0, anisotropy=4.0)
    img, lab, meta = realtex.make_volume(bank, spec, seed=5, keep_iso=True)
    assert img.dtype == np.uint16 and img.shape == lab.shape == (10, 96, 96)
    assert np.array_equal(np.unique(lab)[1:], np.arange(1, meta["n_nuclei"] + 1))
    assert 14 < meta["diameter"] < 18
    assert meta["labels_iso"].shape[0] == 37  # planes 0..9 at iso 0, 4, .., 36 from the phase
    assert np.mean(img[lab > 0]) > 1.5 * np.mean(img[lab == 0])
    img2, lab2, _ = realtex.make_volume(bank, spec, seed=5)
    assert np.array_equal(img, img2) and np.array_equal(lab, lab2)
    assert not np.array_equal(lab, realtex.make_volume(bank, spec, seed=6)[1])


def test_thin_stacks_and_crops_cut_nuclei(bank):
    spec = realtex.VolumeSpec((48, 96, 96), 16.0, anisotropy=2.0, n_planes=5, crop_yx=(40, 40))
    img, lab, meta = realtex.make_volume(bank, spec, seed=2)
    assert img.shape == (5, 40, 40)
    assert meta["n_nuclei"] > 0 and set(meta["edge_labels"]) <= set(range(1, meta["n_nuclei"] + 1))
    assert len(meta["edge_labels"]) >= meta["n_nuclei"] - 1


def test_timelapse_keeps_track_ids(bank):
    spec = realtex.VolumeSpec((32, 80, 80), 16.0, anisotropy=2.0)
    images, tracks, meta = realtex.make_timelapse(bank, spec, n_frames=3, seed=4)
    assert images.shape == tracks.shape == (3, 16, 80, 80)
    ids0 = set(np.unique(tracks[0])[1:].tolist())
    assert len(ids0 & set(np.unique(tracks[1])[1:].tolist())) >= 0.8 * len(ids0)
    a, b = (tracks[0] == sorted(ids0)[0]), (tracks[1] == sorted(ids0)[0])
    assert (a & b).sum() > 0.3 * a.sum()  # the same nucleus, moved a little
    assert not np.array_equal(images[0], images[1])


def test_spec_is_validated():
    with pytest.raises(InvalidInputError, match="`anisotropy` must be in"):
        realtex.VolumeSpec((20, 32, 32), 10.0, anisotropy=0.5)
    with pytest.raises(InvalidInputError, match="`n_planes` must be >= 2"):
        realtex.VolumeSpec((20, 32, 32), 10.0, n_planes=1)
    with pytest.raises(InvalidInputError, match="`diameter` must be in"):
        realtex.VolumeSpec((20, 32, 32), 2.0)


def test_named_settings_held_out_and_large():
    assert realtex.setting_spec("crop@2") is realtex.HELDOUT_SETTINGS["crop@2"]
    large = realtex.setting_spec("large70@11.5")
    assert (large.diameter, large.anisotropy) == (70.0, 11.5)
    assert not set(realtex.LARGE_SETTINGS) & set(realtex.HELDOUT_SETTINGS)  # the default mean stays comparable
    assert list(realtex.ALL_SETTINGS) == [*realtex.HELDOUT_SETTINGS, *realtex.LARGE_SETTINGS]
    # each large volume holds several whole nuclei across, and deep enough to have interior ones
    assert all(min(sp.shape_iso) >= 1.7 * sp.diameter for sp in realtex.LARGE_SETTINGS.values())
    with pytest.raises(InvalidInputError, match=r"`setting` must be one of aniso1, .*large70@11.5, got 'huge'"):
        realtex.setting_spec("huge")


def test_draw_spec_hard_cases():
    """``dense_prob`` 0 leaves the draws as before; shares of 1 make every spec thin, cropped
    and crowded."""
    plain = [realtex.draw_spec(np.random.default_rng(s)) for s in range(20)]
    zero = [realtex.draw_spec(np.random.default_rng(s), dense_prob=0.0) for s in range(20)]
    assert plain == zero
    assert all(0.25 <= sp.density <= 0.45 and 0.6 <= sp.psf_xy <= 1.6 for sp in plain)
    hard = [realtex.draw_spec(np.random.default_rng(s), thin_prob=1, crop_prob=1, dense_prob=1) for s in range(20)]
    assert all(0.45 <= sp.density <= 0.6 and 1.2 <= sp.psf_xy <= 1.8 for sp in hard)
    assert all(sp.crop_yx is not None for sp in hard)
    assert all(sp.n_planes is not None for sp in hard if sp.shape_iso[0] / sp.anisotropy > 9)
