"""The paper's claims (issue 3) judged on a grid's runs: verdict lines and the paired table.

Pure functions of RunData and groups (fedmap.reporting); benchmarks/claims.py puts their
lines on docs/results.md.
"""

from __future__ import annotations

import statistics

from fedmap.methods.registry import all_methods
from fedmap.reporting.record import Group, RunData, method_label


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def client_std_by_seed(runs: list[RunData]) -> dict[int, float]:
    """Per seed, the spread of the final model's accuracy over the clients' test splits."""
    return {r.seed: r.client_std for r in runs if r.client_std is not None}


def std_verdict(fedmap: list[RunData], local: list[RunData]) -> str | None:
    """FedMap's per-client accuracy std against client-local's, on the seeds both ran.

    The spread over clients depends on each seed's partition, so a mean over different
    seed sets (three FedMap seeds against the one client-local seed finished) would
    compare partitions, not methods. None where no seed is shared.
    """
    ours_by_seed, theirs_by_seed = client_std_by_seed(fedmap), client_std_by_seed(local)
    seeds = sorted(ours_by_seed.keys() & theirs_by_seed.keys())
    if not seeds:
        return None
    ours = mean([ours_by_seed[s] for s in seeds]) * 100
    theirs = mean([theirs_by_seed[s] for s in seeds]) * 100
    sparsity = mean([float(r.summary["final_sparsity"]) for r in fedmap])
    sparsity_local = mean([float(r.summary["final_sparsity"]) for r in local])
    return (
        f"FedMap {ours:.2f} vs client-local {theirs:.2f} points "
        f"(sparsity {sparsity:.1%} vs {sparsity_local:.1%}; "
        f"{'seeds' if len(seeds) > 1 else 'seed'} {', '.join(map(str, seeds))}): "
        f"**{'met' if ours <= theirs else 'not met'}**"
    )


ACCURACY_CLAIMS = (("IID", 0.9, 0.95), ("Dirichlet(0.5)", 0.8, 0.9))
"""(setting, target, stretch target) of each within-1-point accuracy claim in issue 3."""

BYTES_CLAIM_TARGETS = tuple(sorted({t for _, *targets in ACCURACY_CLAIMS for t in targets}))
"""The targets the accuracy claims name (80/90/95 %): where the 35 % bytes bound is judged."""


def bytes_verdict(ratios: list[tuple[str, float | None, float]]) -> str:
    """FedMap's bytes as a share of dense FedAvg's, judged at the claims' targets only.

    The 35 % bound belongs to the high-sparsity targets the other claims name: at a 50 %
    target the kept values alone are half the model, so no pruning method that sends
    values can meet it there. Groups at other targets are listed beside the verdict, not
    judged, so the reader still sees what they cost. ``ratios`` holds (setting, target,
    mean bytes / dense bytes) per FedMap group.
    """
    judged: list[tuple[str, float | None, float]] = []
    others: list[tuple[str, float | None, float]] = []
    for r in ratios:
        claimed = r[1] is not None and round(r[1], 4) in BYTES_CLAIM_TARGETS
        (judged if claimed else others).append(r)
    others.sort(key=lambda r: (str(r[1]), r[0]))
    targets = "/".join(f"{t:.0%}" for t in BYTES_CLAIM_TARGETS)
    if judged:
        worst = max(judged, key=lambda r: r[2])
        line = (
            f"- **FedMap's total bytes ≤ 35 % of dense FedAvg's** (targets {targets}): between "
            f"{min(r[2] for r in judged):.1%} and {worst[2]:.1%} over the FedMap groups "
            f"at those targets (largest: {worst[0]} at {worst[1]:.0%}): "
            f"**{'met' if worst[2] <= 0.35 else 'not met'}**."
        )
    else:
        line = f"- **FedMap's total bytes ≤ 35 % of dense FedAvg's**: no FedMap run at {targets}."
    if others:
        shown = ", ".join(
            f"{setting} at {'no target' if t is None else f'{t:.0%}'} {ratio:.1%}"
            for setting, t, ratio in others
        )
        line += f" Not judged (other targets): {shown}."
    return line


BESIDE_FEDMAP = ("gradual", "oneshot", "random", "local", "prunefl", "feddst")
"""The baselines compared with FedMap, in table order: server-side masks, then per-client ones."""


