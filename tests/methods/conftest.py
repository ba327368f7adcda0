"""Shared by the method tests: a tiny digits run through the real round loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fedmap.core.codec import decode
from fedmap.core.mask import Mask
from fedmap.runs.experiment import build_loop, prepare

SCHEDULE = {
    "rounds": 10,
    "pruning__warmup_rounds": 2,
    "pruning__rounds_per_step": 2,
    "pruning__rate": 0.3,
    "pruning__target_sparsity": 0.8,
    "client__fraction": 1.0,  # every client every round: only a changed mask needs a bootstrap
}


@pytest.fixture
def simulate(tiny_config: Any) -> Callable[..., dict[str, Any]]:
    """Return ``run(method, spy=False, **overrides)``: every round's global mask and record.

    With ``spy``, also every reply as the server received it, decoded, by round.
    """

    def run(method: str, spy: bool = False, **overrides: Any) -> dict[str, Any]:
        config = tiny_config(**{**SCHEDULE, **overrides}, pruning__method=method)
        experiment = prepare(config)
        replies: dict[int, list[tuple[int, Any]]] = {}

        def intruder(round: int, sent: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
            layout = experiment.layout
            replies[round] = [
                (c, decode(d, layout.fingerprint, layout.num_prunable)) for c, d in sent
            ]
            return []

        loop = build_loop(experiment, intruder=intruder if spy else None)
        masks, records = [], []
        for record in loop.run(config.rounds):
            records.append(record)
            masks.append(loop.server.model.mask)
        return {"masks": masks, "records": records, "replies": replies, "layout": experiment.layout}

    return run


def count_reactivated(masks: list[Mask]) -> int:
    """Coordinates pruned in one round's global mask and kept again in a later one."""
    count = 0
    for before, after in zip(masks, masks[1:], strict=False):
        count += int((~before.flat & after.flat).sum())
    return count


@pytest.fixture
def reactivated() -> Callable[[list[Mask]], int]:
    """Return :func:`count_reactivated` (regrowth: masks that are not nested)."""
    return count_reactivated
