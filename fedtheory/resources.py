"""What this machine can give a run: memory available now (not the total), for the guards that
refuse work too large before it starts."""

from __future__ import annotations

import os
from pathlib import Path


def available_memory() -> float | None:
    """Bytes this process may still allocate: the smaller of the kernel's MemAvailable and
    the cgroup (container) limit less its usage; None where neither is known."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(float(line.split()[1]) * 1024)
                break
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = float(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            limits.append(float(limit) - used)
    except (OSError, ValueError):
        pass
    if not limits:
        try:
            limits.append(float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")))
        except (ValueError, OSError, AttributeError):
            return None
    return max(0.0, min(limits))
