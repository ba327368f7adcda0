"""Client-local pruning: each client's own mask, the union on the server."""

from __future__ import annotations

import torch

from fedmap.core.codec import UPLINK
from fedmap.core.layout import Layout
from fedmap.methods.gradual import steps_to_target


def test_client_local_masks_differ_between_clients_and_weights_reactivate(simulate):
    run = simulate("local", spy=True)
    layout: Layout = run["layout"]
    pruning_rounds = [r for r, sent in run["replies"].items() if sent[0][1].mask_bits is not None]
    assert pruning_rounds == list(range(3, 11))  # every round after the warm-up
    for rnd in pruning_rounds:
        bits = [torch.from_numpy(m.mask_bits) for _, m in run["replies"][rnd]]
        assert all(m.kind == UPLINK for _, m in run["replies"][rnd])
        assert any(not torch.equal(bits[0], b) for b in bits[1:]), f"round {rnd}: masks agree"
        # each client kept the schedule's density of its own model
        steps = (rnd - 3) // 2 + 1
        expected = round((1 - 0.3) ** min(steps, steps_to_target(0.3, 0.8)) * layout.num_prunable)
        assert all(int(b.sum()) == expected for b in bits)
    # the global model is the union: denser than any client's
    final = run["records"][-1]
    assert final.density > (1 - 0.3) ** steps_to_target(0.3, 0.8)
    # a weight a client pruned comes back to it: another client kept it, so it is in the union
    # the client trains next, and it can win that client's next magnitude ranking
    back = 0
    for rnd in pruning_rounds[:-1]:
        before = {c: torch.from_numpy(m.mask_bits) for c, m in run["replies"][rnd]}
        after = {c: torch.from_numpy(m.mask_bits) for c, m in run["replies"][rnd + 1]}
        back += sum(int((~before[c] & after[c]).sum()) for c in before.keys() & after.keys())
    assert back > 0
    # the union mask reaches every client as a bootstrap, every round, and is charged
    assert all(r.counts.bootstraps == len(r.cohort) for r in run["records"][3:])
    assert all(e.mask > 0 for r in run["records"][3:] for e in r.ledger)
