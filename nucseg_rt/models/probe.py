"""A short CPU probe that picks the network's batch size, threads and streams for this machine.

``nucseg-rt info --probe`` times the model on 224x224 tiles for each batch size and thread
count, and with the cores shared out between streams (sessions running side by side);
``--save`` writes the fastest setting to ``probe.json`` in the registry folder, where
:class:`nucseg_rt.Segmenter` reads it when ``batch_size``/``threads``/``streams`` are not given
(:func:`probe_defaults` logs the values it takes; ``Segmenter(use_probe=False)`` ignores the file).
At the fastest setting it also times the network per pixel on other tile sizes. Those are
reported, not saved: a tile size other than Cellpose's 224 changes the flows slightly, so it
is chosen explicitly (``segment --tile-size``).
Defaults without a probe: 2 tiles per call on the CPU (fastest measured on a 2-core EPYC), 8
on CUDA, onnxruntime's thread choice (one per physical core).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError

__all__ = ["ProbeResult", "run_probe", "save_probe", "load_probe", "probe_defaults"]

logger = logging.getLogger("nucseg_rt")

PROBE_FILE = "probe.json"
#: tile edges timed per pixel (224 is Cellpose's)
TILE_SIZES = (160, 224, 320, 448)


@dataclass(frozen=True)
class ProbeResult:
    """Milliseconds per 224x224 tile for each (batch size, threads) tried, and milliseconds
    per megapixel for each tile size at the fastest of those settings."""
    model: str
    precision: str
    timings: dict  # {(batch_size, threads): ms per tile}, one stream
    tile_timings: dict = field(default_factory=dict)  # {tile size: ms per megapixel}
    stream_timings: dict = field(default_factory=dict)  # {(streams, threads each): ms per tile}

    @property
    def best(self) -> tuple[int, int]:
        """(batch size, threads) of the fastest single-stream setting."""
        return min(self.timings, key=self.timings.get)

    @property
    def best_setting(self) -> dict:
        """The fastest setting: ``{"batch_size", "threads", "streams", "ms_per_tile"}``."""
        b, t = self.best
        setting = {"batch_size": b, "threads": t, "streams": 1, "ms_per_tile": self.timings[(b, t)]}
        if self.stream_timings:
            (n, tn), ms = min(self.stream_timings.items(), key=lambda kv: kv[1])
            if ms < setting["ms_per_tile"]:
                setting.update(threads=tn, streams=n, ms_per_tile=ms)
        return setting

    @property
    def best_tile(self) -> int | None:
        return min(self.tile_timings, key=self.tile_timings.get) if self.tile_timings else None


def _thread_choices() -> list[int]:
    n = os.cpu_count() or 1
    return sorted({max(1, n // 2), n})


def run_probe(model: str = "nuclei_3d", *, precision: str = "fp32",
              batch_sizes: tuple[int, ...] = (1, 2, 4, 8), threads: list[int] | None = None,
              seconds: float = 1.5, tile_sizes: tuple[int, ...] = TILE_SIZES) -> ProbeResult:
    """Time the model's network on random tiles (about ``seconds`` per setting).

    Each (batch size, threads) on 224x224 tiles; with the fastest batch size, the cores shared
    out between 2 (or more) streams running side by side; then, with the fastest threads, each
    of ``tile_sizes`` with about as many pixels per call as the fastest batch of 224 tiles.
    """
    from nucseg_rt.network.predict import OnnxNet
    from nucseg_rt.models.registry import resolve_model

    if not batch_sizes or any(int(b) != b or b < 1 for b in batch_sizes):
        raise InvalidInputError(f"`batch_sizes` must be whole numbers >= 1, got {batch_sizes!r}")
    if seconds <= 0:
        raise InvalidInputError(f"`seconds` must be > 0, got {seconds!r}")
    from nucseg_rt.network.tiling import is_tile_size

    if not all(is_tile_size(t) for t in tile_sizes):
        raise InvalidInputError(f"`tile_sizes` must be multiples of 16 from 64 to 1024, "
                                f"got {tile_sizes!r}")
    resolved = resolve_model(model, precision=precision)
    timings, nets = {}, {}
    rng = np.random.default_rng(0)
    for t in threads or _thread_choices():
        nets[t] = net = OnnxNet(resolved.path, ["CPUExecutionProvider"], threads=t)
        for b in batch_sizes:
            timings[(int(b), int(t))] = _ms_per_call(net, rng, b, 224, seconds) / b
    best_b, best_t = min(timings, key=timings.get)
    stream_timings = {}
    cores = os.cpu_count() or 1
    for n in sorted({2, cores} - {1}) if cores >= 2 else ():
        per = max(1, cores // n)
        replicas = [OnnxNet(resolved.path, ["CPUExecutionProvider"], threads=per)
                    for _ in range(n)]
        stream_timings[(n, per)] = _ms_per_tile_streams(replicas, rng, best_b, seconds)
    tile_timings = {}
    for size in tile_sizes:
        b = max(1, round(best_b * 224 ** 2 / size ** 2))
        tile_timings[int(size)] = _ms_per_call(nets[best_t], rng, b, size, seconds) / (
            b * size * size) * 1e6
    return ProbeResult(resolved.name, precision, timings, tile_timings, stream_timings)


def _ms_per_tile_streams(nets, rng, batch: int, seconds: float) -> float:
    """Milliseconds per 224x224 tile with every net running batches at once, in threads."""
    from concurrent.futures import ThreadPoolExecutor

    x = rng.random((batch, nets[0].info.nchan, 224, 224), dtype=np.float32)
    for net in nets:
        net(x)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(nets)) as pool:
        calls = sum(pool.map(lambda net: _calls_for(net, x, seconds), nets))
    return (time.perf_counter() - t0) / (calls * batch) * 1e3


def _ms_per_call(net, rng, batch: int, size: int, seconds: float) -> float:
    x = rng.random((batch, net.info.nchan, size, size), dtype=np.float32)
    net(x)
    t0 = time.perf_counter()
    n = _calls_for(net, x, seconds)
    return (time.perf_counter() - t0) / n * 1e3


def _calls_for(net, x: np.ndarray, seconds: float) -> int:
    """Run ``net(x)`` for about ``seconds`` (at least twice); returns the number of calls."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        net(x)
        n += 1
    return n


