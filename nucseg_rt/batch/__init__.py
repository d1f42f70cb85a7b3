"""Segmenting many files: the library behind ``nucseg-rt segment`` and ``nucseg-rt watch``.

- :func:`plan_jobs` / :func:`find_images`: inputs from paths or a folder (Cellpose's ``--dir``,
  ``--img_filter``, ``--look_one_level_down``), outputs ``<stem>_masks.tif`` (or
  ``<stem>_masks.ome.zarr``) and ``<stem>_flows.npz`` next to each input or in ``out_dir``; a
  plan that would overwrite an input, or write one output twice, is refused.
- :class:`RunSettings`: anisotropy (default: each file's calibration), diameter (a number,
  ``"auto"`` or the model's), outputs and blockwise settings, next to the stage objects
  :class:`~nucseg_rt.params.InputSpec` and :class:`~nucseg_rt.params.MaskParams`.
- :class:`BatchRunner` / :func:`run_batch`: files in, one :class:`FileResult` per file out
  (done / skipped / failed / cancelled, nuclei, seconds, the anisotropy and diameter used and
  where they came from, the error). Outputs are written atomically; existing ones are kept
  unless ``overwrite``; a volume larger than the memory budget is segmented blockwise.

>>> from nucseg_rt import Segmenter, run_batch, RunSettings                     # doctest: +SKIP
>>> results = run_batch(["a.tif"], Segmenter("nuclei_3d"), run=RunSettings(diameter="auto"))
"""

from nucseg_rt.batch._file import FilePlan, FileResult, plan_file, segment_file
from nucseg_rt.batch._plan import (Job, check_output_folders, check_writable, find_images,
                                   pending_outputs, plan_jobs)
from nucseg_rt.batch._runner import BatchRunner, run_batch
from nucseg_rt.batch._settings import RunSettings

__all__ = ["BatchRunner", "run_batch", "RunSettings", "Job", "FilePlan", "FileResult",
           "find_images", "plan_jobs", "pending_outputs", "check_writable",
           "check_output_folders", "plan_file", "segment_file"]
