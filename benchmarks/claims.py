"""Write docs/results.md from the paper-claims sweep: the report, then a verdict per target.

Usage (benchmarks/paper_claims.sh calls it after the sweep)::

    .venv/bin/python benchmarks/claims.py [--runs benchmarks/runs/paper_claims] [--elapsed S]

The full table and figures come from ``fedmap report`` (written to docs/results/); this
script adds the claims of issue 3, each judged on the runs that exist, a table of each
baseline against FedMap paired by seed, and says which points of the grid are missing, so
a partial sweep is reported as partial.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

from fedmap.runs.report import (
    METHOD_LABELS,
    Group,
    RunData,
    find_runs,
    group_runs,
    load_run,
    write_report,
)
from fedmap.runs.sweep import load_sweep
from fedmap.strategies.revisions import REVISIONS

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "benchmarks" / "paper_claims.toml"
DOCS = ROOT / "docs"


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
        "| setting | target | " + " | ".join(METHOD_LABELS[m] for m in BESIDE_FEDMAP) + " |",
        "|---|---|" + "---|" * len(BESIDE_FEDMAP),
        *(
            f"| {setting.removeprefix('fashion_mnist ')} | {target:.0%} | " + " | ".join(row) + " |"
            for setting, target, row in cells
        ),
    ]


def round_one_clients(run: RunData) -> list[int]:
    """The clients that answered round 1, from the run's ledger (none where it was not kept)."""
    ledger = run.path / "ledger.csv"
    if not ledger.is_file():
        return []
    with ledger.open() as stream:
        return sorted(
            {
                int(row["client"])
                for row in csv.DictReader(stream)
                if row["round"] == "1" and row["direction"] == "up"
            }
        )


def at_chance(run: RunData) -> bool:
    """Whether the run's final accuracy is at most 1.5x chance for its number of classes."""
    classes = len(run.partition[0]) if run.partition else 10
    return float(run.summary["final_test_accuracy"]) <= 1.5 / classes


def chance_level(runs: list[RunData]) -> list[str]:
    """A line per run at chance (:func:`at_chance`), with what round 1 did.

    A mean over seeds hides a collapsed seed behind a large std; this names it. Where
    round 1 was one client (PruneFL's initial pruning), the labels that client held are
    the first thing to look at, so they are listed.
    """
    lines = []
    for run in sorted(runs, key=lambda r: r.path.name):
        if not at_chance(run) or not run.rows:
            continue
        accuracy = float(run.summary["final_test_accuracy"])
        text = (
            f"- `{run.path.name}`: final {accuracy:.2%}, test loss after round 1 "
            f"{float(run.rows[0]['test_loss']):.1f}"
        )
        cohort = round_one_clients(run)
        if len(cohort) == 1 and cohort[0] < len(run.partition):
            counts = run.partition[cohort[0]]
            held = ", ".join(f"label {k}: {n}" for k, n in enumerate(counts) if n)
            text += f"; round 1 was client {cohort[0]} alone, holding {held}"
        lines.append(text + ".")
    return lines


def rejected_replies(runs: list[RunData]) -> list[str]:
    """A line per run whose server refused replies, with the refusals' reasons.

    The grid keeps the library's default screen (``aggregation.norm_threshold`` 10, and
    NaN/Inf checks) for every method, dense FedAvg included. Under strong label skew an
    honest client's update can exceed 10x the cohort's median, so a baseline's mean can
    rest on fewer replies than the paper's unscreened FedAvg; this makes that visible.
    """
    lines = []
    for run in sorted(runs, key=lambda r: r.path.name):
        count = int(run.summary.get("replies_rejected", 0))
        if not count:
            continue
        events = run.path / "events.jsonl"
        reasons: Counter[str] = Counter()
        if events.is_file():
            for line in events.read_text().splitlines():
                event = json.loads(line)
                if event.get("kind") == "rejected":
                    reason = str(event.get("reason", ""))
                    reasons["update norm over the limit" if "exceeds" in reason else reason] += 1
        detail = ", ".join(f"{n}x {reason}" for reason, n in reasons.most_common())
        lines.append(
            f"- `{run.path.name}`: {count} {'reply' if count == 1 else 'replies'} rejected"
            + (f" ({detail})" if detail else "")
            + "."
        )
    return lines


def missing_by_target_and_method(names: list[str]) -> str:
    """``target_sparsity0.9: prunefl 11, feddst 3; ...`` from run names (first seen order).

    Names are the sweep's ``[TARGET-]SETTING-METHOD-SEED``: dense FedAvg's have no target.
    """
    counts: dict[str, Counter[str]] = {}
    for name in names:
        parts = name.split("-")
        target = parts[0] if parts[0].startswith("target_sparsity") else "no target"
        counts.setdefault(target, Counter())[parts[-2]] += 1
    return "; ".join(
        f"{target}: " + ", ".join(f"{m} {n}" for m, n in methods.items())
        for target, methods in counts.items()
    )


