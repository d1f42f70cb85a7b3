"""Running the command line: parse, dispatch, and the one error path (usage errors included)."""

from __future__ import annotations

import contextlib
import sys

from nucseg_rt.cli._report import CliState, report

#: Cellpose command-line spellings -> ours (a flag with ``_`` spelt ``-`` is found without a list)
CELLPOSE_FLAGS = {
    "--pretrained_model": "--model NAME|FILE", "--pretrained_model_ortho": "--ortho FILE",
    "--use_gpu": "--device cuda", "--gpu_device": "--device cuda", "--savedir": "--out-dir DIR",
    "--diam": "--diameter D", "--diam_mean": "--diameter D (diam_mean is the model's)",
    "--image_path": "the PATH arguments", "--flow3D_smooth": "--dp-smooth S",
    "--do_3D": "nothing: 3D is the default (--stitch-threshold T for 2D + stitching)",
    "--add_model": "`nucseg-rt add-model FILE`", "--save_tif": "nothing: masks are TIFF",
    "--verbose": "nothing: progress is shown (-q for less)", "--exclude_on_edges": None,
}


def run(argv: list[str] | None = None, *, last: bool = False) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); return the exit code.

    A Ctrl-C at any moment gives 130 (one ``interrupted`` line), or the command's own code when
    it came after the command returned. ``last``: the process ends after this call, so Ctrl-C
    stays ignored (no death by the signal while Python shuts down); else the previous SIGINT
    handler is restored, as is the ``nucseg_rt`` logger (the command's handlers, level and
    propagation are its own: a program calling ``run`` gets its logging back).
    """
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    state = CliState(debug="--debug" in argv)
    with state.installed(then=signal.SIG_IGN if last else None), _own_logger():
        try:
            try:
                code = _dispatch(argv, state)
            finally:
                state.finish()  # a KeyboardInterrupt can only come before this line
        except KeyboardInterrupt:  # e.g. while an error line was printed
            code = 130
        if code == 130:
            state.interrupted()
    _forget_keyboard_interrupt()  # handled here: neither the CLI nor a program calling run dies of it
    return code


def _forget_keyboard_interrupt() -> None:
    """Clear CPython's "unhandled KeyboardInterrupt" flag once ``run`` has handled the interrupt.

    CPython sets that flag when a KeyboardInterrupt leaves code run from a string (``exec`` of
    source text, as ``dataclasses`` and ``typing`` do while modules import) and, at exit, kills
    the process by SIGINT if it is still set, even though the interrupt was caught and handled
    further up (here: exit 130 with one ``interrupted`` line became a death by the signal, -2,
    for a Ctrl-C during the command's imports). Running source text resets the flag."""
    exec("pass", {})  # noqa: S102 - a constant; resets the flag (CPython's run_eval_code_obj)


@contextlib.contextmanager
def _own_logger():
    """The ``nucseg_rt`` logger as it was before the command, once it returns."""
    import logging

    log = logging.getLogger("nucseg_rt")
    handlers, level, propagate = list(log.handlers), log.level, log.propagate
    try:
        yield
    finally:
        for h in log.handlers:
            if h not in handlers:
                h.flush()
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate


def _click_exceptions():
    """The click exceptions module Typer uses (click's, or the copy newer Typers ship)."""
    import typer

    return sys.modules[typer.BadParameter.__module__]


def _dispatch(argv: list[str], state: CliState) -> int:
    import typer
    import typer.main

    from nucseg_rt.cli._app import app, flag_names, tidy_help
    from nucseg_rt.errors import NucsegError

    clickx = _click_exceptions()
    command = tidy_help(typer.main.get_command(app))
    state.flags = flag_names(command, argv)
    try:
        code = command.main(args=argv, prog_name="nucseg-rt", standalone_mode=False, obj=state)
    except getattr(clickx, "NoArgsIsHelpError", ()) as exc:
        print(exc.ctx.get_help())
        return 0
    except clickx.UsageError as exc:
        report(exc, state, message=_usage_message(exc))
        return 2
    except typer.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except (NucsegError, OSError, MemoryError) as exc:
        report(exc, state)
        return 1
    except Exception as exc:  # a bug: say so, with the traceback
        report(exc, state, internal=True)
        return 1
    return code if isinstance(code, int) else 0


def _usage_message(exc) -> str:
    text = exc.format_message()
    if isinstance(exc, _click_exceptions().NoSuchOption):
        name = exc.option_name
        ours = CELLPOSE_FLAGS.get(name) if name in CELLPOSE_FLAGS else None
        dashed = name.replace("_", "-")
        if ours is None and dashed != name and exc.ctx is not None and any(
                dashed in p.opts for p in exc.ctx.command.params):
            ours = dashed
        if ours is not None:
            return f"no such option {name} (Cellpose's spelling); nucseg-rt: {ours}"
        if name in CELLPOSE_FLAGS:
            return f"no such option {name}: Cellpose's, not offered by nucseg-rt"
    command = exc.ctx.command_path if exc.ctx is not None else "nucseg-rt"
    return f"{text} (see `{command} --help`)"
