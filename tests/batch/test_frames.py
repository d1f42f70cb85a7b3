"""Time-lapse frame selection and the on-disk store of finished frames (batch._frames)."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg_rt.batch._frames import FrameStore, parse_frames
from nucseg_rt.errors import InvalidInputError


def test_parse_frames():
    assert parse_frames(None, 4) == (0, 1, 2, 3)
    assert parse_frames("all", 3) == (0, 1, 2)
    assert parse_frames("0-2, 5,2,7-7", 8) == (0, 1, 2, 5, 7)


@pytest.mark.parametrize("spec, match", [("3-1", "runs backwards"), ("0-9", "outside the 5 frames"),
                                         ("a", "must be like '0-9,20'"), ("-1", "must be like|outside")])
def test_parse_frames_refuses(spec, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_frames(spec, 5)


def test_store_resumes_with_the_same_fingerprint_only(tmp_path):
    out = tmp_path / "tl_masks.tif"
    store = FrameStore(out, "fp1")
    a = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    store.save(0, a)
    store.save(1, a + 1)
    again = FrameStore(out, "fp1")
    assert again.done == [0, 1] and again.max_label == 24
    assert np.array_equal(again.load(1), a + 1)
    other = FrameStore(out, "fp2")  # other settings: start over
    assert other.done == [] and other.max_label == 0 and not other.folder.exists()
    other.save(3, a)
    other.remove()
    assert not other.folder.exists() and list(tmp_path.iterdir()) == []
