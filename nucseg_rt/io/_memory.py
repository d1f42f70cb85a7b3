"""Memory sizes: the ``max_memory`` a user writes ("4GB", "512 MiB") and the machine's total."""

from __future__ import annotations

import contextlib
import os
import re

from nucseg_rt.errors import InvalidInputError

__all__ = ["parse_memory", "physical_memory"]

_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
          "T": 1e12, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_memory(text: str | int | float, name: str = "max_memory") -> int:
    """Bytes in ``"4GB"``, ``"512 MiB"``, ``"2e9"`` or a number."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not match or match.group(2).upper() not in _UNITS:
            raise InvalidInputError(f"`{name}` must be a size such as '4GB' or '512MiB', got {text!r}")
        value, unit = float(match.group(1)), match.group(2).upper()
    nbytes = int(value * _UNITS[unit])
    if nbytes <= 0:
        raise InvalidInputError(f"`{name}` must be > 0, got {text!r}")
    return nbytes


def physical_memory() -> int:
    """Total physical memory in bytes (``/proc/meminfo`` or ``os.sysconf``; 8 GB if unknown)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return 8 * 10**9
