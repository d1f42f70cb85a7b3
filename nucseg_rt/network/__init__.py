"""The network stage.

- :class:`Engine` / :class:`EngineOptions` (``engine``): the onnxruntime sessions of every
  stream and their threads (joined on ``close()``), how they run (validated once), and the
  passes over a prepared volume;
- :func:`run_3d`, :func:`run_planes`, :class:`WorkAvoidance`, :func:`load_net`,
  :func:`select_providers` (``predict``): YX/ZY/ZX planes in tiles on N streams, the work
  skipped, sessions and providers;
- ``_openvino``: :class:`OpenVinoNet`, the same interface as ``OnnxNet`` on OpenVINO (CPU;
  fp32, bf16, int8), picked by :func:`load_net` for ``backend`` "openvino"; "auto" is decided
  in :func:`nucseg_rt.network.engine.resolve_backend`;
- :func:`make_grid`, :class:`TileGrid`, :func:`is_tile_size` (``tiling``): the tile grid and its
  blending weights.
"""

from nucseg_rt.network.engine import DEFAULT_WORK_AVOIDANCE, Engine, EngineOptions, NetworkRun
from nucseg_rt.network.predict import (NetInfo, OnnxNet, WorkAvoidance, load_net, run_3d,
                                       run_planes, select_providers)
from nucseg_rt.network.tiling import TileGrid, is_tile_size, make_grid

__all__ = ["Engine", "EngineOptions", "NetworkRun", "DEFAULT_WORK_AVOIDANCE", "WorkAvoidance",
           "NetInfo", "OnnxNet", "load_net", "run_3d", "run_planes", "select_providers",
           "TileGrid", "is_tile_size", "make_grid"]
