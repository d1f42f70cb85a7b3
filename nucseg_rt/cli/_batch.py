"""Showing a batch run: inputs gathered, a progress display while the runner works, per-file
error lines, the summary table, the exit code."""

from __future__ import annotations

__all__ = ["gather_jobs", "run_and_report", "summary_rows", "print_summary"]


def gather_jobs(paths, folder, img_filter, look_one_level_down, out_dir, run):
    """Jobs for the PATH arguments and ``--dir``; the output folders are checked, not created."""
    from nucseg_rt import batch
    from nucseg_rt.errors import InvalidInputError

    inputs = list(paths or [])
    if folder is not None:
        inputs += batch.find_images(folder, img_filter=img_filter,
                                    look_one_level_down=look_one_level_down)
    if not inputs:
        raise InvalidInputError("no input: give TIFF files, or a folder with `folder`")
    jobs = batch.plan_jobs(inputs, out_dir=out_dir, save_flows=run.save_flows,
                           output_format=run.output_format)
    batch.check_output_folders(jobs, out_dir)
    return jobs


def run_and_report(runner, jobs, console, state, cancel, *,
                   quiet: bool = False) -> tuple[int, str]:
    """Run ``jobs`` under a progress display, report failures as they happen, print the summary;
    return the exit code (0, 1 if a file failed, 130 when interrupted) and, when interrupted,
    what was kept. ``quiet``: no progress display and no summary (errors and warnings only)."""
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from nucseg_rt.cli._report import report

    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False, disable=quiet) as bar:
        files = bar.add_task("files", total=len(jobs))
        current = {"task": None, "name": ""}

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "files":
                if current["task"] is not None:
                    bar.remove_task(current["task"])
                    current["task"] = None
                bar.update(files, completed=done)
                if done < total:
                    current["name"] = escape(jobs[done].source.name)
                    current["task"] = bar.add_task(f"  {current['name']}", total=None)
                return
            if current["task"] is not None:
                bar.update(current["task"], description=f"  {current['name']} {escape(stage)}",
                           completed=done, total=total)

        for result in runner.iter_results(jobs, progress=progress, cancel=cancel):
            results.append(result)
            if result.status == "failed":
                report(result.exception, state, source=result.source,
                       internal=result.internal)
        if current["task"] is not None:
            bar.remove_task(current["task"])
    if not quiet:
        print_summary(summary_rows(results, jobs, state.flags))
    if cancel.is_set():
        done = sum(r.status == "done" for r in results)
        left = len(jobs) - sum(r.status != "cancelled" for r in results)
        return 130, (f"{done} file(s) done and kept, {left} not finished (nothing written under "
                     f"their output names)")
    return (1 if any(r.status == "failed" for r in results) else 0), ""


def _source(text: str) -> str:
    """A short label for where a value came from (the log has the full text)."""
    for prefix in ("file", "default", "given", "auto", "model default"):
        if text.startswith(prefix):
            return prefix
    return text


def summary_rows(results, jobs, flags: dict | None = None) -> list[tuple[str, ...]]:
    """file, shape, nuclei found, anisotropy, diameter, min size, seconds, status: one row per
    job; a failure's reason names the flags as the error line does (``flags``: the command's)."""
    rows = []
    by_source = {r.source: r for r in results}
    for job in jobs:
        r = by_source.get(job.source)
        if r is None:
            rows.append((str(job.source), "-", "-", "-", "-", "-", "-", "not started"))
            continue
        shape = "x".join(map(str, r.shape)) if r.shape else "-"
        aniso = f"{r.anisotropy:.3g} ({_source(r.anisotropy_source)})" if r.anisotropy else "-"
        diam = f"{r.diameter:.1f} ({_source(r.diameter_source)})" if r.diameter else "-"
        size = f"{r.min_size} ({r.min_size_source})" if r.min_size is not None else "-"
        status = {"skipped": "skipped (outputs exist)", "cancelled": "interrupted",
                  "failed": f"failed: {_said(r, flags or {})}",
                  "done": f"done{r.note}"}[r.status]
        nuclei = str(r.n_nuclei) if r.status == "done" else "-"
        seconds = f"{r.seconds:.1f}" if r.status in ("done", "cancelled") else "-"
        rows.append((str(r.source), shape if r.status != "skipped" else "-", nuclei,
                     aniso if r.status != "skipped" else "-", diam, size, seconds, status))
    return rows


def _said(result, flags: dict) -> str:
    """A failure's reason as the command line says it (flags, not the library's names)."""
    from nucseg_rt.cli._report import say_flags
    from nucseg_rt.errors import params_of

    return say_flags(result.error or "", params_of(result.exception), flags)


def print_summary(rows) -> None:
    """The summary table on stdout (cells are text, never markup), then the counts."""
    from rich.table import Table
    from rich.text import Text

    from nucseg_rt.cli._report import stdout_console

    table = Table(title="nucseg-rt segment")
    for column in ("file", "shape", "nuclei found", "anisotropy", "diameter", "min size",
                   "seconds", "status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    stdout_console().print(table)
    counts = {key: sum(row[-1].startswith(key) for row in rows)
              for key in ("done", "skipped", "failed")}
    print(", ".join(f"{n} {key}" for key, n in counts.items()))
