"""The ``nucseg-rt`` command line: segment volumes, watch a folder, manage models, convert
Cellpose models.

Thin by design: each command parses its options, builds the library's typed settings
(:class:`~nucseg_rt.params.InputSpec`, :class:`~nucseg_rt.params.MaskParams`,
:class:`~nucseg_rt.batch.RunSettings`), calls the library (:mod:`nucseg_rt.batch`,
:mod:`nucseg_rt.watch`, :mod:`nucseg_rt.models`) and reports. Every user error, Typer's own
included, ends as one ``error:`` line on stderr naming the command-line flag, and a non-zero exit
code (``--debug`` adds the traceback); Ctrl-C ends with one ``interrupted`` line and code 130.

Importing this package is cheap: the commands (and their heavy imports) load in :func:`main`.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: runs the command and returns the exit code for ``sys.exit``.

    The process is expected to end next: from the return on, Ctrl-C is ignored (the exit code
    stands; a SIGINT while Python shuts down would otherwise kill the process by the signal).
    """
    from nucseg_rt.cli._main import run

    return run(argv, last=True)
