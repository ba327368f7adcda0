"""``fedmap sweep`` and ``fedmap report`` end to end on tiny digits runs, and their parts."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmap.cli import app
from fedmap.errors import ConfigError
from fedmap.methods.registry import get_method
from fedmap.reporting.run_dirs import find_runs
from fedmap.runs.config import dump_toml
from fedmap.runs.experiment import prepare
from fedmap.runs.grid import load_sweep
from fedmap.runs.run_dir import create_run_dir
from fedmap.runs.session import run as run_experiment

BASE = """
seed = 0
rounds = 4
device = "cpu"
engine = "vectorized"
[data]
name = "digits"
num_clients = 6
[model]
name = "mlp"
[client]
fraction = 0.5
batch_size = 16
lr = 0.1
[pruning]
method = "fedmap"
warmup_rounds = 1
rounds_per_step = 1
rate = 0.3
target_sparsity = 0.5
"""

SWEEP = """
base = "base.toml"
parallel = 2
[set]
"client.momentum" = 0.5
[grid]
"pruning.method" = ["fedmap", "none"]
seed = [0, 1]
"""


def write(folder: Path, sweep: str = SWEEP) -> Path:
    (folder / "base.toml").write_text(BASE)
    (folder / "sweep.toml").write_text(sweep)
    return folder / "sweep.toml"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The CI sweep: 2 methods x 2 seeds through the CLI, then the report."""
    folder = tmp_path_factory.mktemp("sweep")
    sweep_file = write(folder)
    out = folder / "out"
    runner = CliRunner()
    first = runner.invoke(app, ["sweep", str(sweep_file), "--out", str(out)])
    again = runner.invoke(app, ["sweep", str(sweep_file), "--out", str(out)])
    report = runner.invoke(app, ["report", str(out), "--out", str(folder / "report")])
    return {"out": out, "first": first, "again": again, "report": report, "folder": folder}


def test_the_sweep_runs_every_point_into_its_own_directory(swept):
    assert swept["first"].exit_code == 0, swept["first"].output
    out: Path = swept["out"]  # type: ignore[assignment]
    names = sorted(p.name for p in out.iterdir() if (p / "summary.json").is_file())
    assert names == ["fedmap-seed0", "fedmap-seed1", "none-seed0", "none-seed1"]
    summary = json.loads((out / "fedmap-seed1" / "summary.json").read_text())
    assert summary["method"] == "fedmap" and summary["final_sparsity"] > 0.4
    config = (out / "fedmap-seed1" / "config.toml").read_text()
    assert "seed = 1" in config and "momentum = 0.5" in config  # grid and [set] both applied
    assert "4/4" in swept["first"].output and "finished" in swept["first"].output


def test_a_second_sweep_skips_finished_runs(swept):
    assert swept["again"].exit_code == 0, swept["again"].output
    assert swept["again"].output.count("skipped") >= 4
    assert "0 run, 4 skipped" in swept["again"].output


