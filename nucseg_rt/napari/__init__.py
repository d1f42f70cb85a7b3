"""napari plugin ``nucseg-rt``: the "Segment nuclei (3D)" dock widget and the example volume.

Installed with ``pip install 'nucseg-rt[napari]'``; napari finds it through the
``napari.manifest`` entry point (``napari.yaml`` beside this file). Importing this package
imports neither napari nor Qt: the widget lives in ``_widget``, its GUI-free logic in
``_logic`` and the sample data in ``_sample``.
"""
