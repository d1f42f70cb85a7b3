"""Watch a folder and segment each new volume once it is completely written.

The service behind ``nucseg-rt watch``, usable from Python with a loaded segmenter::

    seg = Segmenter("nuclei_3d")
    stop = threading.Event()               # set it, from any thread, to stop the service
    watch_folder("incoming", "results", seg, run=RunSettings(anisotropy=4.0),
                 settings=WatchSettings(poll=1.0, settle=2.0), cancel=stop)

When a volume counts as written
    Inputs are TIFF files (``.tif``, ``.tiff``) and zarr / OME-Zarr folders (``.zarr``) directly
    in the folder; hidden names and names ending like outputs (``_masks``, ``_flows``, ...) are
    ignored. A file is taken once two looks at it, at least ``settle`` seconds apart, saw the
    same :class:`Snapshot` (size and modification time; for a zarr folder the number, total size
    and latest modification time of its files, and its metadata file present). Until then it is
    only ``stat``-ed, never opened. A TIFF must then also be whole (every page's data inside the
    file, :func:`tiff_problem`): a half-copied TIFF whose copy stalled is recorded as failed, and
    taken again when it changes.

Records
    ``OUT/<input name>.json`` for each input, replaced atomically at every change, for a host to
    poll: ``status`` ``queued`` (seen, waiting to settle or for its turn), ``running``, ``done`` or
    ``failed`` (with ``error``), the input's ``size`` / ``mtime_ns`` / ``files`` when it was
    read, ``outputs``, ``n_nuclei``, ``shape``, ``seconds`` and UTC times.

Restarting
    A file whose record is ``done`` or ``failed`` for the same size and modification time is not
    read again; one that changed since is segmented again (its outputs replaced). A file with no
    such record whose outputs all exist is recorded ``done`` without recomputing (outputs are only
    ever renamed into place complete). To retry a failed file, delete its record.

Segmenting
    Each volume goes through the batch runner (:class:`nucseg_rt.batch.BatchRunner`) with the
    typed settings given (:class:`~nucseg_rt.params.InputSpec`,
    :class:`~nucseg_rt.params.MaskParams`, :class:`~nucseg_rt.batch.RunSettings`), as
    ``nucseg-rt segment`` segments files.

Stopping
    Setting ``cancel`` (:func:`stop_on_signals` sets it on SIGINT and SIGTERM) ends the service:
    a file being segmented is abandoned within one batch of network tiles or one step
    (:class:`nucseg_rt.errors.Cancelled`; nothing is written under an output's name; its record
    goes back to ``queued``, so a restart segments it). Outputs are written atomically; inputs
    are only read. One service per output folder.
"""

from nucseg_rt.io import tiff_problem
from nucseg_rt.watch.detect import Snapshot, StabilityTracker, find_candidates, snapshot
from nucseg_rt.watch.service import (WatchSettings, WatchSummary, check_folders, read_record,
                                     record_path, stop_on_signals, watch_folder)

__all__ = ["WatchSettings", "WatchSummary", "Snapshot", "StabilityTracker", "snapshot",
           "tiff_problem", "find_candidates", "record_path", "read_record", "check_folders",
           "watch_folder", "stop_on_signals"]
