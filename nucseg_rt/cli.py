"""The ``nucseg-rt`` command line: segment volumes, manage models, convert Cellpose models.

Each command parses its options, calls the library (:mod:`nucseg_rt.batch`,
:mod:`nucseg_rt.models.registry`, :class:`nucseg_rt.Segmenter`) and prints. Heavy modules are
imported inside the commands, so ``--help`` is instant. Errors raised on purpose by
nucseg-rt (and OS errors such as a full disk) end as one line on stderr and a non-zero
exit code; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional  # noqa: UP035 (typer on 3.10)

import typer

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    name="nucseg-rt", no_args_is_help=True, add_completion=False,
    pretty_exceptions_show_locals=False, context_settings={"help_option_names": ["-h", "--help"]},
    help="Cellpose-3-compatible 3D nuclei segmentation on ONNX Runtime, without PyTorch.")

class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    fp32 = "fp32"
    int8 = "int8"
    fp16 = "fp16"


class WorkAvoidanceChoice(str, Enum):
    default = "default"
    plain = "plain"


class Dynamics(str, Enum):
    stable = "stable"
    cellpose = "cellpose"


class OutputFormat(str, Enum):
    tif = "tif"
    zarr = "zarr"


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")]

# Options of both `segment` and `watch`, defined once (the defaults stay in each signature).
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registered model name or .onnx file.",
                                       rich_help_panel="Model")]
PrecisionOpt = Annotated[Precision, typer.Option(
    help="fp32 (reference), int8 (fast on CPU; `nucseg-rt quantize NAME` makes it) or fp16 "
         "(CUDA).", rich_help_panel="Model")]
AnisotropyOpt = Annotated[float, typer.Option(
    help="Z step / XY pixel size, e.g. 4 for 2 um planes of 0.5 um pixels.",
    rich_help_panel="Algorithm")]
DiameterOpt = Annotated[Optional[float], typer.Option(
    help="Typical nucleus diameter in XY pixels (default: the model's training diameter).",
    rich_help_panel="Algorithm", show_default=False)]
StitchThresholdOpt = Annotated[float, typer.Option(
    help="> 0: segment YX planes in 2D and link masks with IoU above this.",
    rich_help_panel="Algorithm")]
MinSizeOpt = Annotated[int, typer.Option(help="Remove masks smaller than this many voxels.",
                                         rich_help_panel="Algorithm")]
CellprobThresholdOpt = Annotated[float, typer.Option(
    help="Lower to find more and larger nuclei.", rich_help_panel="Algorithm")]
ChannelAxisOpt = Annotated[Optional[int], typer.Option(
    help="Axis holding channels, 0-based (default: from the file, else guessed).",
    rich_help_panel="Input", show_default=False)]
ZAxisOpt = Annotated[Optional[int], typer.Option(
    help="Axis holding Z, 0-based (default: from the file, else the first).",
    rich_help_panel="Input", show_default=False)]
ChanOpt = Annotated[int, typer.Option(help="Channel to segment: 0 gray, 1 red, 2 green, 3 blue.",
                                      rich_help_panel="Input")]
SaveFlowsOpt = Annotated[bool, typer.Option(
    "--save-flows", help="Also write <stem>_flows.npz (flows, cellprob).",
    rich_help_panel="Output")]
OutputFormatOpt = Annotated[OutputFormat, typer.Option(
    help="Labels as <stem>_masks.tif or <stem>_masks.ome.zarr (OME-Zarr labels group).",
    rich_help_panel="Output")]
DeviceOpt = Annotated[Device, typer.Option(rich_help_panel="Hardware")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    help="CPU threads for the network (per stream) and dynamics (default: all cores).",
    rich_help_panel="Hardware", show_default=False)]


# --- error reporting and output -------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if not isinstance(exc, MemoryError) else f"not enough memory ({text})"


def _report(exc: BaseException, debug: bool, source: Path | None = None,
            internal: bool = False) -> None:
    """Print ``error: [source: ]message`` on stderr (the traceback first with ``debug``)."""
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = _one_line(exc)
    if internal:
        message = (f"internal error ({type(exc).__name__}: {message}); "
                   f"please report it with the traceback above")
    if source is not None and not message.startswith(str(source)):
        message = f"{source}: {message}"
    print(f"error: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _reporting(debug: bool):
    """Turn nucseg-rt and OS errors into one stderr line and exit code 1."""
    from nucseg_rt.errors import NucsegError

    try:
        yield
    except (NucsegError, OSError, MemoryError) as exc:
        _report(exc, debug)
        raise typer.Exit(1) from None


def _stderr_console(quiet: bool = False) -> Console:
    """A rich console on stderr, also receiving the ``nucseg_rt`` log (INFO unless quiet)."""
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True, highlight=False)
    log = logging.getLogger("nucseg_rt")
    for handler in [h for h in log.handlers if getattr(h, "_nucseg_cli", False)]:
        log.removeHandler(handler)
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    handler._nucseg_cli = True
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    return console


def _stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


# --- segment -------------------------------------------------------------------------------


def _validate_numbers(*, anisotropy: float, diameter: float | None, batch_size: int | None,
                      threads: int | None, tile_size: int | None = None,
                      streams: int | None = None) -> None:
    """Checks on the command line's numbers, before any file is read or model loaded."""
    from nucseg_rt.errors import InvalidInputError

    if not anisotropy > 0:
        raise InvalidInputError(f"`--anisotropy` must be > 0, got {anisotropy}")
    if diameter is not None and not diameter > 0:
        raise InvalidInputError(f"`--diameter` must be > 0, got {diameter}")
    if batch_size is not None and batch_size < 1:
        raise InvalidInputError(f"`--batch-size` must be >= 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise InvalidInputError(f"`--threads` must be >= 1, got {threads}")
    if streams is not None and not 1 <= streams <= 64:
        raise InvalidInputError(f"`--streams` must be from 1 to 64, got {streams}")
    from nucseg_rt.network.tiling import is_tile_size

    if tile_size is not None and not is_tile_size(tile_size):
        raise InvalidInputError(f"`--tile-size` must be a multiple of 16 from 64 to 1024, "
                                f"got {tile_size}")


def _gather_jobs(paths, folder, img_filter, look_one_level_down, out_dir, save_flows,
                 output_format="tif"):
    from nucseg_rt import batch
    from nucseg_rt.errors import InvalidInputError

    inputs = list(paths or [])
    if folder is not None:
        inputs += batch.find_images(folder, img_filter=img_filter,
                                    look_one_level_down=look_one_level_down)
    if not inputs:
        raise InvalidInputError("no input: give TIFF files or --dir FOLDER")
    jobs = batch.plan_jobs(inputs, out_dir=out_dir, save_flows=save_flows,
                           output_format=output_format)
    folders = {out_dir} if out_dir is not None else {j.masks.parent for j in jobs
                                                     if j.source.exists()}
    for out_folder in folders:
        try:
            batch.check_writable(out_folder)
        except InvalidInputError as exc:
            hint = "" if out_dir is not None else "; write elsewhere with --out-dir"
            raise InvalidInputError(f"{exc}{hint}") from exc
    return jobs


def _load_segmenter(model, ortho, device, precision, threads, batch_size,
                    work_avoidance="default", tile_size=None, streams=None):
    from nucseg_rt import Segmenter

    if threads is not None:
        import numba

        # dynamics: the cores all the streams use
        numba.set_num_threads(min(threads * (streams or 1), numba.config.NUMBA_NUM_THREADS))
    return Segmenter(model, ortho=ortho, device=device, precision=precision, threads=threads,
                     batch_size=batch_size, work_avoidance=work_avoidance, streams=streams,
                     **({} if tile_size is None else {"bsize": tile_size}))


@app.command(no_args_is_help=True)
def segment(
    paths: Annotated[Optional[List[Path]], typer.Argument(
        help="TIFF volumes (Z,Y,X or with channels).", show_default=False)] = None,
    model: ModelOpt = "nuclei_3d",
    ortho: Annotated[Optional[str], typer.Option(
        help="Model for ZY/ZX planes (name or .onnx); default the model's own partner.",
        rich_help_panel="Model")] = None,
    precision: PrecisionOpt = Precision.fp32,
    work_avoidance: Annotated[WorkAvoidanceChoice, typer.Option(
        help="'default': skip network work that does not change the masks (YX on acquired "
             "planes, compact tiles, background tiles); 'plain': exactly Cellpose's passes.",
        rich_help_panel="Algorithm")] = WorkAvoidanceChoice.default,
    anisotropy: AnisotropyOpt = 1.0,
    diameter: DiameterOpt = None,
    stitch_threshold: StitchThresholdOpt = 0.0,
    dp_smooth: Annotated[float, typer.Option(
        help="Gaussian sigma for smoothing the flows before dynamics (0 = off).",
        rich_help_panel="Algorithm")] = 0.0,
    min_size: MinSizeOpt = 15,
    cellprob_threshold: CellprobThresholdOpt = 0.0,
    flow_threshold: Annotated[Optional[float], typer.Option(
        help="Flow-error check in 2D/stitch mode (default: 0.4); does not apply in 3D.",
        rich_help_panel="Algorithm", show_default=False)] = None,
    niter: Annotated[Optional[int], typer.Option(
        help="Dynamics iterations (default: 200, scaled with the diameter).",
        rich_help_panel="Algorithm", show_default=False)] = None,
    no_resample: Annotated[bool, typer.Option(
        "--no-resample", help="Run dynamics on the network grid (faster, coarser).",
        rich_help_panel="Algorithm")] = False,
    dynamics: Annotated[Dynamics, typer.Option(
        help="'stable' (default) or 'cellpose' (exactly Cellpose 3.1).",
        rich_help_panel="Algorithm")] = Dynamics.stable,
    folder: Annotated[Optional[Path], typer.Option(
        "--dir", help="Segment every TIFF in this folder.", rich_help_panel="Input")] = None,
    img_filter: Annotated[str, typer.Option(
        help="With --dir: only files whose name (without extension) ends with this.",
        rich_help_panel="Input")] = "",
    look_one_level_down: Annotated[bool, typer.Option(
        "--look-one-level-down", help="With --dir: also its sub-folders.",
        rich_help_panel="Input")] = False,
    channel_axis: ChannelAxisOpt = None,
    z_axis: ZAxisOpt = None,
    chan: ChanOpt = 0,
    chan2: Annotated[int, typer.Option(help="Optional second channel: 0 none, 1-3.",
                                       rich_help_panel="Input")] = 0,
    invert: Annotated[bool, typer.Option("--invert", help="Invert the image (dark nuclei).",
                                         rich_help_panel="Input")] = False,
    out_dir: Annotated[Optional[Path], typer.Option(
        help="Folder for the outputs (default: next to each input).", show_default=False,
        rich_help_panel="Output")] = None,
    save_flows: SaveFlowsOpt = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing outputs (default: skip files already done).",
        rich_help_panel="Output")] = False,
    output_format: OutputFormatOpt = OutputFormat.tif,
    block_size: Annotated[Optional[str], typer.Option(
        help="Segment in blocks of N (or Z,Y,X) voxels plus a halo, with seamless labels "
             "(default: blocks only when the volume does not fit --max-memory).",
        rich_help_panel="Large volumes", show_default=False)] = None,
    max_memory: Annotated[Optional[str], typer.Option(
        help="Memory budget, e.g. 4GB (default: half the physical memory; per worker on "
             "--scheduler local).", rich_help_panel="Large volumes", show_default=False)] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        help="Compute blocks on dask: 'local' (a LocalCluster) or tcp://HOST:PORT "
             "(needs the large extra).", rich_help_panel="Large volumes",
        show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Worker processes for --scheduler local (default 2).",
        rich_help_panel="Large volumes", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Blockwise: reuse the blocks an interrupted run wrote.",
        rich_help_panel="Large volumes")] = True,
    device: DeviceOpt = Device.auto,
    batch_size: Annotated[Optional[int], typer.Option(
        help="224x224 tiles per network call (default: 2 on the CPU, 8 on CUDA).",
        rich_help_panel="Hardware")] = None,
    tile_size: Annotated[Optional[int], typer.Option(
        help="Tile edge for the network, a multiple of 16 from 64 to 1024 (default 224, "
             "Cellpose's; other sizes change the flows slightly, see `nucseg-rt info --probe`).",
        rich_help_panel="Hardware", show_default=False)] = None,
    threads: ThreadsOpt = None,
    streams: Annotated[Optional[int], typer.Option(
        help="Network sessions running planes side by side, the cores shared out between them "
             "(default: the probe's choice, `nucseg-rt info --probe --save`; else 2 on the CPU, "
             "1 with --threads or on CUDA).",
        rich_help_panel="Hardware", show_default=False)] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Segment nuclei in 3D volumes; writes <stem>_masks.tif (and <stem>_flows.npz)."""
    console = _stderr_console(quiet)
    with _reporting(debug):
        _validate_numbers(anisotropy=anisotropy, diameter=diameter, batch_size=batch_size,
                          threads=threads, tile_size=tile_size, streams=streams)
        from nucseg_rt.blockwise.run import settings_from_cli

        large = settings_from_cli(block_size=block_size, max_memory=max_memory,
                                  scheduler=scheduler, workers=workers, resume=resume)
        jobs = _gather_jobs(paths, folder, img_filter, look_one_level_down, out_dir, save_flows,
                            output_format.value)
        from nucseg_rt import batch

        segmenter = None
        if any(batch.pending_outputs(job, overwrite=overwrite) for job in jobs):
            segmenter = _load_segmenter(model, ortho, device.value, precision.value, threads,
                                        batch_size, work_avoidance.value, tile_size, streams)
        from nucseg_rt.params import Normalization

        options = dict(anisotropy=anisotropy, diameter=diameter, stitch_threshold=stitch_threshold,
                       dp_smooth=dp_smooth, min_size=min_size, niter=niter,
                       cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold,
                       resample=not no_resample, dynamics_method=dynamics.value, chan=chan,
                       chan2=chan2, normalize=Normalization(invert=True) if invert else None)
    rows = _run_jobs(jobs, segmenter, options, console, channel_axis=channel_axis, z_axis=z_axis,
                     overwrite=overwrite, debug=debug, large=large)
    _print_summary(rows)
    raise typer.Exit(1 if any(row[-1].startswith("failed") for row in rows) else 0)


def _run_jobs(jobs, segmenter, options, console, *, channel_axis, z_axis, overwrite, debug,
              large=None):
    """Segment each job under a progress display; return summary rows."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from nucseg_rt import batch
    from nucseg_rt.errors import NucsegError

    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with contextlib.ExitStack() as stack:
        client = None
        if large is not None and large.scheduler is not None:
            from nucseg_rt.blockwise.dask import LazyClient

            # one cluster for the batch, started when the first file needs it
            client = stack.enter_context(LazyClient(large.scheduler, workers=large.workers))
        bar = stack.enter_context(Progress(*columns, console=console, transient=False))
        files = bar.add_task("files", total=len(jobs))
        for job in jobs:
            planes = bar.add_task(f"  {job.source.name}", total=None)

            def progress(stage: str, done: int, total: int, task=planes, name=job.source.name):
                bar.update(task, description=f"  {name} {stage}", completed=done, total=total)

            try:
                res = batch.segment_file(segmenter, job, options=options, overwrite=overwrite,
                                         channel_axis=channel_axis, z_axis=z_axis,
                                         progress=progress, large=large, client=client)
                rows.append(_row(job.source, res))
            except (NucsegError, OSError, MemoryError) as exc:
                _report(exc, debug, source=job.source)
                rows.append(_row(job.source, failure=_one_line(exc)))
            except Exception as exc:  # a bug: report it, keep going with the other files
                _report(exc, True, source=job.source, internal=True)
                rows.append(_row(job.source, failure="internal error"))
            bar.remove_task(planes)
            bar.advance(files)
    return rows


