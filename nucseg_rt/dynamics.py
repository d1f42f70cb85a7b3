"""Public path of the mask step's flow following: ``from nucseg_rt.dynamics import compute_masks``.

``compute_masks(dP, cellprob, niter=200, cellprob_threshold=0.0, min_size=15,
max_size_fraction=0.4, method="stable")`` turns flows into labels; the implementation lives in
:mod:`nucseg_rt.masks.dynamics`.
"""

from nucseg_rt.masks.dynamics import compute_masks

__all__ = ["compute_masks"]
