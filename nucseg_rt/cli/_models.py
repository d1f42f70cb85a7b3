"""Model and environment commands: ``add-model``, ``models``, ``remove-model``, ``model-info``,
``quantize``, ``export-cellpose``, ``info``, ``train``, ``make-crops``.

Converting a Cellpose file (``add-model``, ``export-cellpose``), ``train`` and ``make-crops`` run
the export tool (``nucseg_rt_export``, PyTorch), imported here when a user asks for it: the
runtime library never imports it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Annotated, Optional  # noqa: UP035 (typer on 3.10)

import typer

from nucseg_rt.cli._options import VARIANTS, DebugOpt, Precision, Variant, app
from nucseg_rt.params import PRECISIONS

__all__ = ["add_model", "models", "remove_model", "model_info", "quantize", "export_cellpose",
           "info", "train", "make_crops"]

EXPORT_HINT = "pip install 'nucseg-rt[export]'"


def _describe(metadata: dict, key: str) -> str:
    return metadata.get(key, "") or "-"


# --- registry -----------------------------------------------------------------------------------


@app.command("add-model", no_args_is_help=True)
def add_model(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="ONNX model, or Cellpose 3 model file "
                                              "(converted; needs the export extra).",
                                         metavar="FILE")],
    name: Annotated[Optional[str], typer.Option(
        help="Registry name (default: the file name).", metavar="NAME",
        show_default=False)] = None,
    ortho: Annotated[Optional[Path], typer.Option(help="Model for ZY/ZX planes.",
                                                  metavar="FILE")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a model of that name.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also make its int8 variant "
                                                      "(see `nucseg-rt quantize`).")] = False,
    calibration: Annotated[Optional[Path], typer.Option(
        help="With --int8: folder of TIFF z-stacks to calibrate on (default: synthetic nuclei).",
        metavar="DIR", show_default=False)] = None,
    check: Annotated[Optional[Path], typer.Option(
        help="With --int8: folder of other TIFF z-stacks to check the int8 copy against fp32 on "
             "(default: synthetic nuclei).", metavar="DIR", show_default=False)] = None,
    debug: DebugOpt = False,
) -> None:
    """Validate a model and copy it into the registry (with its sha256)."""
    from nucseg_rt.cli._report import stderr_console
    from nucseg_rt.errors import InvalidInputError
    from nucseg_rt.models import add_model

    stderr_console(ctx.obj)
    for flag, value in (("--calibration", calibration), ("--check", check)):
        if value is not None and not int8:
            raise InvalidInputError(f"{flag} needs --int8")
    rec = add_model(file, name=name, ortho=ortho, force=force, convert=_convert_cellpose)
    has_ortho = "yes" if rec.files.ortho_path else "no"
    kind = "" if rec.precision == "fp32" else f" as {rec.precision} model"
    print(f"added {rec.name!r}{kind} (diam_mean {_describe(rec.metadata, 'diam_mean')}, "
          f"nchan {_describe(rec.metadata, 'nchan')}, ortho {has_ortho}) -> {rec.files.path}")
    if int8:
        _quantize(rec.name, "int8", calibration, check, force=True)


@app.command("models")
def models(debug: DebugOpt = False) -> None:
    """List registered models (the bundled default is marked)."""
    from rich.table import Table
    from rich.text import Text

    from nucseg_rt.cli._report import stdout_console
    from nucseg_rt.models import BUNDLED_DEFAULT, list_models, registry_home

    records = list_models()
    home = registry_home()
    table = Table(title="nucseg-rt models")
    for column in ("name", "diam_mean", "nchan", "ortho", "size", "precisions", "source"):
        table.add_column(column, overflow="fold")
    for rec in records:
        label = f"{rec.name} (default)" if rec.name == BUNDLED_DEFAULT else rec.name
        cells = (label, _describe(rec.metadata, "diam_mean"), _describe(rec.metadata, "nchan"),
                 "yes" if rec.files.ortho_path else "no", f"{rec.size / 1e6:.1f} MB",
                 ", ".join(rec.precisions), "bundled" if rec.bundled else rec.source)
        table.add_row(*(Text(c) for c in cells))
    console = stdout_console()
    console.print(table)
    if not records:
        console.print("no models: add one with `nucseg-rt add-model FILE --name NAME`",
                      markup=False)
    console.print(f"registry: {home}", markup=False)


@app.command("remove-model", no_args_is_help=True)
def remove_model(name: Annotated[str, typer.Argument(help="Registered model name.",
                                                     metavar="NAME")],
                 debug: DebugOpt = False) -> None:
    """Remove a model from the registry and delete its files."""
    from nucseg_rt.models import remove_model as remove_from_registry

    rec = remove_from_registry(name)
    print(f"removed {rec.name!r}")


@app.command("model-info", no_args_is_help=True)
def model_info(spec: Annotated[str, typer.Argument(help="Registered name or .onnx file.",
                                                   metavar="NAME")],
               debug: DebugOpt = False) -> None:
    """Show a model's files, hashes, integrity and metadata."""
    from nucseg_rt.cli._report import stdout_console
    from nucseg_rt.errors import ModelNotFoundError
    from nucseg_rt.models import inspect_model, sha256_file
    from nucseg_rt.models import model_info as registry_entry

    try:
        rec = registry_entry(spec)
    except ModelNotFoundError:
        if not Path(spec).is_file():
            raise
        metadata, _ = inspect_model(spec)
        fields = {"file": spec, "sha256": sha256_file(spec)}
    else:
        metadata = rec.metadata
        fields = {"name": rec.name, "bundled": str(rec.bundled), "source": rec.source,
                  "added": rec.added, "precisions": ", ".join(rec.precisions),
                  "file": str(rec.files.path), "sha256": rec.files.sha256,
                  "ortho file": str(rec.files.ortho_path or "-"), "integrity": _integrity(rec)}
    console = stdout_console()
    fields.update((f"metadata {key}", value) for key, value in sorted(metadata.items()))
    for key, value in fields.items():
        console.print(f"{key:>24}: {value}", markup=False)


