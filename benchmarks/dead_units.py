"""Which units of a checkpointed global model ever fire on test images: dead ReLUs or slow learning?

    .venv/bin/python benchmarks/dead_units.py RUN_DIR/checkpoints/round-000002.ckpt [--images 2000]

A run that sits at chance accuracy for many rounds either learns slowly or has a
network that no longer passes a signal. The second is what a dying-ReLU collapse
looks like: most units' pre-activations are negative for every input, so their
gradients are zero and no later round can revive them. For every Conv2d and
Linear layer but the last, this prints how many output units (channels or
neurons) have a positive pre-activation for at least one of the first
``--images`` test images, which for the ReLU models (``mlp``, ``cnn``,
``simple_cnn``) is how many fire at all; then the test accuracy and loss and the
predicted-class counts. ``resnet20`` normalises between its convolutions and
ReLUs, so its counts do not mean that. docs/methods.md (PruneFL) quotes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fedmap.core.layout import Layout
from fedmap.data.datasets import load_dataset
from fedmap.models.registry import build_model, prunable_names, transmitted_names
from fedmap.runs.checkpoint import load_checkpoint
from fedmap.runs.config import load_config
from fedmap.training.train import load_values


def layer_activity(model: nn.Module, x: torch.Tensor) -> list[tuple[str, int, int, float]]:
    """(layer, units that fire for some input, units, share of positive pre-activations)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
        for name, module in layers[:-1]  # the last layer's outputs are logits
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    rows = []
    for name, _ in layers[:-1]:
        positive = outputs[name] > 0
        per_unit = positive.transpose(0, 1).reshape(positive.shape[1], -1).any(dim=1)
        rows.append((name, int(per_unit.sum()), positive.shape[1], float(positive.float().mean())))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="RUN_DIR/checkpoints/round-NNNNNN.ckpt")
    parser.add_argument("--images", type=int, default=2000, help="test images to look at")
    args = parser.parse_args()
    run_dir = args.checkpoint.resolve().parents[1]
    config = load_config(run_dir / "config.toml")
    data = load_dataset(config.data.name, config.data.path or None, seed=config.seed)
    model = build_model(config.model.name, data.input_shape, data.num_classes)
    state = model.state_dict()
    layout = Layout.from_state(
        {name: state[name] for name in transmitted_names(model)}, prunable_names(model)
    )  # the run's canonical order (fedmap.runs.experiment.prepare)
    values = load_checkpoint(args.checkpoint).tensors["server.values"]
    load_values(model, layout.unflatten(values))  # a wrong model raises ProtocolError
    x, y = data.x_test[: args.images], data.y_test[: args.images]
    print(f"{args.checkpoint} ({config.model.name}, {len(x)} test images)")
    for name, alive, units, share in layer_activity(model, x):
        print(f"  {name}: {alive}/{units} units fire for some image; {share:.1%} of pre-acts > 0")
    with torch.no_grad():
        logits = model(x)
    predicted = torch.bincount(logits.argmax(dim=1), minlength=data.num_classes).tolist()
    accuracy = float((logits.argmax(dim=1) == y).float().mean())
    print(f"  accuracy {accuracy:.2%}, loss {float(F.cross_entropy(logits, y)):.3f}")
    print(f"  predicted classes: {predicted}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