def _row(source: Path, result=None, failure: str | None = None) -> tuple[str, ...]:
    """Summary row: file, shape, nuclei found, seconds, status."""
    if failure is not None:
        return (str(source), "-", "-", "-", f"failed: {failure}")
    if result.status == "skipped":
        return (str(source), "-", "-", "-", "skipped (outputs exist)")
    return (str(source), "x".join(map(str, result.shape)), str(result.n_nuclei),
            f"{result.seconds:.1f}", f"done{result.note}")


def _print_summary(rows) -> None:
    from rich.table import Table

    table = Table(title="nucseg-rt segment")
    for column in ("file", "shape", "nuclei found", "seconds", "status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _stdout_console().print(table)
    counts = {key: sum(row[-1].startswith(key) for row in rows)
              for key in ("done", "skipped", "failed")}
    print(", ".join(f"{n} {key}" for key, n in counts.items()))


# --- watch ------------------------------------------------------------------------------------


def _service_log(quiet: bool, debug: bool) -> None:
    """Plain, time-stamped log lines on stderr (one per event, never wrapped): the service's
    (``nucseg_rt.watch``) and the pipeline's warnings."""
    log = logging.getLogger("nucseg_rt")
    for handler in [h for h in log.handlers if getattr(h, "_nucseg_cli", False)]:
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler._nucseg_cli = True
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False
    # the service's own lines; the pipeline's INFO details only with --debug
    logging.getLogger("nucseg_rt.watch").setLevel(
        logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)


@app.command(no_args_is_help=True)
def watch(
    folder: Annotated[Path, typer.Argument(
        help="Folder to watch for new volumes: TIFF files and OME-Zarr / zarr folders.",
        show_default=False)],
    out_dir: Annotated[Path, typer.Option(
        help="Folder for the masks and one <input name>.json status record per volume.",
        show_default=False, rich_help_panel="Output")],
    model: ModelOpt = "nuclei_3d",
    precision: PrecisionOpt = Precision.fp32,
    anisotropy: AnisotropyOpt = 1.0,
    diameter: DiameterOpt = None,
    stitch_threshold: StitchThresholdOpt = 0.0,
    min_size: MinSizeOpt = 15,
    cellprob_threshold: CellprobThresholdOpt = 0.0,
    channel_axis: ChannelAxisOpt = None,
    z_axis: ZAxisOpt = None,
    chan: ChanOpt = 0,
    save_flows: SaveFlowsOpt = False,
    output_format: OutputFormatOpt = OutputFormat.tif,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = None,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the folder.",
                                        rich_help_panel="Watching")] = 1.0,
    settle: Annotated[float, typer.Option(
        help="Seconds a volume's size and modification time must stay unchanged before it is "
             "read.", rich_help_panel="Watching")] = 2.0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Segment each volume written into FOLDER, once complete, until Ctrl-C or SIGTERM.

    The model stays loaded; a file that cannot be segmented is recorded as failed and the
    service goes on; a restart skips files already done. Exit code 0 after SIGTERM, 130 after
    Ctrl-C (SIGINT); a file being segmented is abandoned and redone on the next start.
    """
    _service_log(quiet, debug)
    import threading

    from nucseg_rt import watch as service

    stop = threading.Event()
    try:
        with service.stop_on_signals(stop) as received, _reporting(debug):
            _validate_numbers(anisotropy=anisotropy, diameter=diameter, batch_size=None,
                              threads=threads)
            settings = service.WatchSettings(poll=poll, settle=settle, save_flows=save_flows,
                                             output_format=output_format.value,
                                             channel_axis=channel_axis, z_axis=z_axis)
            service.check_folders(folder, out_dir)
            segmenter = _load_segmenter(model, None, device.value, precision.value, threads,
                                        None)
            options = dict(anisotropy=anisotropy, diameter=diameter, min_size=min_size,
                           stitch_threshold=stitch_threshold,
                           cellprob_threshold=cellprob_threshold, chan=chan)
            summary = service.watch_folder(folder, out_dir, segmenter, options=options,
                                           settings=settings, stop=stop)
    except KeyboardInterrupt:  # a second Ctrl-C: the current file's record is back to queued
        print("interrupted", file=sys.stderr, flush=True)
        raise typer.Exit(130) from None
    import signal

    name = signal.Signals(received[0]).name if received else "stop"
    logging.getLogger("nucseg_rt.watch").info(
        "stopped (%s): %d done, %d failed, %d abandoned in this run", name, summary.done,
        summary.failed, summary.abandoned)
    raise typer.Exit(130 if received and received[0] == signal.SIGINT else 0)


# --- model registry ----------------------------------------------------------------------------


def _describe(metadata: dict, key: str) -> str:
    return metadata.get(key, "") or "-"


@app.command("add-model")
def add_model(
    file: Annotated[Path, typer.Argument(help="ONNX model, or Cellpose 3 model file "
                                              "(converted; needs the export extra).")],
    name: Annotated[Optional[str], typer.Option(
        help="Registry name (default: the file name).", show_default=False)] = None,
    ortho: Annotated[Optional[Path], typer.Option(help="Model for ZY/ZX planes.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a model of that name.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also make its int8 variant "
                                                      "(see `nucseg-rt quantize`).")] = False,
    calibration: Annotated[Optional[Path], typer.Option(
        help="With --int8: folder of TIFF z-stacks to calibrate on (default: synthetic nuclei).",
        show_default=False)] = None,
    debug: DebugOpt = False,
) -> None:
    """Validate a model and copy it into the registry (with its sha256)."""
    _stderr_console()
    with _reporting(debug):
        from nucseg_rt.models import registry

        if calibration is not None and not int8:
            raise typer.BadParameter("--calibration needs --int8")
        rec = registry.add_model(file, name=name, ortho=ortho, force=force)
        has_ortho = "yes" if rec.files.ortho_path else "no"
        print(f"added {rec.name!r} (diam_mean {_describe(rec.metadata, 'diam_mean')}, "
              f"nchan {_describe(rec.metadata, 'nchan')}, ortho {has_ortho}) -> {rec.files.path}")
        if int8:
            _quantize(rec.name, "int8", calibration, force=True)


@app.command("models")
def models(debug: DebugOpt = False) -> None:
    """List registered models (the bundled default is marked)."""
    from rich.table import Table

    with _reporting(debug):
        from nucseg_rt.models import registry

        records = registry.list_models()
        home = registry.registry_home()
    table = Table(title="nucseg-rt models")
    for column in ("name", "diam_mean", "nchan", "ortho", "size", "precisions", "source"):
        table.add_column(column, overflow="fold")
    for rec in records:
        label = f"{rec.name} (default)" if rec.name == registry.BUNDLED_DEFAULT else rec.name
        table.add_row(label, _describe(rec.metadata, "diam_mean"), _describe(rec.metadata, "nchan"),
                      "yes" if rec.files.ortho_path else "no", f"{rec.size / 1e6:.1f} MB",
                      ", ".join(["fp32", *rec.variants]), "bundled" if rec.bundled else rec.source)
    console = _stdout_console()
    console.print(table)
    if not records:
        console.print("no models: add one with `nucseg-rt add-model FILE --name NAME`")
    console.print(f"registry: {home}")


@app.command("remove-model")
def remove_model(name: Annotated[str, typer.Argument(help="Registered model name.")],
                 debug: DebugOpt = False) -> None:
    """Remove a model from the registry and delete its files."""
    with _reporting(debug):
        from nucseg_rt.models import registry

        rec = registry.remove_model(name)
    print(f"removed {rec.name!r}")


@app.command("model-info")
def model_info(spec: Annotated[str, typer.Argument(help="Registered name or .onnx file.",
                                                   metavar="NAME")],
               debug: DebugOpt = False) -> None:
    """Show a model's files, hashes, integrity and metadata."""
    with _reporting(debug):
        from nucseg_rt.models import modelfile
        from nucseg_rt.models import registry
        from nucseg_rt.errors import ModelNotFoundError

        try:
            rec = registry.model_info(spec)
        except ModelNotFoundError:
            if not Path(spec).is_file():
                raise
            metadata, _ = modelfile.inspect_model(spec)
            fields = {"file": spec, "sha256": modelfile.sha256_file(spec)}
        else:
            metadata = rec.metadata
            fields = {"name": rec.name, "bundled": str(rec.bundled), "source": rec.source,
                      "added": rec.added, "precisions": ", ".join(["fp32", *rec.variants]),
                      "file": str(rec.files.path), "sha256": rec.files.sha256,
                      "ortho file": str(rec.files.ortho_path or "-"),
                      "integrity": _integrity(rec)}
    console = _stdout_console()
    fields.update((f"metadata {key}", value) for key, value in sorted(metadata.items()))
    for key, value in fields.items():
        console.print(f"{key:>24}: {value}", markup=False)