def test_the_report_has_tables_over_seeds_and_legible_figures(swept):
    assert swept["report"].exit_code == 0, swept["report"].output
    report: Path = swept["folder"] / "report"  # type: ignore[operator]
    md = (report / "report.md").read_text()
    page = (report / "report.html").read_text()
    out: Path = swept["out"]  # type: ignore[assignment]
    accs = [
        json.loads((out / f"fedmap-seed{s}" / "summary.json").read_text())["final_test_accuracy"]
        for s in (0, 1)
    ]
    mean, std = statistics.fmean(accs) * 100, statistics.stdev(accs) * 100
    assert f"{mean:.2f} ± {std:.2f}" in md  # mean ± std over the two seeds
    assert "| FedMap | 2 |" in md and "| dense FedAvg | 2 |" in md
    for png in (
        "accuracy_vs_round.png",
        "density_vs_round.png",
        "accuracy_vs_bytes.png",
        "accuracy_vs_sparsity.png",
        "client_accuracy.png",
        "partition.png",
    ):
        data = (report / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
        assert f"src='{png}'" in page and f"({png})" in md
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")


def test_grid_expansion_labels_tables_and_collapses_dense_runs(tmp_path):
    sweep = write(
        tmp_path,
        """
base = "base.toml"
[grid]
"pruning.target_sparsity" = [0.5, 0.8]
setting = [{label = "iid", "data.partition" = "iid"},
           {label = "dir0.3", data = {partition = "dirichlet", alpha = 0.3}}]
"pruning.method" = ["none", "fedmap"]
""",
    )
    plan = load_sweep(sweep)
    names = [r.name for r in plan.runs]
    assert names == [
        "iid-none",
        "target_sparsity0.5-iid-fedmap",
        "dir0.3-none",
        "target_sparsity0.5-dir0.3-fedmap",
        "target_sparsity0.8-iid-fedmap",
        "target_sparsity0.8-dir0.3-fedmap",
    ]
    dirichlet = next(r for r in plan.runs if r.name == "target_sparsity0.8-dir0.3-fedmap")
    assert dirichlet.config.data.alpha == 0.3 and dirichlet.config.pruning.target_sparsity == 0.8
    only = load_sweep(sweep, only=["*dir0.3*"], overrides=["rounds=2"])
    assert [r.name for r in only.runs] == [n for n in names if "dir0.3" in n]
    assert all(r.config.rounds == 2 for r in only.runs)


def test_the_registry_decides_which_methods_ignore_pruning_keys(tmp_path, monkeypatch):
    sweep = write(
        tmp_path,
        """
base = "base.toml"
[grid]
"pruning.target_sparsity" = [0.5, 0.8]
"pruning.method" = ["none"]
""",
    )
    assert [r.name for r in load_sweep(sweep).runs] == ["none"]
    monkeypatch.setattr(get_method("none"), "prunes", True)  # as if it pruned: no collapse
    names = [r.name for r in load_sweep(sweep).runs]
    assert names == ["target_sparsity0.5-none", "target_sparsity0.8-none"]


def test_without_out_a_sweep_writes_to_a_folder_git_ignores(tmp_path):
    plan = load_sweep(write(tmp_path))
    assert plan.out == Path("runs") / "sweep"
    root = Path(__file__).resolve().parents[2]
    git = shutil.which("git")
    if git is None or subprocess.run([git, "-C", str(root), "rev-parse"], check=False).returncode:
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        [
            git,
            "-C",
            str(root),
            "check-ignore",
            "-q",
            str(plan.out / "fedmap-seed0" / "summary.json"),
        ],
        check=False,
    )
    assert ignored.returncode == 0, "runs/ must stay in .gitignore"


@pytest.mark.parametrize(
    "sweep, message",
    [
        ('base = "missing.toml"', "base config not found"),
        ('base = "base.toml"\nbogus = 1', "unknown sweep keys"),
        ('base = "base.toml"\n[grid]\nseed = []', "grid.seed: expected a non-empty list"),
        ('base = "base.toml"\n[grid]\nx = [{a = 1}]', "needs a 'label'"),
        (
            'base = "base.toml"\n[grid]\n"pruning.method" = ["fedmap", "magic"]',
            "sweep run magic: pruning.method",
        ),
        ('base = "base.toml"\nparallel = 0', "parallel must be an integer >= 1"),
    ],
)
def test_a_bad_sweep_fails_before_anything_runs(tmp_path, monkeypatch, sweep, message):
    monkeypatch.chdir(tmp_path)  # the default output folder is relative to here
    with pytest.raises(ConfigError, match=message):
        load_sweep(write(tmp_path, sweep))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.toml", "sweep.toml"]


def test_two_points_with_one_name_are_refused_not_dropped(tmp_path):
    sweep = write(
        tmp_path,
        """
base = "base.toml"
[grid]
setting = [{label = "dir", "data.partition" = "dirichlet", "data.alpha" = 0.5},
           {label = "dir", "data.partition" = "dirichlet", "data.alpha" = 0.1}]
""",
    )
    with pytest.raises(ConfigError, match="both named 'dir'"):
        load_sweep(sweep)


