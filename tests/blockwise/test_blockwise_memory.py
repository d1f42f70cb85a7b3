"""Blockwise memory stays set by the block size, not by the volume (issue 14, item 7).

Not timed: the merge and the TIFF writer are measured with ``tracemalloc`` (numpy and zarr
buffers are traced) on block files made from known labels, without a network; the network
sessions are checked for the option that keeps their arena from growing with tile shapes.
``benchmarks/blockwise_memory.py`` measures the peak RSS of whole runs.
"""

from __future__ import annotations

import platform
import tracemalloc
import types

import numpy as np
import pytest
import tifffile

from helpers import ball_lattice
from nucseg_rt.blockwise import blocks
from nucseg_rt.blockwise import merge as merging
from nucseg_rt.blockwise import run as large
import nucseg_rt.io as lazy
from nucseg_rt.network.predict import OnnxNet

CORE = (24, 24, 24)
HALO = (6, 6, 6)


def _block_files(labels: np.ndarray, workdir) -> blocks.BlockPlan:
    """Write the block files ``compute_block`` would write if each block found ``labels``."""
    plan = blocks.plan_blocks(labels.shape, CORE, diameter=8, anisotropy=1, halo=HALO)
    workdir.mkdir(parents=True, exist_ok=True)
    for i in range(len(plan)):
        box = plan.read_box(i)
        crop = labels[tuple(slice(a, b) for a, b in box)]
        offset, sub, owned = blocks.select_masks(crop, box, plan.core_box(i), plan.shape,
                                                    plan.halo)
        np.savez_compressed(blocks.block_file(workdir, i), offset=offset, labels=sub,
                            owned=owned, core=np.array(plan.core_box(i)))
    return plan


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering of the labels."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    return len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


@pytest.fixture
def needs_zarr():
    pytest.importorskip("zarr")


def _merge_peak(labels: np.ndarray, workdir) -> tuple[int, np.ndarray]:
    plan = _block_files(labels, workdir)
    out = np.zeros(plan.shape, np.uint32)
    tracemalloc.start()
    try:
        merging.merge_blocks(plan, workdir, out, min_size=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, out


def test_merge_memory_does_not_grow_with_the_number_of_blocks(tmp_path):
    """The same blocks (interior blocks of equal size), 8 times as many of them: the merge's
    peak stays the same (only the output array, written region by region, grows)."""
    small = ball_lattice((72, 72, 72), seed=1)      # 3x3x3 blocks
    large_ = ball_lattice((576, 72, 72), seed=1)    # 24x3x3 blocks
    peak_small, out_small = _merge_peak(small, tmp_path / "small")
    peak_large, out_large = _merge_peak(large_, tmp_path / "large")
    assert _same_partition(out_small, small) and _same_partition(out_large, large_)
    assert int(out_large.max()) == int(large_.max()) > 8 * int(small.max()) - 40
    # threads left by earlier tests (onnxruntime, dask, watchers) allocate while tracemalloc runs:
    # up to ~70 kB seen in a full run. A merge that kept the output in memory (12 MB here) or a
    # few plane-sized buffers per block (72x72x4 = 20 kB each, 216 blocks) still fails by far.
    assert peak_large <= 1.1 * peak_small + 128 * 1024, (peak_small, peak_large)


def test_scratch_chunks_are_a_few_planes_deep():
    assert merging.scratch_chunks((96, 96, 96)) == (merging.SCRATCH_CHUNK_DEPTH, 96, 96)
    assert merging.scratch_chunks((3, 300, 40)) == (3, merging.CHUNK_SIDE, 40)


def test_tiff_output_is_merged_into_thin_chunks(needs_zarr, tmp_path, monkeypatch):
    """The TIFF path merges into a scratch array at most SCRATCH_CHUNK_DEPTH planes deep, however
    deep the blocks, and writes the merged labels unchanged."""
    labels = ball_lattice((72, 60, 50), seed=2)
    plan = _block_files(labels, tmp_path / "work")
    assert plan.core[0] > merging.SCRATCH_CHUNK_DEPTH
    created = []

    def recording(path, shape, *, chunks, **kw):
        created.append(tuple(chunks))
        return create(path, shape, chunks=chunks, **kw)

    create = lazy.create_labels_zarr
    monkeypatch.setattr(lazy, "create_labels_zarr", recording)
    out_path = tmp_path / "labels.tif"
    stats = large._merge_and_write(plan, tmp_path / "work", out_path, None, None,
                                   large.LargeSettings(), 1, None)
    assert len(created) == 1 and created[0][0] <= merging.SCRATCH_CHUNK_DEPTH, created
    written = tifffile.imread(out_path)
    expected = np.zeros(plan.shape, np.uint32)
    merging.merge_blocks(plan, tmp_path / "work", expected, min_size=1)
    assert stats.n_labels == int(labels.max())
    np.testing.assert_array_equal(written, expected)


def test_tiff_writer_decodes_about_one_plane_at_a_time(needs_zarr, tmp_path):
    """Writing a TIFF from the scratch array holds a few planes, not a block's depth of them
    (with block-deep chunks it decoded up to 10 chunks of 48 planes per plane written)."""
    shape, core = (48, 128, 128), (48, 32, 32)
    scratch = lazy.create_labels_zarr(tmp_path / "s.zarr", shape,
                                      chunks=merging.scratch_chunks(core))
    scratch[...] = ball_lattice(shape, seed=3)
    plane_bytes = shape[1] * shape[2] * 4
    tracemalloc.start()
    try:
        lazy.write_labels_tif(tmp_path / "out.tif", scratch, dtype=np.uint16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= (merging.SCRATCH_CHUNK_DEPTH + 8) * plane_bytes, peak / plane_bytes
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), scratch[...])


