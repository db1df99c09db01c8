"""Process figures for ``/metrics`` (RSS, CPU time, open fds, threads, asyncio tasks), read when
scraped.

Linux /proc only; elsewhere they read 0 rather than fail a scrape.
"""

from __future__ import annotations

import asyncio
import os
import time

__all__ = ["asyncio_tasks", "cpu_seconds", "open_fds", "rss_bytes"]


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """CPU time (user + system) of every thread of this process: ``rate()`` of it over calls
    in progress is the CPU one call costs (docs/deploy.md sizes nodes with it)."""
    return time.process_time()


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def asyncio_tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (rendered from a thread)
        return 0
