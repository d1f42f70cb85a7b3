"""nucseg_rt_export.train / train_data: loss, augmentation geometry, tiny training runs."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nucseg_rt.masks.label_flows import masks_to_flows  # noqa: E402
from nucseg_rt_export import train as tr  # noqa: E402
from nucseg_rt_export.train_data import (PlaneSet, augment_batch, iter_planes,  # noqa: E402
                                         resample_z, rotate_flip_flows)
from nucseg_rt_export.unet import CPnet  # noqa: E402

NBASE = "2,8,16,32,64"
TINY = ["--nbase", NBASE, "--steps-per-epoch", "3", "--batch-size", "2", "--crop", "64",
        "--n-volumes", "1", "--n-val-volumes", "1", "--volume-shape", "24,64,64",
        "--yx-step", "6", "--ortho-step", "16", "--n-val", "4", "--warmup-steps", "2", "--threads", "1"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets: one thread avoids OpenMP spin-wait stalls on a shared, busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _labels(seed, shape=(40, 44)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    lab = np.zeros(shape, np.uint16)
    for i in range(5):
        cy, cx = rng.uniform(5, shape[0] - 5), rng.uniform(5, shape[1] - 5)
        lab[((yy - cy) / rng.uniform(3, 7)) ** 2 + ((xx - cx) / rng.uniform(3, 7)) ** 2 < 1] = i + 1
    return lab


def test_loss_equals_cellpose():
    cp_train = pytest.importorskip("cellpose.train")
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, 16, 16, generator=g)
    lbl = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    lbl[:, 0] = lbl[:, 0] > 0
    ref = cp_train._loss_fn_seg(lbl, y, torch.device("cpu"))
    ours = tr.cellpose_loss(y, torch.from_numpy(lbl[:, 1:]), torch.from_numpy(lbl[:, 0]))
    assert abs(float(ref) - float(ours)) < 1e-5


@pytest.mark.parametrize("k,flip", [(1, False), (2, False), (3, True), (0, True)])
def test_rotate_flip_keeps_flows_consistent(k, flip):
    lab = _labels(1)
    fl = torch.from_numpy(masks_to_flows(lab))
    im = torch.from_numpy(lab.astype(np.float32))
    _, fr, lr = rotate_flip_flows(im, fl, torch.from_numpy(lab.astype(np.int64)), k, flip)
    np.testing.assert_allclose(fr.numpy(), masks_to_flows(lr.numpy()), atol=1e-5)


def test_iter_planes_and_resample():
    lab = np.zeros((6, 10, 12), np.uint16)
    lab[2:4, 3:6, 3:6] = 1
    img = lab.astype(np.float32)
    planes = list(iter_planes(img, lab, yx_step=1, ortho_step=1, min_masks=1))
    axes = [p[0] for p in planes]
    assert axes.count("YX") == 2 and axes.count("ZX") == 3 and axes.count("ZY") == 3
    assert planes[0][2].shape == (10, 12) and [p for p in planes if p[0] == "ZY"][0][2].shape == (6, 10)
    assert resample_z(img, 2.0).shape == (12, 10, 12)
    np.testing.assert_array_equal(np.unique(resample_z(lab, 3.0, order=0)), [0, 1])


def test_iter_planes_edge_band_adds_the_border_planes():
    lab = np.zeros((9, 10, 12), np.uint16)
    lab[:, 1:9, 1:11] = 1  # one object in every plane of every axis
    img = lab.astype(np.float32)

    def idx(**kw):
        out = {}
        for ax, i, _, _ in iter_planes(img, lab, yx_step=4, ortho_step=8, min_masks=0, **kw):
            out.setdefault(ax, []).append(i)
        return out

    assert idx() == {"YX": [0, 4, 8], "ZX": [0, 8], "ZY": [0, 8]}
    assert idx(edge_band=2) == {"YX": [0, 1, 4, 7, 8], "ZX": [0, 1, 8, 9], "ZY": [0, 1, 8, 10, 11]}


def test_augment_batch_shapes_and_targets():
    ps = PlaneSet.from_planes([(np.random.default_rng(i).random((40, 44)), _labels(i)) for i in range(3)])
    x, fl, cp, w = augment_batch(ps, [0, 1, 2], np.random.default_rng(0), crop=32)
    assert torch.equal(w, torch.ones_like(cp))  # unweighted by default
    assert x.shape == (3, 2, 32, 32) and fl.shape == (3, 2, 32, 32) and cp.shape == (3, 32, 32)
    assert not x[:, 1].any()
    assert set(np.unique(cp.numpy())) <= {0.0, 1.0}
    # without resizing, flows are exactly zero outside the (rotated/flipped) masks
    x, fl, cp, _ = augment_batch(ps, [0, 1, 2], np.random.default_rng(1), crop=32, scale_jitter=1.0)
    assert not fl[cp[:, None].expand_as(fl) == 0].any()



def test_dim_object_weight():
    from nucseg_rt_export.train_data import dim_object_weight

    lb = torch.zeros(20, 30, dtype=torch.int64)
    lb[2:8, 2:8], lb[2:8, 12:18], lb[2:8, 22:28], lb[12:18, 2:8], lb[12:18, 12:18] = 1, 2, 3, 4, 5
    im = torch.full((20, 30), 0.05)
    lb[12:18, 22:28], lb[9:11, 20:30] = 6, 7
    for k, v in enumerate([0.8, 1.0, 0.5, 0.1, 1.2, 1.0, 1.1], 1):
        im[lb == k] = v
    w = dim_object_weight(im, lb, 3.0)
    # the crop's median nucleus (mean 1.0) is the reference: nuclei as bright or brighter keep 1
    assert float(w[lb == 0].max()) == 1.0 and float(w[lb == 2].max()) == 1.0 and float(w[lb >= 5].max()) == 1.0
    torch.testing.assert_close(w[lb == 1], torch.full((36,), 1.25))
    torch.testing.assert_close(w[lb == 3], torch.full((36,), 2.0))
    torch.testing.assert_close(w[lb == 4], torch.full((36,), 3.0))  # 10, capped
    assert torch.equal(dim_object_weight(im, lb, 1.0), torch.ones_like(im))
    assert torch.equal(dim_object_weight(im, torch.zeros_like(lb), 3.0), torch.ones_like(im))
    # the weighted loss is Cellpose's when every weight is 1, and counts weighted pixels more
    y, fl, cp = torch.randn(1, 3, 20, 30), torch.randn(1, 2, 20, 30), (lb > 0).float()[None]
    torch.testing.assert_close(tr.cellpose_loss(y, fl, cp, torch.ones(1, 20, 30)), tr.cellpose_loss(y, fl, cp))
    assert tr.cellpose_loss(y, fl, cp, w[None]) > tr.cellpose_loss(y, fl, cp)
    # through augment_batch: only foreground pixels are weighted, and only up to the cap
    ps = PlaneSet.from_planes([(im.numpy(), lb.numpy().astype(np.uint16))])
    _, _, cp, w = augment_batch(ps, [0, 0], np.random.default_rng(2), crop=32, dim_weight=3.0,
                                brightness_sd=0.0, faint_prob=0.0, gamma_range=1.0, scale_jitter=1.0)
    assert float(w[cp == 0].max()) == 1.0 and float(w.max()) <= 3.0 and float(w.max()) > 2.0


def test_small_object_weight():
    from nucseg_rt_export.train_data import small_object_weight

    lb = torch.zeros(24, 40, dtype=torch.int64)
    lb[0:8, 0:8], lb[0:8, 10:18], lb[0:8, 20:28] = 1, 2, 3  # 64 px each: the median
    lb[10:14, 0:4], lb[10:12, 10:11], lb[12:24, 20:36] = 4, 5, 6  # 16 px, 2 px, 192 px
    w = small_object_weight(lb, 2.0)
    # nuclei at least as large as the median keep 1, smaller ones sqrt(median / area), capped
    assert float(w[lb == 0].max()) == 1.0 and float(w[lb == 6].max()) == 1.0
    assert float(w[(lb >= 1) & (lb <= 3)].max()) == 1.0
    torch.testing.assert_close(w[lb == 4], torch.full((16,), 2.0))  # sqrt(4) = 2
    torch.testing.assert_close(w[lb == 5], torch.full((2,), 2.0))  # sqrt(32), capped
    torch.testing.assert_close(small_object_weight(lb, 3.0)[lb == 5], torch.full((2,), 3.0))
    torch.testing.assert_close(small_object_weight(lb, 3.0)[lb == 4], torch.full((16,), 2.0))
    assert torch.equal(small_object_weight(lb, 1.0), torch.ones(lb.shape))
    assert torch.equal(small_object_weight(torch.zeros_like(lb), 2.0), torch.ones(lb.shape))
    # through augment_batch the two weights multiply; only foreground pixels are weighted
    im = (lb > 0).float()
    im[lb == 4] = 0.25
    ps = PlaneSet.from_planes([(im.numpy(), lb.numpy().astype(np.uint16))])
    kw = dict(brightness_sd=0.0, faint_prob=0.0, gamma_range=1.0, scale_jitter=1.0, crop=48)
    _, _, cp, w = augment_batch(ps, [0], np.random.default_rng(3), small_weight=2.0, **kw)
    assert float(w[cp == 0].max()) == 1.0 and abs(float(w.max()) - 2.0) < 1e-6
    _, _, cp, w = augment_batch(ps, [0], np.random.default_rng(3), small_weight=2.0, dim_weight=4.0, **kw)
    assert float(w[cp == 0].max()) == 1.0 and abs(float(w.max()) - 8.0) < 1e-5  # nucleus 4: 2 x 4


def test_blur_and_noise_augmentations():
    from nucseg_rt_export.train_data import camera_noise, gaussian_blur

    im = torch.zeros(33, 33)
    im[16, 16] = 1.0
    b = gaussian_blur(im, 1.5)
    assert abs(float(b.sum()) - 1.0) < 1e-5 and int(b.argmax()) == 16 * 33 + 16
    assert torch.allclose(b, b.T, atol=1e-7) and float(b.max()) < 0.1  # isotropic, spread out
    assert gaussian_blur(im, 0.0) is im
    flat = torch.full((200, 200), 0.5)
    n = camera_noise(flat, 0.1, np.random.default_rng(0)) - flat
    assert abs(float(n.std()) - 0.1 * 1.5 ** 0.5) < 0.005 and abs(float(n.mean())) < 0.005
    # the augmentations change the image, never the targets (one sample: they draw from the rng
    # after the crop, so later samples of a batch are other crops)
    ps = PlaneSet.from_planes([(np.random.default_rng(i).random((40, 44)), _labels(i)) for i in range(3)])
    plain = augment_batch(ps, [1], np.random.default_rng(5), crop=32)
    aug = augment_batch(ps, [1], np.random.default_rng(5), crop=32, blur_prob=1.0, noise_prob=1.0)
    assert not torch.allclose(plain[0][:, 0], aug[0][:, 0], atol=1e-3)
    torch.testing.assert_close(plain[1], aug[1])
    torch.testing.assert_close(plain[2], aug[2])


def test_coarse_axis_samples_rows_and_interpolates_back():
    from nucseg_rt_export.train_data import coarse_axis

    im = torch.from_numpy(np.random.default_rng(3).random((40, 7)).astype(np.float32))
    out = coarse_axis(im, 4.0, 0.0, 0.0)
    torch.testing.assert_close(out[::4], im[::4])  # the acquired rows are kept
    torch.testing.assert_close(out[2], (im[0] + im[4]) / 2)  # rows between are linear
    torch.testing.assert_close(out[37:], im[36].expand(3, 7))  # the end is held
    flat = torch.full((30, 5), 0.7)
    torch.testing.assert_close(coarse_axis(flat, 5.5, 2.0, 1.3), flat)  # blur and resampling keep a constant
    ramp = torch.arange(30, dtype=torch.float32)[:, None].expand(30, 5)
    assert not torch.allclose(coarse_axis(ramp * (ramp % 6 == 0), 6.0, 2.0, 0.0), ramp * (ramp % 6 == 0))


def test_few_steps_lower_loss():
    torch.manual_seed(0)
    ps = PlaneSet.from_planes([(_labels(i).astype(np.float32) > 0, _labels(i)) for i in range(4)])
    x, fl, cp, _ = augment_batch(ps, [0, 1, 2, 3], np.random.default_rng(0), crop=32)
    net = CPnet([2, 8, 16, 32, 64])
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = tr.cellpose_loss(net(x)[0], fl, cp)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_tiny_run_checkpoint_loads_in_cellpose_and_resumes(tmp_path):
    resnet = pytest.importorskip("cellpose.resnet_torch")
    out = tmp_path / "run"
    assert tr.main(["--out", str(out), "--epochs", "1", *TINY]) == 0
    sd = torch.load(out / "nuclei_3d", weights_only=True)
    cp = resnet.CPnet([2, 8, 16, 32, 64], 3, 3)
    cp.load_state_dict(sd, strict=True)
    assert float(sd["diam_mean"]) == 30.0
    assert (out / "checkpoints" / "nuclei_3d_epoch_001").exists()
    assert (out / "cache" / "train.npz").exists()
    mtime = (out / "cache" / "train.npz").stat().st_mtime
    assert tr.main(["--out", str(out), "--epochs", "2", "--resume", *TINY]) == 0
    ts = torch.load(out / "nuclei_3d.trainstate", weights_only=False)
    assert ts["epoch"] == 2 and [h["epoch"] for h in ts["history"]] == [1, 2]
    assert ts["step"] == 6
    assert (out / "cache" / "train.npz").stat().st_mtime == mtime  # cache reused


def test_resume_without_state_fails(tmp_path):
    with pytest.raises(SystemExit, match="no .*trainstate"):
        tr.main(["--out", str(tmp_path), "--epochs", "1", "--resume", *TINY])


def test_contact_band_weight():
    from nucseg_rt_export.train_data import contact_band_weight

    lb = torch.zeros(20, 40, dtype=torch.int64)
    lb[2:10, 2:10], lb[2:10, 10:18] = 1, 2  # touching along columns 9 | 10
    lb[2:10, 21:29] = 3  # 3 px of background from nucleus 2
    lb[14:18, 32:38] = 4  # alone
    w = contact_band_weight(lb, 3.0)
    # two different nuclei within 2 px (a 5x5 square): columns 8-11 of rows 0-11
    band = torch.zeros_like(lb, dtype=torch.bool)
    band[0:12, 8:12] = True
    # nucleus 2 (col 17) and 3 (col 21) are 4 px apart: pixels at col 19 see both
    band[0:12, 19:20] = True
    assert torch.equal(w == 3.0, band)
    assert float(w[~band].max()) == 1.0 and float(w.min()) == 1.0
    assert torch.equal(contact_band_weight(lb, 1.0), torch.ones(lb.shape))
    only = torch.where(lb == 4, lb, torch.zeros_like(lb))
    assert torch.equal(contact_band_weight(only, 3.0), torch.ones(lb.shape))
    assert torch.equal(contact_band_weight(lb * 0, 3.0), torch.ones(lb.shape))
    with pytest.raises(ValueError, match="`radius` must be >= 1"):
        contact_band_weight(lb, 3.0, radius=0)
    # through augment_batch: weighted pixels only where two nuclei meet, and the weights multiply
    im = (lb > 0).float()
    ps = PlaneSet.from_planes([(im.numpy(), lb.numpy().astype(np.uint16))])
    kw = dict(brightness_sd=0.0, faint_prob=0.0, gamma_range=1.0, scale_jitter=1.0, crop=48)
    _, _, cp, w = augment_batch(ps, [0], np.random.default_rng(3), contact_weight=3.0, **kw)
    assert abs(float(w.max()) - 3.0) < 1e-6 and 0 < int((w > 1).sum()) < int(cp.sum())


@pytest.mark.parametrize("flag", ["--dim-weight", "--small-weight", "--contact-weight"])
def test_loss_weights_below_one_are_refused(tmp_path, flag):
    with pytest.raises(SystemExit, match=f"{flag} must be >= 1, got 0.5"):
        tr.main(["--out", str(tmp_path), "--epochs", "1", flag, "0.5", *TINY])
    assert not any(tmp_path.iterdir())  # refused before any data was built


def test_train_on_folder_of_pairs(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        lab = _labels(i, (48, 52))
        tifffile.imwrite(data / f"c{i}_img.tif", (lab > 0).astype(np.float32) * 100)
        tifffile.imwrite(data / f"c{i}_masks.tif", lab)
    out = tmp_path / "run"
    assert tr.main(["--out", str(out), "--epochs", "1", "--dir", str(data), "--test-dir", str(data),
                    "--min-masks", "1", *TINY]) == 0
    assert (out / "nuclei_3d").exists()


def test_finetune_from_cellpose_file(tmp_path):
    resnet = pytest.importorskip("cellpose.resnet_torch")
    src = resnet.CPnet([2, 8, 16, 32, 64], 3, 3, diam_mean=17.0)
    src.save_model(str(tmp_path / "cp_nuclei"))
    out = tmp_path / "ft"
    assert tr.main(["--out", str(out), "--epochs", "1", "--pretrained", str(tmp_path / "cp_nuclei"), *TINY[2:]]) == 0
    sd = torch.load(out / "nuclei_3d", weights_only=True)
    assert float(sd["diam_mean"]) == 30.0
    assert sd["downsample.down.res_down_0.proj.1.weight"].shape == (8, 2, 1, 1)
    with pytest.raises(SystemExit, match="does not match.*not a widening"):
        tr.main(["--out", str(out), "--pretrained", str(tmp_path / "cp_nuclei"), "--nbase", "2,4,16,32,64", *TINY[2:]])
    wide = tmp_path / "wide"
    assert tr.main(["--out", str(wide), "--epochs", "1", "--pretrained", str(tmp_path / "cp_nuclei"),
                    "--nbase", "2,12,16,40,64", *TINY[2:]]) == 0
    assert torch.load(wide / "nuclei_3d", weights_only=True)[
        "downsample.down.res_down_0.proj.1.weight"].shape == (12, 2, 1, 1)


def test_widened_net_computes_what_the_narrow_one_did():
    from nucseg_rt_export.unet import nbase_from_state_dict, widen_state_dict

    torch.manual_seed(3)
    narrow = CPnet([2, 8, 16, 32, 64], 3, 3, diam_mean=17.0)
    narrow.train()
    for _ in range(2):  # batch-norm statistics other than the identity
        narrow(torch.randn(4, 2, 32, 32) * 2 + 1)
    narrow.eval()
    sd = widen_state_dict(narrow.state_dict(), [2, 12, 20, 48, 80])
    wide = CPnet([2, 12, 20, 48, 80], 3, 3)
    wide.load_state_dict(sd, strict=True)
    wide.eval()
    assert nbase_from_state_dict(sd) == [2, 12, 20, 48, 80] and float(sd["diam_mean"]) == 17.0
    x = torch.randn(2, 2, 48, 64)
    with torch.no_grad():
        y0, y1 = narrow(x)[0], wide(x)[0]
    assert float((y0 - y1).abs().max()) < 1e-3 * float(y0.abs().max())
    # the new channels are live: the widened net has parameters the narrow one lacks, not zeros
    assert float(sd["downsample.down.res_down_0.conv.conv_0.2.weight"][8:].abs().sum()) > 0
    with pytest.raises(ValueError, match="cannot widen"):
        widen_state_dict(narrow.state_dict(), [2, 8, 16, 32])


def test_recipe_stages_are_valid_train_arguments(tmp_path):
    from nucseg_rt_export import recipe

    parser = tr.build_parser()
    for stage in recipe.STAGES:
        argv = recipe.stage_argv(stage, tmp_path, real_cache=tmp_path / "pkgs", threads=1)
        args = parser.parse_args(argv)  # exits (SystemExit) on any bad flag
        assert args.out == tmp_path / stage and not args.resume and args.diam_mean == 17
    assert parser.parse_args(recipe.stage_argv("main", tmp_path, real_cache=tmp_path,
                                               threads=1)).pretrained == tmp_path / "base" / "nuclei_3d"
    refine = parser.parse_args(recipe.stage_argv("refine", tmp_path, real_cache=tmp_path, threads=1,
                                                 max_minutes=95))
    assert refine.pretrained == tmp_path / "main" / "nuclei_3d" and refine.max_minutes == 95
    robust = parser.parse_args(recipe.stage_argv("robust", tmp_path, real_cache=tmp_path, threads=1))
    assert robust.pretrained == tmp_path / "main" / "nuclei_3d" and robust.blur_prob == robust.noise_prob == 0.3
    assert parser.parse_args(recipe.stage_argv("main", tmp_path, real_cache=tmp_path, threads=1)).blur_prob == 0
    assert parser.parse_args(recipe.stage_argv("base", tmp_path, real_cache=tmp_path,
                                               threads=1)).max_minutes is None
    (tmp_path / "ortho").mkdir()
    (tmp_path / "ortho" / "nuclei_3d_ortho.trainstate").write_bytes(b"")
    assert "--resume" in recipe.stage_argv("ortho", tmp_path, real_cache=tmp_path, threads=1)
    with pytest.raises(SystemExit):
        recipe.main(["--out", str(tmp_path), "--stages", "base,typo"])