def _integrity(rec) -> str:
    from nucseg_rt.models import registry
    from nucseg_rt.errors import ModelIntegrityError, ModelNotFoundError

    try:
        registry.verify_model(rec)
    except (ModelIntegrityError, ModelNotFoundError) as exc:
        return f"FAILED, loading will be refused: {_one_line(exc)}"
    return "ok"


# --- environment, conversion, training ------------------------------------------------------------


@app.command("info")
def info(
    probe: Annotated[bool, typer.Option(
        "--probe", help="Time the network for each batch size and thread count, and per pixel "
                        "for tile sizes (~40 s).")] = False,
    save: Annotated[bool, typer.Option(
        "--save", help="With --probe: use the fastest setting by default from now on.")] = False,
    model: Annotated[str, typer.Option(help="With --probe: model to time.")] = "nuclei_3d",
    precision: Annotated[Precision, typer.Option(
        help="With --probe: precision to time.")] = Precision.fp32,
    seconds: Annotated[float, typer.Option(
        help="With --probe: seconds of timing per setting.")] = 1.5,
    debug: DebugOpt = False,
) -> None:
    """Versions, execution providers, registry location, numba threading layer."""
    from importlib import metadata

    if probe:
        with _reporting(debug):
            _probe(model, precision.value, save, seconds)
        return
    if save:
        with _reporting(debug):
            from nucseg_rt.errors import InvalidInputError

            raise InvalidInputError("--save needs --probe")
    with _reporting(debug):
        import onnxruntime

        from nucseg_rt.models import registry

        rows = [("python", sys.version.split()[0])]
        for dist in ("nucseg-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "numba",
                     "tifffile", "typer", "rich", "torch"):
            try:
                rows.append((dist, metadata.version(dist)))
            except metadata.PackageNotFoundError:
                if dist not in ("onnxruntime", "onnxruntime-gpu"):
                    rows.append((dist, "not installed"))
        rows.append(("onnxruntime providers", ", ".join(onnxruntime.get_available_providers())))
        home = registry.registry_home()
        rows.append(("registry", f"{home}" + ("" if home.exists() else " (not created yet)")))
        rows.append(("models", ", ".join(r.name for r in registry.list_models()) or "none"))
        rows.append(("numba threading layer", _numba_threading()))
    for key, value in rows:
        print(f"{key:>22}: {value}")


