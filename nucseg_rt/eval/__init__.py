"""Evaluation helpers: seeded synthetic nuclei volumes (``synth``) and instance-segmentation
metrics (``metrics``). Used by calibration, tests, benchmarks and training."""
