"""Time fedmap's engines against Flower and the single-model ceiling (issue #5).

Usage:

    .venv/bin/python benchmarks/speed.py                       # both workloads, CPU
    .venv/bin/python benchmarks/speed.py --workloads a --rounds 1500 --device cuda
    .venv/bin/python benchmarks/speed.py --json out.json --doc  # also rewrite docs/performance.md

Each contender (benchmarks/speed_worker.py) runs in its own process, one at a
time, on the same machine, in an order rotated between repeats: the vectorised
and sequential engines (fedmap's full round loop: encode, decode, validate,
aggregate), Flower 1.42 ``run_simulation`` doing the same dense FedAvg when
``flwr`` is installed, and the ceiling, one model training each round's samples
at the cohort's combined batch with no federation at all. Round times leave out
evaluation for everyone (accuracy is measured once, after the last round); the
first round, which pays one-off initialisation, is reported apart. Memory is the
peak proportional set size (PSS, shared pages split) summed over the
contender's whole process tree, so Ray's helper processes count for Flower.
With ``--repeats`` of 2 or more, the vectorised engine's runs are compared to
check that reruns are bit-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from speed_worker import WORKLOADS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- speed:start -->", "<!-- speed:end -->"
# vectorized: the engine's own chunk choice; vectorized@all: the whole cohort in one program.
CONTENDERS = ("ceiling", "vectorized", "vectorized@all", "sequential", "flower")


def tree_pss_bytes(root: int) -> int:
    """PSS of ``root`` and all its descendants (0 for processes that vanished)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def run_contender(contender: str, workload: str, rounds: int, device: str) -> dict[str, Any]:
    """Run one worker process; return its JSON plus the peak memory of its process tree."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "FEDMAP_BENCH_T0": repr(time.time())}
        worker = Path(__file__).with_name("speed_worker.py")
        command = [sys.executable, str(worker), contender, workload]
        command += ["--rounds", str(rounds), "--device", device, "--out", str(out)]
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        peak = [0]

        def watch() -> None:
            while process.poll() is None:
                peak[0] = max(peak[0], tree_pss_bytes(process.pid))
                time.sleep(0.25)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, stderr = process.communicate()
        watcher.join()
        if process.returncode != 0 or not out.exists():
            tail = "\n".join(stderr.strip().splitlines()[-15:])
            return {"contender": contender, "error": f"exit {process.returncode}: {tail}"}
        result = json.loads(out.read_text())
    result.update(contender=contender, workload=workload, peak_pss_bytes=peak[0])
    return result


def torch_import_s() -> float:
    """What every contender pays before its first line: the interpreter and ``import torch``."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def summarise(result: dict[str, Any], workload: str) -> dict[str, Any]:
    """Steady-state seconds per round, throughput and FLOP rate of one contender."""
    if "error" in result:
        return result
    w = WORKLOADS[workload]
    samples = w.samples_per_round
    steady = result["round_s"][1:] or result["round_s"]
    s_round = statistics.median(steady)
    result["s_per_round"] = s_round
    result["first_round_s"] = result["round_s"][0]
    result["samples_per_s"] = samples / s_round
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from repeated runs: median times, the largest memory peak, the first accuracy."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    row = dict(ok[0])
    for key in (
        "s_per_round",
        "first_round_s",
        "samples_per_s",
        "startup_s",
        "startup_beyond_torch_s",
    ):
        row[key] = statistics.median(r[key] for r in ok)
    row["s_per_round_runs"] = [r["s_per_round"] for r in ok]
    row["peak_pss_bytes"] = max(r["peak_pss_bytes"] for r in ok)
    row["failed_runs"] = len(runs) - len(ok)
    return row


def add_rates(results: list[dict[str, Any]], workload: str) -> None:
    """FLOP rates (the fedmap workers count the model's FLOPs) and ratios to the ceiling."""
    flops = next((r["flops_per_sample"] for r in results if "flops_per_sample" in r), None)
    ceiling = next((r for r in results if r["contender"] == "ceiling" and "error" not in r), None)
    flower = next((r for r in results if r["contender"] == "flower" and "error" not in r), None)
    for r in results:
        if "error" in r:
            continue
        if flops:
            r["tflops"] = flops * r["samples_per_s"] / 1e12
        if ceiling:
            r["x_ceiling"] = r["s_per_round"] / ceiling["s_per_round"]
        if flower:
            r["x_flower"] = r["s_per_round"] / flower["s_per_round"]
            r["memory_vs_flower"] = r["peak_pss_bytes"] / flower["peak_pss_bytes"]


