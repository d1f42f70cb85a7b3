"""Files and folders written atomically, and the checks on a path before it is read or written.

Every output goes to a hidden temporary name in the destination folder and is renamed into place
with ``os.replace`` on success only, so an interrupted run never leaves a half-written result; the
temporary file or folder is removed on any error (a full disk and ``KeyboardInterrupt`` included).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from nucseg_rt.errors import InvalidInputError

__all__ = ["atomic_write", "atomic_dir", "existing_file", "validate_output_path"]


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a binary file to write ``path`` through, renamed into place on success only.

    The data goes to a hidden temporary file in ``path``'s folder, which is flushed,
    synced and then renamed over ``path`` with ``os.replace`` (atomic on one file
    system). On any error, including ``KeyboardInterrupt`` and a full disk, the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        with open(tmp, "xb") as fh:  # plain open: permissions follow the umask
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder next to ``path``, renamed to ``path`` on success only
    (replacing a folder of that name); on any error the temporary folder is removed."""
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def existing_file(path: str | os.PathLike, *, error: type[Exception] = InvalidInputError,
                  missing: str = "{path}: file does not exist",
                  not_file: str = "{path}: not a file") -> Path:
    """``path`` as a Path, checked to be an existing file before it is read.

    Otherwise raises ``error`` with the message ``missing`` (nothing there) or ``not_file`` (a
    folder or other non-file), each formatted with ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise error(missing.format(path=path))
    if not path.is_file():
        raise error(not_file.format(path=path))
    return path


def validate_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """``path`` as a Path, checked before writing a file: its folder exists, it is not a folder,
    and it does not exist unless ``overwrite``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InvalidInputError(f"output folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InvalidInputError(f"{path} already exists (pass overwrite=True to replace it)")
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder, not a file")
    return path
