"""``nucseg-rt info``: the environment, and the probe's timings (``--probe``)."""

from __future__ import annotations

import sys

__all__ = ["environment", "print_probe", "backend_rows"]


def environment() -> list[tuple[str, str]]:
    """(name, value) rows: versions, providers, registry, the mask stage's threads."""
    from importlib import metadata

    import onnxruntime

    from nucseg_rt.models import registry

    rows = [("python", sys.version.split()[0])]
    for dist in ("nucseg-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "numba",
                 "tifffile", "typer", "rich", "torch", "openvino"):
        try:
            rows.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            if dist not in ("onnxruntime", "onnxruntime-gpu"):
                rows.append((dist, "not installed"))
    rows.append(("onnxruntime providers", ", ".join(onnxruntime.get_available_providers())))
    home = registry.registry_home()
    rows.append(("registry", f"{home}" + ("" if home.exists() else " (not created yet)")))
    rows.append(("models", ", ".join(r.name for r in registry.list_models()) or "none"))
    rows.append(("mask-stage threads", _mask_threads()))
    return rows


def backend_rows(metadata: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Which network engine ``--backend auto`` runs for a model with this ``metadata`` (its
    measured agreement with fp32) and why, and whether OpenVINO bf16 is possible here."""
    from nucseg_rt.errors import NucsegError
    from nucseg_rt.network.engine import model_agreement, resolve_backend

    rows = [("backend (auto)", str(resolve_backend("auto", "fp32",
                                                   agreement=model_agreement(metadata))))]
    try:
        from nucseg_rt.network._openvino import cpu_supports_bf16

        bf16 = ("yes (--backend openvino --precision bf16)" if cpu_supports_bf16()
                else "no (the CPU has no native bf16)")
    except NucsegError as exc:  # OpenVINO not installed: the message has the install hint
        bf16 = f"no ({exc})"
    rows.append(("openvino bf16", bf16))
    return rows


def print_probe(model: str, precision: str, save: bool, seconds: float) -> None:
    """Time the network (batch size x threads, streams, tile sizes) and print the results."""
    from nucseg_rt.models import run_probe, save_probe

    result = run_probe(model, precision=precision, seconds=seconds)
    print(f"{result.model} ({precision}), ms per 224x224 tile:")
    for (b, t), ms in sorted(result.timings.items()):
        mark = "  <- fastest single stream" if (b, t) == result.best else ""
        print(f"  batch {b:2d}, threads {t:2d}: {ms:7.1f}{mark}")
    b1, t1 = result.best
    best = result.best_setting
    for (n, tn), ms in sorted(result.stream_timings.items()):
        mark = "  <- fastest" if (n, tn) == (best["streams"], best["threads"]) else ""
        print(f"  batch {b1:2d}, {n} streams of {tn} thread{'s' if tn > 1 else ''}: "
              f"{ms:7.1f}{mark}")
    b, t, n = best["batch_size"], best["threads"], best["streams"]
    if result.tile_timings:
        _print_tiles(result, t1)
    flags = f"--batch-size {b} --threads {t} --streams {n}"
    if save:
        print(f"saved to {save_probe(result)}: {flags} are now the defaults")
    else:
        print(f"use {flags} (or run again with --save)")


def _print_tiles(result, threads: int) -> None:
    print(f"ms per megapixel by tile size (one stream, threads {threads}):")
    for size, ms in sorted(result.tile_timings.items()):
        print(f"  tile {size:4d}: {ms:7.0f}")
    ref, size = result.tile_timings.get(224), result.best_tile
    if ref is not None and size != 224 and result.tile_timings[size] < 0.9 * ref:
        print(f"tiles of {size} cost {1 - result.tile_timings[size] / ref:.0%} less per pixel "
              f"here: try --tile-size {size} (flows then differ slightly from Cellpose's)")
    else:
        print("tile size: 224 (Cellpose's) is within 10% of the fastest per pixel here")


def _mask_threads() -> str:
    """The threads of the numba kernels (resampling, dynamics, postprocessing): Python threads
    over nogil kernels, as many as numba's thread count (``--threads`` sets it per run)."""
    import numba

    return f"{numba.get_num_threads()} (numba's thread count; --threads sets it per run)"
