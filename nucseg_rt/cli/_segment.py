"""``nucseg-rt segment``: parse, build the typed settings, run the batch runner, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional  # noqa: UP035 (typer on 3.10)

import typer

from nucseg_rt.cli._options import (AnisotropyOpt, Backend, BackendOpt, CellprobThresholdOpt, ChannelAxisOpt, ChanOpt,
                                    DebugOpt, Device, DeviceOpt, DiameterOpt, Dynamics, MinSizeOpt,
                                    ModelOpt, OutputFormat, OutputFormatOpt, Precision,
                                    PrecisionOpt, QuietOpt, SaveFlowsOpt, StitchThresholdOpt,
                                    ThreadsOpt, TimeAxisOpt, FramesOpt, LinkOpt, WorkAvoidanceChoice, ZAxisOpt, app)
from nucseg_rt.params import DYNAMICS_METHODS

__all__ = ["segment", "parse_diameter"]

_LARGE = "Large volumes (need the large extra)"


@app.command(no_args_is_help=True)
def segment(
    ctx: typer.Context,
    paths: Annotated[Optional[List[Path]], typer.Argument(
        help="TIFF or zarr volumes (Z,Y,X or with channels, or time-lapses).", metavar="PATH",
        show_default=False)] = None,
    model: ModelOpt = "nuclei_3d",
    ortho: Annotated[Optional[str], typer.Option(
        help="Model for ZY/ZX planes (name or .onnx); default the model's own partner.",
        metavar="FILE", rich_help_panel="Model")] = None,
    precision: PrecisionOpt = Precision.fp32,
    work_avoidance: Annotated[WorkAvoidanceChoice, typer.Option(
        help="'default': skip network work that does not change the masks (YX on acquired "
             "planes, compact tiles, background tiles); 'plain': exactly Cellpose's passes.",
        metavar="default|plain", rich_help_panel="Algorithm")] = WorkAvoidanceChoice.default,
    anisotropy: AnisotropyOpt = None,
    diameter: DiameterOpt = None,
    stitch_threshold: StitchThresholdOpt = 0.0,
    dp_smooth: Annotated[float, typer.Option(
        help="Gaussian sigma for smoothing the flows before dynamics (0 = off).", metavar="S",
        rich_help_panel="Algorithm")] = 0.0,
    min_size: MinSizeOpt = None,
    cellprob_threshold: CellprobThresholdOpt = None,
    flow_threshold: Annotated[Optional[float], typer.Option(
        help="Flow-error check in 2D/stitch mode (default: 0.4); does not apply in 3D.",
        metavar="X", rich_help_panel="Algorithm", show_default=False)] = None,
    niter: Annotated[Optional[int], typer.Option(
        help="Dynamics iterations (default: 200, scaled with the diameter).", metavar="N",
        rich_help_panel="Algorithm", show_default=False)] = None,
    no_resample: Annotated[bool, typer.Option(
        "--no-resample", help="Run dynamics on the network grid (faster, coarser).",
        rich_help_panel="Algorithm")] = False,
    dynamics: Annotated[Dynamics, typer.Option(
        help="'stable' (default) or 'cellpose' (exactly Cellpose 3.1).",
        metavar="|".join(DYNAMICS_METHODS), rich_help_panel="Algorithm")] = Dynamics.stable,
    folder: Annotated[Optional[Path], typer.Option(
        "--dir", help="Segment every TIFF in this folder.", metavar="DIR",
        rich_help_panel="Input")] = None,
    img_filter: Annotated[str, typer.Option(
        help="With --dir: only files whose name (without extension) ends with this.",
        metavar="TEXT", rich_help_panel="Input")] = "",
    look_one_level_down: Annotated[bool, typer.Option(
        "--look-one-level-down", help="With --dir: also its sub-folders.",
        rich_help_panel="Input")] = False,
    channel_axis: ChannelAxisOpt = None,
    z_axis: ZAxisOpt = None,
    time_axis: TimeAxisOpt = None,
    frames: FramesOpt = None,
    chan: ChanOpt = 0,
    chan2: Annotated[int, typer.Option(help="Optional second channel: 0 none, 1-3.",
                                       metavar="C", rich_help_panel="Input")] = 0,
    invert: Annotated[bool, typer.Option("--invert", help="Invert the image (dark nuclei).",
                                         rich_help_panel="Input")] = False,
    out_dir: Annotated[Optional[Path], typer.Option(
        help="Folder for the outputs, created when the first is written (default: next to each "
             "input).", metavar="DIR", show_default=False, rich_help_panel="Output")] = None,
    save_flows: SaveFlowsOpt = False,
    link: LinkOpt = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing outputs (default: skip files already done).",
        rich_help_panel="Output")] = False,
    output_format: OutputFormatOpt = OutputFormat.tif,
    block_size: Annotated[Optional[str], typer.Option(
        help="Segment in blocks of N (or Z,Y,X) voxels plus a halo, with seamless labels "
             "(default: blocks only when the volume does not fit --max-memory).",
        metavar="N|Z,Y,X", rich_help_panel=_LARGE, show_default=False)] = None,
    max_memory: Annotated[Optional[str], typer.Option(
        help="Memory budget, e.g. 4GB (default: half the physical memory; per worker on "
             "--scheduler local).", metavar="SIZE", rich_help_panel=_LARGE,
        show_default=False)] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        help="Compute blocks on dask: 'local' (a LocalCluster) or tcp://HOST:PORT.",
        metavar="local|tcp://HOST:PORT", rich_help_panel=_LARGE, show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Worker processes for --scheduler local (default 2).", metavar="N",
        rich_help_panel=_LARGE, show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Blockwise: reuse the blocks an interrupted run wrote.",
        rich_help_panel=_LARGE)] = True,
    device: DeviceOpt = Device.auto,
    backend: BackendOpt = Backend.auto,
    batch_size: Annotated[Optional[int], typer.Option(
        help="224x224 tiles per network call (default: 2 on the CPU, 8 on CUDA).", metavar="N",
        rich_help_panel="Hardware", show_default=False)] = None,
    tile_size: Annotated[Optional[int], typer.Option(
        help="Tile edge for the network, a multiple of 16 from 64 to 1024 (default 224, "
             "Cellpose's; other sizes change the flows slightly, see `nucseg-rt info --probe`).",
        metavar="N", rich_help_panel="Hardware", show_default=False)] = None,
    threads: ThreadsOpt = None,
    streams: Annotated[Optional[int], typer.Option(
        help="Network sessions running planes side by side, the cores shared out between them "
             "(default: the probe's choice, `nucseg-rt info --probe --save`; else 2 on the CPU, "
             "1 with --threads or on CUDA).", metavar="N",
        rich_help_panel="Hardware", show_default=False)] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Segment nuclei in 3D volumes; writes <stem>_masks.tif (and <stem>_flows.npz).

    Without --anisotropy, each file's calibration (Z step / pixel size) is used; the summary
    shows the anisotropy and diameter each file ran at and where they came from. A time-lapse
    (time axis from the file or --time-axis) is segmented frame by frame into a T,Z,Y,X
    <stem>_masks.tif; an interrupted run resumes at the next unfinished frame.
    """
    from nucseg_rt import EngineOptions, Segmenter
    from nucseg_rt.batch import BatchRunner, RunSettings
    from nucseg_rt.blockwise.run import LargeSettings
    from nucseg_rt.cli._batch import gather_jobs, run_and_report
    from nucseg_rt.cli._report import stderr_console
    from nucseg_rt.masks import dynamics_threads
    from nucseg_rt.params import InputSpec, MaskParams, Normalization

    state = ctx.obj
    with state.cancellable() as cancel:
        console = stderr_console(state, quiet)
        inputs = InputSpec(channel_axis=channel_axis, z_axis=z_axis, time_axis=time_axis,
                           chan=chan, chan2=chan2,
                           normalize=Normalization(invert=invert))
        params = MaskParams(cellprob_threshold=cellprob_threshold, min_size=min_size,
                            niter=niter, method=dynamics.value, dp_smooth=dp_smooth,
                            stitch_threshold=stitch_threshold, flow_threshold=flow_threshold)
        large = LargeSettings(block_size=block_size, max_memory=max_memory, scheduler=scheduler,
                              workers=workers, resume=resume)
        run = RunSettings(anisotropy=anisotropy, diameter=parse_diameter(diameter),
                          resample=not no_resample, output_format=output_format.value,
                          save_flows=save_flows, overwrite=overwrite, blockwise=large,
                          frames=frames, link=link)
        engine = EngineOptions(device=device.value, precision=precision.value,
                               backend=backend.value, threads=threads,
                               batch_size=batch_size, streams=streams,
                               work_avoidance=work_avoidance.value,
                               **({} if tile_size is None else {"bsize": tile_size}))
        engine.providers()  # the device is there and runs the precision (before any file)
        runner = BatchRunner(lambda: Segmenter(model, ortho=ortho, engine=engine),
                             inputs=inputs, params=params, run=run)
        jobs = gather_jobs(paths, folder, img_filter, look_one_level_down, out_dir, run)
        check_model(model, ortho, engine.precision)
        # numba's threads follow --threads (the cores all the streams use) for this command
        cores = None if threads is None else threads * (streams or 1)
        with dynamics_threads(cores), runner:  # the runner closes what it started
            code, kept = run_and_report(runner, jobs, console, state, cancel, quiet=quiet)
            ran = runner.backend  # None when every file was skipped or refused
        if not quiet and ran is not None:
            print(f"network: {ran}")
    if code == 130:
        state.interrupted(kept)
    raise typer.Exit(code)


def parse_diameter(text: str | None):
    """``--diameter``: None, "auto" or a number (checked by the library)."""
    from nucseg_rt.errors import InvalidInputError

    if text is None or text.strip().lower() == "auto":
        return None if text is None else "auto"
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"`diameter` must be a number > 0 or 'auto', got {text!r}") from None


def check_model(model: str, ortho: str | None, precision: str) -> None:
    """The model (and its variant) exists and is intact, before any file is read (the
    Segmenter loads it once the files' headers are checked)."""
    from nucseg_rt.models import resolve_model

    resolve_model(model, ortho=ortho, precision=precision)
