"""How many cores this process may use: its CPU affinity, not the machine's count.

A sweep and a local deployment split the cores among their child processes. Under
``taskset`` or a Slurm or container CPU set, ``os.cpu_count()`` overstates them, and
every child would start more torch threads than it has cores (oversubscribed
threads made rounds several times slower).
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: the affinity mask where the OS has one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1
