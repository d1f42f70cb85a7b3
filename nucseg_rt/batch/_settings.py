"""The typed settings of a batch run that are not already a stage's own parameter object.

:class:`nucseg_rt.params.InputSpec` (axes, channels, normalisation) and
:class:`nucseg_rt.params.MaskParams` (the mask step) travel unchanged; :class:`RunSettings` adds the
scale (anisotropy, diameter, resampling), the outputs and the blockwise settings. Each default is
written here once and each check runs once, when the object is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nucseg_rt.blockwise.run import LargeSettings
from nucseg_rt.errors import InvalidInputError, MissingDependencyError
from nucseg_rt.params import validate_diameter, validate_positive
from nucseg_rt.timelapse import parse_frames

__all__ = ["RunSettings"]


@dataclass(frozen=True)
class RunSettings:
    """Scale, outputs and blockwise settings of a batch run.

    Parameters
    ----------
    anisotropy : float, optional
        Z step / XY pixel size. None (default): each file's calibration (Z step / pixel size
        from its ImageJ, OME or OME-Zarr metadata, when it states both in one unit), else 1.0
        with a warning. A number always wins over the file.
    diameter : float, "auto" or None
        Nucleus diameter in XY pixels; None: the model's training diameter; "auto": estimated
        per file (blockwise: once per file, before the blocks run).
    resample : bool
        Run the dynamics on the input grid (True) or on the network grid.
    output_format : {"tif", "zarr"}
        ``<stem>_masks.tif`` or ``<stem>_masks.ome.zarr`` (OME-Zarr labels group).
    save_flows : bool
        Also write ``<stem>_flows.npz`` (not available blockwise).
    overwrite : bool
        Replace existing outputs; otherwise a file whose outputs all exist is skipped.
    blockwise : LargeSettings or None
        Volumes larger than the memory budget (or any, given a block size) are segmented in
        blocks; None: always whole.
    frames : str, optional
        Time-lapses: the frames to segment, e.g. ``"0-9,20"`` (from 0; default all). The
        output holds them in order.
    link : bool
        Time-lapses: a nucleus keeps its label from one segmented frame to the next (matched
        by overlap); False: labels restart per frame.
    """

    anisotropy: float | None = None
    diameter: float | Literal["auto"] | None = None
    resample: bool = True
    output_format: Literal["tif", "zarr"] = "tif"
    save_flows: bool = False
    overwrite: bool = False
    blockwise: LargeSettings | None = field(default_factory=LargeSettings)
    frames: str | None = None
    link: bool = False

    def __post_init__(self):
        if self.frames is not None:
            if not isinstance(self.frames, str):
                raise InvalidInputError(f"`frames` must be a text like '0-9,20', "
                                        f"got {self.frames!r}")
            parse_frames(self.frames, 2**31)  # the form; the range is checked per file
        if self.anisotropy is not None:
            object.__setattr__(self, "anisotropy", validate_positive("anisotropy", self.anisotropy))
        object.__setattr__(self, "diameter", validate_diameter(self.diameter))
        if self.output_format not in ("tif", "zarr"):
            raise InvalidInputError(f"`output_format` must be 'tif' or 'zarr', "
                                    f"got {self.output_format!r}")
        if self.blockwise is not None and not isinstance(self.blockwise, LargeSettings):
            raise InvalidInputError(f"`blockwise` must be LargeSettings or None, "
                                    f"got {type(self.blockwise).__name__}")
        if self.save_flows and self.blockwise is not None and self.blockwise.block_size:
            raise InvalidInputError("`save_flows` is not available for blockwise runs "
                                    "(`block_size`): the flows of a volume that needs blocks do "
                                    "not fit in memory")

    def check_environment(self) -> None:
        """The optional packages these settings need are installed, and a scheduler address is
        reachable; called before any file is read.

        Raises
        ------
        MissingDependencyError
            ``output_format="zarr"``, a block size, a memory budget or a scheduler without the
            ``large`` extra (zarr >= 3, dask.distributed).
        InvalidInputError
            The scheduler address does not answer.
        """
        from nucseg_rt.io import import_zarr

        b = self.blockwise
        asked = [name for name, on in (
            ("`output_format` 'zarr'", self.output_format == "zarr"),
            ("`block_size`", b is not None and b.block_size is not None),
            ("`max_memory`", b is not None and b.max_memory is not None),
            ("`scheduler`", b is not None and b.scheduler is not None)) if on]
        if asked:
            try:
                import_zarr()
            except MissingDependencyError as exc:
                raise MissingDependencyError(f"{', '.join(asked)}: {exc}") from exc
        if b is not None and b.scheduler is not None:
            from nucseg_rt.blockwise.dask import check_available

            check_available(b.scheduler)
