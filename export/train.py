"""Train a Cellpose-3-compatible 2D network on synthetic (or cached) nuclei planes.

Cellpose's recipe: 2D planes (YX, ZY, ZX of isotropically resampled volumes), target flows from
labels by heat diffusion, loss ``MSE(y[:, :2], 5 * flows) / 2 + BCEWithLogits(y[:, 2], labels > 0)``.
Schedule: AdamW, linear warm-up over ``--warmup-steps`` then cosine decay to
``lr * --min-lr-frac`` at the last planned step (``--epochs * --steps-per-epoch``). With
``--max-minutes`` the planned end becomes ``min(--epochs, epochs that fit the budget)``, re-estimated
after every epoch from the last two epoch durations (so the LR is annealed when time runs out),
and training stops cleanly before an epoch that would exceed the budget.

Data, mixed per sample (``--real-weight``):

- seeded synthetic volumes (``synth.make_volume``; diameters spread around ``--synth-diam``,
  anisotropy drawn from ``--anisotropies``, Z resampled back to isotropic), planes of the
  orientations ``--synth-axes``; they alone give true ZY/ZX geometry of coarse-Z stacks;
- real 2D images with instance labels from pinned registry packages (``real_data``,
  ``--real-sources``), of which a fraction ``--real-ortho-prob`` is made to look like a ZY/ZX
  plane of a coarse-Z stack (``train_data.coarse_axis``), so that ortho views see real texture;
- or, with ``--dir``, 2D ``X.tif`` / ``X_masks.tif`` pairs instead of the synthetic planes.

Every plane is zoomed so that its nuclei are ``--diam-mean`` px across (x jitter), or with
``--wide-prob`` to a size drawn from ``--wide-scale`` (px), so the network also segments nuclei far
from its scale (what the automatic diameter's first pass needs).

Outputs in ``--out``: ``<name>`` (pure Cellpose state dict, last epoch), ``<name>.trainstate``
(optimizer, scheduler, epoch, RNG state, history: what ``--resume`` needs),
``checkpoints/<name>_epoch_NNN`` and ``cache/{train,val}.npz`` (generated planes, reused on resume).

Run ``python -m nucseg_rt_export.train --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from nucseg_rt.eval.metrics import average_precision
from nucseg_rt_export.real_data import CONVENTIONS
from nucseg_rt_export.train_data import (PlaneSet, augment_batch, load_or_make_cache, load_pairs,
                                         realtex_planes, synthetic_planes)
from nucseg_rt_export.unet import CPnet, nbase_from_state_dict, widen_state_dict

__all__ = ["main", "cellpose_loss", "build_parser"]


def cellpose_loss(y: torch.Tensor, flows: torch.Tensor, cellprob: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cellpose 3 ``_loss_fn_seg``: ``MSE(y[:, :2], 5 * flows) / 2 + BCE(y[:, 2], cellprob)``.

    With ``weight`` (B, H, W), each pixel's squared error and cross-entropy are multiplied by it
    before the means (``--dim-weight``, ``--small-weight``, ``--contact-weight``); without it, exactly Cellpose's loss.
    """
    if weight is None:
        return F.mse_loss(y[:, :2], 5.0 * flows) / 2.0 + F.binary_cross_entropy_with_logits(y[:, 2], cellprob)
    mse = ((y[:, :2] - 5.0 * flows) ** 2 * weight[:, None]).mean()
    bce = (F.binary_cross_entropy_with_logits(y[:, 2], cellprob, reduction="none") * weight).mean()
    return mse / 2.0 + bce


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nucseg-rt train", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--out", type=Path, required=True, help="output directory")
    a("--name", default="nuclei_3d", help="model file name")
    a("--nbase", default=None, help="network widths nchan,c1,..,c4 (default 2,16,32,64,128, or the pretrained's; wider "
      "than the pretrained's grows it: unet.widen_state_dict)")
    a("--pretrained", type=Path, default=None, help="Cellpose model file to fine-tune from")
    a("--resume", action="store_true", help="continue from <out>/<name> + .trainstate")
    a("--epochs", type=int, default=20)
    a("--steps-per-epoch", type=int, default=250)
    a("--batch-size", type=int, default=8)
    a("--crop", type=int, default=128, help="crop size (multiple of 16)")
    a("--lr", type=float, default=2e-3)
    a("--weight-decay", type=float, default=1e-4)
    a("--warmup-steps", type=int, default=200)
    a("--min-lr-frac", type=float, default=0.02)
    a("--diam-mean", type=float, default=30.0)
    a("--diam-labels", type=float, default=None,
      help="value stored as diam_labels (default --diam-mean: synthetic 3D diameters centre on it)")
    a("--dir", type=Path, default=None, help="train on 2D X.tif/X_masks.tif pairs here instead of synthetic data")
    a("--test-dir", type=Path, default=None, help="validation pairs (default: every 10th pair of --dir)")
    a("--mask-filter", default="_masks")
    a("--n-volumes", type=int, default=30, help="synthetic training volumes")
    a("--n-val-volumes", type=int, default=4)
    a("--volume-shape", default="96,160,160", help="isotropic synthetic volume Z,Y,X")
    a("--yx-step", type=int, default=4)
    a("--ortho-step", type=int, default=8)
    a("--min-masks", type=int, default=1)
    a("--n-val", type=int, default=48, help="validation planes")
    a("--synth-diam", type=float, default=None, help="mean 3D diameter of synthetic nuclei (default --diam-mean)")
    a("--anisotropies", default="1,2,4,6,8,11.5", help="Z steps drawn for synthetic volumes")
    a("--synth-axes", default="YX,ZY,ZX", help="orientations of the synthetic training planes")
    a("--real-sources", default="", help="real 2D sources (real_data.SOURCES), comma separated; '' for none")
    a("--real-cache", type=Path, default=None, help="folder for the source packages (default <out>/packages)")
    a("--real-weight", type=float, default=0.6, help="fraction of each batch drawn from real images")
    a("--label-convention", default="drawn", choices=CONVENTIONS,
      help="the --real-sources labels as published ('drawn'), or each boundary moved to half its nucleus'"
           " contrast, at most 2 px (real_data.half_contrast_labels); also for the real-texture volumes")
    a("--real-ortho-prob", type=float, default=0.35, help="fraction of real crops given a coarse axis")
    a("--ortho-steps", default="1.5,12", help="range of the coarse axis step, px at the network's scale")
    a("--wide-scale", default="8,80", help="nucleus size range (px) of the wide scale augmentation")
    a("--wide-prob", type=float, default=0.2, help="fraction of crops zoomed to --wide-scale")
    a("--realtex-volumes", type=int, default=0,
      help="real-texture 3D volumes (nucseg_rt.eval.realtex) built from the --real-sources nuclei")
    a("--realtex-weight", type=float, default=0.0, help="fraction of each batch drawn from their planes")
    a("--realtex-hard", default=None,
      help="THIN,CROP,DENSE: shares of real-texture volumes that are thin stacks, small border-cut"
           " crops and crowded blurry volumes (default: realtex.draw_spec's 0.15,0.15,0)")
    a("--realtex-edge-band", type=int, default=0,
      help="also train on the first and last N planes of each axis of the real-texture volumes, where"
           " their borders cut nuclei (default 0: only every --yx-step / --ortho-step plane)")
    a("--dim-weight", type=float, default=1.0,
      help="weight the loss on nuclei dimmer than their crop's median nucleus by median/mean, up to"
           " this factor (default 1: Cellpose's unweighted loss)")
    a("--small-weight", type=float, default=1.0,
      help="weight the loss on nuclei smaller than their crop's median nucleus by sqrt(median/area), up"
           " to this factor (default 1; with --dim-weight the two multiply)")
    a("--contact-weight", type=float, default=1.0,
      help="weight the loss by this factor on pixels with two different nuclei within 2 px (where"
           " touching nuclei must be kept apart; default 1; multiplies the other weights)")
    a("--blur-prob", type=float, default=0.0, help="fraction of crops blurred (sigma 0.5-2 px)")
    a("--noise-prob", type=float, default=0.0, help="fraction of crops given camera noise (sd 0.02-0.12)")
    a("--seed", type=int, default=0)
    a("--threads", type=int, default=2)
    a("--max-minutes", type=float, default=None, help="stop after the epoch that would exceed this")
    return p


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",")]


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",")]


