"""Merge block files into one label volume: seamless, globally unique, consecutive ids.

Sequential and deterministic: pass 1 paints every block's owned masks in block order, pass 2
its candidate masks (nuclei that no block owned because neighbouring blocks placed their centre
on each other's side). Each mask is compared with the labels already painted under it:

- if its IoU with one of them is >= ``iou_threshold``, or less than half of its voxels are
  free, it is a nucleus already painted from a neighbouring block (or a piece of one) and is
  skipped;
- otherwise it gets the next id and takes its free voxels (voxels already labelled keep their
  label: the earlier block wins contested voxels); fewer than ``min_size`` free voxels: skipped.

Only one block's region of the output is in memory at a time, plus one integer per nucleus.
For a TIFF output the merge paints a scratch array whose chunks are a few planes deep
(:func:`scratch_chunks`), so the plane-by-plane TIFF writer decodes about one plane at a time.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nucseg_rt.blockwise.blocks import BlockPlan, block_file

__all__ = ["MergeStats", "merge_blocks", "scratch_chunks"]

#: Z depth of the chunks of the scratch array a TIFF output is merged into. A plane read decodes
#: every chunk it crosses whole: block-deep chunks made writing one plane of a 96x576x576 volume
#: decode 96 planes, so the writer's memory grew with the block depth times the plane size.
SCRATCH_CHUNK_DEPTH = 8
#: Largest Y and X chunk side of the merged labels (scratch and OME-Zarr output).
CHUNK_SIDE = 256


@dataclass
class MergeStats:
    """Counts from :func:`merge_blocks`: painted masks, and masks skipped as duplicates."""

    n_labels: int = 0
    owned_painted: int = 0
    candidates_painted: int = 0
    duplicates: int = 0
    too_small: int = 0


def scratch_chunks(core) -> tuple[int, int, int]:
    """Chunks ``(Z, Y, X)`` of the scratch array a TIFF output is merged into, for core blocks
    ``core``: at most :data:`SCRATCH_CHUNK_DEPTH` planes deep, at most :data:`CHUNK_SIDE` wide."""
    return (min(int(core[0]), SCRATCH_CHUNK_DEPTH),
            *(min(int(c), CHUNK_SIDE) for c in core[1:]))


def merge_blocks(plan: BlockPlan, workdir, out, *, iou_threshold: float = 0.5,
                 min_size: int = 15,
                 progress: Callable[[str, int, int], None] | None = None) -> MergeStats:
    """Paint all block files of ``plan`` from ``workdir`` into ``out``.

    Parameters
    ----------
    plan : BlockPlan
    workdir : path
        Folder holding ``block_NNNNNN.npz`` for every block.
    out : (Z, Y, X) uint32 array-like (zarr or numpy), all 0
        Written region by region.
    iou_threshold : float
        IoU at or above which a mask is the same nucleus as a painted one.
    min_size : int
        Masks with fewer free voxels are not painted.
    """
    stats = MergeStats()
    sizes = array("q", [0])  # voxels per painted id: 8 bytes per nucleus
    total = 2 * len(plan)
    for step in range(total):
        index, owned_pass = step % len(plan), step < len(plan)
        with np.load(block_file(workdir, index)) as data:
            offset, labels, owned = data["offset"], data["labels"], data["owned"]
        which = np.flatnonzero(owned if owned_pass else ~owned) + 1
        if which.size:
            _paint_block(out, offset, labels, which, sizes, stats, owned_pass=owned_pass,
                         iou_threshold=iou_threshold, min_size=min_size)
        if progress is not None:
            progress("merge", step + 1, total)
    stats.n_labels = len(sizes) - 1
    return stats


def _paint_block(out, offset, labels, which, sizes, stats, *, owned_pass, iou_threshold,
                 min_size) -> None:
    region_sl = tuple(slice(int(o), int(o) + n) for o, n in zip(offset, labels.shape))
    region = np.asarray(out[region_sl])
    changed = False
    for local in which:
        sel = labels == local
        n = int(np.count_nonzero(sel))
        if n == 0:
            continue
        under = region[sel]
        taken = under[under > 0]
        free = n - taken.size
        if taken.size:
            ids, counts = np.unique(taken, return_counts=True)
            union = n + np.asarray([sizes[i] for i in ids]) - counts
            best_iou = float((counts / union).max())
        else:
            best_iou = 0.0
        if best_iou >= iou_threshold or 2 * free < n:
            stats.duplicates += 1
            continue
        if free < max(min_size, 1):
            stats.too_small += 1
            continue
        new_id = len(sizes)
        region[sel & (region == 0)] = new_id
        sizes.append(free)
        changed = True
        if owned_pass:
            stats.owned_painted += 1
        else:
            stats.candidates_painted += 1
    if changed:
        out[region_sl] = region
