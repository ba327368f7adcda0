"""A plain dense Flower ClientApp, as Flower's quickstart writes one: FedMap-agnostic.

It receives the model as full tensors in an ``ArrayRecord`` named ``arrays``,
trains every weight with plain SGD and returns full tensors plus
``num-examples``. It uses fedmap only for the model architecture and its data
partition, never the codec or masks: this is the client a FedMap server must accept
(docs/design.md §2). It ignores FedMap's pruning, so what it sends for pruned
weights is dropped by the server.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmap.runs.config import config_from_text
from fedmap.runs.experiment import prepare

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    """Load the arrays, train one local epoch with SGD, send every tensor back."""
    content = message.content
    config = config_from_text(str(content.config_records["config"]["fedmap-config"]))
    experiment = prepare(config)
    model = experiment.model
    arrays = content.array_records["arrays"]
    state = {k: torch.from_numpy(v.numpy()) for k, v in arrays.items()}
    model.load_state_dict(state, strict=False)
    partition = int(context.node_config["partition-id"]) % len(experiment.clients)
    index = torch.from_numpy(experiment.clients[partition].train_idx)
    x = experiment.dataset.x_train[index].to(experiment.device)
    y = experiment.dataset.y_train[index].to(experiment.device)
    c = config.client
    optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum)
    model.train()
    generator = torch.Generator().manual_seed(config.seed + partition)
    losses = []
    for _ in range(c.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), c.batch_size):
            batch = order[start : start + c.batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    trained = {k: v.detach().cpu() for k, v in model.state_dict().items() if k in state}
    content = RecordDict(
        {
            "arrays": ArrayRecord(trained),
            "metrics": MetricRecord(
                {"num-examples": len(x), "train_loss": sum(losses) / max(len(losses), 1)}
            ),
        }
    )
    return Message(content, reply_to=message)
