"""Flows and cell probability to an ``.npz`` file, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError
from nucseg_rt.io._fs import atomic_write, validate_output_path

__all__ = ["write_flows_npz"]


def write_flows_npz(path: str | os.PathLike, flows: np.ndarray, cellprob: np.ndarray, *,
                    overwrite: bool = False) -> Path:
    """Write flows and cell probability to an ``.npz`` file, atomically.

    Parameters
    ----------
    flows : (3, Z, Y, X) or (2, Y, X) float ndarray
        Flow field, components in ZYX (or YX) order; stored as float32 ``"flows"``.
    cellprob : (Z, Y, X) or (Y, X) float ndarray
        Cell probability logits; stored as float32 ``"cellprob"``.
    path, overwrite
        As for :func:`nucseg_rt.io.write_labels_tif`: the folder must exist, and an existing
        file is replaced only with ``overwrite``.

    Returns
    -------
    Path
        ``path``.
    """
    path = validate_output_path(path, overwrite)
    flows, cellprob = np.asarray(flows), np.asarray(cellprob)
    if flows.ndim != cellprob.ndim + 1 or flows.shape[1:] != cellprob.shape \
            or flows.shape[0] != cellprob.ndim:
        raise InvalidInputError(
            f"`flows` must have shape (ndim, *cellprob.shape), got flows {flows.shape} "
            f"and cellprob {cellprob.shape}")
    with atomic_write(path) as fh:
        np.savez(fh, flows=flows.astype(np.float32, copy=False),
                 cellprob=cellprob.astype(np.float32, copy=False))
    return path
