"""The Typer application and the options several commands share (each defined once)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path  # noqa: F401 (used in annotations of the command modules)
from typing import Annotated, Optional  # noqa: UP035 (typer on 3.10)

import typer

from nucseg_rt.params import BACKENDS, DEVICES, DYNAMICS_METHODS, PRECISIONS

app = typer.Typer(
    name="nucseg-rt", no_args_is_help=True, add_completion=False,
    pretty_exceptions_show_locals=False, context_settings={"help_option_names": ["-h", "--help"]},
    help="Cellpose-3-compatible 3D nuclei segmentation on ONNX Runtime, without PyTorch.")


def _version(value: bool) -> None:
    if value:
        from nucseg_rt import __version__

        print(f"nucseg-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Show the version and exit.")] = False) -> None:
    """Cellpose-3-compatible 3D nuclei segmentation on ONNX Runtime, without PyTorch."""


def _choice(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum for Typer from one of the library's choice lists (:mod:`nucseg_rt.params`)."""
    return Enum(name, {v: v for v in values}, type=str)


Device = _choice("Device", DEVICES)
Precision = _choice("Precision", PRECISIONS)
#: the quantized / half variants of a model file (bf16 is arithmetic on the fp32 file, no file)
VARIANTS = tuple(p for p in PRECISIONS[1:] if p != "bf16")
Variant = _choice("Variant", VARIANTS)
Backend = _choice("Backend", BACKENDS)
Dynamics = _choice("Dynamics", DYNAMICS_METHODS)


class WorkAvoidanceChoice(str, Enum):
    default = "default"
    plain = "plain"


class OutputFormat(str, Enum):
    tif = "tif"
    zarr = "zarr"


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")]

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registered model name or .onnx file.",
                                       metavar="NAME|FILE", rich_help_panel="Model")]
PrecisionOpt = Annotated[Precision, typer.Option(
    help="fp32 (reference), int8 (fast on CPU; `nucseg-rt quantize NAME` makes it), fp16 "
         "(CUDA) or bf16 (--backend openvino, CPUs with native bf16).",
    metavar="|".join(PRECISIONS), rich_help_panel="Model")]
BackendOpt = Annotated[Backend, typer.Option(
    help="Network engine: 'auto' (OpenVINO bf16 where it is installed, the CPU has bf16 and "
         "the model records its masks as agreeing with fp32's, else onnxruntime fp32; "
         "`nucseg-rt info` and the summary say why), "
         "'onnxruntime' (exact fp32), or 'openvino' (CPU; pip install 'nucseg-rt[openvino]').",
    metavar="|".join(BACKENDS), rich_help_panel="Hardware")]
AnisotropyOpt = Annotated[Optional[float], typer.Option(
    help="Z step / XY pixel size, e.g. 4 for 2 um planes of 0.5 um pixels (default: from the "
         "file's calibration when it gives both, else 1 with a warning).", metavar="A",
    rich_help_panel="Algorithm", show_default=False)]
DiameterOpt = Annotated[Optional[str], typer.Option(
    help="Typical nucleus diameter in XY pixels, or 'auto' to estimate it per file (default: "
         "the model's training diameter).", metavar="D|auto", rich_help_panel="Algorithm",
    show_default=False)]
StitchThresholdOpt = Annotated[float, typer.Option(
    help="> 0: segment YX planes in 2D and link masks with IoU above this.", metavar="T",
    rich_help_panel="Algorithm")]
MinSizeOpt = Annotated[Optional[int], typer.Option(
    help="Remove masks smaller than this many voxels (default: 5 % of the expected nucleus "
         "volume at the diameter and anisotropy, at least 15; the model may store its own share).",
    metavar="N", rich_help_panel="Algorithm", show_default=False)]
CellprobThresholdOpt = Annotated[Optional[float], typer.Option(
    help="Lower to find more and larger nuclei (default: the model's, 0 for a Cellpose model).",
    metavar="X", rich_help_panel="Algorithm", show_default=False)]
ChannelAxisOpt = Annotated[Optional[int], typer.Option(
    help="Axis holding channels, 0-based (default: from the file, else guessed).", metavar="I",
    rich_help_panel="Input", show_default=False)]
ZAxisOpt = Annotated[Optional[int], typer.Option(
    help="Axis holding Z, 0-based (default: from the file, else the first).", metavar="I",
    rich_help_panel="Input", show_default=False)]
TimeAxisOpt = Annotated[Optional[int], typer.Option(
    help="Axis holding time points, 0-based (default: from the file, never guessed). Each "
         "frame is segmented as its own volume; masks are written as T,Z,Y,X.", metavar="I",
    rich_help_panel="Input", show_default=False)]
FramesOpt = Annotated[Optional[str], typer.Option(
    help="Time-lapses: the frames to segment, from 0, e.g. 0-9,20 (default: all).",
    metavar="SPEC", rich_help_panel="Input", show_default=False)]
LinkOpt = Annotated[bool, typer.Option(
    "--link", help="Time-lapses: a nucleus keeps its label in consecutive frames (by overlap); "
                   "without it labels restart per frame.", rich_help_panel="Output")]
ChanOpt = Annotated[int, typer.Option(help="Channel to segment: 0 gray, 1 red, 2 green, 3 blue.",
                                      metavar="C", rich_help_panel="Input")]
SaveFlowsOpt = Annotated[bool, typer.Option(
    "--save-flows", help="Also write <stem>_flows.npz (flows, cellprob); not for time-lapses "
                         "(refused).",
    rich_help_panel="Output")]
OutputFormatOpt = Annotated[OutputFormat, typer.Option(
    help="Labels as <stem>_masks.tif or <stem>_masks.ome.zarr (OME-Zarr labels group; needs "
         "the large extra).", metavar="tif|zarr", rich_help_panel="Output")]
DeviceOpt = Annotated[Device, typer.Option(
    help="'auto': CUDA when onnxruntime offers it, else the CPU.", metavar="|".join(DEVICES),
    rich_help_panel="Hardware")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    help="CPU threads for the network (per stream) and dynamics (default: all cores).",
    metavar="N", rich_help_panel="Hardware", show_default=False)]