def archived_pages(docs: Path) -> list[str]:
    """Header lines linking the earlier pages kept in ``docs/results_archive_*.md``.

    A page whose run directories were lost cannot be regenerated; it is kept as it was
    generated, and the current page points to it so the reader sees both records.
    """
    pages = sorted(p.name for p in docs.glob("results_archive_*.md"))
    if not pages:
        return []
    links = ", ".join(f"[`docs/{name}`]({name})" for name in pages)
    return [
        f"Earlier pages, kept as they were generated because their run directories were lost "
        f"and cannot be regenerated: {links}.",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "paper_claims")
    parser.add_argument("--elapsed", type=float, default=None, help="sweep seconds, for the doc")
    args = parser.parse_args()
    os.chdir(ROOT)  # relative paths in the doc
    args.runs = args.runs.resolve().relative_to(ROOT) if args.runs.is_absolute() else args.runs
    planned = load_sweep(SWEEP, out=args.runs).runs
    md_path, _ = write_report([args.runs], Path("docs") / "results")
    found, warnings = find_runs([args.runs])
    for warning in warnings:  # unfinished runs, runs of another method revision
        print(f"claims: {warning}", file=sys.stderr)
    runs = [load_run(p) for p in found]
    grouped = group_runs(runs)
    # the claims are judged on the grid's own settings: variants (other rates, rounds ...) that
    # other runs in the folder add are shown in the table but judged by no claim
    groups = {(g.setting, g.method, g.target): g for g in grouped if not g.variant}
    skipped = [g for g in grouped if g.variant or "[" in g.setting]
    if skipped:
        print(f"claims: {len(skipped)} groups with other settings are not judged", file=sys.stderr)

    def group(setting: str, method: str, target: float | None):  # noqa: ANN202
        return groups.get((f"fashion_mnist {setting}", method, target))

    lines = ["## Claims (issue 3), judged on the runs above", ""]
    for setting, target, stretch in ACCURACY_CLAIMS:
        dense = group(setting, "none", None)
        if dense is None:
            lines.append(f"- **{setting}**: no dense FedAvg run yet: not judged.")
            continue
        dense_acc = mean(dense.values("final_test_accuracy"))
        verdicts = []
        for goal in (target, stretch):
            fm = group(setting, "fedmap", goal)
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
    stds = []
    for (setting, method, target), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if method != "fedmap":
            continue
        local = groups.get((setting, "local", target))
        if local is None:
            continue
        verdict = std_verdict(g.runs, local.runs)
        if verdict:
            stds.append(f"{setting} at {target:.0%}: {verdict}")
    lines.append(
        "- **Per-client accuracy std, FedMap ≤ client-local at the same target**: "
        + ("; ".join(stds) if stds else "no pair of runs yet")
        + "."
    )
    ratios = [
        (g.setting, g.target, mean(g.values("bytes_ratio_vs_dense")))
        for (_, method, _), g in groups.items()
        if method == "fedmap"
    ]
    if ratios:
        lines.append(bytes_verdict(ratios))
    done = {p.name for p in found}
    missing = [r.name for r in planned if r.name not in done]
    lines += [
        "",
        f"Runs finished: {len(done)} of the grid's {len(planned)}."
        + (
            f" Missing ({len(missing)}), by target and method: "
            + missing_by_target_and_method(missing)
            + ". Rerun `bash benchmarks/paper_claims.sh`: finished runs are skipped."
            if missing
            else ""
        ),
    ]
    comparison = comparison_table(groups)
    if comparison:
        lines += ["", *comparison]
    collapsed = chance_level(runs)
    prunefl_collapsed = any(r.method == "prunefl" and at_chance(r) for r in runs)
    if collapsed:
        lines += [
            "",
            "## Runs at chance level",
            "",
            ("1 run ends" if len(collapsed) == 1 else f"{len(collapsed)} runs end")
            + " at most 1.5x chance accuracy (15 % for 10 classes); "
            "their seeds' means above include them."
            + (
                " PruneFL's round 1 is one client's initially pruned model, unaveraged and "
                "unscreened (docs/methods.md)."
                if prunefl_collapsed
                else ""
            ),
            "",
            *collapsed,
        ]
    refused = rejected_replies(runs)
    if refused:
        lines += [
            "",
            "## Replies the server refused",
            "",
            "Every method runs with the library's default screen (`aggregation.norm_threshold` "
            "10: an update more than 10x the cohort's median distance is refused; NaN/Inf replies "
            "always are). Under strong label skew it refuses some honest updates, including "
            "dense FedAvg's, so those baselines average fewer replies than an unscreened FedAvg "
            "would; the means above include these runs.",
            "",
            *refused,
        ]
    devices = sorted({str(r.summary.get("device")) for r in runs})
    header = [
        "# Results: FedMap and its baselines on Fashion-MNIST",
        "",
        "Regenerate with `bash benchmarks/paper_claims.sh` (the grid is "
        "`benchmarks/paper_claims.toml`: 100 clients, 10 per round, FedAvg CNN, 80 rounds; IID, "
        "Dirichlet 0.5 and 0.1, pathological 2 classes; target sparsity 50/80/90/95 %; 8 methods; "
        "3 seeds). Finished runs are skipped, so it can be stopped and continued. Devices of the "
        f"runs shown: {', '.join(devices)}."
        + (f" This regeneration took {args.elapsed / 60:.1f} min." if args.elapsed else ""),
        "",
        "Methods, each in one paragraph with its reference, are in `docs/methods.md`; the report "
        "below is `fedmap report` of the sweep (also as `docs/results/report.html`). Method "
        "revisions shown (runs of another revision are left out): "
        + ", ".join(f"{m} {n}" for m, n in sorted(REVISIONS.items()))
        + ", every other method 1.",
        "",
        *archived_pages(DOCS),
    ]
    body = md_path.read_text().split("\n", 1)[1]  # drop the report's own title
    body = body.replace("](", "](results/")
    (DOCS / "results.md").write_text("\n".join(header + lines) + "\n" + body)
    print(f"wrote {DOCS / 'results.md'} ({len(done)} of {len(planned)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
