"""What the two stages return: :class:`Flows` (network) and :class:`SegmentationResult` (masks),
and :class:`RunInfo`, what the network stage decided and did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from nucseg_rt.params import MaskDefaults, Mode

__all__ = ["Flows", "SegmentationResult", "RunInfo"]


@dataclass(frozen=True)
class RunInfo:
    """What :meth:`nucseg_rt.Segmenter.predict_flows` decided and did, typed.

    Attributes
    ----------
    shape : (Z, Y, X)
        The input volume's shape.
    axes : tuple of str
        The axis and channel decisions (also logged).
    anisotropy, diameter, rescale : float
        The scale the volume ran at (``rescale = diam_mean / diameter``).
    diameter_source : str
        "given", "auto" or "model default" (and why).
    mode : {"3d", "stitch"}
    diameter_estimate : dict, optional
        ``diameter="auto"``: the estimate (:class:`nucseg_rt.diameter.DiameterEstimate` as a dict).
    network_shape : (Z', Y', X'), optional
        The network grid (3D runs).
    ortho : str, optional
        The ZY/ZX network's file name when one ran.
    tiles : dict, optional
        Per orientation: ``tiles_run``, ``tiles_skipped``, ``pixels`` (3D runs).
    seconds_network : float, optional
    dynamics_grid : (Z', Y', X'), optional
        Coarse Z: the grid the "stable" dynamics follow.
    network : str, optional
        The engine and precision that ran, and why (e.g. "onnxruntime fp32 (given)").
    engine : str, optional
        The engine and precision alone (e.g. "onnxruntime fp32"; in :meth:`as_dict` through
        ``network``).
    """

    shape: tuple
    axes: tuple
    anisotropy: float
    diameter: float
    diameter_source: str
    rescale: float
    mode: Mode = "3d"
    diameter_estimate: dict | None = None
    network_shape: tuple | None = None
    ortho: str | None = None
    tiles: dict | None = None
    seconds_network: float | None = None
    dynamics_grid: tuple | None = None
    network: str | None = None
    engine: str | None = None

    def as_dict(self) -> dict:
        """The diagnostics as a dict (entries that do not apply to this run left out)."""
        d = dict(axes=list(self.axes), shape=self.shape, diameter_source=self.diameter_source)
        if self.diameter_estimate is not None:
            d["diameter_estimate"] = self.diameter_estimate
        d.update(rescale=self.rescale, anisotropy=self.anisotropy, diameter=self.diameter,
                 mode=self.mode)
        if self.network_shape is not None:
            d.update(network_shape=self.network_shape, ortho=self.ortho, tiles=self.tiles)
        if self.seconds_network is not None:
            d["seconds_network"] = self.seconds_network
        if self.dynamics_grid is not None:
            d["dynamics_grid"] = self.dynamics_grid
        if self.network is not None:
            d["network"] = self.network
        return d


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
    run : RunInfo, optional
        What the network stage decided and did (axes, diameter and its source, tiles, seconds);
        ``info`` gives it as a dict.
    grid_flows, grid_cellprob : (3, Z', Y', X') and (Z', Y', X') float32, or None
        Coarse-Z stacks only (the network ran at least ``GRID_Z_FACTOR`` planes per input plane,
        with ``resampled``): the same outputs on the network's isotropic grid, which the
        "stable" 3D dynamics follow before the labels go to the input grid. None otherwise.
    mask_defaults : MaskDefaults, optional
        The model's defaults for the mask step (threshold, size filter); None: Cellpose's.
    """

    flows: np.ndarray
    cellprob: np.ndarray
    shape: tuple
    rescale: float
    anisotropy: float
    diameter: float
    resampled: bool = True
    mode: Mode = "3d"
    constant_input: bool = False
    run: RunInfo | None = None
    grid_flows: np.ndarray | None = None
    grid_cellprob: np.ndarray | None = None
    mask_defaults: MaskDefaults | None = None

    @property
    def info(self) -> dict:
        """Diagnostics: :attr:`run` as a dict (empty without one)."""
        return self.run.as_dict() if self.run is not None else {}

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
    run : RunInfo, optional
        The network stage's :class:`RunInfo` (typed: the diameter the volume ran at and its
        source, for reports).
    """

    masks: np.ndarray
    flows: np.ndarray
    cellprob: np.ndarray
    info: dict = field(default_factory=dict)
    run: RunInfo | None = None

    @property
    def n_masks(self) -> int:
        """Number of masks (the largest label)."""
        return int(self.masks.max()) if self.masks.size else 0
