import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import compute_mask
from fedmap.models import build_model, prunable_names, transmitted_names
from fedmap.training.train import TrainConfig, load_values, train_local


def test_pruned_weights_stay_exactly_zero_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    state = model.state_dict()
    layout = Layout.from_state(
        {n: state[n] for n in transmitted_names(model)}, prunable_names(model)
    )
    values = layout.flatten(state)
    mask = compute_mask(values, Mask.dense(layout), rate=0.7)
    load_values(model, layout.unflatten(values * mask.flat))
    masks = {n: m.float() for n, m in mask.to_dict().items() if n in prunable_names(model)}
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    config = TrainConfig(epochs=3, batch_size=8, lr=0.1, momentum=0.9, weight_decay=1e-2)
    loss = train_local(model, masks, x, y, config, torch.Generator().manual_seed(0))
    trained = layout.flatten(model.state_dict())
    assert loss > 0
    assert torch.all(trained[~mask.flat] == 0.0)  # exact zeros, no re-zeroing after training
    assert not torch.equal(trained[mask.flat], (values * mask.flat)[mask.flat])  # kept ones moved


def test_training_is_deterministic_for_a_generator_seed():
    def once() -> torch.Tensor:
        torch.manual_seed(1)
        model = build_model("mlp", (1, 8, 8), 10)
        x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
        train_local(
            model,
            {},
            x,
            y,
            TrainConfig(batch_size=7, momentum=0.5),
            torch.Generator().manual_seed(3),
        )
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    assert torch.equal(once(), once())
