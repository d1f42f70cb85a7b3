"""Synthetic nuclei volumes: moved to :mod:`nucseg_rt.eval.synth` (numpy only, used for int8
calibration by the runtime); re-exported here for existing callers."""

from nucseg_rt.eval.synth import make_volume, subsample_z

__all__ = ["make_volume", "subsample_z"]
