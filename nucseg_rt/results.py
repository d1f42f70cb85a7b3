"""What the two stages return: :class:`Flows` (network) and :class:`SegmentationResult` (masks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np

__all__ = ["Flows", "SegmentationResult"]


@dataclass
class Flows:
    """Output of :meth:`nucseg_rt.Segmenter.predict_flows`: the network's flows, and what the
    mask step needs to turn them into the masks :meth:`~nucseg_rt.Segmenter.segment` gives.

    Unpacks as ``flows, cellprob = seg.predict_flows(...)``.

    Attributes
    ----------
    flows : (3, Z, Y, X) float32
        Z, Y, X flows at network scale (x5), on the input grid (the network grid when
        ``resampled`` is False). In stitch mode the Z flow is zero.
    cellprob : (Z, Y, X) float32
        Cell-probability logits, summed over the views (3D) or of the YX view (stitch).
    shape : (Z, Y, X)
        Shape of the input volume.
    rescale : float
        Zoom applied in XY before the network (``diam_mean / diameter``).
    anisotropy : float
        Z step / XY pixel size used.
    diameter : float
        Nucleus diameter (XY pixels) the volume was run at: given, the model's default, or
        estimated (``diameter="auto"``).
    resampled : bool
        Whether ``flows`` are on the input grid.
    mode : {"3d", "stitch"}
        Views run: YX, ZY and ZX (3D) or YX planes only (stitch mode).
    constant_input : bool
        The volume was constant: there is nothing to segment.
    info : dict
        Diagnostics only (axes decisions, tiles run, seconds, diameter estimate).
    grid_flows, grid_cellprob : (3, Z', Y', X') and (Z', Y', X') float32, or None
        Coarse-Z stacks only (the network ran at least ``GRID_Z_FACTOR`` planes per input plane,
        with ``resampled``): the same outputs on the network's isotropic grid, which the
        "stable" 3D dynamics follow before the labels go to the input grid. None otherwise.
    """

    flows: np.ndarray
    cellprob: np.ndarray
    shape: tuple
    rescale: float
    anisotropy: float
    diameter: float
    resampled: bool = True
    mode: Literal["3d", "stitch"] = "3d"
    constant_input: bool = False
    info: dict = field(default_factory=dict)
    grid_flows: np.ndarray | None = None
    grid_cellprob: np.ndarray | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.flows
        yield self.cellprob


@dataclass
class SegmentationResult:
    """Output of :meth:`nucseg_rt.Segmenter.segment`.

    Attributes
    ----------
    masks : (Z, Y, X) uint16 or uint32
        Labels 1..N, 0 = background, on the input grid.
    flows : (3, Z, Y, X) float32
        Z, Y, X flows at network scale (x5) as the network gave them (before ``dp_smooth``), on
        the input grid (network grid if ``resample=False``).
    cellprob : (Z, Y, X) float32
        Cell probability logits (sum over views in 3D), same grid as ``flows``.
    info : dict
        Diagnostics: settings used (rescale, diameter and its source, niter, axes decisions),
        tiles run and seconds per stage.
    """

    masks: np.ndarray
    flows: np.ndarray
    cellprob: np.ndarray
    info: dict = field(default_factory=dict)