def _real_images(args, console) -> list:
    """The training sources' real 2D images (never a held-out source)."""
    from nucseg_rt_export.real_data import HELDOUT_SOURCES, load_source

    names = [n for n in args.real_sources.split(",") if n]
    held = sorted(set(names) & set(HELDOUT_SOURCES))
    if held:
        raise SystemExit(f"--real-sources: {', '.join(held)} is held out for evaluation, not for training")
    cache = args.real_cache or args.out / "packages"
    images = []
    for name in names:
        imgs = load_source(name, cache, convention=args.label_convention)
        n = sum(int(np.count_nonzero(np.bincount(r.labels.ravel())[1:])) for r in imgs)
        console.print(f"real: {name}: {len(imgs)} images, {n} nuclei")
        images += imgs
    return images


def _real_data(images) -> PlaneSet | None:
    return PlaneSet.from_planes([(r.image, r.labels) for r in images]) if images else None


def _realtex_data(args, images, console) -> PlaneSet | None:
    """Planes of ``--realtex-volumes`` real-texture volumes built from ``images`` (cached)."""
    if args.realtex_volumes <= 0:
        return None
    if not images:
        raise SystemExit("--realtex-volumes needs --real-sources (the nuclei they are built from)")
    from nucseg_rt.eval.realtex import nucleus_bank

    params = dict(n=args.realtex_volumes, seed=args.seed, sources=args.real_sources, diam=args.diam_mean,
                  yx_step=args.yx_step, ortho_step=args.ortho_step, min_masks=args.min_masks, v=1)
    if args.realtex_edge_band < 0:
        raise SystemExit(f"--realtex-edge-band must be >= 0, got {args.realtex_edge_band}")
    if args.realtex_edge_band:
        params["edge_band"] = args.realtex_edge_band
    if args.label_convention != "drawn":
        params["labels"] = args.label_convention
    hard = None
    if args.realtex_hard:
        vals = _floats(args.realtex_hard)
        if len(vals) != 3 or not all(0 <= v <= 1 for v in vals):
            raise SystemExit(f"--realtex-hard must be three shares in [0, 1] (THIN,CROP,DENSE), got {args.realtex_hard!r}")
        hard = dict(zip(("thin_prob", "crop_prob", "dense_prob"), vals))
        params["hard"] = vals
    t = time.time()

    def make():
        bank = nucleus_bank([(r.image, r.labels) for r in images])
        console.print(f"realtex: {len(bank)} nuclei in the bank")
        return realtex_planes(bank, args.realtex_volumes, seed=args.seed, diam_mean=args.diam_mean,
                              yx_step=args.yx_step, ortho_step=args.ortho_step, min_masks=args.min_masks,
                              hard=hard, edge_band=args.realtex_edge_band,
                              progress=lambda k, n: console.print(f"  realtex volume {k}/{n}", highlight=False))

    ps = load_or_make_cache(args.out / "cache" / "realtex.npz", params, make)
    console.print(f"realtex: {len(ps)} planes ({time.time() - t:.0f} s)")
    return ps


