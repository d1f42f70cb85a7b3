"""Volumes larger than memory: the block plan, global bounds and the per-block worker
(``blocks``), merging blocks into one label volume (``merge``), the orchestration of a blockwise
run with resume (``run``) and dask clusters (``dask``)."""
