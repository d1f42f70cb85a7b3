"""Models: named ONNX models with their sha256, checked on every load.

- The registry: :func:`resolve_model` (a name or an ``.onnx`` path -> checked files and
  metadata), :func:`add_model` / :func:`add_variant` / :func:`remove_model`, :func:`list_models`,
  :func:`model_info`, :func:`verify_model`, :func:`registry_home`; the bundled default
  :data:`BUNDLED_DEFAULT` and the :data:`PRECISIONS` a model runs in.
- Model files: :func:`inspect_model` (a static check), :func:`validate_onnx_model` (a run on
  zeros), :func:`read_metadata`, :func:`sha256_file`, :func:`is_torch_file`.
- Variants: :func:`quantize_registered` (int8 / fp16 of a registered model), :func:`quantize_int8`.
- Speed: :func:`run_probe` / :func:`save_probe` measure batch, threads and streams;
  :func:`probe_defaults` applies the saved ones.

Cellpose 3 files are converted only by a converter passed to :func:`add_model` (``convert=``,
e.g. ``nucseg_rt_export.onnx_export.export_cellpose``): the runtime never imports the export tool
or PyTorch.
"""

from nucseg_rt.models.modelfile import (existing_model_file, inspect_model, is_torch_file,
                                        ortho_partner, read_metadata, sha256_file,
                                        validate_onnx_model)
from nucseg_rt.models.probe import ProbeResult, load_probe, probe_defaults, run_probe, save_probe
from nucseg_rt.models.quantize import QuantReport, quantize_int8, quantize_registered
from nucseg_rt.models.registry import (BUNDLED_DEFAULT, PRECISIONS, Converter, ModelFiles,
                                       ModelRecord, ResolvedModel, add_model, add_variant,
                                       list_models, model_info, registry_home, remove_model,
                                       resolve_model, verify_model, write_bundled_index)

__all__ = ["BUNDLED_DEFAULT", "PRECISIONS", "ResolvedModel", "ModelRecord", "ModelFiles",
           "Converter", "resolve_model", "add_model", "add_variant", "remove_model", "list_models",
           "model_info", "verify_model", "registry_home", "write_bundled_index",
           "existing_model_file", "inspect_model", "validate_onnx_model", "read_metadata",
           "sha256_file", "is_torch_file", "ortho_partner",
           "QuantReport", "quantize_int8", "quantize_registered",
           "ProbeResult", "run_probe", "save_probe", "load_probe", "probe_defaults"]
