"""nucseg-rt export tools (PyTorch): Cellpose-compatible U-Net, ONNX export, training.

Installed as ``nucseg_rt_export``; needs the ``export`` extra (``pip install 'nucseg-rt[export]'``).
This package may import ``nucseg_rt``; ``nucseg_rt`` never imports it except lazily from CLI
commands that need torch.
"""
