"""Sample data of the napari plugin: the example volume shipped with nucseg-rt, with its scale."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = "embryo_small.tif"


def example_path(name: str = EXAMPLE) -> Path:
    """Where the shipped example ``name`` is: the installed ``nucseg_rt_examples`` package, or
    the ``examples/`` folder of a source checkout whose ``nucseg_rt`` is on ``sys.path``.

    Raises
    ------
    FileNotFoundError
        Neither place holds the file.
    """
    from importlib.resources import files

    import nucseg_rt

    places = []
    try:
        places.append(Path(str(files("nucseg_rt_examples") / name)))
    except ModuleNotFoundError:
        pass
    places.append(Path(nucseg_rt.__file__).resolve().parents[1] / "examples" / name)
    for path in places:
        if path.is_file():
            return path
    raise FileNotFoundError(f"the example volume {name} is not in this installation (looked in "
                            f"{', '.join(str(p.parent) for p in places)}); reinstall nucseg-rt")


def embryo_small() -> list[tuple]:
    """napari sample data: ``embryo_small`` (24, 192, 192) uint16, scale (2.0, 0.5, 0.5) um.

    Returns
    -------
    list of one napari layer-data tuple ``(data, kwargs, "image")``
    """
    from nucseg_rt.io import read_volume

    path = example_path()
    vol, info = read_volume(path)
    scale = info.voxel_size_zyx or (1.0, 1.0, 1.0)
    meta = {"source": str(path), "unit": info.unit, "axes": info.axes}
    return [(vol, {"name": path.stem, "scale": scale, "metadata": meta}, "image")]
