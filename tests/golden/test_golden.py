"""Tiny runs of every front door reproduce their recorded outputs byte for byte.

The goldens were recorded before the architecture changed (tests/golden/golden.py
says how to regenerate them); a refactor that moves code must leave every ledger
entry, metrics value, mask digest, event and final weight as it was.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("golden", Path(__file__).with_name("golden.py"))
assert _SPEC is not None and _SPEC.loader is not None
golden = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(golden)

REGENERATE = ".venv/bin/python tests/golden/golden.py --record"


def recorded_machine() -> dict[str, object]:
    return json.loads((golden.DATA / "manifest.json").read_text())


def first_difference(got: str, want: str) -> str:
    got_lines, want_lines = got.splitlines(), want.splitlines()
    for number, (a, b) in enumerate(zip(got_lines, want_lines, strict=False), start=1):
        if a != b:
            return f"line {number}:\n  got  {a}\n  want {b}"
    return f"{len(got_lines)} lines, golden has {len(want_lines)}"


@pytest.mark.parametrize("name", list(golden.SCENARIOS))
def test_scenario_reproduces_its_golden_outputs(name, tmp_path):
    if name.startswith("flower-"):
        pytest.importorskip("flwr", reason="the fedmap[flower] extra is not installed")
    here, then = golden.machine(), recorded_machine()
    differ = {k: (then.get(k), here[k]) for k in golden.DECIDES_FLOATS if then.get(k) != here[k]}
    if differ:
        pytest.skip(f"goldens were recorded on another machine {differ}: {REGENERATE}")
    folder = golden.DATA / name
    wanted = {path.name: path.read_text() for path in folder.iterdir()}
    got = golden.run_scenario(name, tmp_path)
    assert sorted(got) == sorted(wanted)
    for file, text in got.items():
        assert text == wanted[file], (
            f"{name}/{file} differs at {first_difference(text, wanted[file])}"
        )


def test_every_scenario_has_goldens_and_no_golden_is_orphaned():
    recorded = {p.name for p in golden.DATA.iterdir() if p.is_dir()}
    assert recorded == set(golden.SCENARIOS)


def test_the_goldens_exercise_what_they_claim_to():
    """Faults, an intruder, retries, a guard revert, a resume and Flower all really happened."""
    events = (golden.DATA / "faults-fedmap" / "events.jsonl").read_text()
    for kind in ("dropped", "late", "rejected", "retry", "discarded"):
        assert f'"kind": "{kind}"' in events, kind
    assert "update norm" in events and "unknown client" in events
    guard = (golden.DATA / "guard-fedmap" / "metrics.csv").read_text().splitlines()
    density = guard[0].split(",").index("density")
    assert [float(line.split(",")[density]) for line in guard[9:11]] == [0.2, 1.0]
    assert "flower_bytes_up" in (golden.DATA / "flower-fedmap" / "metrics.csv").read_text()
    assert ",dense," in (golden.DATA / "flower-fedmap" / "nodes.csv").read_text()
