"""Example data shipped with nucseg-rt, installed as the package ``nucseg_rt_examples``.

``embryo_small.tif``: a seeded synthetic nuclei volume, (24, 192, 192) uint16, Z step 2.0 um,
XY pixel 0.5 um (anisotropy 4); ``make_example.py`` regenerates it.
"""
