"""What the command line prints, and the one path every error takes.

An error carries the library parameter(s) it concerns (``err.param``, see
:mod:`nucseg_rt.errors`); :func:`say_flags` turns each into the flag the current command has for
it (`` `channel_axis` `` -> `` `--channel-axis` ``, table :data:`SAID`), so a message names what
the user typed. Log records name theirs in ``extra={"param": ...}``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

from nucseg_rt.errors import describe_error, params_of

__all__ = ["CliState", "SAID", "say_flags", "report", "stderr_console", "stdout_console"]

#: library parameters the command line says otherwise than by a flag of the same name
SAID = {"vol": "the image", "rescale": "the zoom (diam_mean / `--diameter`)",
        "dynamics_method": "`--dynamics`", "method": "`--dynamics`", "bsize": "`--tile-size`"}


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c in "_-`"


def _replace_bare(message: str, name: str, flag: str) -> str:
    """``name=value`` -> ``flag value`` and ``name`` -> ``flag`` where ``name`` stands alone
    (``pass z_axis=0``), not inside a longer word or path."""
    out, i = [], 0
    while (j := message.find(name, i)) >= 0:
        end = j + len(name)
        alone = ((j == 0 or not _is_word_char(message[j - 1]))
                 and (end == len(message) or not (message[end].isalnum() or message[end] == "_")))
        out.append(message[i:j])
        if alone and message.startswith("=", end):
            out.append(f"{flag} ")
            end += 1
        else:
            out.append(flag if alone else name)
        i = end
    return "".join(out) + message[i:]


def say_flags(message: str, params, flags: dict[str, str]) -> str:
    """``message`` with each library parameter of ``params`` said as the command line says it:
    its flag (``flags``: parameter name -> flag of the running command) or :data:`SAID`."""
    for name in params:
        flag = flags.get(name)
        said = f"`{flag}`" if flag is not None else SAID.get(name)
        if said is None:
            continue
        if name == "rescale":  # "`rescale`=2.5 resizes": the zoom, as the user did not give it
            message = message.replace("`rescale`=", f"{said} ")
        message = message.replace(f"`{name}`", said)
        if flag is not None and "_" in name:
            message = _replace_bare(message, name, flag)
    return message


@dataclass
class CliState:
    """One run of the command line: ``--debug``, the command's flag names, Ctrl-C handling.

    While the command runs, SIGINT raises ``KeyboardInterrupt`` (exit 130) except inside
    :meth:`cancellable`, where the first one only sets ``cancel``: the running work stops at its
    next check (the network's stream threads finish their batch of tiles first, so no thread is
    left inside onnxruntime), and a second one raises ``KeyboardInterrupt``. Once the command
    has returned (:meth:`finish`), a SIGINT changes nothing: its outcome stands.
    """

    debug: bool = False
    flags: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    interrupted_reported: bool = False
    _cancellable: bool = False
    _finished: bool = False

    def on_sigint(self, signum, frame) -> None:
        first = not self.cancel.is_set()
        self.cancel.set()
        if self._finished or (self._cancellable and first):
            return
        raise KeyboardInterrupt

    def finish(self) -> None:
        """The command has returned: from now on SIGINT raises nothing."""
        self._finished = True

    @contextlib.contextmanager
    def installed(self, then=None) -> Iterator[None]:
        """Install :meth:`on_sigint` while the command line runs (main thread only); afterwards
        the previous handler, or ``then`` (``signal.SIG_IGN`` when the process ends next: a
        SIGINT while Python shuts down would otherwise kill it by the signal)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self.on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous if then is None else then)

    @contextlib.contextmanager
    def cancellable(self) -> Iterator[threading.Event]:
        """Within the block a first Ctrl-C sets the yielded event instead of raising."""
        self._cancellable = True
        try:
            yield self.cancel
        finally:
            self._cancellable = False

    def interrupted(self, detail: str = "") -> None:
        """Print the one ``interrupted`` line (once)."""
        if not self.interrupted_reported:
            self.interrupted_reported = True
            print(f"interrupted{': ' + detail if detail else ''}", file=sys.stderr, flush=True)


def report(exc: BaseException, state: CliState, source=None, internal: bool = False,
           message: str | None = None) -> None:
    """Print ``error: [source: ]message`` on stderr (the traceback first with ``--debug``)."""
    if state.debug or internal:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = say_flags(message or describe_error(exc), params_of(exc), state.flags)
    if internal:
        text = f"{text}; please report it with the traceback above"
    if source is not None and not text.startswith(str(source)):
        text = f"{source}: {text}"
    print(f"error: {text}", file=sys.stderr, flush=True)


class _SayFlags(logging.Filter):
    """Log records that name parameters (``extra={"param": ...}``) say the flags instead."""

    def __init__(self, flags: dict):
        super().__init__()
        self.flags = flags

    def filter(self, record: logging.LogRecord) -> bool:
        params = params_of(record)
        if params:
            record.msg, record.args = say_flags(record.getMessage(), params, self.flags), None
        return True


def _install_log_handler(handler: logging.Handler, flags: dict, level: int) -> None:
    log = logging.getLogger("nucseg_rt")
    for old in [h for h in log.handlers if getattr(h, "_nucseg_cli", False)]:
        log.removeHandler(old)
    handler._nucseg_cli = True
    handler.addFilter(_SayFlags(flags))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def stderr_console(state: CliState, quiet: bool = False):
    """A rich console on stderr, also receiving the ``nucseg_rt`` log (INFO; WARNING if quiet)."""
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True, highlight=False)
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    _install_log_handler(handler, state.flags, logging.WARNING if quiet else logging.INFO)
    return console


def plain_log(state: CliState, level: int) -> None:
    """Plain, time-stamped ``nucseg_rt`` log lines on stderr (one per event, never wrapped)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    _install_log_handler(handler, state.flags, level)


def stdout_console():
    from rich.console import Console

    return Console(highlight=False)
