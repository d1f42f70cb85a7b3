"""The network stage: onnxruntime sessions and providers, YX/ZY/ZX planes, work avoidance and
streams (``predict``), and the tile grid with its blending (``tiling``)."""
