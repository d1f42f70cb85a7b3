"""The mask stage: flows to labels.

- :func:`masks_from_flows` (``assemble``): a :class:`~nucseg_rt.results.Flows` result and
  :class:`~nucseg_rt.params.MaskParams` -> labels on the input grid (3D or stitch mode);
- :func:`compute_masks` (``dynamics``; public path ``nucseg_rt.dynamics``): flow following,
  seeds and mask growth; :func:`dynamics_threads` sets numba's threads for a block of work;
- :func:`merge_fragments` (``fragments``), :func:`stitch3d` (``stitch``),
  :func:`fill_holes_and_remove_small_masks` / :func:`remove_small_masks` / :func:`renumber`
  (``postprocess``) and
  :func:`masks_to_flows` (``label_flows``: the label-to-flow targets of checks and training);
- :func:`link_labels` / :class:`FrameLinker` (``link``): labels that follow a nucleus through a
  time-lapse.
"""

from nucseg_rt.masks.assemble import masks_from_flows, niter_for, on_network_grid
from nucseg_rt.masks.dynamics import compute_masks, dynamics_threads
from nucseg_rt.masks.fragments import merge_fragments
from nucseg_rt.masks.label_flows import masks_to_flows
from nucseg_rt.masks.link import FrameLinker, LinkResult, link_labels
from nucseg_rt.masks.postprocess import (fill_holes_and_remove_small_masks, flow_errors,
                                         remove_bad_flow_masks, remove_small_masks, renumber)
from nucseg_rt.masks.stitch import stitch3d

__all__ = ["masks_from_flows", "niter_for", "on_network_grid", "compute_masks",
           "dynamics_threads", "merge_fragments", "masks_to_flows",
           "fill_holes_and_remove_small_masks", "remove_small_masks", "flow_errors",
           "remove_bad_flow_masks", "renumber",
           "stitch3d", "link_labels", "FrameLinker", "LinkResult"]