def _probe(model: str, precision: str, save: bool, seconds: float) -> None:
    from nucseg_rt.models.probe import run_probe, save_probe

    result = run_probe(model, precision=precision, seconds=seconds)
    print(f"{result.model} ({precision}), ms per 224x224 tile:")
    for (b, t), ms in sorted(result.timings.items()):
        mark = "  <- fastest single stream" if (b, t) == result.best else ""
        print(f"  batch {b:2d}, threads {t:2d}: {ms:7.1f}{mark}")
    b1, t1 = result.best
    best = result.best_setting
    for (n, tn), ms in sorted(result.stream_timings.items()):
        mark = "  <- fastest" if (n, tn) == (best["streams"], best["threads"]) else ""
        print(f"  batch {b1:2d}, {n} streams of {tn} thread{'s' if tn > 1 else ''}: "
              f"{ms:7.1f}{mark}")
    b, t, n = best["batch_size"], best["threads"], best["streams"]
    if result.tile_timings:
        print(f"ms per megapixel by tile size (one stream, threads {t1}):")
        for size, ms in sorted(result.tile_timings.items()):
            print(f"  tile {size:4d}: {ms:7.0f}")
        ref, size = result.tile_timings.get(224), result.best_tile
        if ref is not None and size != 224 and result.tile_timings[size] < 0.9 * ref:
            print(f"tiles of {size} cost {1 - result.tile_timings[size] / ref:.0%} less per pixel "
                  f"here: try --tile-size {size} (flows then differ slightly from Cellpose's)")
        else:
            print("tile size: 224 (Cellpose's) is within 10% of the fastest per pixel here")
    flags = f"--batch-size {b} --threads {t} --streams {n}"
    if save:
        print(f"saved to {save_probe(result)}: {flags} are now the defaults")
    else:
        print(f"use {flags} (or run again with --save)")


