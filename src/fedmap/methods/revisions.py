"""Which revision of each method's arithmetic this code runs.

A run's config says what was asked, not what the code then did: after a method's
algorithm changes, a finished run and a new one with the same config disagree,
and a sweep that skips finished runs would average the two in one table. So a
finished run records the revision it ran under (``summary.json``,
``method_revision``); ``fedmap sweep`` reports a run made under another revision as
stale instead of skipping it, and reports leave such runs out.

Each method declares its revision (``Method.revision``): bump it in the same
change that alters its results, and say what changed in docs/methods.md. Runs
that predate the field count as revision 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedmap.methods.registry import all_methods


def method_revision(method: str) -> int:
    """The revision of ``method`` (a ``pruning.method`` value) that this code runs (1: unknown)."""
    by_name = {cls.name: cls.revision for cls in all_methods()}
    return by_name.get(method, 1)


def recorded_revision(record: Mapping[str, object]) -> int:
    """The revision a ``summary.json`` or checkpoint records (1 before the field existed)."""
    value = record.get("method_revision", 1)
    return value if isinstance(value, int) else 1


def revision_mismatch(method: str, record: Mapping[str, object]) -> str | None:
    """Why ``record`` (a summary or checkpoint) is not this code's ``method``; None if it is."""
    recorded, current = recorded_revision(record), method_revision(method)
    if recorded == current:
        return None
    return f"ran {method} revision {recorded}, this code runs revision {current} (docs/methods.md)"
