"""Whole or blocks: the one memory plan of a run (:func:`plan_run`), from a volume's shape and the
scale it runs at, before any pixel is read.

A volume is segmented whole when it fits the memory budget (or when no blockwise settings are
given), in blocks when it does not (or when a block size is given, or a scheduler asked for),
and refused when even the smallest block would not fit: then the scale is wrong (an anisotropy
or diameter that makes a huge network grid), not the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["RunPlan", "plan_run", "estimate_bytes", "choose_block_size", "default_halo",
           "BYTES_PER_VOXEL", "BASE_BYTES", "MIN_BLOCK", "MIN_BLOCK_XY", "SCHEDULER_BLOCK_XY",
           "MAX_PLAUSIBLE_ANISOTROPY", "MAX_GRID_GROWTH"]

#: Rough peak bytes per voxel on the network grid of a whole-volume run (input, resampled
#: input, 4 output channels, resized flows, dynamics): 407 MB measured for 64x256x256 minus
#: ~150 MB of libraries and model is ~61 B/voxel (docs/benchmarks.md).
BYTES_PER_VOXEL = 64
#: Memory taken by the libraries and the loaded model, whatever the volume.
BASE_BYTES = 300 * 10**6
#: Smallest core block side accepted (input voxels).
MIN_BLOCK = 8
#: Smallest core block side in Y and X the block search goes down to (input voxels).
MIN_BLOCK_XY = 32
#: Core block side in Y and X (Z: the same physical size) of a run sent to a scheduler although
#: the whole volume would fit: blocks are what the workers share out.
SCHEDULER_BLOCK_XY = 256

#: Largest Z step / XY pixel size of a real stack: a 10 um step (coarse for nuclei, whose
#: diameter is about that) over 0.1 um pixels (a 100x oil objective) is 100. More is a slip
#: (e.g. a Z step in nm over a pixel size in um: issue 22 ran `--anisotropy 300` for 158 s and
#: reported five times too many nuclei), so it is warned about before the work.
MAX_PLAUSIBLE_ANISOTROPY = 100.0
#: Largest network grid / input voxels (``anisotropy x rescale^3``) of realistic settings, with
#: room: anisotropy 11.5 (coarse embryo stacks) with nuclei of 15 px for a model trained at 30
#: (rescale 2) is 92. Beyond it the work and memory grow by that factor, which is rarely meant.
MAX_GRID_GROWTH = 200.0

Mode = Literal["whole", "blocks", "refused"]


def default_halo(diameter: float, anisotropy: float) -> tuple[int, int, int]:
    """One diameter plus 8 voxels in Y and X; the same physical distance in Z."""
    hxy = int(math.ceil(diameter)) + 8
    return int(math.ceil(hxy / anisotropy)), hxy, hxy


def estimate_bytes(shape_zyx, *, anisotropy: float, rescale: float, nchan: int = 1) -> int:
    """Rough peak memory of segmenting a ``shape_zyx`` volume whole (see ``BYTES_PER_VOXEL``)."""
    z, y, x = shape_zyx
    net = max(z * anisotropy, 1) * rescale * y * rescale * x * rescale
    return int(BYTES_PER_VOXEL * max(net, z * y * x) + 4 * nchan * z * y * x)


def choose_block_size(shape_zyx, budget: int, *, anisotropy: float, rescale: float,
                      halo, nchan: int = 1) -> tuple[int, int, int] | None:
    """Largest core block (sides multiples of 16 in XY) whose halo'd block fits ``budget`` bytes.

    Returns None when the whole volume fits (no blocks needed); the smallest block
    (``MIN_BLOCK_XY`` in Y and X) when nothing fits.
    """
    avail = budget - BASE_BYTES
    if estimate_bytes(shape_zyx, anisotropy=anisotropy, rescale=rescale, nchan=nchan) <= avail:
        return None
    z, y, x = shape_zyx
    side = 16 * (max(y, x) // 16 + 1)
    while side > MIN_BLOCK_XY:
        side -= 16
        bz = min(z, max(MIN_BLOCK, int(round(side / anisotropy))))
        read = (min(z, bz + 2 * halo[0]), min(y, side + 2 * halo[1]), min(x, side + 2 * halo[2]))
        if estimate_bytes(read, anisotropy=anisotropy, rescale=rescale, nchan=nchan) <= avail:
            return bz, min(y, side), min(x, side)
    bz = min(z, max(MIN_BLOCK, int(round(MIN_BLOCK_XY / anisotropy))))
    return bz, min(y, MIN_BLOCK_XY), min(x, MIN_BLOCK_XY)


@dataclass(frozen=True)
class RunPlan:
    """How a volume is run (:func:`plan_run`).

    Attributes
    ----------
    mode : {"whole", "blocks", "refused"}
    block : (Z, Y, X) or None
        Core block size for a blockwise run (None: whole). Also set when refused with blockwise
        settings: the smallest block, which does not fit either.
    whole_bytes : int
        Estimated peak memory of the whole volume.
    smallest_bytes : int
        ... and of the smallest unit of work (the whole volume, or the smallest block).
    budget : int
        The memory budget, bytes.
    warnings : tuple of str
        Implausible settings, to be said before the work (a Z step beyond any microscope, a
        network grid far larger than the input); they name `anisotropy` and `diameter`.
    """

    mode: Mode
    block: tuple[int, int, int] | None
    whole_bytes: int
    smallest_bytes: int
    budget: int
    warnings: tuple = ()


def plan_run(shape_zyx, *, anisotropy: float, rescale: float, diameter: float, nchan: int = 1,
             settings=None, halo_anisotropy: float | None = None) -> RunPlan:
    """Whole, blocks or refused, for a ``shape_zyx`` volume run at ``anisotropy`` and
    ``rescale`` (``diameter``: the nucleus size in input pixels, for the halo).

    Parameters
    ----------
    settings : nucseg_rt.blockwise.run.LargeSettings, optional
        Block size, halo, memory budget and scheduler. None: whole volumes only, the budget
        being the physical memory (the plan then says whole or refused).
    halo_anisotropy : float, optional
        The anisotropy of the file, for the default halo of the smallest block (default
        ``anisotropy``; they differ in stitch mode, which does not resample Z).
    """
    from nucseg_rt.io import physical_memory

    shape = tuple(int(s) for s in shape_zyx)
    scale = dict(anisotropy=anisotropy, rescale=rescale, nchan=nchan)
    whole = estimate_bytes(shape, **scale)
    budget = physical_memory() if settings is None else settings.budget()
    smallest = whole
    if settings is not None:
        h = settings.halo or default_halo(diameter, halo_anisotropy or anisotropy)
        side = (MIN_BLOCK + 2 * h[0], MIN_BLOCK_XY + 2 * h[1], MIN_BLOCK_XY + 2 * h[2])
        smallest = estimate_bytes(tuple(min(s, b) for s, b in zip(shape, side)), **scale)
    block = None if settings is None else _block_size(shape, settings, diameter=diameter,
                                                      budget=budget, **scale)
    if smallest + BASE_BYTES > budget:
        mode: Mode = "refused"
    else:
        mode = "whole" if block is None else "blocks"
    return RunPlan(mode, block, whole, smallest, budget,
                   _implausible(shape, anisotropy=anisotropy, rescale=rescale, diameter=diameter))


def _implausible(shape, *, anisotropy: float, rescale: float, diameter: float) -> tuple:
    """Warnings about settings no real stack needs (see the constants above)."""
    z, y, x = shape
    grid = (max(z * anisotropy, 1) * rescale, y * rescale, x * rescale)
    growth = grid[0] * grid[1] * grid[2] / (z * y * x)
    out = []
    if anisotropy > MAX_PLAUSIBLE_ANISOTROPY:
        out.append(f"`anisotropy` {anisotropy:g} means a Z step {anisotropy:g} times the XY pixel "
                   f"size, beyond any microscope (at most about {MAX_PLAUSIBLE_ANISOTROPY:g}): "
                   "check `anisotropy` (Z step / XY pixel size, in the same unit)")
    if growth > MAX_GRID_GROWTH:
        out.append(f"`anisotropy` {anisotropy:g} and `diameter` {diameter:g} px make a network "
                   f"grid of {' x '.join(str(int(g)) for g in grid)} voxels, {growth:.0f} times "
                   f"the {z} x {y} x {x} input (realistic settings: at most about "
                   f"{MAX_GRID_GROWTH:g}); work and memory grow by that factor: check "
                   "`anisotropy` and `diameter`")
    return tuple(out)


def _block_size(shape, settings, *, anisotropy: float, rescale: float, diameter: float,
                nchan: int, budget: int) -> tuple[int, int, int] | None:
    if settings.block_size is not None:
        return settings.block_size
    halo = settings.halo or default_halo(diameter, anisotropy)
    block = choose_block_size(shape, budget, anisotropy=anisotropy, rescale=rescale, halo=halo,
                              nchan=nchan)
    if block is None and settings.scheduler is not None:
        side = SCHEDULER_BLOCK_XY
        block = tuple(min(s, b) for s, b in zip(shape, (max(MIN_BLOCK, round(side / anisotropy)),
                                                        side, side)))
    return block
