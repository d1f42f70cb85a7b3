"""Input preparation, before the network.

- :func:`to_zyxc` / :func:`resolve_axes` (``axes``): the user's array -> ``(Z, Y, X, C)``, the
  one axis rule (:class:`AxisPlan` says what was decided);
- :func:`normalize` / :func:`smooth_sharpen` (``intensity``): percentile normalisation,
  tiled normalisation, sharpening and inversion, as Cellpose 3.1;
- :func:`rescale_volume`, :func:`resize_linear`, :func:`resize_nearest`,
  :func:`resize_flows_back`, :func:`resize_channels_back`, :func:`resize_labels_3d`,
  :func:`resize_labels_centred`, :func:`z_interpolation` (``resample``): to the network's grid
  and back;
- ``filters``: the separable Gaussian filters they use (scipy-equal).
"""

from nucseg_rt.prep.axes import (MAX_GRAY_CHANNELS, MAX_GUESSED_CHANNELS, AxisPlan, check_gray,
                                 resolve_axes, time_lapse_refusal, to_zyxc)
from nucseg_rt.prep.intensity import normalize, smooth_sharpen
from nucseg_rt.prep.resample import (rescale_volume, resize_channels_back, resize_flows_back,
                                     resize_labels_3d, resize_labels_centred, resize_linear,
                                     resize_nearest, z_interpolation)

__all__ = ["AxisPlan", "resolve_axes", "to_zyxc", "check_gray", "time_lapse_refusal",
           "MAX_GUESSED_CHANNELS", "MAX_GRAY_CHANNELS", "normalize",
           "smooth_sharpen", "rescale_volume", "resize_linear", "resize_nearest",
           "resize_flows_back", "resize_channels_back", "resize_labels_3d", "resize_labels_centred",
           "z_interpolation"]
