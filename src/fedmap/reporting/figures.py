"""The report's figures: one PNG per question, a panel per (setting, target sparsity).

Each method keeps its registry colour in every figure; the dense reference (no
target) is drawn in every panel of its setting. The only module of fedmap that
imports matplotlib, and only when a figure is drawn: without it, ``fedmap report``
names the extra to install.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmap.errors import ConfigError
from fedmap.methods.registry import method_names
from fedmap.reporting.record import Group, method_colour, method_rank

if TYPE_CHECKING:
    from matplotlib.axes import Axes

EXTRA = "pip install 'fedmap[report]'"
NO_COLOUR = "#999999"  # a box of a method the registry does not know
DPI = 110


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the file-only backend; a one-line error naming the extra."""
    try:
        import matplotlib
    except ImportError as error:
        raise ConfigError(
            f"report: figures need matplotlib, which is not installed: {EXTRA}"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_all(groups: list[Group], out: Path) -> None:
    """Write every figure the groups allow into ``out``."""
    require_matplotlib()
    settings = sorted({g.setting for g in groups})
    found = sorted({g.target for g in groups if g.target is not None})
    targets: list[float | None] = list(found) if found else [None]
    _curves(groups, settings, targets, "test_accuracy", "round", out / "accuracy_vs_round.png")
    _curves(groups, settings, targets, "density", "round", out / "density_vs_round.png")
    _curves(groups, settings, targets, "test_accuracy", "bytes_cum", out / "accuracy_vs_bytes.png")
    _sparsity(groups, settings, out / "accuracy_vs_sparsity.png")
    _clients(groups, settings, targets, out / "client_accuracy.png")
    _partition(groups, settings, out / "partition.png")


def _grid(rows: int, cols: int, width: float = 4.2, height: float = 3.2) -> tuple[Any, Any]:
    fig, axes = require_matplotlib().subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, constrained_layout=True
    )
    return fig, axes


def _panel_groups(groups: list[Group], setting: str, target: float | None) -> list[Group]:
    """The groups drawn in one panel: that target's methods plus the setting's dense run."""
    return [g for g in groups if g.setting == setting and (g.target == target or g.is_reference)]


def _title(setting: str, target: float | None) -> str:
    return setting if target is None else f"{setting}, target {target * 100:.0f} %"


def _curves(
    groups: list[Group],
    settings: list[str],
    targets: list[float | None],
    y_key: str,
    x_key: str,
    path: Path,
) -> None:
    """Mean over seeds of ``y_key`` against ``x_key``, band ± std, one line per method."""
    fig, axes = _grid(len(settings), len(targets))
    for i, setting in enumerate(settings):
        for j, target in enumerate(targets):
            ax: Axes = axes[i][j]
            for g in _panel_groups(groups, setting, target):
                xs, mean, std = _mean_curve(g, x_key, y_key)
                if x_key == "bytes_cum":
                    xs = xs / 1e6
                scale = 100.0 if y_key == "test_accuracy" else 1.0
                colour = method_colour(g.method)
                ax.plot(xs, mean * scale, color=colour, lw=1.4, label=_label(g))
                ax.fill_between(
                    xs, (mean - std) * scale, (mean + std) * scale, color=colour, alpha=0.15, lw=0
                )
            ax.set_title(_title(setting, target), fontsize=10)
            ax.set_xlabel(
                "cumulative MB sent and received (log)" if x_key == "bytes_cum" else "round"
            )
            if x_key == "bytes_cum":
                ax.set_xscale("log")
            if y_key == "test_accuracy":
                ax.set_ylabel("test accuracy (%)")
                _zoom_accuracy(ax)
            else:
                ax.set_ylabel("density (kept share of prunable weights)")
                ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
    _figure_legend(fig, axes)
    fig.savefig(path, dpi=DPI)
    _close(fig)


