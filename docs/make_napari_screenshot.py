"""Make docs/napari_plugin.png: the nucseg-rt plugin docked in napari after a run on the example.

    xvfb-run -a python docs/make_napari_screenshot.py [--precision int8] [--out PATH]

Needs the napari extra with a Qt binding (``pip install '.[napari]' pyqt5``) and a display; on a
headless machine Xvfb gives one (Qt's ``offscreen`` platform has no OpenGL for napari's canvas).
Opens the sample ``embryo_small`` from the plugin, docks "Segment nuclei (3D)", runs it with the
defaults (precision as given), shows the middle plane and saves the whole window.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    parser.add_argument("--out", type=Path, default=HERE / "napari_plugin.png")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True, title="napari: nucseg-rt")
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    viewer.open_sample("nucseg-rt", "embryo_small")
    _, widget = viewer.window.add_plugin_dock_widget("nucseg-rt", "Segment nuclei (3D)")
    widget.precision.value = args.precision
    widget.advanced.expand(animate=False)
    finished: list[str] = []
    widget.run_finished.connect(finished.append)
    if not widget.run():
        raise SystemExit(f"the run did not start: {widget.status.value}")
    while not finished:
        app.processEvents()
        time.sleep(0.02)
    if finished[0] != "done":
        raise SystemExit(f"the run ended with {finished[0]}: {widget.status.value}")
    masks = viewer.layers["embryo_small masks"]
    masks.opacity = 0.45
    viewer.dims.set_current_step(0, viewer.layers["embryo_small"].data.shape[0] // 2)
    viewer.layers.selection.active = masks
    _hide_notifications(app)  # e.g. napari's note about the Qt binding
    _settle(app)  # the canvas takes its final size before the view is fitted to it
    viewer.reset_view()
    _settle(app)
    viewer.screenshot(path=str(args.out), canvas_only=False, flash=False)
    print(f"{args.out}: {widget.status.value}")
    widget.shutdown()
    viewer.close()


def _hide_notifications(app) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for w in app.allWidgets():
        if isinstance(w, NapariQtNotification):
            w.hide()


def _settle(app, seconds: float = 1.0) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.02)


if __name__ == "__main__":
    main()
