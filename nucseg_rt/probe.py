"""A short CPU probe that picks the network's batch size and thread count for this machine.

``nucseg-rt info --probe`` times the model on 224x224 tiles for each batch size and thread
count; ``--save`` writes the fastest setting to ``probe.json`` in the registry folder, where
:class:`nucseg_rt.Segmenter` reads it when ``batch_size``/``threads`` are not given.
Defaults without a probe: 2 tiles per call on the CPU (fastest measured on a 2-core EPYC), 8
on CUDA, onnxruntime's thread choice (one per physical core).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucseg_rt.errors import InvalidInputError

__all__ = ["ProbeResult", "run_probe", "save_probe", "load_probe"]

PROBE_FILE = "probe.json"


@dataclass(frozen=True)
class ProbeResult:
    """Milliseconds per 224x224 tile for each (batch size, threads) tried."""
    model: str
    precision: str
    timings: dict  # {(batch_size, threads): ms per tile}

    @property
    def best(self) -> tuple[int, int]:
        return min(self.timings, key=self.timings.get)


def _thread_choices() -> list[int]:
    n = os.cpu_count() or 1
    return sorted({max(1, n // 2), n})


def run_probe(model: str = "nuclei_3d", *, precision: str = "fp32",
              batch_sizes: tuple[int, ...] = (1, 2, 4, 8), threads: list[int] | None = None,
              seconds: float = 1.5) -> ProbeResult:
    """Time the model's network on random tiles (about ``seconds`` per setting)."""
    from nucseg_rt.predict import OnnxNet
    from nucseg_rt.registry import resolve_model

    if not batch_sizes or any(int(b) != b or b < 1 for b in batch_sizes):
        raise InvalidInputError(f"`batch_sizes` must be whole numbers >= 1, got {batch_sizes!r}")
    if seconds <= 0:
        raise InvalidInputError(f"`seconds` must be > 0, got {seconds!r}")
    resolved = resolve_model(model, precision=precision)
    timings = {}
    rng = np.random.default_rng(0)
    for t in threads or _thread_choices():
        net = OnnxNet(resolved.path, ["CPUExecutionProvider"], threads=t)
        for b in batch_sizes:
            x = rng.random((b, net.info.nchan, 224, 224), dtype=np.float32)
            net(x)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds or n < 2:
                net(x)
                n += 1
            timings[(int(b), int(t))] = (time.perf_counter() - t0) / (n * b) * 1e3
    return ProbeResult(resolved.name, precision, timings)


def save_probe(result: ProbeResult, home: str | os.PathLike | None = None) -> Path:
    """Store the fastest setting for ``result.precision`` in the registry folder."""
    from nucseg_rt.io import atomic_write
    from nucseg_rt.registry import registry_home

    root = registry_home(home)
    root.mkdir(parents=True, exist_ok=True)
    path = root / PROBE_FILE
    data = _read(path)
    b, t = result.best
    data[result.precision] = {"batch_size": b, "threads": t, "model": result.model,
                              "ms_per_tile": round(result.timings[(b, t)], 2),
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
    """The saved ``{"batch_size", "threads"}`` for ``precision``, or {} if never probed."""
    from nucseg_rt.registry import registry_home

    entry = _read(registry_home(home) / PROBE_FILE).get(precision, {})
    ok = all(isinstance(entry.get(k), int) and entry[k] >= 1 for k in ("batch_size", "threads"))
    return {"batch_size": entry["batch_size"], "threads": entry["threads"]} if ok else {}
