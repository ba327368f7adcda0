"""The one in-memory form of a finished run, whichever way it was stored, and a group of seeds.

A run directory (``fedmap report runs/...``) and a grid's committed tables
(:mod:`fedmap.reporting.grid_read`) both fill :class:`RunData`, so every table,
figure and claim reads runs one way. Method names, labels, colours and order come
from the method registry (:mod:`fedmap.methods.registry`), never from a list here.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from fedmap.methods.base import Method
from fedmap.methods.registry import all_methods


def _registered(name: str) -> type[Method] | None:
    return next((cls for cls in all_methods() if cls.name == name), None)


def method_prunes(name: str) -> bool:
    """Whether pruning settings apply to the method (False only for the dense reference)."""
    cls = _registered(name)
    return True if cls is None else cls.prunes


def method_label(name: str) -> str:
    """The method's name in tables and legends (its ``pruning.method`` value if unregistered)."""
    cls = _registered(name)
    return name if cls is None else cls.label


def method_colour(name: str) -> str | None:
    """The method's colour in every figure (None: matplotlib's next colour)."""
    cls = _registered(name)
    return None if cls is None else cls.colour


def method_rank(name: str) -> int:
    """The method's place in tables and figures; unregistered methods after every known one."""
    names = [cls.name for cls in all_methods()]
    return names.index(name) if name in names else len(names)


@dataclass(frozen=True)
class RunData:
    """One finished run: what the report, its figures and the claims read of it.

    Parameters
    ----------
    name
        The run's name (its directory's name).
    source
        Where it was read from (the folder of run directories, or the table file).
    config
        The run's config as nested tables (``config.toml``).
    summary
        ``summary.json``, or the part of it a grid table keeps.
    rows
        Per round, the metrics columns (a grid table keeps the ones the pages use).
    client_accuracy
        The final model's accuracy on each client's local test split.
    partition
        Per client, its training samples per label.
    events
        Rejection and fault events (``events.jsonl``): round, client, kind, reason.
    first_cohort
        The clients that answered round 1 (from the ledger; empty where it was not kept).
    warmup_digest
        SHA-256 prefix over the warm-up rounds' metrics; empty without a dense warm-up
        (:func:`fedmap.reporting.grid_format.warmup_digest`).
    """

    name: str
    source: str
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    client_accuracy: list[float]
    partition: list[list[int]]
    events: list[dict[str, Any]] = field(default_factory=list)
    first_cohort: list[int] = field(default_factory=list)
    warmup_digest: str = ""

    @property
    def method(self) -> str:
        """``pruning.method``."""
        return str(self.config.get("pruning", {}).get("method", "fedmap"))

    @property
    def target(self) -> float | None:
        """Target sparsity; None for a method pruning settings do not apply to (dense FedAvg)."""
        if not method_prunes(self.method):
            return None
        return float(self.config.get("pruning", {}).get("target_sparsity", math.nan))

    @property
    def seed(self) -> int:
        """Run seed."""
        return int(self.config.get("seed", 0))

    @property
    def client_std(self) -> float | None:
        """The std over clients of the final model's local accuracy; None without them.

        A client without a local test split has accuracy NaN: it is left out (as from
        the figures), where it used to make the whole report fail.
        """
        measured = [a for a in self.client_accuracy if not math.isnan(a)]
        return statistics.pstdev(measured) if measured else None

    @property
    def setting(self) -> str:
        """The data setting, e.g. ``IID`` or ``Dirichlet(0.5)``."""
        data = self.config.get("data", {})
        partition = data.get("partition", "iid")
        if partition == "dirichlet":
            label = f"Dirichlet({data.get('alpha')})"
        elif partition == "pathological":
            label = f"pathological({data.get('classes_per_client')} classes)"
        else:
            label = "IID"
        return f"{data.get('name', '')} {label}".strip()


@dataclass
class Group:
    """The seeds of one (setting, method, variant, target)."""

    setting: str
    method: str
    target: float | None
    runs: list[RunData]
    variant: str = ""  # the method's settings where they differ from the report's usual ones

    @property
    def label(self) -> str:
        """The method's name in tables and legends."""
        name = method_label(self.method)
        return f"{name} [{self.variant}]" if self.variant else name

    @property
    def is_reference(self) -> bool:
        """Whether this is the setting's dense reference (a method that does not prune)."""
        return not method_prunes(self.method)

    def values(self, key: str) -> list[float]:
        """``key`` of each run's summary."""
        return [float(r.summary[key]) for r in self.runs]


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"data": {"alpha": 0.5}}`` -> ``{"data.alpha": 0.5}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in flat_config(value).items()})
        else:
            flat[key] = value
    return flat


def nested_config(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flat_config`."""
    config: dict[str, Any] = {}
    for key, value in flat.items():
        *tables, last = key.split(".")
        inner = config
        for table in tables:
            inner = inner.setdefault(table, {})
        inner[last] = value
    return config