def test_an_interrupted_run_is_resumed_a_failed_one_reported_and_a_stale_one_kept(tmp_path):
    sweep = write(
        tmp_path,
        """
base = "base.toml"
[grid]
seed = [0, 1]
"data.name" = ["digits", "fashion_mnist"]
""",
    )
    out = tmp_path / "out"
    plan = load_sweep(sweep, out=out, overrides=['data.path="/nonexistent"'], only=["seed0-*"])
    target = next(r for r in plan.runs if r.name == "seed0-namedigits")
    # a run that died after round 2's checkpoint, as a killed sweep leaves it
    create_run_dir(target.config, out / target.name)

    class Crash(Exception):
        pass

    def die(row: dict[str, object]) -> None:
        if row["round"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run_experiment(prepare(target.config), out / target.name, on_round=die)
    # digits ignores data.path; Fashion-MNIST is not at /nonexistent, so that run fails
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            str(sweep),
            "--out",
            str(out),
            "--only",
            "seed0-*",
            "--set",
            'data.path="/nonexistent"',
        ],
    )
    assert result.exit_code == 1
    assert "resuming" in (out / "logs" / f"{target.name}.log").read_text()
    assert (out / target.name / "summary.json").is_file()
    assert "failed   seed0-namefashion_mnist" in result.output
    assert "Fashion-MNIST not found" in result.output
    # a checkpointed run whose recorded config differs is not resumed under the old config
    other = next(r for r in load_sweep(sweep, out=out).runs if r.name == "seed1-namedigits")
    create_run_dir(other.config, out / other.name)
    with pytest.raises(Crash):
        run_experiment(prepare(other.config), out / other.name, on_round=die)
    config_file = out / other.name / "config.toml"
    config_file.write_text(config_file.read_text().replace("lr = 0.1", "lr = 0.2"))
    refused = CliRunner().invoke(
        app, ["sweep", str(sweep), "--out", str(out), "--only", "seed1-namedigits"]
    )
    assert refused.exit_code == 1 and "started with a different config" in refused.output
    assert not (out / other.name / "summary.json").exists()
    # the same sweep again: the finished run is skipped
    args = ["sweep", str(sweep), "--out", str(out), "--only", "seed0-namedigits"]
    args += ["--set", 'data.path="/nonexistent"']
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "skipped" in again.output
    # a finished run whose config differs from the sweep's is reported, never overwritten
    recorded = (out / target.name / "config.toml").read_text()
    assert recorded == dump_toml(target.config)
    edited = recorded.replace("rounds = 4", "rounds = 5")
    (out / target.name / "config.toml").write_text(edited)
    stale = CliRunner().invoke(app, args)
    assert stale.exit_code == 1 and "stale" in stale.output
    assert (out / target.name / "config.toml").read_text() == edited


