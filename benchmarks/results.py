"""Regenerate docs/default_runs.md: FedMap vs dense FedAvg on Fashion-MNIST (IID and Dirichlet 0.5).

Usage (about 35 minutes on a 2-core CPU, 5 on one H200 GPU; runs one experiment at a time):

    .venv/bin/python benchmarks/results.py            # runs what is missing, then writes the doc
    .venv/bin/python benchmarks/results.py --rerun    # runs everything again

Run directories go to benchmarks/out/ (not versioned); the page and its figure to docs/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
DOCS = ROOT / "docs"
PAIRS = [  # (setting, fedmap config, dense config, target sparsity claimed)
    ("IID", "fmnist_iid", "fmnist_iid_dense", 0.90),
    ("Dirichlet(0.5)", "fmnist_dirichlet", "fmnist_dirichlet_dense", 0.80),
]


def run_config(name: str, rerun: bool, extra: list[str]) -> dict:
    run_dir = OUT / name
    if rerun and run_dir.exists():
        shutil.rmtree(run_dir)
    if not (run_dir / "summary.json").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "fedmap.cli",
            "run",
            str(ROOT / "configs" / f"{name}.toml"),
            "--out",
            str(run_dir),
            "--quiet",
            *extra,
        ]
        print("$", " ".join(cmd[1:]), flush=True)
        started = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"  {name}: {time.time() - started:.0f} s", flush=True)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"summary": json.loads((run_dir / "summary.json").read_text()), "rows": rows}


def table(results: dict) -> list[str]:
    lines = [
        "| setting | method | rounds | final sparsity | final test acc | best test acc | "
        "client acc mean ± std (min) | total MB | vs dense bytes | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, fm, dense, _ in PAIRS:
        for name, label in ((fm, "FedMap"), (dense, "dense FedAvg")):
            s = results[name]["summary"]
            lines.append(
                f"| {setting} | {label} | {s['rounds']} | {100 * s['final_sparsity']:.1f} % | "
                f"{100 * s['final_test_accuracy']:.2f} % | {100 * s['best_test_accuracy']:.2f} % | "
                f"{100 * s['final_client_acc_mean']:.1f} ± {100 * s['final_client_acc_std']:.1f} "
                f"({100 * s['final_client_acc_min']:.1f}) | {s['bytes_total'] / 1e6:,.0f} | "
                f"{100 * s['bytes_ratio_vs_dense']:.1f} % | {s['wall_s']:.0f} |"
            )
    return lines


def verdicts(results: dict) -> list[str]:
    lines = []
    for setting, fm, dense, target in PAIRS:
        f, d = results[fm]["summary"], results[dense]["summary"]
        gap = 100 * (d["final_test_accuracy"] - f["final_test_accuracy"])
        met = f["final_sparsity"] >= target and gap <= 1.0
        lines.append(
            f"- **{setting}**: target ≥ {100 * target:.0f} % sparsity within 1 point of dense. "
            f"Measured {100 * f['final_sparsity']:.1f} % sparsity, final accuracy "
            f"{100 * f['final_test_accuracy']:.2f} % vs dense "
            f"{100 * d['final_test_accuracy']:.2f} % "
            f"(gap {gap:+.2f} points): **{'met' if met else 'not met'}**. FedMap sent "
            f"{f['bytes_total'] / 1e6:,.0f} MB, "
            f"{100 * f['bytes_total'] / d['bytes_total']:.1f} % of "
            f"dense FedAvg's {d['bytes_total'] / 1e6:,.0f} MB."
        )
    return lines


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (setting, fm, dense, _), color in zip(PAIRS, ("tab:blue", "tab:orange"), strict=True):
        for name, style, label in ((fm, "-", "FedMap"), (dense, "--", "dense")):
            rows = results[name]["rows"]
            rnd = [r["round"] for r in rows]
            acc = [100 * r["test_accuracy"] for r in rows]
            axes[0].plot(rnd, acc, style, color=color, label=f"{setting} {label}")
            axes[1].plot(
                [r["bytes_cum"] / 1e9 for r in rows],
                acc,
                style,
                color=color,
                label=f"{setting} {label}",
            )
            axes[2].plot(
                rnd,
                [100 * (1 - r["density"]) for r in rows],
                style,
                color=color,
                label=f"{setting} {label}",
            )
    axes[0].set(
        xlabel="round", ylabel="test accuracy (%)", title="Accuracy vs round", ylim=(60, 95)
    )
    axes[1].set(
        xlabel="cumulative bytes, up + down (GB)",
        ylabel="test accuracy (%)",
        title="Accuracy vs communication",
        ylim=(60, 95),
    )
    axes[2].set(
        xlabel="round", ylabel="sparsity of prunable weights (%)", title="Sparsity vs round"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rerun", action="store_true", help="run every experiment again")
    parser.add_argument("--set", action="append", default=[], help="extra override for every run")
    args = parser.parse_args()
    extra = [arg for kv in args.set for arg in ("--set", kv)]
    OUT.mkdir(parents=True, exist_ok=True)
    DOCS.mkdir(exist_ok=True)
    started = time.time()
    results = {name: run_config(name, args.rerun, extra) for pair in PAIRS for name in pair[1:3]}
    has_plot = plot(results, DOCS / "default_runs.png")
    first = results[PAIRS[0][1]]["summary"]
    lines = [
        "# Results: FedMap vs dense FedAvg on Fashion-MNIST",
        "",
        "Regenerate with `.venv/bin/python benchmarks/results.py --rerun` (configs in `configs/`, "
        "run one at a time; about 35 min on a 2-core CPU, 5 min on one H200 GPU; add "
        "`--set data.path=DIR` for a copy of Fashion-MNIST elsewhere). Setting: 100 clients, "
        "10 sampled "
        f"per round, FedAvg CNN ({first['num_parameters']:,} parameters, "
        f"{first['num_prunable']:,} prunable), 1 local epoch, batch 32, SGD lr 0.05 momentum 0.9, "
        "seed 0; FedMap prunes 20 % of the remaining weights every 5 rounds "
        "after 10 dense rounds until the target sparsity. Bytes are every message's exact encoded "
        "length, up and down, mask bootstraps and headers included.",
        "",
        *table(results),
        "",
        "## Targets",
        "",
        *verdicts(results),
        "",
    ]
    if has_plot:
        lines += ["![accuracy, bytes and sparsity](default_runs.png)", ""]
    device = results[PAIRS[0][1]]["summary"]["device"]
    lines += [
        f"Generated in {time.time() - started:.0f} s on device `{device}` "
        f"(including any cached runs); overrides: {args.set or 'none'}.",
        "",
    ]
    (DOCS / "default_runs.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
