"""benchmarks/dead_units.py tells a network with dead ReLUs from one that merely predicts badly."""

from __future__ import annotations

import torch

from fedmap.models.registry import build_model


def test_units_count_as_dead_only_when_no_input_makes_them_fire(load_benchmark):
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    x = torch.randn(64, 1, 8, 8)
    layer_activity = load_benchmark("dead_units").layer_activity
    healthy = {name: (alive, units) for name, alive, units, _ in layer_activity(model, x)}
    assert set(healthy) == {"conv1", "conv2", "fc1"}  # the logits layer is left out
    assert healthy["conv2"] == (64, 64)
    with torch.no_grad():
        model.conv2.bias[:60] = -1e3  # 60 channels can no longer fire, 4 still can
    rows = {name: (alive, share) for name, alive, _, share in layer_activity(model, x)}
    assert rows["conv2"][0] == 4
    assert rows["conv2"][1] < 0.0625 + 1e-6
    assert rows["conv1"][0] == healthy["conv1"][0]  # the layer before is untouched
