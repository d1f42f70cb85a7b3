"""Models: the registry of named models and the bundled default (``registry``), ONNX and
Cellpose model files (``modelfile``), int8/fp16 variants (``quantize``) and the speed probe
(``probe``)."""
