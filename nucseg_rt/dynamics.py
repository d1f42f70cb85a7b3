"""Public path of the mask step: ``from nucseg_rt.dynamics import compute_masks``.

The implementation lives in :mod:`nucseg_rt.masks.dynamics`.
"""

from nucseg_rt.masks.dynamics import *  # noqa: F401,F403
from nucseg_rt.masks.dynamics import __all__  # noqa: F401
