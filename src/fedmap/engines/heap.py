"""Two glibc allocator settings for the vectorised engine's worker threads (no-ops elsewhere).

PyTorch's CPU tensors come from ``malloc``. glibc keeps freed memory for reuse,
per thread arena, so a run's resident size grows with every worker thread and
never shrinks; docs/performance.md measures what these two calls save.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any


def release_free_heap() -> None:
    """Hand memory that glibc keeps after a round's frees back to the OS (no-op elsewhere).

    glibc keeps freed memory for reuse: without this the resident size of a
    Fashion-MNIST run grows by ~300 MB over the first rounds. ``malloc_trim``
    costs a few milliseconds per round.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def share_malloc_arena() -> None:
    """Let worker threads allocate from the main malloc arena (glibc; no-op elsewhere).

    By default glibc gives each thread its own arena, and each keeps its freed
    memory: ~80 MB more at peak for two client threads on Fashion-MNIST, with no
    measurable speed difference when they share (allocations here are few and
    large). Process-wide, so called only when the worker threads start.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


_M_ARENA_MAX = -8  # from glibc's malloc.h
_LIBC: list[Any] = []


def _glibc() -> Any:
    """The C library when it is glibc on Linux, else None (looked up once)."""
    if not _LIBC:
        libc = None
        if sys.platform.startswith("linux"):
            try:
                candidate = ctypes.CDLL("libc.so.6")
                libc = candidate if hasattr(candidate, "malloc_trim") else None
            except OSError:
                libc = None
        _LIBC.append(libc)
    return _LIBC[0]
