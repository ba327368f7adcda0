"""Group runs that differ only in their seed: the unit every table row and curve shows."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from fedmap.reporting.record import Group, RunData, flat_config, method_prunes, method_rank

NOT_THE_EXPERIMENT = {"seed", "device", "engine", "cohort_chunk", "compile", "checkpoint_every"}
"""Keys that do not change what is measured (where and how fast a run ran)."""

SETTING_KEYS = {"data.partition", "data.alpha", "data.classes_per_client", "data.name", "data.path"}
"""Keys the data setting's label already names, or where the data lives."""

METHOD_KEYS = {"pruning.method", "pruning.target_sparsity"}
"""Keys a group's method and target already name."""


def group_runs(runs: list[RunData]) -> list[Group]:
    """Group runs that differ only in their seed; order: setting, target, method.

    Everything else that differs (rounds, model, client settings, a method's rate or
    schedule) splits groups: the setting's label, or the method's, names the keys
    that differ from the settings most runs share, so runs are never averaged with
    runs of another experiment. Pruning keys of a method that does not prune (dense
    FedAvg) do not apply to it and are ignored.
    """
    shared, own = [], []
    for run in runs:
        flat = {k: v for k, v in flat_config(run.config).items() if k not in NOT_THE_EXPERIMENT}
        shared.append(
            {
                k: v
                for k, v in flat.items()
                if not k.startswith("pruning.") and k not in SETTING_KEYS
            }
        )
        own.append(
            {k: v for k, v in flat.items() if k.startswith("pruning.") and k not in METHOD_KEYS}
            if method_prunes(run.method)
            else {}
        )
    usual_shared = _most_common(shared)
    usual_own = _most_common([o for o, r in zip(own, runs, strict=True) if method_prunes(r.method)])
    groups: dict[tuple[str, str, str, float | None], Group] = {}
    for run, rest, mine in zip(runs, shared, own, strict=True):
        setting = run.setting
        if rest != usual_shared:
            setting += f" [{_differences(rest, usual_shared)}]"
        variant = _differences(mine, usual_own) if mine else ""
        key = (setting, run.method, variant, run.target)
        group = groups.setdefault(key, Group(setting, run.method, run.target, [], variant))
        group.runs.append(run)
    return sorted(
        groups.values(),
        key=lambda g: (
            g.setting,
            -1.0 if g.target is None else g.target,
            method_rank(g.method),
            g.method,
            g.variant,
        ),
    )


def _differences(rest: dict[str, Any], usual: dict[str, Any]) -> str:
    keys = sorted(set(rest) | set(usual))
    return ", ".join(f"{k}={rest.get(k)}" for k in keys if rest.get(k) != usual.get(k))


def _most_common(items: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[json.dumps(item, sort_keys=True)] += 1
    return json.loads(max(counts, key=lambda k: counts[k])) if counts else {}
