"""What a Flower run costs beyond the ledger: Flower's own bytes and the nodes' local rounds.

Every round adds :data:`FLOWER_COLUMNS` to the metrics (Flower's bytes both ways
beside the ledger's, the largest framing, the hellos, the nodes greeted, and what
the clients' local rounds cost), ``nodes.csv`` gets one line per node and round,
and ``summary.json`` a ``flower`` summary of the run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from fedmap.flower.nodes import NodeCost

# Columns the Flower run adds to every metrics row.
FLOWER_COLUMNS = (
    "flower_bytes_up",
    "flower_bytes_down",
    "flower_bytes_cum",
    "flower_framing_max",
    "flower_control_bytes",
    "nodes",
    "client_cpu_s_mean",
    "client_peak_rss_mb_max",
)


def round_columns(
    costs: Sequence[NodeCost], control_bytes: int, flower_cum: int, nodes: int
) -> dict[str, Any]:
    """One round's :data:`FLOWER_COLUMNS` from its nodes' costs (every attempt's)."""
    up = sum(c.flower_up for c in costs)
    down = sum(c.flower_down for c in costs)
    framing = [c.flower_down - c.ledger_down for c in costs]
    framing += [c.flower_up - c.ledger_up for c in costs if c.flower_up]
    cpu = [c.cpu_s for c in costs if c.cpu_s == c.cpu_s]
    rss = [c.peak_rss_mb for c in costs if c.peak_rss_mb == c.peak_rss_mb]
    return {
        "flower_bytes_up": up,
        "flower_bytes_down": down,
        "flower_bytes_cum": flower_cum + up + down + control_bytes,
        "flower_framing_max": max(framing, default=0),
        "flower_control_bytes": control_bytes,
        "nodes": nodes,
        "client_cpu_s_mean": round(statistics.fmean(cpu), 4) if cpu else float("nan"),
        "client_peak_rss_mb_max": round(max(rss), 1) if rss else float("nan"),
    }


def summarise_nodes(costs: Sequence[NodeCost], flower_total: int) -> dict[str, Any]:
    """Per-client cost and framing over the run, for ``summary.json`` and the report."""
    answered = [c for c in costs if not math.isnan(c.cpu_s)]
    framing = [c.flower_down - c.ledger_down for c in costs]
    framing += [c.flower_up - c.ledger_up for c in answered]

    def spread(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {"mean": statistics.fmean(values), "max": max(values)}

    return {
        "bytes_total": flower_total,
        "framing_bytes_per_message": {
            "min": min(framing, default=0),
            "max": max(framing, default=0),
        },
        "client_cpu_s": spread([c.cpu_s for c in answered]),
        "client_train_s": spread([c.train_s for c in answered]),
        "client_peak_rss_mb": spread([c.peak_rss_mb for c in answered]),
        "client_bytes_per_round": spread([float(c.ledger_down + c.ledger_up) for c in answered]),
        "local_rounds": len(answered),
    }