def test_report_refuses_a_folder_without_runs(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "holds no run directory" in result.output
    assert not (tmp_path / "r").exists()


def test_an_interrupted_sweep_starts_nothing_more_and_stops_its_runs(tmp_path):
    import os
    import time

    from fedmap.runs.sweep import run_sweep

    sweep = write(tmp_path, 'base = "base.toml"\nparallel = 2\n[grid]\nseed = [0, 1, 2, 3]\n')
    plan = load_sweep(sweep, out=tmp_path / "out")
    pids = tmp_path / "pids"
    pids.mkdir()
    # a stand-in for `python -m fedmap run`: seed1 records its pid and runs on; seed0 waits
    # until seed1 is running, then fails, and its outcome is when the user presses Ctrl-C
    stub = tmp_path / "stub.sh"
    stub.write_text(
        "#!/bin/bash\n"
        f'case "$*" in *seed0*) for i in $(seq 100); do [ -e {pids}/seed1 ] && exit 1; '
        "sleep 0.05; done; exit 1;;\n"
        f'*) name=$(echo "$*" | grep -o "seed[0-9]" | head -1); echo $$ > {pids}/$name; '
        "exec sleep 60;;\nesac\n"
    )
    stub.chmod(0o755)

    def interrupt(outcome: object, done: int, total: int) -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, interrupt, python=str(stub))
    assert time.monotonic() - started < 20  # the 60 s child was stopped, not waited for
    assert sorted(p.name for p in pids.iterdir()) == ["seed1"]  # seed2 and seed3 never started
    pid = int((pids / "seed1").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # terminated and reaped


def recording_stub(folder: Path, script: str = "") -> tuple[Path, Path]:
    """A stand-in for `python -m fedmap run` that records its arguments, runs ``script``, fails."""
    calls = folder / "calls"
    stub = folder / "stub.sh"
    stub.write_text(f'#!/bin/bash\necho "$*" >> {calls}\n{script}\nexit 1\n')
    stub.chmod(0o755)
    return stub, calls


def test_a_run_another_sweep_holds_is_reported_busy_and_left_alone(tmp_path):
    import fcntl

    from fedmap.runs.sweep import run_sweep

    sweep = write(tmp_path, 'base = "base.toml"\nparallel = 2\n[grid]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    plan = load_sweep(sweep, out=out)
    assert [r.name for r in plan.runs] == ["seed0", "seed1"]
    # the other sweep is mid-way through seed0: no checkpoint yet, so this one would delete it
    (out / "logs").mkdir(parents=True)
    (out / "seed0").mkdir()
    (out / "seed0" / "metrics.csv").write_text("round\n1\n")
    stub, calls = recording_stub(tmp_path)
    with (out / "logs" / "seed0.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        outcomes = {o.name: o for o in run_sweep(plan, python=str(stub))}
    assert outcomes["seed0"].status == "busy" and "seed0.lock" in outcomes["seed0"].detail
    assert (out / "seed0" / "metrics.csv").read_text() == "round\n1\n"
    assert outcomes["seed1"].status == "failed"  # it was started: the stub fails every run
    assert [line.split()[-2].rsplit("/", 1)[-1] for line in calls.read_text().splitlines()] == [
        "seed1"
    ]
    # the other sweep ended (its lock goes with its open file): the next sweep claims seed0
    again = {o.name: o for o in run_sweep(plan, python=str(stub))}
    assert again["seed0"].status == "failed" and "seed0" in calls.read_text()


def test_a_run_finished_by_another_sweep_meanwhile_is_skipped_not_rerun(tmp_path):
    from fedmap.runs.sweep import run_sweep

    sweep = write(tmp_path, 'base = "base.toml"\nparallel = 1\n[grid]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    plan = load_sweep(sweep, out=out)
    seed1 = out / "seed1"
    seed1.mkdir(parents=True)
    (seed1 / "config.toml").write_text(dump_toml(plan.runs[1].config))
    # while this sweep runs seed0, the other sweep finishes seed1
    stub, calls = recording_stub(tmp_path, f"echo '{{}}' > {seed1}/summary.json")
    outcomes = {o.name: o.status for o in run_sweep(plan, python=str(stub))}
    assert outcomes == {"seed0": "failed", "seed1": "skipped"}
    assert "seed1" not in calls.read_text()


def test_the_cli_names_busy_runs_and_says_how_to_include_them(tmp_path):
    import fcntl

    sweep = write(tmp_path, 'base = "base.toml"\n[grid]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    with (out / "logs" / "seed0.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(
            app, ["sweep", str(sweep), "--out", str(out), "--only", "seed0"]
        )
    assert result.exit_code == 0, result.output
    assert "busy" in result.output and "seed0" in result.output
    assert "1 run(s) were running in another sweep" in result.output
    assert not (out / "seed0").exists()


def test_runs_split_the_cores_this_process_may_use_not_the_machines(tmp_path, monkeypatch):
    import fedmap.runs.cores
    from fedmap.runs.sweep import run_sweep

    # under `taskset -c 3` (or a Slurm/container CPU set) one core is ours, whatever the machine
    monkeypatch.setattr(fedmap.runs.cores.os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(fedmap.runs.cores.os, "cpu_count", lambda: 64)
    sweep = write(tmp_path, 'base = "base.toml"\nparallel = 1\n[grid]\nseed = [0]\n')
    stub, calls = recording_stub(tmp_path, f'echo "threads=$OMP_NUM_THREADS" >> {tmp_path}/calls')
    run_sweep(load_sweep(sweep, out=tmp_path / "out"), python=str(stub))
    assert "threads=1" in calls.read_text().splitlines()
    monkeypatch.setattr(fedmap.runs.cores.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert fedmap.runs.cores.usable_cores() == 8


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_the_run_process_holds_its_claim_so_a_killed_sweep_frees_nothing(tmp_path):
    from fedmap.runs.sweep import run_sweep

    sweep = write(tmp_path, 'base = "base.toml"\nparallel = 1\n[grid]\nseed = [0]\n')
    # the child lists its open files: the run's lock must be among them
    stub, calls = recording_stub(tmp_path, f"ls -l /proc/$$/fd >> {tmp_path}/calls")
    run_sweep(load_sweep(sweep, out=tmp_path / "out"), python=str(stub))
    assert "logs/seed0.lock" in calls.read_text()


def test_a_run_made_under_another_method_revision_is_stale_not_skipped(
    swept, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    shutil.copytree(swept["out"], out)  # type: ignore[arg-type]
    summary_path = out / "fedmap-seed0" / "summary.json"
    before = summary_path.read_text()
    assert json.loads(before)["method_revision"] == 1
    sweep = str(swept["folder"] / "sweep.toml")  # type: ignore[operator]
    # as if FedMap's arithmetic had changed since
    monkeypatch.setattr(get_method("fedmap"), "revision", 2)
    result = CliRunner().invoke(app, ["sweep", sweep, "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.count("stale    fedmap-seed") == 2  # dense FedAvg's runs still count
    assert "2 skipped (finished before), 0 failed, 2 stale" in result.output
    assert "ran fedmap revision 1, this code runs revision 2" in result.output
    assert summary_path.read_text() == before  # reported, never overwritten
    # and a report leaves such runs out, saying so, rather than average two versions
    found, warnings = find_runs([out])
    assert sorted(p.name for p in found) == ["none-seed0", "none-seed1"]
    assert len(warnings) == 2 and all("revision 1" in w for w in warnings)
    report = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0 and "left out" in report.output
    alone = CliRunner().invoke(app, ["report", str(out / "fedmap-seed0"), "--out", str(tmp_path)])
    assert alone.exit_code != 0 and "revision 1" in alone.output


def test_a_run_made_before_a_new_config_key_existed_is_still_finished(swept, tmp_path):
    """Configs compare as configs: a key added since, at its default, changes nothing."""
    out = tmp_path / "out"
    shutil.copytree(swept["out"], out)  # type: ignore[arg-type]
    for config in out.glob("*/config.toml"):
        text = config.read_text()
        assert 'ranking = "magnitude"\n' in text
        config.write_text(text.replace('ranking = "magnitude"\n', ""))  # as written before it
    sweep = str(swept["folder"] / "sweep.toml")  # type: ignore[operator]
    result = CliRunner().invoke(app, ["sweep", sweep, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 run, 4 skipped (finished before)" in result.output
    broken = out / "fedmap-seed0" / "config.toml"
    broken.write_text(broken.read_text() + "\n[gone]\nkey = 1\n")  # a key fedmap does not know
    result = CliRunner().invoke(app, ["sweep", sweep, "--out", str(out)])
    assert result.exit_code == 1 and "stale    fedmap-seed0" in result.output
