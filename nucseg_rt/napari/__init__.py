"""napari plugin ``nucseg-rt``: the "Segment nuclei (3D)" dock widget and the example volume.

Installed with ``pip install 'nucseg-rt[napari]'``; napari finds it through the
``napari.manifest`` entry point (``napari.yaml`` beside this file). Importing this package
imports neither napari nor Qt: the widget lives in ``_widget``, its GUI-free logic in
``_logic`` and the sample data in ``_sample``.
"""

from nucseg_rt.napari._logic import (FlowCache, FlowParams, LayerInput, SegmenterCache,
                                     layer_input, run_flows, run_masks)
from nucseg_rt.napari._sample import embryo_small, example_path

#: ``SegmentWidget`` (``_widget``, needs napari and Qt) is napari's to import, through the manifest
__all__ = ["LayerInput", "FlowParams", "FlowCache", "SegmenterCache", "layer_input", "run_flows",
           "run_masks", "embryo_small", "example_path"]