def _folder_data(args, console) -> tuple[PlaneSet, PlaneSet]:
    pairs = load_pairs(args.dir, mask_filter=args.mask_filter)
    if args.test_dir is not None:
        vpairs = load_pairs(args.test_dir, mask_filter=args.mask_filter)
    elif len(pairs) >= 2:
        vpairs, pairs = pairs[::10], [p for i, p in enumerate(pairs) if i % 10]
    else:
        vpairs = pairs
    keep = [p for p in pairs if np.count_nonzero(np.bincount(p[1].ravel())[1:]) >= args.min_masks]
    console.print(f"data: {len(keep)} of {len(pairs)} pairs with >= {args.min_masks} masks in {args.dir}; "
                  f"{len(vpairs)} validation pairs")
    return PlaneSet.from_planes(keep), PlaneSet.from_planes(vpairs)


def _data(args, console) -> tuple[PlaneSet, PlaneSet]:
    if args.dir is not None:
        return _folder_data(args, console)
    shape = tuple(_ints(args.volume_shape))
    common = dict(shape_iso=shape, diam_mean=args.synth_diam or args.diam_mean, yx_step=args.yx_step,
                  ortho_step=args.ortho_step, min_masks=args.min_masks,
                  anisotropies=tuple(_floats(args.anisotropies)), axes=tuple(args.synth_axes.split(",")))

    def prog(k, n):
        console.print(f"  volume {k}/{n}", highlight=False)

    params = dict(n=args.n_volumes, seed=args.seed, **common, shape=list(shape), v=2)
    params.pop("shape_iso")
    t = time.time()
    train = load_or_make_cache(args.out / "cache" / "train.npz", params,
                               lambda: synthetic_planes(args.n_volumes, seed=args.seed, progress=prog, **common))
    vparams = dict(params, n=args.n_val_volumes, seed=args.seed + 7919)
    val = load_or_make_cache(args.out / "cache" / "val.npz", vparams,
                             lambda: synthetic_planes(args.n_val_volumes, seed=args.seed + 7919, **common))
    console.print(f"data: {len(train)} train planes, {len(val)} val planes ({time.time() - t:.0f} s)")
    return train, val


