"""Automatic nucleus diameter (``diameter="auto"``): a cheap first pass on a few YX planes.

1. Pick up to ``n_planes`` YX planes spread over the brighter half of the stack, and a central
   window of each (at most ``window`` px per side at the network's scale).
2. Run the network on them in 2D at the model's scale (rescale 1: nuclei as they are), make 2D
   masks with Cellpose's 2D dynamics (pieces of one nucleus merged, :mod:`nucseg_rt.masks.fragments`),
   and take the median equivalent-circle diameter of the masks that do not touch the window's
   edge (Cellpose's definition of a diameter).
3. If that puts nuclei outside ``[0.75, 1.33] x diam_mean`` at the network, run again at the
   rescale the estimate asks for (at most ``max_passes`` passes): a network is most reliable near
   its training scale.
4. In a stack, a YX plane cuts most nuclei off-centre, so cross-sections are smaller than the
   nucleus; the median cross-section is multiplied by :data:`CUT_CORRECTION` (measured on
   synthetic volumes, see docs/benchmarks.md). A single plane is taken as it is.

The estimate and each pass are returned, logged by the Segmenter and kept in the result's info.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field

import numpy as np

from nucseg_rt.errors import check_cancel
from nucseg_rt.masks import dynamics
from nucseg_rt.masks.fragments import merge_fragments
from nucseg_rt.masks.postprocess import label_counts
from nucseg_rt.network.engine import Engine
from nucseg_rt.network.predict import Progress
from nucseg_rt.prep.resample import resize_linear

__all__ = ["DiameterEstimate", "estimate_diameter", "CUT_CORRECTION"]

#: median nucleus diameter / median YX cross-section diameter in a stack: a plane through a sphere
#: at a uniformly random height has a median cross-section of 0.87 of its diameter, and the
#: smallest caps are not found as masks. Checked with the bundled model: 28.2-29.0 px estimated
#: for 30-px nuclei on held-out synthetic stacks at anisotropy 1, 4 and 11.5
#: (benchmarks/evaluate_model.py --auto; benchmarks/diameter_auto.py sweeps sizes)
CUT_CORRECTION = 1.12
_ACCEPT = (0.75, 1.33)


@dataclass(frozen=True)
class DiameterEstimate:
    """Result of :func:`estimate_diameter`.

    Attributes
    ----------
    diameter : float
        Estimated typical nucleus diameter, XY pixels of the input.
    passes : list of dict
        Per pass: ``rescale``, ``median_px`` (cross-section diameter, input pixels), ``n_masks``.
    planes : tuple of int
        Z indices of the planes used.
    correction : float
        Factor applied for off-centre cuts (1 for a single plane).
    fallback : bool
        No nucleus was found: ``diameter`` is the model's default.
    """

    diameter: float
    passes: list = field(default_factory=list)
    planes: tuple = ()
    correction: float = 1.0
    fallback: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.fallback:
            return "no nuclei found in the sampled planes; the model's default is used"
        last = self.passes[-1]
        return (f"{last['n_masks']} masks on {len(self.planes)} YX planes, {len(self.passes)} pass(es), "
                f"median cross-section {last['median_px']:.1f} px x {self.correction:.2f}")


def _choose_planes(x: np.ndarray, n_planes: int) -> list[int]:
    """Up to ``n_planes`` Z indices spread evenly over the brighter half of the planes."""
    means = x[..., 0].reshape(x.shape[0], -1).mean(axis=1)
    bright = np.sort(np.argsort(means)[::-1][:max(1, (len(means) + 1) // 2)])
    pick = np.linspace(0, len(bright) - 1, min(n_planes, len(bright))).round().astype(int)
    return [int(bright[i]) for i in np.unique(pick)]


def _window(x: np.ndarray, planes: list[int], side: int) -> np.ndarray:
    """Central ``side`` x ``side`` windows (or the whole plane) of the chosen planes."""
    ly, lx = x.shape[1:3]
    wy, wx = min(ly, side), min(lx, side)
    y0, x0 = (ly - wy) // 2, (lx - wx) // 2
    return np.ascontiguousarray(x[planes, y0:y0 + wy, x0:x0 + wx])


def _cross_sections(engine: Engine, planes: np.ndarray, rescale: float, progress,
                    cancel) -> np.ndarray:
    """Equivalent-circle diameters (input pixels) of the 2D masks not touching the edge."""
    ly, lx = planes.shape[1:3]
    if rescale != 1.0:
        planes = resize_linear(planes, max(1, int(ly * rescale)), max(1, int(lx * rescale)))
    outs = np.zeros((planes.shape[0], 3, *planes.shape[1:3]), np.float32)

    def sink(i, o):
        outs[i] = o

    engine.run_planes(planes, sink=sink, progress=progress, label="diameter", cancel=cancel)
    diam = []
    for o in outs:
        check_cancel(cancel)
        m = dynamics.compute_masks(o[:2], o[2], niter=200, cellprob_threshold=0.0, min_size=15,
                                   method="cellpose", flow_threshold=0.4)
        m = merge_fragments(m, o[2])  # pieces of a nucleus would bias the sizes down
        n = int(m.max())
        if n == 0:
            continue
        edge = np.unique(np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]]))
        area = label_counts(m.ravel().astype(np.int64), n)[1:].astype(np.float64)
        keep = np.ones(n, bool)
        keep[edge[edge > 0] - 1] = False
        keep &= area > 0
        diam.append(np.sqrt(area[keep]) / (math.sqrt(math.pi) / 2) / rescale)
    return np.concatenate(diam) if diam else np.zeros(0)


def estimate_diameter(engine: Engine, x: np.ndarray, *, anisotropy: float = 1.0, n_planes: int = 5,
                      window: int = 448, max_passes: int = 3, progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> DiameterEstimate:
    """Estimate the typical nucleus diameter of a normalised volume.

    Parameters
    ----------
    engine : nucseg_rt.network.engine.Engine
        The networks (with their tiling settings and ``diam_mean``).
    x : (Z, Y, X, C) float32
        The normalised volume (as the Segmenter prepares it).
    anisotropy : float
        Z step / XY pixel size (recorded; the estimate uses YX planes only).
    n_planes : int
        YX planes sampled.
    window : int
        Largest window side, pixels at the network's scale.
    max_passes : int
        Network passes at most (the first at rescale 1).
    progress, cancel
        As for :meth:`nucseg_rt.Segmenter.predict_flows` (stage "diameter").

    Returns
    -------
    DiameterEstimate
    """
    diam_mean = float(engine.info.diam_mean)
    planes = _choose_planes(x, n_planes)
    correction = CUT_CORRECTION if x.shape[0] >= 3 else 1.0
    rescale, passes = 1.0, []
    for _ in range(max_passes):
        side = max(64, int(window / rescale))
        d = _cross_sections(engine, _window(x, planes, side), rescale, progress, cancel)
        if d.size == 0:
            if passes:  # nothing at the new scale: keep the last estimate
                break
            return DiameterEstimate(float(engine.info.diam_labels), passes, tuple(planes), correction,
                                    True)
        med = float(np.median(d))
        passes.append(dict(rescale=rescale, median_px=med, n_masks=int(d.size)))
        at_net = med * rescale / diam_mean
        if _ACCEPT[0] <= at_net <= _ACCEPT[1]:
            break
        rescale = diam_mean / med
    return DiameterEstimate(passes[-1]["median_px"] * correction, passes, tuple(planes), correction)