def paired_gap(fedmap: list[RunData], other: list[RunData]) -> str:
    """Other − FedMap final accuracy in points, paired by seed: "mean ± std (n)".

    Seeds share the partition and the initial model, so the difference per seed removes
    the partition's effect that a gap between two means over different seed sets keeps.
    The std is that of the per-seed differences: a mean smaller in size is seed noise.
    "–" where no seed is shared.
    """
    ours = {r.seed: float(r.summary["final_test_accuracy"]) for r in fedmap}
    theirs = {r.seed: float(r.summary["final_test_accuracy"]) for r in other}
    gaps = [(theirs[s] - ours[s]) * 100 for s in sorted(ours.keys() & theirs.keys())]
    if not gaps:
        return "–"
    spread = f" ± {statistics.stdev(gaps):.2f}" if len(gaps) > 1 else ""
    return f"{mean(gaps):+.2f}{spread} ({len(gaps)})"


def comparison_table(groups: dict[tuple[str, str, float | None], Group]) -> list[str]:
    """Markdown lines: each baseline's accuracy gap to FedMap per setting and target.

    The claims compare FedMap with dense FedAvg and client-local pruning only; this table
    answers the reader's next question (does FedMap beat the other ways to prune?) without
    them subtracting rows of the report by hand.
    """
    cells = [
        (
            setting,
            target,
            [
                paired_gap(g.runs, other.runs)
                if (other := groups.get((setting, m, target)))
                else "–"
                for m in BESIDE_FEDMAP
            ],
        )
        for (setting, method, target), g in groups.items()  # the report's order
        if method == "fedmap" and target is not None
    ]
    if not cells:
        return []
    return [
        "## Each baseline against FedMap",
        "",
        "Baseline − FedMap final test accuracy, in points, per seed both ran, as mean ± std "
        "over those seeds (number of seeds in brackets); negative: FedMap ahead. A mean "
        "smaller in size than its std is within the seeds' noise. Bytes of each method are in the "
        "report's table below.",
        "",
        "| setting | target | " + " | ".join(method_label(m) for m in BESIDE_FEDMAP) + " |",
        "|---|---|" + "---|" * len(BESIDE_FEDMAP),
        *(
            f"| {setting.removeprefix('fashion_mnist ')} | {target:.0%} | " + " | ".join(row) + " |"
            for setting, target, row in cells
        ),
    ]


GroupKey = tuple[str, str, float | None]


def dense_name() -> str:
    """The ``pruning.method`` of the dense reference (the registered method that does not prune)."""
    return next(cls.name for cls in all_methods() if not cls.prunes)


def accuracy_claims(groups: dict[GroupKey, Group]) -> list[str]:
    """A line per accuracy claim: FedMap within a point of dense at the target and the stretch."""
    lines = []
    for setting, target, stretch in ACCURACY_CLAIMS:
        dense = groups.get((f"fashion_mnist {setting}", dense_name(), None))
        if dense is None:
            lines.append(f"- **{setting}**: no dense FedAvg run yet: not judged.")
            continue
        dense_acc = mean(dense.values("final_test_accuracy"))
        verdicts = []
        for goal in (target, stretch):
            fm = groups.get((f"fashion_mnist {setting}", "fedmap", goal))
            if fm is None:
                verdicts.append(f"target {goal:.0%}: not run")
                continue
            acc = mean(fm.values("final_test_accuracy"))
            sparsity = mean(fm.values("final_sparsity"))
            gap = (acc - dense_acc) * 100
            ok = gap >= -1.0 and sparsity >= goal - 1e-9
            verdicts.append(
                f"target {goal:.0%}: FedMap reached {sparsity:.1%} sparsity at "
                f"{acc * 100:.2f} % vs dense {dense_acc * 100:.2f} % "
                f"(FedMap − dense {gap:+.2f} points, {len(fm.runs)} seeds): "
                f"**{'met' if ok else 'not met'}**"
            )
        lines.append(f"- **{setting}** (stretch {stretch:.0%}): " + "; ".join(verdicts) + ".")
    return lines


def std_and_bytes_claims(groups: dict[GroupKey, Group]) -> list[str]:
    """The per-client std claim (FedMap against client-local) and the bytes claim."""
    stds = []
    for (setting, method, target), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        local = groups.get((setting, "local", target)) if method == "fedmap" else None
        verdict = std_verdict(g.runs, local.runs) if local is not None else None
        if verdict:
            stds.append(f"{setting} at {target:.0%}: {verdict}")
    lines = [
        "- **Per-client accuracy std, FedMap ≤ client-local at the same target**: "
        + ("; ".join(stds) if stds else "no pair of runs yet")
        + "."
    ]
    ratios = [
        (g.setting, g.target, mean(g.values("bytes_ratio_vs_dense")))
        for (_, method, _), g in groups.items()
        if method == "fedmap"
    ]
    return lines + ([bytes_verdict(ratios)] if ratios else [])
