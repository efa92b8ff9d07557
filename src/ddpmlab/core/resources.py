"""Memory a computation will need, checked before it allocates: a size that cannot fit is one line that
names the size and the setting, instead of an allocator's traceback or the kernel's OOM killer."""
from __future__ import annotations

import os

from ddpmlab.core.utils import DDPMLabError


def available_memory() -> int | None:
    """Bytes of memory this process can still get: ``MemAvailable`` on Linux, else the physical memory,
    else ``None`` (unknown: nothing is refused)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError


def check_memory(nbytes: float, setting: str, what: str) -> None:
    """Refuse, in one line naming ``setting``, a computation needing ``nbytes`` when less is available."""
    limit = available_memory()
    if limit is not None and nbytes > limit:
        raise DDPMLabError(f"{setting} needs about {format_bytes(nbytes)} of memory for {what}, more than the "
                           f"{format_bytes(limit)} available")
