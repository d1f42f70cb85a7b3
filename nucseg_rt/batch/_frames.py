"""Time-lapse runs: which frames (``--frames``), and the finished frames of a run kept on disk so
that an interrupted run resumes at the next frame.

A time-lapse is segmented one frame at a time (each frame its own volume), so memory does not
grow with the number of frames. Each finished frame's labels are saved at once, atomically, in a
hidden folder next to the output (``.<output name>.frames/``); the output file is written from
them when every frame is done, and the folder is then removed. A run that finds the folder with
the same settings fingerprint continues after its last finished frame.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from nucseg_rt.timelapse import parse_frames

__all__ = ["parse_frames", "FrameStore"]


class FrameStore:
    """The finished frames of one time-lapse output, on disk until the output is written.

    Parameters
    ----------
    output : path
        The output file the frames are for; the store is ``.<name>.frames/`` beside it.
    fingerprint : str
        What decides the labels (model, settings, frames); a store with another one is
        discarded, not resumed.
    """

    def __init__(self, output: str | os.PathLike, fingerprint: str):
        output = Path(output)
        self.folder = output.parent / f".{output.name}.frames"
        self.fingerprint = fingerprint
        self._state_path = self.folder / "state.json"
        state = self._read_state()
        if state is not None and state.get("fingerprint") != fingerprint:
            shutil.rmtree(self.folder, ignore_errors=True)
            state = None
        self.max_label = int(state["max_label"]) if state else 0
        self.done: list[int] = [int(t) for t in state["done"]] if state else []

    def _read_state(self) -> dict | None:
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and "done" in state else None

    def _frame_path(self, t: int) -> Path:
        return self.folder / f"t{t:06d}.npy"

    def save(self, t: int, labels: np.ndarray) -> None:
        """Keep frame ``t``'s labels (atomic: a frame file is whole or absent)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".t{t:06d}.npy.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, labels)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self._frame_path(t))
        self.max_label = max(self.max_label, int(labels.max(initial=0)))
        self.done.append(int(t))
        state = {"fingerprint": self.fingerprint, "done": self.done, "max_label": self.max_label}
        tmp = self.folder / ".state.json.tmp"
        tmp.write_text(json.dumps(state), encoding="utf-8")
        tmp.replace(self._state_path)

    def load(self, t: int) -> np.ndarray:
        """Frame ``t``'s labels, as saved."""
        return np.load(self._frame_path(t))

    def remove(self) -> None:
        """Delete the store (after the output was written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
