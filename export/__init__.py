"""nucseg-rt export tools (PyTorch): Cellpose-compatible U-Net, ONNX export, training.

Installed as ``nucseg_rt_export``; needs the ``export`` extra (``pip install 'nucseg-rt[export]'``).
This package imports ``nucseg_rt``, never the reverse: the runtime library does not import it.
Only the command line runs it, when a user asks for a conversion or training
(``nucseg-rt add-model`` with a Cellpose file, ``export-cellpose``, ``train``, ``make-crops``);
``add-model`` hands ``onnx_export.export_cellpose`` to ``nucseg_rt.models.add_model`` as its
``convert`` hook.
"""