def _numba_threading() -> str:
    import numba

    @numba.njit(parallel=True, cache=False)
    def probe(n):
        total = 0
        for i in numba.prange(n):
            total += i
        return total

    probe(8)
    return f"{numba.threading_layer()} ({numba.get_num_threads()} threads)"


@app.command("export-cellpose")
def export_cellpose(
    file: Annotated[Path, typer.Argument(help="Cellpose 3 model file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .onnx file.")],
    ortho: Annotated[Optional[Path], typer.Option(
        help="Cellpose 3 model for ZY/ZX planes.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Convert a Cellpose 3 model to ONNX (needs the export extra: PyTorch)."""
    _stderr_console()
    with _reporting(debug):
        from nucseg_rt.models import modelfile
        from nucseg_rt.errors import InvalidInputError

        modelfile.existing_model_file(file)
        if out.exists() and not force:
            raise InvalidInputError(f"{out} already exists; use --force to replace it")
        report = modelfile.convert_cellpose(file, out, ortho=ortho)
    diff = getattr(report, "max_abs_diff", None)
    checked = f" (max |onnxruntime - torch| = {diff:.2e})" if diff is not None else ""
    print(f"wrote {out}{checked}")


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _run_export_tool(ctx: typer.Context, submodule: str, purpose: str, debug: bool) -> None:
    """Hand the remaining arguments to ``nucseg_rt_export.<submodule>.main(argv)``."""
    with _reporting(debug):
        from nucseg_rt.models.modelfile import import_export_module

        tool = import_export_module(submodule, purpose=purpose)
        code = tool.main(list(ctx.args))
    raise typer.Exit(int(code or 0))


@app.command("train", context_settings=_PASS_THROUGH)
def train(ctx: typer.Context, debug: DebugOpt = False) -> None:
    """Train a Cellpose-compatible network (needs the export extra); arguments are passed on.

    Run `nucseg-rt train -- --help` for the trainer's options.
    """
    _run_export_tool(ctx, "train", "training", debug)


@app.command("make-crops", context_settings=_PASS_THROUGH)
def make_crops(ctx: typer.Context, debug: DebugOpt = False) -> None:
    """Cut YX/ZY/ZX training crops from z-stacks and labels (needs the export extra).

    Run `nucseg-rt make-crops -- --help` for the crop maker's options.
    """
    _run_export_tool(ctx, "crops", "making training crops", debug)


@app.command("quantize")
def quantize(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    calibration: Annotated[Optional[Path], typer.Option(
        help="Folder of TIFF z-stacks like yours to calibrate on (default: synthetic nuclei).",
        show_default=False)] = None,
    precision: Annotated[Precision, typer.Option(
        help="int8 (CPU) or fp16 (CUDA).")] = Precision.int8,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing variant.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Add a registered model's int8 (or fp16) variant; run it with --precision int8."""
    _stderr_console()
    with _reporting(debug):
        if precision == Precision.fp32:
            raise typer.BadParameter("--precision must be int8 or fp16 (fp32 is the model itself)")
        _quantize(name, precision.value, calibration, force=force)


def _quantize(name: str, precision: str, calibration, *, force: bool) -> None:
    import logging

    from nucseg_rt.models.quantize import quantize_registered

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs per tensor
    record, reports = quantize_registered(name, precision=precision, calibration=calibration,
                                          force=force)
    for role, rep in zip(("model", "ortho"), reports):
        print(f"{name} {role} -> {precision}: flow correlation with fp32 "
              f"{rep.flow_correlation:.4f}, inside/outside agreement {rep.cellprob_agreement:.4f} "
              f"on {rep.n_check_tiles} held-out tiles ({rep.seconds:.0f} s)")
    print(f"added the {precision} variant of {name!r} -> {record.variants[precision].path}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    try:
        app(args=argv, prog_name="nucseg-rt")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
