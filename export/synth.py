"""Synthetic nuclei volumes: moved to :mod:`nucseg_rt.eval.synth` (numpy only, used for int8
calibration by the runtime). This re-export remains only for ``export/train_data.py``; delete it
once that module imports ``nucseg_rt.eval.synth``."""

from nucseg_rt.eval.synth import make_volume, subsample_z

__all__ = ["make_volume", "subsample_z"]