def _mean_curve(g: Group, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-round mean and std over seeds (runs cut to the shortest)."""
    length = min(len(r.rows) for r in g.runs)
    ys = np.array([[row[y_key] for row in r.rows[:length]] for r in g.runs], dtype=float)
    xs = np.array([[row[x_key] for row in r.rows[:length]] for r in g.runs], dtype=float)
    std = ys.std(axis=0, ddof=1) if len(ys) > 1 else np.zeros(ys.shape[1])
    return xs.mean(axis=0), ys.mean(axis=0), std  # sample std over seeds, as in the tables


def _zoom_accuracy(ax: Axes) -> None:
    """Show the range where methods differ, not the first rounds' climb from 10 %."""
    lines = [line.get_ydata() for line in ax.get_lines()]
    if not lines:
        return
    finals = [float(np.nanmax(np.asarray(y))) for y in lines]
    top = max(finals)
    low = min(float(np.nanpercentile(np.asarray(y), 25)) for y in lines)
    ax.set_ylim(max(0.0, min(low, top - 5) - 2), min(100.0, top + 2))


def _sparsity(groups: list[Group], settings: list[str], path: Path) -> None:
    """Best accuracy (mean ± std over seeds) against final sparsity, a line per method."""
    fig, axes = _grid(1, len(settings), width=5.0, height=3.8)
    methods = sorted({g.method for g in groups}, key=lambda m: (method_rank(m), m))
    for j, setting in enumerate(settings):
        ax: Axes = axes[0][j]
        for method in methods:
            for variant in sorted({g.variant for g in groups if g.method == method}):
                points = [
                    g
                    for g in groups
                    if g.setting == setting and g.method == method and g.variant == variant
                ]
                if points:
                    _sparsity_line(ax, points)
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel("final sparsity (%)")
        ax.set_ylabel("best test accuracy (%)")
        ax.grid(alpha=0.3)
    _figure_legend(fig, axes)
    fig.savefig(path, dpi=DPI)
    _close(fig)


def _sparsity_line(ax: Axes, points: list[Group]) -> None:
    """One method's points over its targets (dense FedAvg: a dashed reference line)."""
    if points[0].is_reference:
        acc = float(np.mean(points[0].values("best_test_accuracy"))) * 100
        ax.axhline(
            acc, color=method_colour(points[0].method), lw=1, ls="--", label=_label(points[0])
        )
        return
    points = sorted(points, key=lambda g: float(np.mean(g.values("final_sparsity"))))
    x = [float(np.mean(g.values("final_sparsity"))) * 100 for g in points]
    y = [float(np.mean(g.values("best_test_accuracy"))) * 100 for g in points]
    e = [_seed_std(g.values("best_test_accuracy")) * 100 for g in points]
    ax.errorbar(
        x,
        y,
        yerr=e,
        marker="o",
        ms=4,
        capsize=2,
        color=method_colour(points[0].method),
        label=_label(points[0]),
    )


def _clients(
    groups: list[Group], settings: list[str], targets: list[float | None], path: Path
) -> None:
    """Box plots of the final per-client accuracy (all seeds pooled), one box per method."""
    fig, axes = _grid(len(settings), len(targets), width=max(4.2, 0.6 * len(method_names()) + 1))
    for i, setting in enumerate(settings):
        for j, target in enumerate(targets):
            ax: Axes = axes[i][j]
            panel = [g for g in _panel_groups(groups, setting, target) if _pooled(g)]
            if not panel:
                ax.set_visible(False)
                continue
            data = [np.array(_pooled(g)) * 100 for g in panel]
            boxes = ax.boxplot(data, patch_artist=True, showfliers=True, widths=0.6)
            for patch, g in zip(boxes["boxes"], panel, strict=True):
                patch.set_facecolor(method_colour(g.method) or NO_COLOUR)
                patch.set_alpha(0.5)
            ax.set_xticks(range(1, len(panel) + 1))
            ax.set_xticklabels([_label(g) for g in panel], rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("client test accuracy (%)")
            ax.set_title(_title(setting, target), fontsize=10)
            ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=DPI)
    _close(fig)


def _seed_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _pooled(g: Group) -> list[float]:
    return [a for r in g.runs for a in r.client_accuracy if not math.isnan(a)]


def _partition(groups: list[Group], settings: list[str], path: Path) -> None:
    """Stacked bars: each client's training samples by label (first run of each setting)."""
    fig, axes = _grid(len(settings), 1, width=10.0, height=2.6)
    for i, setting in enumerate(settings):
        ax: Axes = axes[i][0]
        run = next((r for g in groups if g.setting == setting for r in g.runs if r.partition), None)
        if run is None:
            ax.set_visible(False)
            continue
        counts = np.array(run.partition, dtype=float)  # (clients, labels)
        bottom = np.zeros(len(counts))
        cmap = _colormap(counts.shape[1])
        for label in range(counts.shape[1]):
            ax.bar(
                np.arange(len(counts)),
                counts[:, label],
                bottom=bottom,
                width=1.0,
                color=cmap[label],
                label=str(label),
            )
            bottom += counts[:, label]
        ax.set_title(f"{setting}: training samples per client by label", fontsize=10)
        ax.set_xlabel("client")
        ax.set_ylabel("samples")
        ax.set_xlim(-0.5, len(counts) - 0.5)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="label")
    fig.savefig(path, dpi=DPI)
    _close(fig)


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend above all panels (each method once), so no panel's curves are hidden."""
    seen: dict[str, Any] = {}
    for row in axes:
        for ax in row:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()), list(seen), loc="outside upper center", ncol=min(8, len(seen))
        )


def _colormap(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _label(g: Group) -> str:
    return g.label


def _close(fig: Any) -> None:
    require_matplotlib().close(fig)