def table(results: list[dict[str, Any]], import_s: float, rounds: int) -> list[str]:
    """Markdown rows for one workload."""
    lines = [
        "| contender | s/round (each run) | x ceiling | x Flower | samples/s | TFLOP/s "
        "| first round s | start-up s (beyond `import torch`) | peak memory MiB | accuracy "
        f"| {rounds} rounds s (first run) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        name = r["contender"]
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'].splitlines()[-1][:80]} |" + " |" * 9)
            continue
        lines.append(
            f"| {name} | {r['s_per_round']:.3f} ({runs_text(r)}) | "
            f"{_opt(r, 'x_ceiling', '{:.2f}x')} | "
            f"{_opt(r, 'x_flower', '{:.2f}x')} | {r['samples_per_s']:,.0f} | "
            f"{_opt(r, 'tflops', '{:.3f}')} | {r['first_round_s']:.2f} | "
            f"{r['startup_s']:.2f} ({r['startup_beyond_torch_s']:.2f}) | "
            f"{r['peak_pss_bytes'] / 2**20:,.0f} | {r['accuracy']:.4f} | "
            f"{sum(r['round_s']):.1f} |"
        )
    return lines


def runs_text(result: dict[str, Any]) -> str:
    """Each run's seconds per round, so the spread is visible next to the median."""
    return ", ".join(f"{s:.2f}" for s in result.get("s_per_round_runs", []))


def _opt(result: dict[str, Any], key: str, fmt: str) -> str:
    return fmt.format(result[key]) if key in result else "—"


def machine() -> str:
    """One line naming the hardware and software the numbers come from."""
    if torch.cuda.is_available():
        hw = torch.cuda.get_device_name(0)
    else:
        hw = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    try:
        import flwr

        flower = f", flwr {flwr.__version__}"
    except ImportError:
        flower = ", flwr not installed"
    return f"{hw}; torch {torch.__version__}, Python {platform.python_version()}{flower}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="b,a", help="comma-separated: a, b")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per contender")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--repeats", type=int, default=2, help="runs per contender, alternating")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument(
        "--doc", action="store_true", help="rewrite the block in docs/performance.md"
    )
    args = parser.parse_args()
    contenders = args.contenders.split(",")
    if "flower" in contenders:
        try:
            import flwr  # noqa: F401
        except ImportError:
            print("flwr not installed: skipping Flower (pip install 'flwr[simulation]==1.42.0')")
            contenders.remove("flower")
    import_s = torch_import_s()
    began = time.time()
    report: dict[str, Any] = {"machine": machine(), "import_torch_s": import_s, "workloads": {}}
    lines: list[str] = []
    for workload in args.workloads.split(","):
        if workload == "a":
            from speed_worker import dataset_for

            dataset_for(WORKLOADS["a"])  # generate the cached data before any timing
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
        for repeat in range(args.repeats):  # alternating, so drifts in machine speed spread out
            shift = repeat % len(contenders)  # and rotated, so no contender always runs first
            for contender in contenders[shift:] + contenders[:shift]:
                print(
                    f"[{time.time() - began:6.0f} s] workload {workload}: {contender} "
                    f"(run {repeat + 1} of {args.repeats}) ...",
                    flush=True,
                )
                result = run_contender(contender, workload, args.rounds, args.device)
                runs[contender].append(summarise(result, workload))
        results = [combine(runs[c]) for c in contenders]
        if "vectorized" in contenders:
            shas = [r.get("model_sha") for r in runs["vectorized"]]
            if len(shas) < 2:
                shas.append(
                    run_contender("vectorized", workload, args.rounds, args.device).get("model_sha")
                )
            identical = None not in shas and len(set(shas)) == 1
            report.setdefault("rerun_identical", {})[workload] = identical
        add_rates(results, workload)
        report["workloads"][workload] = {"combined": results, "runs": runs}
        lines += [f"**({workload}) {WORKLOADS[workload].title}**, {args.rounds} rounds:", ""]
        lines += table(results, import_s, args.rounds) + [""]
        print("\n".join(lines[-len(results) - 4 :]), flush=True)
    report["total_s"] = time.time() - began
    command = " ".join(["benchmarks/speed.py", *sys.argv[1:]])
    lines += [
        f"Machine: {report['machine']}. `import torch` alone takes {import_s:.2f} s here. "
        f"Vectorised reruns bit-identical: {report.get('rerun_identical', {})}. "
        f"Benchmark wall time {report['total_s']:.0f} s. Command: `.venv/bin/python {command}`."
    ]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.doc:
        text = DOC.read_text()
        head, rest = text.split(START, 1)
        DOC.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + rest.split(END, 1)[1])
        from speed_plot import plot

        plot(report, DOC.with_suffix(".png"))
    print("\n".join(lines[-1:]))


if __name__ == "__main__":
    main()