def test_network_sessions_plan_no_memory_pattern(tiny_onnx_model):
    """Tiles of several shapes: no per-shape memory pattern kept in the arena; the outputs are
    those of a session with the pattern."""
    import onnxruntime as ort

    net = OnnxNet(tiny_onnx_model, ["CPUExecutionProvider"])
    assert net.session.get_session_options().enable_mem_pattern is False
    opts = ort.SessionOptions()
    assert opts.enable_mem_pattern  # onnxruntime's default, which OnnxNet turns off
    reference = ort.InferenceSession(str(tiny_onnx_model), opts,
                                     providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(2, 2, 80, 144), (1, 2, 192, 160), (2, 2, 144, 144)]:
        tiles = rng.random(shape, np.float32)
        flows, cellprob = reference.run(["flows", "cellprob"], {"input": tiles})
        np.testing.assert_array_equal(net(tiles), np.concatenate((flows, cellprob), axis=1))


_FREED_HEAP = """
import os
import numpy as np
from nucseg_rt.blockwise import blocks

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

keep, freed = [], []
for i in range(2000):
    freed.append(np.ones(12_000))  # 96 KB each, on the heap
    keep.append(np.full(300, i))   # 2.4 KB each, still alive above them
del freed
resident = rss()
assert blocks.release_freed_memory()
handed_back = resident - rss()
assert handed_back > 0.5 * 2000 * 96_000, handed_back
assert len(keep) == 2000
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_freed_heap_memory_is_handed_back():
    """Memory freed on the heap (allocations below glibc's mmap threshold, pinned by small
    live ones) stays resident until released. Measured in a fresh single-threaded process:
    in the test worker, other threads' arenas and allocations made the resident size move."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FREED_HEAP], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_each_block_hands_its_memory_back(tmp_path, monkeypatch):
    labels = ball_lattice((30, 40, 40), seed=4)
    plan = blocks.plan_blocks(labels.shape, CORE, diameter=8, anisotropy=1, halo=HALO)
    from nucseg_rt.params import InputSpec, MaskParams

    ctx = blocks.BlockContext(source=labels.astype(np.uint16), inputs=InputSpec(), params=MaskParams(),
                                 anisotropy=1.0, diameter=8.0, resample=True, plan=plan,
                                 bounds=((0.0, 1.0),), workdir=str(tmp_path), spec=None)
    events = []

    class FoundLabels:
        def segment(self, block, **kwargs):
            events.append("segment")
            return types.SimpleNamespace(masks=block.astype(np.uint32))

    monkeypatch.setattr(blocks, "release_freed_memory",
                        lambda: events.append(blocks.block_file(tmp_path, 0).exists()))
    with blocks.BlockReader() as reader:
        blocks.compute_block(ctx, 0, FoundLabels(), reader)
    assert events == ["segment", True]  # released once the block file is written
