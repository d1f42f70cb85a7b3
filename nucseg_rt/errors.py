"""Exceptions raised by nucseg-rt, the one cancellation check and the one error describer.

Each error subclasses a built-in so callers can catch either; the CLI turns them into one line
on stderr and a non-zero exit. An error about a parameter carries its name in ``param`` (one
name, or a tuple of names), so the CLI can say the flag instead (``anisotropy`` ->
``--anisotropy``) without parsing the message.
"""

from __future__ import annotations

import threading

__all__ = ["NucsegError", "InvalidInputError", "SettingsError", "ModelNotFoundError",
           "ModelFormatError", "ModelIntegrityError", "DeviceUnavailableError",
           "MissingDependencyError", "Cancelled", "ClosedError", "check_cancel", "describe_error", "quoted_names",
           "params_of"]


class NucsegError(Exception):
    """Base class of every error nucseg-rt raises on purpose.

    Parameters
    ----------
    message : str
        Names each parameter as written in the library (`` `anisotropy` ``).
    param : str or tuple of str, optional
        The parameter(s) the error is about, as the library names them. Default: the names the
        message quotes in backticks (the house style: "`` `anisotropy` `` must be > 0, got
        -2.0"), so every error says what it concerns.
    """

    def __init__(self, *args, param: str | tuple[str, ...] | None = None):
        super().__init__(*args)
        self.param = param if param is not None else quoted_names(str(args[0]) if args else "")


class InvalidInputError(NucsegError, ValueError):
    """An array, file or parameter given by the user is not usable."""


class SettingsError(InvalidInputError):
    """A setting of a whole run does not fit the data (e.g. an axis beyond a file's axes, or an
    anisotropy that would need terabytes): a batch stops at once instead of failing every file
    the same way."""


class ModelNotFoundError(NucsegError, LookupError):
    """A model name is not in the registry, or a model file does not exist."""


class ModelFormatError(NucsegError, ValueError):
    """A model file is not what it claims to be (corrupt, wrong kind, bad metadata)."""


class ModelIntegrityError(NucsegError, RuntimeError):
    """A registered model file no longer matches the sha256 recorded when it was added."""


class DeviceUnavailableError(NucsegError, RuntimeError):
    """The requested execution device (e.g. CUDA) is not available in this onnxruntime."""


class MissingDependencyError(NucsegError, ImportError):
    """An optional dependency is needed for this operation; the message says how to install it."""


class Cancelled(NucsegError):
    """A call was cancelled through its ``cancel`` event; nothing was written."""


class ClosedError(NucsegError, ValueError):
    """An object was used after ``close()`` released its resources (e.g. a closed Segmenter).

    A ``ValueError`` like Python's "I/O operation on closed file"."""


def quoted_names(message: str) -> tuple[str, ...]:
    """The identifiers quoted in backticks in ``message``, in order, each once."""
    parts = message.split("`")[1:-1:2] if message.count("`") >= 2 else []
    return tuple(dict.fromkeys(p for p in parts if p.isidentifier()))


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set (None: never)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


def params_of(obj) -> tuple[str, ...]:
    """The parameter names an error (or a log record) carries in ``param``, as a tuple (empty:
    none; a ``param`` that is no name, such as click's, counts as none)."""
    param = getattr(obj, "param", None)
    if isinstance(param, str):
        return (param,)
    if isinstance(param, tuple) and all(isinstance(p, str) for p in param):
        return param
    return ()


def describe_error(exc: BaseException, *, bug: str = "internal error ({kind}: {text})") -> str:
    """One line for a failure: the message, "not enough memory (...)", or for an exception that
    is neither a nucseg-rt error nor the machine's (a bug) ``bug`` filled with its type name
    (``kind``) and message (``text``)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return f"not enough memory ({text})"
    if isinstance(exc, (NucsegError, OSError)):
        return text
    return bug.format(kind=type(exc).__name__, text=text)
