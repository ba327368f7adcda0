"""Processes on this machine: find a free port, a process tree, and stop all of it for sure.

What ``fedmap deploy local`` needs to own every Flower process it starts: the
SuperExec and app processes run in sessions of their own, so they are found by
their parentage and by the environment their deployment gave them, read from
``/proc``, and a tree is stopped with SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def send_signal(pid: int, sig: int) -> None:
    """Signal ``pid`` if it still exists."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def parse_json(text: str) -> dict[str, Any]:
    """The JSON object in a command's output (after any log lines); ``{}`` when there is none."""
    start = text.find("{")
    try:
        value = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        value = {}
    return value if isinstance(value, dict) else {}


def with_environment(marker: str) -> set[int]:
    """Live processes whose environment contains ``marker`` (``NAME=value...``)."""
    encoded, found = marker.encode(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if encoded in environ and alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def terminate_tree(
    roots: list[int], more: Callable[[], set[int]], grace_s: float
) -> tuple[set[int], list[int]]:
    """SIGTERM ``roots``, wait ``grace_s`` for their trees, SIGKILL what is left.

    The tree is snapshot first (a child in a session of its own would escape a
    process-group signal) and grows while waiting with new descendants and with
    what ``more`` finds (orphans of a process that died). Returns the whole tree
    and the pids that had to be killed.
    """
    tree = set(roots) | more()
    for pid in roots:
        tree.update(descendants(pid))
    for pid in roots:
        send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        for pid in list(tree):
            tree.update(descendants(pid))
        tree |= more()
        time.sleep(0.2)
    killed = [pid for pid in sorted(tree) if alive(pid)]
    for pid in killed:
        send_signal(pid, signal.SIGKILL)
    return tree, killed
