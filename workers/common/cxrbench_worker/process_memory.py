"""The worker process's memory as the kernel counts it: peak and current resident set size.

Framework-free, so every worker reports it alike. On Linux the figures are VmHWM (peak) and VmRSS
(current) from /proc/self/status, and writing "5" to /proc/self/clear_refs (Linux 4.0+) resets the
peak to the current size. Where /proc is missing, getrusage's ru_maxrss is a peak since the process
started, which cannot be reset, and the current size is unknown (0).
"""

from __future__ import annotations

import re
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
PROC_SOURCE = "/proc/self/status"
RUSAGE_SOURCE = "getrusage"
_RESET_PEAK_RSS = "5"  # clear_refs: "reset the peak resident set size ("high water mark")"
_KILOBYTES = re.compile(r"^(VmHWM|VmRSS):\s+(\d+) kB$", re.MULTILINE)


@dataclass(frozen=True)
class ProcessMemory:
    """Peak and current resident set size of this process, bytes, and where they were read."""

    peak_rss_bytes: int
    rss_bytes: int
    source: str


def read_process_memory() -> ProcessMemory:
    """Peak (since start or the last reset) and current RSS of this process, read in one go."""
    try:
        found = dict(_KILOBYTES.findall(PROC_STATUS.read_text()))
    except OSError:
        found = {}
    if "VmHWM" in found and "VmRSS" in found:
        return ProcessMemory(int(found["VmHWM"]) * 1024, int(found["VmRSS"]) * 1024, PROC_SOURCE)
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return ProcessMemory(peak, 0, RUSAGE_SOURCE)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the kernel does not allow it."""
    try:
        PROC_CLEAR_REFS.write_text(_RESET_PEAK_RSS)
    except OSError:  # no /proc, a kernel before 4.0, or a sandbox that forbids the write
        return False
    return True
