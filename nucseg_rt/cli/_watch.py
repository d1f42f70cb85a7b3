"""``nucseg-rt watch``: the watch-folder service (:mod:`nucseg_rt.watch`) with the settings of
``segment``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from nucseg_rt.cli._options import (AnisotropyOpt, Backend, BackendOpt, CellprobThresholdOpt, ChannelAxisOpt, ChanOpt,
                                    DebugOpt, Device, DeviceOpt, DiameterOpt, MinSizeOpt,
                                    ModelOpt, OutputFormat, OutputFormatOpt, Precision,
                                    PrecisionOpt, QuietOpt, SaveFlowsOpt, StitchThresholdOpt,
                                    ThreadsOpt, TimeAxisOpt, FramesOpt, LinkOpt, ZAxisOpt, app)

__all__ = ["watch"]


@app.command(no_args_is_help=True)
def watch(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(
        help="Folder to watch for new volumes: TIFF files and OME-Zarr / zarr folders.",
        metavar="FOLDER", show_default=False)],
    out_dir: Annotated[Path, typer.Option(
        help="Folder for the masks and one <input name>.json status record per volume.",
        metavar="DIR", show_default=False, rich_help_panel="Output")],
    model: ModelOpt = "nuclei_3d",
    precision: PrecisionOpt = Precision.fp32,
    anisotropy: AnisotropyOpt = None,
    diameter: DiameterOpt = None,
    stitch_threshold: StitchThresholdOpt = 0.0,
    min_size: MinSizeOpt = None,
    cellprob_threshold: CellprobThresholdOpt = None,
    channel_axis: ChannelAxisOpt = None,
    z_axis: ZAxisOpt = None,
    time_axis: TimeAxisOpt = None,
    frames: FramesOpt = None,
    chan: ChanOpt = 0,
    save_flows: SaveFlowsOpt = False,
    link: LinkOpt = False,
    output_format: OutputFormatOpt = OutputFormat.tif,
    device: DeviceOpt = Device.auto,
    backend: BackendOpt = Backend.auto,
    threads: ThreadsOpt = None,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the folder.", metavar="S",
                                        rich_help_panel="Watching")] = 1.0,
    settle: Annotated[float, typer.Option(
        help="Seconds a volume's size and modification time must stay unchanged before it is "
             "read.", metavar="S", rich_help_panel="Watching")] = 2.0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Segment each volume written into FOLDER, once complete, until Ctrl-C or SIGTERM.

    The model stays loaded; a file that cannot be segmented is recorded as failed and the
    service goes on; a restart skips files already done. Exit code 0 after SIGTERM, 130 after
    Ctrl-C (SIGINT); a file being segmented is abandoned and redone on the next start.
    """
    import signal
    import threading

    from nucseg_rt import EngineOptions, Segmenter
    from nucseg_rt import watch as service
    from nucseg_rt.batch import RunSettings
    from nucseg_rt.cli._report import plain_log
    from nucseg_rt.cli._segment import check_model, parse_diameter
    from nucseg_rt.masks import dynamics_threads
    from nucseg_rt.params import InputSpec, MaskParams

    state = ctx.obj
    plain_log(state, logging.DEBUG if debug else logging.WARNING)
    # the service's own lines; the pipeline's INFO details only with --debug
    logging.getLogger("nucseg_rt.watch").setLevel(
        logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    stop = threading.Event()
    with service.stop_on_signals(stop) as received:
        settings = service.WatchSettings(poll=poll, settle=settle)
        inputs = InputSpec(channel_axis=channel_axis, z_axis=z_axis, time_axis=time_axis,
                           chan=chan)
        params = MaskParams(min_size=min_size, stitch_threshold=stitch_threshold,
                            cellprob_threshold=cellprob_threshold)
        run = RunSettings(anisotropy=anisotropy, diameter=parse_diameter(diameter),
                          output_format=output_format.value, save_flows=save_flows,
                          frames=frames, link=link)
        engine = EngineOptions(device=device.value, precision=precision.value,
                               backend=backend.value, threads=threads)
        engine.providers()
        check_model(model, None, engine.precision)
        run.check_environment()
        service.check_folders(folder, out_dir)
        with dynamics_threads(threads), Segmenter(model, engine=engine) as segmenter:
            logging.getLogger("nucseg_rt.watch").info("network: %s", segmenter.engine.backend)
            summary = service.watch_folder(folder, out_dir, segmenter, inputs=inputs,
                                           params=params, run=run, settings=settings, cancel=stop)
    name = signal.Signals(received[0]).name if received else "stop"
    logging.getLogger("nucseg_rt.watch").info(
        "stopped (%s): %d done, %d failed, %d abandoned in this run", name, summary.done,
        summary.failed, summary.abandoned)
    if received and received[0] == signal.SIGINT:
        state.interrupted_reported = True  # the log line above says it
        raise typer.Exit(130)
    raise typer.Exit(0)
