"""Draw docs/performance.png from the JSON that benchmarks/speed.py writes.

    .venv/bin/python benchmarks/speed_plot.py docs/performance.json docs/performance.png

Two panels per workload: seconds per round (median of runs, each run as a dot)
and peak memory of the contender's process tree, with the ceiling as a line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def plot(report: dict[str, Any], out: Path) -> None:
    """One row per workload: time per round and peak memory per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = report["workloads"]
    fig, axes = plt.subplots(len(workloads), 2, figsize=(11, 3.6 * len(workloads)), squeeze=False)
    for row, (name, data) in enumerate(workloads.items()):
        rows = [r for r in data["combined"] if "error" not in r]
        labels = [r["contender"] for r in rows]
        colors = [
            "#7f7f7f"
            if r["contender"] == "ceiling"
            else "#ff7f0e"
            if r["contender"] == "flower"
            else "#1f77b4"
            for r in rows
        ]
        ax = axes[row][0]
        ax.bar(labels, [r["s_per_round"] for r in rows], color=colors)
        for i, r in enumerate(rows):
            runs = r.get("s_per_round_runs", [])
            ax.plot([i] * len(runs), runs, "k.", markersize=5)
        ceiling = next((r["s_per_round"] for r in rows if r["contender"] == "ceiling"), None)
        if ceiling:
            ax.axhline(ceiling, color="#7f7f7f", linestyle="--", linewidth=1, label="ceiling")
            ax.legend(loc="upper left")
        ax.set_ylabel("seconds per round (median; dots: runs)")
        ax.set_title(f"({name}) time per round, evaluation excluded")
        ax.tick_params(axis="x", rotation=20)
        ax = axes[row][1]
        ax.bar(labels, [r["peak_pss_bytes"] / 2**30 for r in rows], color=colors)
        ax.set_ylabel("peak memory, all processes (GiB, PSS)")
        ax.set_title(f"({name}) peak memory")
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(report["machine"], fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    plot(json.loads(source.read_text()), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