def _integrity(rec) -> str:
    from nucseg_rt.errors import ModelIntegrityError, ModelNotFoundError, describe_error
    from nucseg_rt.models import verify_model

    try:
        verify_model(rec)
    except (ModelIntegrityError, ModelNotFoundError) as exc:
        return f"FAILED, loading will be refused: {describe_error(exc)}"
    return "ok"


@app.command("quantize", no_args_is_help=True)
def quantize(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.", metavar="NAME")],
    calibration: Annotated[Optional[Path], typer.Option(
        help="Folder of TIFF z-stacks like yours to calibrate on (default: synthetic nuclei).",
        metavar="DIR", show_default=False)] = None,
    check: Annotated[Optional[Path], typer.Option(
        help="Folder of other TIFF z-stacks to check the variant against fp32 on (default: "
             "synthetic nuclei).", metavar="DIR", show_default=False)] = None,
    precision: Annotated[Variant, typer.Option(
        help="int8 (CPU) or fp16 (CUDA).", metavar="|".join(VARIANTS))] = Variant.int8,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing variant.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Add a registered model's int8 (or fp16) variant; run it with --precision int8."""
    from nucseg_rt.cli._report import stderr_console

    stderr_console(ctx.obj)
    _quantize(name, precision.value, calibration, check, force=force)


def _quantize(name: str, precision: str, calibration, check, *, force: bool) -> None:
    import logging

    from nucseg_rt.models import quantize_registered

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs per tensor
    record, reports = quantize_registered(name, precision=precision, calibration=calibration,
                                          check=check, force=force)
    where = " (synthetic)" if check is None else f" of {check}"
    for role, rep in zip(("model", "ortho"), reports):
        print(f"{name} {role} -> {precision}: flow correlation with fp32 "
              f"{rep.flow_correlation:.4f}, inside/outside agreement {rep.cellprob_agreement:.4f} "
              f"on {rep.n_check_tiles} held-out tiles{where} ({rep.seconds:.0f} s)")
    print(f"added the {precision} variant of {name!r} -> {record.variants[precision].path}")


# --- environment, conversion, training ------------------------------------------------------------


@app.command("info")
def info(
    probe: Annotated[bool, typer.Option(
        "--probe", help="Time the network for each batch size and thread count, and per pixel "
                        "for tile sizes (~40 s).")] = False,
    save: Annotated[bool, typer.Option(
        "--save", help="With --probe: use the fastest setting by default from now on.")] = False,
    model: Annotated[str, typer.Option(help="Model whose mask defaults to show (with --probe: to time).",
                                       metavar="NAME")] = "nuclei_3d",
    precision: Annotated[Precision, typer.Option(
        help="With --probe: precision to time.", metavar="|".join(PRECISIONS))] = Precision.fp32,
    seconds: Annotated[float, typer.Option(
        help="With --probe: seconds of timing per setting.", metavar="S")] = 1.5,
    debug: DebugOpt = False,
) -> None:
    """Versions, execution providers, registry location, mask-stage threads."""
    from nucseg_rt.errors import InvalidInputError

    if probe:
        from nucseg_rt.cli._probe import print_probe

        if precision.value == "bf16":
            raise InvalidInputError("`precision` 'bf16' runs with `backend` 'openvino' only; "
                                    "the probe times onnxruntime (fp32, int8 or fp16)",
                                    param="precision")
        print_probe(model, precision.value, save, seconds)
        return
    if save:
        raise InvalidInputError("--save needs --probe")
    from nucseg_rt.cli._probe import environment

    for key, value in [*environment(), *_model_rows(model)]:
        print(f"{key:>22}: {value}")


def _model_rows(model: str) -> list[tuple[str, str]]:
    """What ``segment`` uses for ``model`` when --backend, --cellprob-threshold and --min-size
    are not given (from the model's metadata; without a registered model, the engine for a
    model with no measurements)."""
    from nucseg_rt.cli._probe import backend_rows
    from nucseg_rt.errors import NucsegError
    from nucseg_rt.models import registry
    from nucseg_rt.params import CELLPOSE_MIN_SIZE, MaskDefaults

    try:
        metadata = registry.model_info(model).metadata
        d = MaskDefaults.from_metadata(metadata)
    except (NucsegError, ValueError):
        return backend_rows()
    return [*backend_rows(metadata), (f"{model} threshold", f"{d.cellprob_threshold:g} in 3D (three views summed), "
                                   f"{d.stitch_cellprob_threshold:g} in stitch mode "
                                   "(--cellprob-threshold)"),
            (f"{model} min size", f"{d.min_size_fraction:.0%} of the expected nucleus volume "
                                  "(pi/6 d^3 / anisotropy, at most the stack's depth), at least "
                                  f"{CELLPOSE_MIN_SIZE} voxels (--min-size)"),
            (f"{model} side views", f"weight {d.ortho_weight:g} in the cell probability "
                                    "(1: Cellpose's sum)")]


@app.command("export-cellpose", no_args_is_help=True)
def export_cellpose(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Cellpose 3 model file.", metavar="FILE")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .onnx file.",
                                      metavar="OUT.onnx")],
    ortho: Annotated[Optional[Path], typer.Option(
        help="Cellpose 3 model for ZY/ZX planes.", metavar="FILE")] = None,
    ortho_min_anisotropy: Annotated[Optional[float], typer.Option(
        help="Use the ortho model only for stacks at least this anisotropic (stored in its "
             "metadata); default: always.", metavar="A")] = None,
    default_cellprob_threshold: Annotated[Optional[float], typer.Option(
        help="Store a default cell-probability threshold for this model (calibrated; default: "
             "none, Cellpose's 0).", metavar="X", rich_help_panel="Calibrated defaults")] = None,
    default_min_size_fraction: Annotated[Optional[float], typer.Option(
        help="Store the size filter's share of the expected nucleus volume (0-1).",
        metavar="F", rich_help_panel="Calibrated defaults")] = None,
    ortho_weight: Annotated[Optional[float], typer.Option(
        help="Store the ZY/ZX views' weight in the cell probability (0-1; 1 is Cellpose's sum).",
        metavar="W", rich_help_panel="Calibrated defaults")] = None,
    agreement: Annotated[Optional[list[str]], typer.Option(
        help="Store a measured agreement with onnxruntime fp32, BACKEND/PRECISION=AP "
             "(benchmarks/agreement.py; e.g. openvino/bf16=0.995): --backend auto runs it when "
             "AP >= 0.99. Repeatable.", metavar="B/P=AP",
        rich_help_panel="Calibrated defaults")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Convert a Cellpose 3 model to ONNX (needs the export extra: PyTorch)."""
    from nucseg_rt.cli._report import stderr_console
    from nucseg_rt.errors import InvalidInputError
    from nucseg_rt.models import existing_model_file

    stderr_console(ctx.obj)
    existing_model_file(file)
    if out.exists() and not force:
        raise InvalidInputError(f"{out} already exists; use --force to replace it")
    if ortho_min_anisotropy is not None and (ortho is None or not ortho_min_anisotropy >= 1):
        raise InvalidInputError("--ortho-min-anisotropy needs --ortho and must be >= 1, "
                                f"got {ortho_min_anisotropy}")
    given = {k: v for k, v in (("cellprob_threshold", default_cellprob_threshold),
                               ("min_size_fraction", default_min_size_fraction),
                               ("ortho_weight", ortho_weight)) if v is not None}
    defaults = None
    if given:
        from nucseg_rt.params import MaskDefaults

        defaults = MaskDefaults(**given)  # checked before the conversion starts
    report = _convert_cellpose(file, out, ortho=ortho, ortho_min_anisotropy=ortho_min_anisotropy,
                               mask_defaults=defaults, agreement=_parse_agreement(agreement))
    diff = getattr(report, "max_abs_diff", None)
    checked = f" (max |onnxruntime - torch| = {diff:.2e})" if diff is not None else ""
    print(f"wrote {out}{checked}")


def _parse_agreement(items: list[str] | None) -> dict[str, float] | None:
    """``--agreement BACKEND/PRECISION=AP`` values as a dict (checked before any conversion)."""
    from nucseg_rt.errors import InvalidInputError
    from nucseg_rt.params import BACKENDS, PRECISIONS

    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        backend, _, precision = key.partition("/")
        try:
            ap = float(value)
        except ValueError:
            ap = -1.0
        if backend not in BACKENDS[1:] or precision not in PRECISIONS or not 0 <= ap <= 1:
            raise InvalidInputError(f"--agreement must be BACKEND/PRECISION=AP (backend "
                                    f"{' or '.join(BACKENDS[1:])}, precision one of "
                                    f"{', '.join(PRECISIONS)}, AP in [0, 1]), got {item!r}",
                                    param="agreement")
        out[key] = ap
    return out or None


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _export_tool(submodule: str, purpose: str) -> ModuleType:
    """Import ``nucseg_rt_export.<submodule>``; a missing PyTorch becomes MissingDependencyError
    with the install hint."""
    from nucseg_rt.errors import MissingDependencyError

    try:
        return importlib.import_module(f"nucseg_rt_export.{submodule}")
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("torch", "onnxscript"):
            raise MissingDependencyError(
                f"{purpose} needs PyTorch, which is not installed: {EXPORT_HINT}") from exc
        raise


def _convert_cellpose(src, out, *, ortho=None, ortho_min_anisotropy: float | None = None,
                      mask_defaults=None, agreement: dict[str, float] | None = None):
    """Convert a Cellpose 3 model file to ONNX with the export tool, imported only when a file
    needs converting (the converter ``add-model`` hands to :func:`nucseg_rt.models.add_model`).

    Returns ``nucseg_rt_export.onnx_export.export_cellpose``'s report; with ``ortho`` the ortho
    network is written beside ``out`` and named in its metadata, with ``ortho_min_anisotropy``
    the least anisotropy it is used at, with ``mask_defaults`` those stored in its metadata.
    """
    export = _export_tool("onnx_export", "converting a Cellpose model")
    return export.export_cellpose(src, out, ortho=ortho, ortho_min_anisotropy=ortho_min_anisotropy,
                                  mask_defaults=mask_defaults, agreement=agreement)


def _run_export_tool(ctx: typer.Context, submodule: str, purpose: str) -> None:
    """Hand the remaining arguments to ``nucseg_rt_export.<submodule>.main(argv)``."""
    tool = _export_tool(submodule, purpose)
    code = tool.main(list(ctx.args))
    raise typer.Exit(int(code or 0))


@app.command("train", context_settings=_PASS_THROUGH)
def train(ctx: typer.Context, debug: DebugOpt = False) -> None:
    """Train a Cellpose-compatible network (needs the export extra); arguments are passed on.

    Run `nucseg-rt train -- --help` for the trainer's options.
    """
    _run_export_tool(ctx, "train", "training")


@app.command("make-crops", context_settings=_PASS_THROUGH)
def make_crops(ctx: typer.Context, debug: DebugOpt = False) -> None:
    """Cut YX/ZY/ZX training crops from z-stacks and labels (needs the export extra).

    Run `nucseg-rt make-crops -- --help` for the crop maker's options.
    """
    _run_export_tool(ctx, "crops", "making training crops")
