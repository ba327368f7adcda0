"""Every registered method runs end to end, in the simulator and over Flower, with equal results.

The method list is the registry's, read at collection time: a method registered
without working end to end (it cannot be built from a config, it crashes, it
breaks the protocol, or Flower carries its round differently) fails here.
"""

from __future__ import annotations

import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import fedmap.methods
from fedmap.core.mask import Mask
from fedmap.errors import FedMapError
from fedmap.methods import registry
from fedmap.methods.base import ClientTask, GlobalModel, Method, Step
from fedmap.methods.fedmap import FedMap
from fedmap.methods.registry import all_methods, get_method, method_names
from fedmap.runs.config import load_config
from fedmap.runs.experiment import prepare
from fedmap.runs.run_dir import create_run_dir
from fedmap.runs.session import open_for_resume, run

COMPARED = ("mask_sha", "density", "test_accuracy", "bytes_up", "bytes_down", "answered")


class Crash(Exception):
    """Stands in for the process dying."""


def tiny(name: str, write_tiny: Callable[..., Path]) -> Path:
    """A 4-round config of ``name`` on tiny digits, every client every round."""
    path = write_tiny(f"{name}.toml", rounds=4, num_clients=3, fraction=1.0)
    path.write_text(path.read_text().replace('method = "fedmap"', f'method = "{name}"'))
    return path


def finished(run_dir: Path) -> dict[str, Any]:
    """What a finished run leaves, less wall-clock time."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "rows": [{k: v for k, v in r.items() if k != "wall_s"} for r in rows],
        "ledger": (run_dir / "ledger.csv").read_text(),
        "events": (run_dir / "events.jsonl").read_text(),
        "model": {k: v.tolist() for k, v in load_file(run_dir / "model.safetensors").items()},
    }


def run_both(
    name: str,
    write_tiny: Callable[..., Path],
    tmp_path: Path,
    over_loopback: Callable[..., Any],
) -> dict[str, Any]:
    """``name`` in the simulator, crashed after round 2 and resumed, and over Flower."""
    path = tiny(name, write_tiny)
    config = load_config(path)
    out = create_run_dir(config, tmp_path / f"{name}-sim")
    summary = run(prepare(config), out)
    cut = create_run_dir(config, tmp_path / f"{name}-cut")

    def die(row: dict[str, Any]) -> None:
        if row["round"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run(prepare(config), cut, on_round=die)
    opened = open_for_resume(cut)
    run(opened.experiment, cut, checkpoint=opened.checkpoint)
    _, flower_rows = over_loopback(path, tmp_path / f"{name}-flower", nodes=3)
    return {
        "summary": summary,
        "sim": finished(out),
        "resumed": finished(cut),
        "flower_rows": flower_rows,
    }


def check_end_to_end(name: str, runs: dict[str, Any]) -> None:
    """What every method must show: it ran, kept to its declarations, resumed, Flower agreed."""
    cls = get_method(name)
    summary, sim = runs["summary"], runs["sim"]
    rows = sim["rows"]
    assert summary["method"] == name and summary["method_revision"] == cls.revision
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert all(r["rejected"] == 0 and r["answered"] == r["sampled"] for r in rows), "refused"
    if not cls.prunes:
        assert {r["density"] for r in rows} == {1.0}
    uplinks = [line.split(",") for line in sim["ledger"].splitlines()[1:]]
    own_masks = any(cells[2] == "up" and int(cells[4]) > 0 for cells in uplinks)
    assert own_masks == cls.sends_masks, "sends_masks says otherwise"
    assert runs["resumed"] == sim, "a crashed and resumed run differs from an uninterrupted one"
    compared = [[r[k] for k in COMPARED] for r in rows]
    flower = [[r[k] for k in COMPARED] for r in runs["flower_rows"]]
    assert flower == compared, "Flower disagrees with the simulator"


@pytest.mark.parametrize("name", method_names())
def test_every_method_runs_resumes_and_runs_over_flower_alike(
    name, write_tiny, tmp_path, over_loopback
):
    check_end_to_end(name, run_both(name, write_tiny, tmp_path, over_loopback))


def test_the_registry_holds_every_method_module_in_report_order():
    package = Path(fedmap.methods.__file__).parent
    modules = {i.name for i in pkgutil.iter_modules([str(package)])} - {
        "base",
        "registry",
        "revisions",
    }
    defined = {cls.__module__.rsplit(".", 1)[1] for cls in all_methods()}
    assert defined == modules  # each method module registers its method
    names = method_names()
    assert names[:2] == ("fedmap", "none") and len(set(names)) == len(names)
    for cls in all_methods():
        assert cls.label and cls.colour.startswith("#") and cls.revision >= 1
    assert "none" in [cls.name for cls in all_methods() if not cls.prunes]


def test_an_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match=r"pruning.method: expected one of \('fedmap', 'none'"):
        get_method("magic")


def test_registering_needs_a_name_and_a_label_and_refuses_a_clash():
    class Nameless(FedMap):
        name = ""

    with pytest.raises(TypeError, match="name"):
        registry.register(Nameless)

    class Clash(FedMap):
        name = "fedmap"

    with pytest.raises(ValueError, match="two methods are named 'fedmap'"):
        registry.register(Clash)


class NotBuildable(Method):
    """Registered, but nobody wrote ``from_config``."""

    name = "broken"
    label = "broken"

    def plan(self, round: int, model: GlobalModel) -> Step:
        return Step()


class RefusesItsOwnClients(FedMap):
    """Asks clients for their own masks, then refuses every one of them."""

    name = "broken"
    label = "broken"

    def client_task(self, round: int) -> ClientTask | None:
        return ClientTask(prune_to=0.5)

    def check_own_mask(self, own: Mask, model: Mask, task: ClientTask) -> str | None:
        return "never good enough"


@pytest.mark.parametrize("broken", [NotBuildable, RefusesItsOwnClients])
def test_a_registered_method_that_does_not_work_fails_the_end_to_end_check(
    broken, write_tiny, tmp_path, over_loopback, monkeypatch
):
    """What the parametrized test above does to any method registered without working."""
    monkeypatch.setitem(registry._REGISTRY, "broken", broken)
    assert "broken" in method_names()
    with pytest.raises((NotImplementedError, AssertionError, FedMapError)):
        check_end_to_end("broken", run_both("broken", write_tiny, tmp_path, over_loopback))


def test_a_method_made_for_a_test_cannot_be_built_from_a_config(tiny_config):
    with pytest.raises(NotImplementedError, match="NotBuildable cannot be built from a config"):
        NotBuildable.from_config(tiny_config(), torch.zeros(1))
