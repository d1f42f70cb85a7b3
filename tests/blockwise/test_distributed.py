"""Blocks as dask tasks: a LocalCluster of worker processes gives the in-process blockwise labels,
each worker loads the model once; bad scheduler addresses are refused."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

from helpers import block_tiff, block_volume, blockwise_masks, bundled_segmenter  # noqa: E402
from nucseg_rt.blockwise import blocks
from nucseg_rt.blockwise import run as large  # noqa: E402
from nucseg_rt.blockwise import dask as nd  # noqa: E402
from nucseg_rt.errors import InvalidInputError  # noqa: E402
from nucseg_rt.io import open_labels_zarr  # noqa: E402


#: in a worker process: Segmenters built and blocks computed since _count_in_worker ran there
_COUNTS = {"segmenters": 0, "blocks": 0}


def _count_in_worker() -> None:
    """Run in each worker (client.run): wrap what the dask task calls so the worker counts the
    Segmenters it builds and the blocks it computes."""
    build, compute = blocks.SegmenterSpec.build, blocks.compute_block

    def counted_build(spec):
        _COUNTS["segmenters"] += 1
        return build(spec)

    def counted_compute(*args, **kwargs):
        _COUNTS["blocks"] += 1
        return compute(*args, **kwargs)

    blocks.SegmenterSpec.build = counted_build
    blocks.compute_block = counted_compute


def _worker_counts() -> dict:
    return dict(_COUNTS)


def _worker_log_filters() -> list[str]:
    import logging

    return [type(f).__name__ for f in logging.getLogger("distributed.worker").filters]


def test_heartbeat_race_filter_drops_only_that_record():
    """A LocalCluster closed while a worker heartbeats logs a traceback that is no failure
    (seen after Ctrl-C in CI); every other record of distributed.worker passes."""
    import logging

    def record(msg):
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg, (), None)

    f = nd._HeartbeatRace()
    assert not f.filter(record("Failed to communicate with scheduler during heartbeat."))
    assert f.filter(record("Unexpected exception during heartbeat. Closing worker."))
    assert f.filter(record("Compute Failed"))
    nd._drop_heartbeat_race()
    nd._drop_heartbeat_race()  # installed once
    log = logging.getLogger("distributed.worker")
    try:
        assert [type(x).__name__ for x in log.filters] == ["_HeartbeatRace"]
    finally:
        for x in list(log.filters):
            log.removeFilter(x)


def test_local_cluster_equals_in_process(tmp_path):
    _, aniso = block_volume("pair")
    block = "64"  # 2 blocks over 2 workers (the seams are the in-process tests')
    expected_res, expected = blockwise_masks("pair", block)
    seen = []
    with nd.open_client("local", workers=2) as client:
        client.run(_count_in_worker)
        settings = large.LargeSettings(scheduler="local", workers=2)
        res = large.segment_blockwise(
            block_tiff("pair"), tmp_path / "d.ome.zarr", bundled_segmenter(),
            diameter=30.0, anisotropy=aniso, settings=settings,
            block_size=blocks.parse_block_size(block), client=client,
            progress=lambda stage, done, total: seen.append((stage, done, total)))
        stats = client.run(_worker_counts)
        filters = client.run(_worker_log_filters)
    assert all(f == ["_HeartbeatRace"] for f in filters.values()), filters
    np.testing.assert_array_equal(open_labels_zarr(res.path)[:], expected)
    assert res.n_nuclei == expected_res.n_nuclei and res.computed == expected_res.n_blocks
    assert len(stats) == 2
    assert all(s["segmenters"] == (s["blocks"] > 0) for s in stats.values())  # model loaded once
    assert sum(s["blocks"] for s in stats.values()) == res.n_blocks
    done_blocks = [done for stage, done, _ in seen if stage == "blocks"]
    assert done_blocks[-1] == res.n_blocks and done_blocks == sorted(done_blocks)  # progress from the futures


def test_worker_holds_one_segmenter_and_closes_the_previous():
    """A worker keeps the Segmenter of the last spec only (bounded, released when replaced),
    and closing the worker releases it."""
    built, closed = [], []

    @dataclasses.dataclass(frozen=True)
    class FakeSpec:  # hashable like SegmenterSpec; builds a stand-in that records close()
        name: str

        def build(self):
            built.append(self.name)
            return types.SimpleNamespace(close=lambda: closed.append(self.name))

    worker = nd.BlockWorker()
    a, b = FakeSpec("a"), FakeSpec("b")
    first = worker.segmenter(a)
    assert worker.segmenter(a) is first and built == ["a"] and closed == []
    worker.segmenter(b)
    assert built == ["a", "b"] and closed == ["a"]
    worker.close()
    worker.close()  # idempotent
    assert closed == ["a", "b"]


@pytest.mark.parametrize("address", ["tcp://", "http://host:8786", "tcp://host", "cluster",
                                     "tcp://host:port"])
def test_bad_scheduler_address(address):
    with pytest.raises(InvalidInputError, match="scheduler"):
        nd.validate_scheduler(address)


def test_unreachable_scheduler():
    with pytest.raises(InvalidInputError, match="not reachable"):
        nd.check_available("tcp://127.0.0.1:9", timeout=2)


def test_local_threads_share_the_cores():
    import os

    assert nd.local_threads(1) == (os.cpu_count() or 1)
    assert nd.local_threads(64) == 1


def test_segmenter_spec_rebuilds_the_segmenter():
    seg = bundled_segmenter()
    spec = blocks.SegmenterSpec.from_segmenter(seg, threads=1)
    again = spec.build()
    assert again.model.sha256 == seg.model.sha256 and again.batch_size == seg.batch_size
    assert hash(spec) == hash(blocks.SegmenterSpec.from_segmenter(seg, threads=1))
    from nucseg_rt import Segmenter

    tiled = blocks.SegmenterSpec.from_segmenter(Segmenter("nuclei_3d", device="cpu", bsize=320))
    assert tiled.build().engine.bsize == 320  # workers tile as the Segmenter they were made from
    assert tiled.labels_key() != spec.labels_key()  # and a resume with other tiles starts over
