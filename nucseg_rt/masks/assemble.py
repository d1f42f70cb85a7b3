"""The mask stage of a segmentation: a :class:`~nucseg_rt.results.Flows` result to labels on the
input grid, exactly as :meth:`nucseg_rt.Segmenter.segment` makes them.

3D mode: optional flow smoothing, flow following (``compute_masks``), labels resized to the
input grid, holes filled and small masks removed. Stitch mode: Cellpose's 2D dynamics with its
flow-error check on every YX plane, then masks linked plane to plane by IoU.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from nucseg_rt.errors import InvalidInputError, check_cancel
from nucseg_rt.masks import dynamics, postprocess, stitch
from nucseg_rt.masks.fragments import merge_fragments
from nucseg_rt.params import DEFAULT_NITER, MaskParams
from nucseg_rt.prep.filters import smooth_flows
from nucseg_rt.prep.resample import resize_labels_3d, resize_labels_centred, resize_nearest
from nucseg_rt.results import Flows

logger = logging.getLogger("nucseg_rt")

__all__ = ["masks_from_flows", "niter_for", "on_network_grid"]

#: Cellpose's default flow-error threshold for 2D masks (stitch mode)
STITCH_FLOW_THRESHOLD = 0.4


def on_network_grid(params: MaskParams, flows: Flows) -> bool:
    """Whether the 3D dynamics follow ``flows.grid_flows`` (coarse Z, "stable" method; see
    :data:`nucseg_rt.params.GRID_Z_FACTOR`) rather than the flows on the input grid."""
    return params.method == "stable" and flows.grid_flows is not None


def niter_for(params: MaskParams, flows: Flows) -> int:
    """Euler steps: ``params.niter``, else 200 at the network's scale (``200 / rescale`` on the
    input grid, as Cellpose scales it)."""
    if params.niter:
        return int(params.niter)
    if flows.resampled and not on_network_grid(params, flows):
        return int(DEFAULT_NITER / flows.rescale)
    return DEFAULT_NITER


def masks_from_flows(flows: Flows, params: MaskParams, *, cancel: threading.Event | None = None,
                     info: dict | None = None) -> np.ndarray:
    """Labels ``(Z, Y, X)`` on the input grid from ``flows`` with the settings ``params``.

    Parameters
    ----------
    flows : Flows
        From :meth:`nucseg_rt.Segmenter.predict_flows`; not modified.
    params : MaskParams
        Thresholds, sizes, dynamics. ``params.stitch_threshold > 0`` needs flows computed with
        ``mode="stitch"`` and ``0`` needs ``mode="3d"``.
    cancel : threading.Event, optional
        Looked at between the steps, between chunks of the flow following's Euler steps and
        between planes in stitch mode; raises ``Cancelled``.
    info : dict, optional
        Filled with ``niter`` and ``seconds_dynamics``.

    Returns
    -------
    masks : (Z, Y, X) uint16 or uint32
    """
    if not isinstance(flows, Flows):
        raise InvalidInputError(f"`flows` must be the Flows result of predict_flows, got {type(flows).__name__}")
    if params.stitch != (flows.mode == "stitch"):
        raise InvalidInputError(
            f"`stitch_threshold` {params.stitch_threshold} does not match flows computed in "
            f"{flows.mode!r} mode: run predict_flows with mode='stitch' for stitch_threshold > 0, "
            "mode='3d' for 0")
    info = {} if info is None else info
    params = params.resolved(flows.mask_defaults, diameter=flows.diameter,
                             anisotropy=flows.anisotropy, n_planes=flows.shape[0])
    info.update(cellprob_threshold=params.cellprob_threshold, min_size=params.min_size)
    if flows.constant_input:
        logger.warning("the volume is constant: no nuclei to find")
        return np.zeros(flows.shape, np.uint16)
    check_cancel(cancel)
    t0 = time.perf_counter()
    n = niter_for(params, flows)
    info["niter"] = n
    masks = (_stitched if params.stitch else _followed_3d)(flows, params, n, cancel)
    info["seconds_dynamics"] = time.perf_counter() - t0
    return masks


def _followed_3d(f: Flows, p: MaskParams, niter: int, cancel) -> np.ndarray:
    if p.flow_threshold is not None:
        logger.warning("flow_threshold applies to 2D/stitch mode only; ignored in 3D",
                       extra={"param": "flow_threshold"})
    flows, cellprob = (f.grid_flows, f.grid_cellprob) if on_network_grid(p, f) else (f.flows, f.cellprob)
    dP = smooth_flows(flows, p.dp_smooth) if p.dp_smooth > 0 else flows
    check_cancel(cancel)
    masks = dynamics.compute_masks(dP, cellprob, niter=niter, cellprob_threshold=p.cellprob_threshold,
                                   min_size=-1, max_size_fraction=p.max_size_fraction,
                                   method=p.method, cancel=cancel)
    del dP
    if p.merge_fragments and p.method == "stable":
        check_cancel(cancel)
        masks = merge_fragments(masks, cellprob)
    check_cancel(cancel)
    if masks.shape != tuple(f.shape):
        # "cellpose": Cellpose's nearest rule (exact); "stable": pixel centres aligned, as the
        # flows were resampled (Cellpose's rule shifts labels by up to a plane at coarse Z)
        resize = resize_labels_3d if p.method == "cellpose" else resize_labels_centred
        masks = resize(masks, tuple(f.shape))
        check_cancel(cancel)
    return postprocess.fill_holes_and_remove_small_masks(masks, min_size=p.min_size)


def _stitched(f: Flows, p: MaskParams, niter: int, cancel) -> np.ndarray:
    nz, ly, lx = f.shape
    flow_threshold = STITCH_FLOW_THRESHOLD if p.flow_threshold is None else p.flow_threshold
    masks = np.zeros((nz, ly, lx), np.uint32)
    for z in range(nz):
        check_cancel(cancel)
        dP = np.ascontiguousarray(f.flows[1:, z])
        m = dynamics.compute_masks(dP, f.cellprob[z], niter=niter, cellprob_threshold=p.cellprob_threshold,
                                   min_size=-1, max_size_fraction=p.max_size_fraction,
                                   method="cellpose", flow_threshold=flow_threshold, cancel=cancel)
        if p.merge_fragments:
            m = merge_fragments(m, f.cellprob[z])
        if m.shape != (ly, lx):
            m = resize_nearest(m, ly, lx)
        masks[z] = postprocess.fill_holes_and_remove_small_masks(m, min_size=-1)
    check_cancel(cancel)
    masks = stitch.stitch3d(masks, p.stitch_threshold)
    check_cancel(cancel)
    return postprocess.fill_holes_and_remove_small_masks(masks, min_size=p.min_size)
