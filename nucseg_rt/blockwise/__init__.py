"""Volumes larger than memory, segmented in blocks with seamless labels.

- :func:`plan_run` / :class:`RunPlan` (``plan``): whole, blocks or refused, from a volume's shape
  and the scale it runs at (the one memory plan; :func:`estimate_bytes`,
  :func:`choose_block_size`);
- :class:`LargeSettings`, :func:`segment_blockwise` (``run``): a blockwise run of one file, with
  resume;
- :class:`BlockPlan`, :func:`plan_blocks`, :func:`global_bounds`, :func:`compute_block`,
  :class:`BlockReader`, :class:`SegmenterSpec` (``blocks``): the block plan with its halo,
  normalisation bounds equal to a whole run's, and the per-block worker;
- :func:`merge_blocks` (``merge``): ownership and IoU merge of neighbouring blocks;
- :class:`BlockWorker`, :func:`run_blocks`, :class:`LazyClient` (``dask``): blocks as dask
  tasks, one Segmenter per worker (needs the ``large`` extra when used).
"""

from nucseg_rt.blockwise.blocks import (BlockContext, BlockPlan, BlockReader, SegmenterSpec,
                                        block_file, compute_block, global_bounds,
                                        parse_block_size, plan_blocks)
from nucseg_rt.blockwise.dask import BlockWorker, LazyClient, open_client, run_blocks
from nucseg_rt.blockwise.merge import MergeStats, merge_blocks
from nucseg_rt.blockwise.plan import (RunPlan, choose_block_size, default_halo, estimate_bytes,
                                      plan_run)
from nucseg_rt.blockwise.run import (BlockwiseResult, LargeSettings, segment_blockwise,
                                     volume_shape, workdir_for)

__all__ = ["RunPlan", "plan_run", "estimate_bytes", "choose_block_size", "default_halo",
           "LargeSettings", "BlockwiseResult", "segment_blockwise", "volume_shape", "workdir_for",
           "BlockPlan", "BlockContext", "BlockReader", "SegmenterSpec", "plan_blocks",
           "global_bounds", "compute_block", "block_file", "parse_block_size", "MergeStats",
           "merge_blocks", "BlockWorker", "LazyClient", "open_client", "run_blocks"]
