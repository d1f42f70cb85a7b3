"""Exceptions raised by nucseg-rt.

Each subclasses a built-in so callers can catch either; the CLI turns them into
one line on stderr and a non-zero exit.
"""


class NucsegError(Exception):
    """Base class of every error nucseg-rt raises on purpose."""


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