def _val_tensors(val: PlaneSet, n: int, nchan: int):
    sel = np.linspace(0, len(val) - 1, min(n, len(val))).round().astype(int)
    h, w = val.imgs.shape[1:]
    H, W = -(-h // 16) * 16, -(-w // 16) * 16
    x = torch.zeros(len(sel), nchan, H, W)
    x[:, 0, :h, :w] = torch.from_numpy(val.imgs[sel].astype(np.float32))
    fl = torch.zeros(len(sel), 2, H, W)
    fl[:, :, :h, :w] = torch.from_numpy(val.flows[sel].astype(np.float32))
    lab = np.zeros((len(sel), H, W), np.int64)
    lab[:, :h, :w] = val.labels[sel]
    return x, fl, lab


def _compute_masks_fn():
    try:
        from nucseg_rt.masks.dynamics import compute_masks
    except Exception:  # dynamics module not available yet: validation loss only
        return None
    return compute_masks


@torch.no_grad()
def _validate(net, vx, vf, vlab) -> tuple[float, float | None]:
    net.eval()
    losses, aps = [], []
    cm = _compute_masks_fn()
    for i in range(0, len(vx), 8):
        y = net(vx[i:i + 8])[0]
        losses.append(float(cellpose_loss(y, vf[i:i + 8], (torch.from_numpy(vlab[i:i + 8]) > 0).float())) * len(y))
        if cm is None:
            continue
        for j in range(len(y)):
            try:
                m = cm(y[j, :2].numpy(), y[j, 2].numpy(), niter=200, cellprob_threshold=0.0, min_size=15)
                ap = average_precision(vlab[i + j], np.asarray(m, np.int64), thresholds=(0.5,))[0][0]
                aps.append(1.0 if np.isnan(ap) else float(ap))  # both empty: 1
            except Exception:
                cm = None
                aps = []
                break
    net.train()
    return sum(losses) / len(vx), (float(np.mean(aps)) if aps else None)


def _lr_lambda(warmup: int, plan: dict, steps_per_epoch: int, min_frac: float):
    """LR factor: linear warm-up, then cosine to ``min_frac`` at ``plan["epochs"]`` (read each step)."""
    def f(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / max(warmup, 1)
        total = plan["epochs"] * steps_per_epoch
        t = min(1.0, (step - warmup) / max(total - warmup, 1))
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def _make_net(args, diam_labels: float) -> CPnet:
    if args.pretrained is None:
        net = CPnet(_ints(args.nbase or "2,16,32,64,128"), 3, 3, diam_mean=args.diam_mean)
    else:
        sd = torch.load(args.pretrained, map_location="cpu", weights_only=True)
        nb = nbase_from_state_dict(sd)
        if args.nbase is not None and _ints(args.nbase) != nb:
            try:  # a wider network grown from the pretrained one
                sd, nb = widen_state_dict(sd, _ints(args.nbase), seed=args.seed), _ints(args.nbase)
            except ValueError:
                raise SystemExit(f"--nbase {args.nbase} does not match the pretrained model's {nb} "
                                 "and is not a widening of it") from None
        net = CPnet(nb, 3, 3)
        net.load_state_dict(sd, strict=True)
        # like Cellpose's --diam_mean when fine-tuning: the new model is rescaled to --diam-mean
        net.diam_mean.data[:] = args.diam_mean
    net.diam_labels.data[:] = diam_labels
    return net


def _save(net, opt, sched, state: dict, out: Path, name: str) -> None:
    ck = out / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    sd = net.state_dict()
    torch.save(sd, ck / f"{name}_epoch_{state['epoch']:03d}")
    tmp = out / f"{name}.tmp"
    torch.save(sd, tmp)
    tmp.replace(out / name)
    ts = dict(state, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
              torch_rng=torch.get_rng_state())
    torch.save(ts, out / f"{name}.trainstate.tmp")
    (out / f"{name}.trainstate.tmp").replace(out / f"{name}.trainstate")


def _setup(args, console):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    train, val = _data(args, console)
    if args.real_weight + args.realtex_weight > 1:
        raise SystemExit(f"--real-weight + --realtex-weight must be <= 1, got {args.real_weight + args.realtex_weight}")
    images = _real_images(args, console)
    real, tex = _real_data(images), _realtex_data(args, images, console)
    console.print(f"mean 2D label diameter of the training planes: {train.diam_labels():.1f} px")
    net = _make_net(args, args.diam_labels if args.diam_labels else args.diam_mean)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    plan = dict(epochs=args.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(args.warmup_steps, plan, args.steps_per_epoch, args.min_lr_frac))
    state = dict(epoch=0, step=0, history=[], args=json.dumps(vars(args), default=str),
                 np_rng=np.random.default_rng(args.seed).bit_generator.state,
                 planned_epochs=args.epochs, epochs_arg=args.epochs)
    if args.resume:
        ts_path = args.out / f"{args.name}.trainstate"
        if not ts_path.exists():
            raise SystemExit(f"--resume: no {ts_path}")
        net.load_state_dict(torch.load(args.out / args.name, map_location="cpu", weights_only=True))
        ts = torch.load(ts_path, map_location="cpu", weights_only=True)
        opt.load_state_dict(ts.pop("optimizer"))
        sched.load_state_dict(ts.pop("scheduler"))
        torch.set_rng_state(ts.pop("torch_rng"))
        state.update(ts)
        if args.epochs != state.get("epochs_arg", args.epochs):  # new --epochs: new plan
            state["planned_epochs"] = state["epochs_arg"] = args.epochs
        plan["epochs"] = state.get("planned_epochs", args.epochs)
        console.print(f"resumed at epoch {state['epoch']} (step {state['step']})")
    state["plan"] = plan
    return (train, real, tex), val, net, opt, sched, state


def _fit_plan(args, state, t0, console) -> None:
    """With ``--max-minutes``, end the cosine schedule at ``min(--epochs, last epoch that fits)``.

    The fit uses the mean duration of the last two epochs, so the plan follows the machine's load.
    """
    secs = [h["seconds"] for h in state["history"][-2:]]
    if args.max_minutes is None or not secs:
        return
    fit = int((args.max_minutes * 60 - (time.time() - t0)) // np.mean(secs))
    plan = state["plan"]
    target = max(min(args.epochs, state["epoch"] + fit), state["epoch"] + 1)
    if target != plan["epochs"]:
        plan["epochs"] = state["planned_epochs"] = target
        console.print(f"[yellow]time budget: schedule now ends at epoch {target}[/]")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: parse ``argv`` and train; returns an exit code."""
    args = build_parser().parse_args(argv)
    for flag, v in (("--dim-weight", args.dim_weight), ("--small-weight", args.small_weight),
                    ("--contact-weight", args.contact_weight)):
        if not v >= 1.0:
            raise SystemExit(f"{flag} must be >= 1, got {v}")
    console = Console(log_path=False, width=160)
    t0 = time.time()
    train, val, net, opt, sched, state = _setup(args, console)
    rng = np.random.default_rng()
    rng.bit_generator.state = state["np_rng"]
    vx, vf, vlab = _val_tensors(val, args.n_val, net.nchan)
    nparam = sum(p.numel() for p in net.parameters() if p.requires_grad)
    console.print(f"net nbase={net.nbase} params={nparam:,}; {args.epochs} epochs x {args.steps_per_epoch} steps"
                  f" x batch {args.batch_size} @ {args.crop}px; diam_labels={net.diam_labels.item():.1f}")
    net.train()
    epoch_time = 0.0
    while state["epoch"] < state["plan"]["epochs"]:
        _fit_plan(args, state, t0, console)
        if args.max_minutes is not None and (time.time() - t0 + epoch_time) / 60 > args.max_minutes:
            console.print(f"[yellow]time budget {args.max_minutes} min reached; stopping before epoch "
                          f"{state['epoch'] + 1} (resume with --resume)[/]")
            break
        te = time.time()
        tr_loss = _train_epoch(args, net, opt, sched, train, rng, state, console)
        vloss, ap = _validate(net, vx, vf, vlab)
        state["epoch"] += 1
        state["np_rng"] = rng.bit_generator.state
        epoch_time = time.time() - te
        state["history"].append(dict(epoch=state["epoch"], train_loss=tr_loss, val_loss=vloss, ap50=ap,
                                     lr=sched.get_last_lr()[0], seconds=epoch_time))
        _save(net, opt, sched, {k: v for k, v in state.items() if k != "plan"}, args.out, args.name)
        ap_s = "n/a" if ap is None else f"{ap:.3f}"
        console.print(f"epoch {state['epoch']:3d}/{state['plan']['epochs']}  train {tr_loss:.4f}  val {vloss:.4f}  "
                      f"AP50 {ap_s}  lr {sched.get_last_lr()[0]:.2e}  {epoch_time:.0f} s  "
                      f"(total {(time.time() - t0) / 60:.1f} min)", highlight=False)
    console.print(f"done: {args.out / args.name} after {state['epoch']} epochs")
    return 0


def _batch(args, sets, rng: np.random.Generator, nchan: int):
    """One batch: each sample from the real set with probability ``--real-weight``, from the
    real-texture volumes with ``--realtex-weight``, else synthetic."""
    synth, real, tex = sets
    u = rng.random(args.batch_size) if real is not None else np.ones(args.batch_size)
    n_real = int((u < args.real_weight).sum())
    n_tex = int(((u >= args.real_weight) & (u < args.real_weight + args.realtex_weight)).sum()) if tex is not None else 0
    common = dict(crop=args.crop, nchan=nchan, diam_mean=args.diam_mean, wide=tuple(_floats(args.wide_scale)),
                  wide_prob=args.wide_prob, ortho_steps=tuple(_floats(args.ortho_steps)),
                  blur_prob=args.blur_prob, noise_prob=args.noise_prob, dim_weight=args.dim_weight,
                  small_weight=args.small_weight, contact_weight=args.contact_weight)
    parts = []
    if n_real:
        parts.append(augment_batch(real, rng.integers(0, len(real), n_real), rng,
                                   ortho_prob=args.real_ortho_prob, **common))
    if n_tex:
        parts.append(augment_batch(tex, rng.integers(0, len(tex), n_tex), rng, **common))
    if args.batch_size - n_real - n_tex:
        parts.append(augment_batch(synth, rng.integers(0, len(synth), args.batch_size - n_real - n_tex), rng,
                                   **common))
    return tuple(torch.cat(p) for p in zip(*parts))


def _train_epoch(args, net, opt, sched, train, rng, state, console) -> float:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    tot = 0.0
    with Progress(TextColumn(f"epoch {state['epoch'] + 1}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=console,
                  disable=not console.is_terminal) as prog:
        task = prog.add_task("train", total=args.steps_per_epoch, loss=float("nan"))
        weighted = max(args.dim_weight, args.small_weight, args.contact_weight) > 1.0  # else exactly Cellpose's loss
        for s in range(args.steps_per_epoch):
            x, fl, cp, w = _batch(args, train, rng, net.nchan)
            loss = cellpose_loss(net(x)[0], fl, cp, w if weighted else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            state["step"] += 1
            tot += loss.item()
            prog.update(task, advance=1, loss=tot / (s + 1))
            if not console.is_terminal and (s + 1) % 50 == 0:
                console.print(f"  step {s + 1}/{args.steps_per_epoch} loss {tot / (s + 1):.4f}", highlight=False)
    return tot / args.steps_per_epoch


if __name__ == "__main__":
    raise SystemExit(main())
