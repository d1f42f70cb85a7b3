"""What the command line prints, and the one path every error takes.

The library names its parameters in messages as `` `channel_axis` ``; :func:`translate` turns
each name the current command has a flag for into that flag (`` `--channel-axis` ``), so a
message names what the user typed. Errors and log lines both go through it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["CliState", "one_line", "translate", "report", "stderr_console", "stdout_console"]

#: library words that are no flag, as the command line should say them
_WORDS = {"`vol`": "the image", "`rescale`=": "the zoom (diam_mean / `--diameter`) ",
          "`dynamics_method`": "`--dynamics`", "`method`": "`--dynamics`",
          "`bsize`": "`--tile-size`"}
_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if not isinstance(exc, MemoryError) else f"not enough memory ({text})"


def translate(message: str, flags: dict[str, str]) -> str:
    """Library parameter names in ``message`` -> the command's flags (``flags``: name -> flag).

    Backticked names are replaced; bare names with an underscore (``pass z_axis=0``) too.
    """
    for word, said in _WORDS.items():
        message = message.replace(word, said)
    message = _NAME.sub(lambda m: f"`{flags[m.group(1)]}`" if m.group(1) in flags else m.group(0),
                        message)
    for name, flag in flags.items():
        if "_" in name:
            message = re.sub(rf"(?<![`\w-]){name}=(\S+)", rf"{flag} \1", message)
            message = re.sub(rf"(?<![`\w-]){name}\b", flag, message)
    return message


@dataclass
class CliState:
    """One run of the command line: ``--debug``, the command's flag names, Ctrl-C handling.

    SIGINT raises ``KeyboardInterrupt`` (Python's default) except inside :meth:`cancellable`,
    where the first one only sets ``cancel``: the running work stops at its next check (the
    network's stream threads finish their batch of tiles first, so no thread is left inside
    onnxruntime), and a second one raises ``KeyboardInterrupt``.
    """

    debug: bool = False
    flags: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    interrupted_reported: bool = False
    _cancellable: bool = False

    def on_sigint(self, signum, frame) -> None:
        if self._cancellable and not self.cancel.is_set():
            self.cancel.set()
            return
        self.cancel.set()
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Install :meth:`on_sigint` while the command line runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self.on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

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
    text = translate(message or one_line(exc), state.flags)
    if internal:
        text = (f"internal error ({type(exc).__name__}: {text}); "
                f"please report it with the traceback above")
    if source is not None and not text.startswith(str(source)):
        text = f"{source}: {text}"
    print(f"error: {text}", file=sys.stderr, flush=True)


class _Translate(logging.Filter):
    def __init__(self, flags: dict):
        super().__init__()
        self.flags = flags

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = translate(record.getMessage(), self.flags), None
        return True


def _install_log_handler(handler: logging.Handler, flags: dict, level: int) -> None:
    log = logging.getLogger("nucseg_rt")
    for old in [h for h in log.handlers if getattr(h, "_nucseg_cli", False)]:
        log.removeHandler(old)
    handler._nucseg_cli = True
    handler.addFilter(_Translate(flags))
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