def save_probe(result: ProbeResult, home: str | os.PathLike | None = None) -> Path:
    """Store the fastest setting for ``result.precision`` in the registry folder."""
    from nucseg_rt.io import atomic_write
    from nucseg_rt.models.registry import registry_home

    root = registry_home(home)
    root.mkdir(parents=True, exist_ok=True)
    path = root / PROBE_FILE
    data = _read(path)
    best = result.best_setting
    data[result.precision] = {"batch_size": best["batch_size"], "threads": best["threads"],
                              "streams": best["streams"], "model": result.model,
                              "ms_per_tile": round(best["ms_per_tile"], 2),
                              "date": time.strftime("%Y-%m-%d")}
    with atomic_write(path) as fh:
        fh.write((json.dumps(data, indent=2) + "\n").encode())
    return path


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def load_probe(precision: str, home: str | os.PathLike | None = None) -> dict:
    """The saved ``{"batch_size", "threads", "streams"}`` for ``precision``, or {} if never
    probed (files saved before streams were probed give ``streams`` 1)."""
    from nucseg_rt.models.registry import registry_home

    entry = _read(registry_home(home) / PROBE_FILE).get(precision, {})
    entry = {"streams": 1, **entry} if isinstance(entry, dict) else {}
    keys = ("batch_size", "threads", "streams")
    ok = all(isinstance(entry.get(k), int) and not isinstance(entry[k], bool) and entry[k] >= 1
             for k in keys)
    return {k: entry[k] for k in keys} if ok else {}


def probe_defaults(precision: str, *, batch_size: int | None, threads: int | None,
                   streams: int | None, home: str | os.PathLike | None = None):
    """``(batch_size, threads, streams)`` with the ones not given (None) taken from the saved
    probe of ``precision``, if any; logs at INFO which values came from ``probe.json``.

    The probe's threads go with its streams: they are taken only when ``streams`` is not given
    or equals the probe's, and its streams only when neither ``streams`` nor ``threads`` is
    given. Values the probe does not set stay None (the caller's defaults apply).
    """
    tuned = load_probe(precision, home)
    if not tuned:
        return batch_size, threads, streams
    given = {"batch_size": batch_size, "threads": threads, "streams": streams}
    if streams is None and threads is None:
        streams = tuned["streams"]
    if batch_size is None:
        batch_size = tuned["batch_size"]
    if threads is None and (streams or 1) == tuned["streams"]:
        threads = tuned["threads"]
    used = {k: v for k, v in (("batch_size", batch_size), ("threads", threads), ("streams", streams))
            if given[k] is None and v is not None}
    if used:
        from nucseg_rt.models.registry import registry_home

        logger.info("%s defaults from %s (nucseg-rt info --probe --save): %s; pass them, or "
                    "use_probe=False, to override", precision, registry_home(home) / PROBE_FILE,
                    ", ".join(f"{k}={v}" for k, v in used.items()))
    return batch_size, threads, streams
