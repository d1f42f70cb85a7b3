"""Evaluation helpers, used by calibration, tests, benchmarks and training.

- :func:`make_volume`, :func:`subsample_z` (``synth``): seeded synthetic nuclei volumes with
  their true labels;
- :func:`average_precision`, :func:`split_fraction`, :func:`label_diameter` (``metrics``):
  instance-segmentation metrics (AP as Cellpose defines it);
- ``realtex`` (real-texture volumes from real 2D nuclei) and ``optics`` (blur, background,
  camera noise), by module.
"""

from nucseg_rt.eval.metrics import average_precision, label_diameter, split_fraction
from nucseg_rt.eval.synth import make_volume, subsample_z

__all__ = ["make_volume", "subsample_z", "average_precision", "split_fraction", "label_diameter"]
