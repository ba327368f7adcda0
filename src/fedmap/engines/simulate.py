"""The simulation round loop: every message really encoded, decoded and priced.

Each round reads top to bottom as the protocol does: the server plans (maybe a
prune step), every sampled client decodes its own downlink and updates its own
mask, the engine trains the cohort, each reply is encoded, validated and
aggregated, and the new global model is evaluated. The loop checks at run time
that every client's mask and values equal the server's (DESIGN.md invariant 2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fedmap.client.protocol import ClientState, encode_reply, receive_downlink
from fedmap.client.train import TrainConfig
from fedmap.core.ledger import LedgerEntry, RoundBytes, ledger_entry, sum_entries
from fedmap.core.mask import pack
from fedmap.engines.base import Engine, RoundConfig
from fedmap.engines.evaluation import Evaluation, Evaluator
from fedmap.errors import ProtocolError, UpdateRejected
from fedmap.strategies.server import Server


@dataclass(frozen=True)
class RoundRecord:
    """Everything measured in one round (the metrics row plus the ledger)."""

    round: int
    iteration: int
    density: float
    pruned: bool
    cohort: tuple[int, ...]
    evaluation: Evaluation
    train_loss: float
    bytes: RoundBytes
    bytes_cum: int
    bootstraps: int
    rejected: int
    wall_s: float
    ledger: tuple[LedgerEntry, ...]


def sample_clients(num_clients: int, fraction: float, seed: int, round: int) -> list[int]:
    """``max(1, round(fraction * num_clients))`` distinct clients, fixed by (seed, round)."""
    count = max(1, min(num_clients, round_half_up(fraction * num_clients)))
    rng = np.random.default_rng([seed, round, 0x5A])
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves up (Python's round() goes to even)."""
    return math.floor(value + 0.5)


def simulate(
    server: Server,
    engine: Engine,
    evaluator: Evaluator,
    *,
    num_clients: int,
    fraction: float,
    rounds: int,
    train: TrainConfig,
    seed: int,
) -> Iterator[RoundRecord]:
    """Run rounds ``1..rounds``, yielding one :class:`RoundRecord` per round."""
    states: dict[int, ClientState] = {}
    layout, dtype = server.layout, server.dtype
    bytes_cum = 0
    started = time.perf_counter()
    for rnd in range(1, rounds + 1):
        plan = server.start_round(rnd)
        cohort = sample_clients(num_clients, fraction, seed, rnd)
        ledger: list[LedgerEntry] = []
        bootstraps = 0
        for client in cohort:  # 1. downlinks: each client decodes and updates its own mask
            state = states.get(client, ClientState())
            encoded, sent_mask = server.downlink(state.epoch)
            ledger.append(
                ledger_entry(
                    encoded, round=rnd, client=client, direction="down", mask=sent_mask, dtype=dtype
                )
            )
            bootstraps += state.epoch != plan.in_step_epoch
            received = receive_downlink(encoded.data, state, layout)
            states[client] = _check_agreement(received.values, received.state, server, client)
        model = server.model
        results = engine.train_cohort(  # 2. local training
            pack(model.values, model.mask), model.mask, cohort, RoundConfig(rnd, seed, train)
        )
        replies, rejected = [], 0
        for result in results:  # 3. uplinks: encoded, priced, validated
            encoded = encode_reply(
                result.packed.float(),
                states[result.client_id],
                round=rnd,
                num_samples=result.num_samples,
                train_loss=result.train_loss,
                dtype=dtype,
                layout=layout,
            )
            ledger.append(
                ledger_entry(
                    encoded,
                    round=rnd,
                    client=result.client_id,
                    direction="up",
                    mask=model.mask,
                    dtype=dtype,
                )
            )
            try:
                replies.append(server.read_reply(encoded.data))
            except UpdateRejected:
                rejected += 1
        server.finish_round(replies)  # 4. aggregation
        evaluation = evaluator.evaluate(server.model.values)  # 5. evaluation
        server.observe(rnd, evaluation.val_accuracy)
        totals = sum_entries(ledger)
        bytes_cum += totals.total
        losses = [m.train_loss for m in replies]
        yield RoundRecord(
            round=rnd,
            iteration=server.strategy.iteration,
            density=server.model.mask.density,
            pruned=plan.pruned,
            cohort=tuple(cohort),
            evaluation=evaluation,
            train_loss=float(np.mean(losses)) if losses else math.nan,
            bytes=totals,
            bytes_cum=bytes_cum,
            bootstraps=int(bootstraps),
            rejected=rejected,
            wall_s=time.perf_counter() - started,
            ledger=tuple(ledger),
        )


def _check_agreement(
    values: torch.Tensor, state: ClientState, server: Server, client: int
) -> ClientState:
    """Fail loudly if a client decoded anything but the server's model; share the mask object."""
    model = server.model
    if state.mask is None or state.epoch != model.epoch or not state.mask.same_as(model.mask):
        raise ProtocolError(
            f"client {client} disagrees with the server's mask at epoch {model.epoch}"
        )
    if not torch.equal(values, model.values):
        raise ProtocolError(f"client {client} decoded values that differ from the server's model")
    return ClientState(state.epoch, model.mask)  # one mask object for every client in step
