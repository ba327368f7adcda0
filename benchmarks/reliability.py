"""Regenerate the measured part of docs/reliability.md: FedMap on Fashion-MNIST under faults.

Usage (about an hour on a 2-core CPU; runs one experiment at a time):

    .venv/bin/python benchmarks/reliability.py            # runs what is missing, then the doc
    .venv/bin/python benchmarks/reliability.py --rerun    # runs everything again

Every scenario is ``configs/fmnist_iid.toml`` (FedMap, 100 clients, 10 per round,
80 rounds) with a few ``--set`` overrides, so each line of the table can be
reproduced with one ``fedmap run`` command. Run directories go to
benchmarks/out/reliability/; the table and figure replace the block between the
``results`` markers in docs/reliability.md.
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
OUT = ROOT / "benchmarks" / "out" / "reliability"
DOC = ROOT / "docs" / "reliability.md"
FIGURE = ROOT / "docs" / "reliability.png"
CONFIG = "configs/fmnist_iid.toml"
START, END = "<!-- results:start -->", "<!-- results:end -->"
ATTACK = ["faults.attacker_fraction=0.1"]  # 10 of 100 clients: 1 of the 10 sampled, on average

# (name, what happens, overrides)
SCENARIOS: list[tuple[str, str, list[str]]] = [
    ("clean", "no faults (reference)", []),
    ("dropout30", "30 % of sampled clients drop every round", ["faults.dropout=0.3"]),
    (
        "stragglers",
        "20 % stragglers, deadline 2 s, at least 5 replies",
        ["faults.straggler_fraction=0.2", "faults.deadline_s=2.0", "faults.min_clients=5"],
    ),
    (
        "scale100_mean",
        "attackers scale their update x100; mean + norm screen (default)",
        [*ATTACK, 'faults.attack="scale"', "faults.attack_scale=100"],
    ),
    (
        "scale9_mean",
        "attackers scale x9 (under the screen); mean",
        [*ATTACK, 'faults.attack="scale"', "faults.attack_scale=9"],
    ),
    (
        "scale9_median",
        "attackers scale x9; coordinate median",
        [*ATTACK, 'faults.attack="scale"', "faults.attack_scale=9", 'aggregation.rule="median"'],
    ),
    (
        "flip9_mean",
        "attackers send -9x their update; mean",
        [*ATTACK, 'faults.attack="sign_flip"', "faults.attack_scale=9"],
    ),
    (
        "flip9_median",
        "attackers send -9x their update; coordinate median",
        [
            *ATTACK,
            'faults.attack="sign_flip"',
            "faults.attack_scale=9",
            'aggregation.rule="median"',
        ],
    ),
    (
        "flip9_trimmed",
        "attackers send -9x their update; trimmed mean (10 % each side)",
        [
            *ATTACK,
            'faults.attack="sign_flip"',
            "faults.attack_scale=9",
            'aggregation.rule="trimmed_mean"',
        ],
    ),
    (
        "flip9_trimmed20",
        "attackers send -9x their update; trimmed mean (20 % each side)",
        [
            *ATTACK,
            'faults.attack="sign_flip"',
            "faults.attack_scale=9",
            'aggregation.rule="trimmed_mean"',
            "aggregation.trim_fraction=0.2",
        ],
    ),
]


def command(name: str, overrides: list[str]) -> list[str]:
    sets = [arg for kv in overrides for arg in ("--set", kv)]
    out = OUT / name
    return ["fedmap", "run", CONFIG, *sets, "--out", str(out.relative_to(ROOT)), "--quiet"]


def run_scenario(name: str, overrides: list[str], rerun: bool) -> dict:
    """Run one scenario (unless done); a run that stops with an error is a result too."""
    run_dir = OUT / name
    failed = run_dir / "error.txt"
    if rerun or not ((run_dir / "summary.json").exists() or failed.exists()):
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = [sys.executable, "-m", "fedmap.cli", *command(name, overrides)[1:]]
        print("$", " ".join(command(name, overrides)), flush=True)
        started = time.time()
        done = subprocess.run(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        print(f"  {name}: {time.time() - started:.0f} s, exit {done.returncode}", flush=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            failed.write_text(errors[-1] if errors else done.stderr.strip().splitlines()[-1])
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = run_dir / "summary.json"
    return {
        "summary": json.loads(summary.read_text()) if summary.exists() else None,
        "rows": rows,
        "error": failed.read_text().strip() if failed.exists() else None,
    }


def final(result: dict) -> tuple[float, float]:
    """Final sparsity and test accuracy (of the last finished round, for a run that stopped)."""
    last = result["rows"][-1]
    return 1.0 - last["density"], last["test_accuracy"]


def table(results: dict) -> list[str]:
    clean = final(results["clean"])[1]
    lines = [
        "| scenario | final sparsity | final acc | vs clean | answered/sampled | dropped | late | "
        "rejected | retries |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, what, _ in SCENARIOS:
        result = results[name]
        rows = result["rows"]
        sparsity, accuracy = final(result)
        sampled = sum(r["sampled"] for r in rows)
        answered = sum(r["answered"] for r in rows)
        retries = sum(r["attempts"] - 1 for r in rows)
        note = ""
        if result["error"]:
            note = f" **stopped after round {rows[-1]['round']}**: `{result['error']}`"
        lines.append(
            f"| `{name}`: {what}{note} | {100 * sparsity:.1f} % | "
            f"{100 * accuracy:.2f} % | {100 * (accuracy - clean):+.2f} | {answered}/{sampled} | "
            f"{sum(r['dropped'] for r in rows)} | {sum(r['late'] for r in rows)} | "
            f"{sum(r['rejected'] for r in rows)} | {retries} |"
        )
    return lines


def below(gap: float) -> str:
    """``gap`` = clean minus scenario accuracy, in points, as words."""
    return f"{abs(gap):.2f} points {'below' if gap > 0 else 'above'} the clean run"


def verdicts(results: dict) -> list[str]:
    clean_sparsity, clean = final(results["clean"])
    sparsity, accuracy = final(results["dropout30"])
    gap = 100 * (clean - accuracy)
    target = 0.9
    ok = sparsity >= target and gap <= 1.0 and not results["dropout30"]["error"]
    lines = [
        f"- **30 % dropout**: target sparsity ({100 * target:.0f} %) reached and within 1 point of "
        f"the clean run. Measured {100 * sparsity:.1f} % sparsity, {100 * accuracy:.2f} % vs "
        f"{100 * clean:.2f} % ({below(gap)}): **{'met' if ok else 'not met'}**."
    ]
    for name in (
        "scale9_median",
        "flip9_median",
        "flip9_trimmed",
        "flip9_trimmed20",
        "scale100_mean",
    ):
        accuracy = final(results[name])[1]
        gap = 100 * (clean - accuracy)
        ok = gap <= 2.0 and not results[name]["error"]
        lines.append(
            f"- **`{name}`** within 2 points of the clean run: {100 * accuracy:.2f} % "
            f"({below(gap)}): **{'met' if ok else 'not met'}**."
        )
    return lines


def checkpoint_cost(results: dict) -> str:
    """Size and write/read time of a real checkpoint, against the time of a round."""
    import statistics
    import tempfile

    from fedmap.runs.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

    path = list_checkpoints(OUT / "clean")[0]
    loads, saves = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(5):
            started = time.perf_counter()
            checkpoint = load_checkpoint(path)
            loads.append(time.perf_counter() - started)
            started = time.perf_counter()
            save_checkpoint(Path(tmp), checkpoint.round, checkpoint.tensors, checkpoint.meta)
            saves.append(time.perf_counter() - started)
    walls = [r["wall_s"] for r in results["clean"]["rows"]]
    per_round = statistics.median(b - a for a, b in zip(walls, walls[1:], strict=False))
    return (
        f"A checkpoint of the clean run (`{path.name}`) is {path.stat().st_size / 1e6:.1f} MB; "
        f"writing one (fsync included) takes {1e3 * statistics.median(saves):.0f} ms and reading "
        f"and verifying it {1e3 * statistics.median(loads):.0f} ms (medians of 5), against "
        f"{per_round:.1f} s for a round."
    )


def plot(results: dict) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    groups = (
        ("Client failures", ("clean", "dropout30", "stragglers")),
        (
            "Attackers (1 in 10 clients)",
            (
                "clean",
                "scale100_mean",
                "scale9_mean",
                "scale9_median",
                "flip9_mean",
                "flip9_median",
                "flip9_trimmed",
                "flip9_trimmed20",
            ),
        ),
    )
    for ax, (title, names) in zip(axes, groups, strict=True):
        for name in names:
            rows = results[name]["rows"]
            style = "-" if name == "clean" else "--" if name.endswith("mean") else "-."
            ax.plot(
                [r["round"] for r in rows],
                [100 * r["test_accuracy"] for r in rows],
                style,
                label=name,
                linewidth=2.2 if name == "clean" else 1.4,
            )
        ax.set(xlabel="round", ylabel="test accuracy (%)", title=title, ylim=(0, 95))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rerun", action="store_true", help="run every scenario again")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = {name: run_scenario(name, sets, args.rerun) for name, _, sets in SCENARIOS}
    has_plot = plot(results)
    device = results["clean"]["summary"]["device"]  # the reference must finish
    block = [
        START,
        "",
        "Generated by `.venv/bin/python benchmarks/reliability.py --rerun` on device "
        f"`{device}` (about 80 min for all scenarios on the 2-core CPU, one at a time; without "
        "`--rerun`, finished runs in `benchmarks/out/reliability/` are reused; this invocation "
        f"took {time.time() - started:.0f} s). "
        f"Every scenario is `{CONFIG}` (FedMap, 100 clients, 10 sampled per round, 80 rounds, "
        "target 90 % sparsity) plus the overrides below.",
        "",
        *table(results),
        "",
        *verdicts(results),
        "",
        checkpoint_cost(results),
        "",
    ]
    if has_plot:
        block += ["![accuracy under faults](reliability.png)", ""]
    block += ["Commands, one per scenario:", "", "```"]
    block += [" ".join(command(name, sets)) for name, _, sets in SCENARIOS]
    block += ["```", "", END]
    text = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + "\n".join(block) + tail)
    print("\n".join(block))


if __name__ == "__main__":
    main()
