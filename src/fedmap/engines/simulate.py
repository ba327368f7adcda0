"""The simulation round loop: every message really encoded, decoded and priced.

Each round reads top to bottom as the protocol does: the server plans (maybe a
prune step), every sampled client decodes its own downlink and updates its own
mask, the engine trains the cohort, each reply is encoded, validated and
aggregated, and the new global model is evaluated. The loop checks at run time
that every client's mask and values equal the server's (DESIGN.md invariant 2).

Faults (:mod:`fedmap.engines.faults`) are simulated inside the round: dropped and
late clients do not answer, attackers send hostile but well-formed updates, an
optional intruder injects arbitrary bytes. A round aggregates the valid replies if
at least ``min_clients`` arrived, else it is retried with a fresh sample. The loop's
whole memory (client epochs and masks, byte totals) can be saved and restored
between rounds, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedmap.client.protocol import ClientState, make_reply, receive_downlink
from fedmap.client.train import TrainConfig
from fedmap.core.codec import Message
from fedmap.core.ledger import (
    LedgerEntry,
    RoundBytes,
    ledger_entry,
    statistics_entry,
    sum_entries,
)
from fedmap.core.mask import Mask, pack
from fedmap.engines.base import Engine, RoundConfig
from fedmap.engines.evaluation import Evaluation, Evaluator
from fedmap.engines.faults import (
    Fate,
    FaultModel,
    attack_update,
    client_fates,
    round_duration,
)
from fedmap.errors import FedMapError, ProtocolError, UpdateRejected
from fedmap.strategies.server import Server

# Extra replies an intruder slips in after the honest ones: (round, honest replies) -> replies.
Intruder = Callable[[int, list[tuple[int, bytes]]], list[tuple[int, bytes]]]


@dataclass(frozen=True)
class Event:
    """Something that went wrong with one client in one attempt of a round."""

    round: int
    attempt: int
    client: int
    kind: str  # "dropped", "late", "rejected", "capped", "discarded", "retry"
    reason: str


@dataclass(frozen=True)
class RoundRecord:
    """Everything measured in one round (the metrics row plus the ledger and events)."""

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
    sampled: int = 0
    answered: int = 0
    dropped: int = 0
    late: int = 0
    discarded: int = 0  # valid replies of failed attempts, thrown away with the attempt
    attempts: int = 1
    sim_time_s: float = 0.0
    events: tuple[Event, ...] = ()
    mask_sha: str = ""  # digest of the global mask after the round: runs compare masks by it
    extra: dict[str, Any] = field(default_factory=dict)  # front-door columns (Flower's wire)


def sample_clients(
    num_clients: int,
    fraction: float,
    seed: int,
    round: int,
    attempt: int = 0,
    count: int | None = None,
) -> list[int]:
    """``max(1, round(fraction * num_clients))`` (or ``count``) distinct clients.

    Fixed by seed, round and attempt.
    """
    count = cohort_size(num_clients, fraction) if count is None else min(count, num_clients)
    key = [seed, round, 0x5A] if attempt == 0 else [seed, round, 0x5A, attempt]
    rng = np.random.default_rng(key)
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


def cohort_size(num_clients: int, fraction: float) -> int:
    """Clients sampled per attempt."""
    return max(1, min(num_clients, round_half_up(fraction * num_clients)))


def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves up (Python's round() goes to even)."""
    return math.floor(value + 0.5)


@dataclass
class _Attempt:
    """What one attempt of a round produced."""

    accepted: list[tuple[int, Message]]
    participants: list[int]


class RoundLoop:
    """The round loop and its memory (client states, byte totals), resumable between rounds.

    How a round's messages reach clients is the subclass's :meth:`_attempt`: the
    simulator trains them in-process (:class:`Simulation`), the Flower app sends them
    over Flower's wire. Planning, retries, aggregation, evaluation and the record
    are the same code for both.

    Parameters
    ----------
    server, evaluator
        The protocol's server and how the model is scored.
    num_clients, fraction, train, seed
        Population, share sampled per round, local SGD settings, run seed.
    faults
        Dropouts, stragglers, retries and attackers (none by default).
    """

    def __init__(
        self,
        server: Server,
        evaluator: Evaluator,
        *,
        num_clients: int,
        fraction: float,
        train: TrainConfig,
        seed: int,
        faults: FaultModel | None = None,
    ) -> None:
        self.server = server
        self.evaluator = evaluator
        self.num_clients = num_clients
        self.fraction = fraction
        self.train = train
        self.seed = seed
        self.faults = faults or FaultModel()
        self.states: dict[int, ClientState] = {}
        self.round = 0  # last finished round
        self.bytes_cum = 0
        self.wall_s = 0.0  # seconds spent in finished rounds, across resumes

    def run(self, rounds: int) -> Iterator[RoundRecord]:
        """Run the rounds after the last finished one up to ``rounds``, one record each."""
        for rnd in range(self.round + 1, rounds + 1):
            yield self.step(rnd)

    def step(self, rnd: int) -> RoundRecord:
        """Run round ``rnd`` to the end: attempts until enough valid replies, then aggregate."""
        started = time.perf_counter()
        server, faults = self.server, self.faults
        plan = server.start_round(rnd)
        ledger: list[LedgerEntry] = []
        events: list[Event] = []
        kinds = ("sampled", "bootstraps", "rejected", "dropped", "late", "discarded")
        counts = dict.fromkeys(kinds, 0)
        sim_time = 0.0
        size = server.strategy.cohort_size(rnd)
        for attempt in range(faults.max_attempts):
            cohort = sample_clients(self.num_clients, self.fraction, self.seed, rnd, attempt, size)
            fates = client_fates(faults, self.seed, rnd, attempt, cohort)
            sim_time += round_duration(list(fates.values()), faults.deadline_s)
            counts["sampled"] += len(cohort)
            outcome = self._attempt(rnd, attempt, cohort, fates, ledger, events, counts)
            needed = faults.min_clients if size is None else min(faults.min_clients, size)
            if len(outcome.accepted) >= needed:  # a method may fix a smaller cohort (PruneFL)
                break
            server.discard_replies()
            counts["discarded"] += len(outcome.accepted)
            events += [
                Event(rnd, attempt, client, "discarded", "the attempt had too few valid replies")
                for client, _ in outcome.accepted
            ]
            events.append(
                Event(
                    rnd,
                    attempt,
                    -1,
                    "retry",
                    f"{len(outcome.accepted)} valid replies < faults.min_clients "
                    f"{faults.min_clients}",
                )
            )
        else:
            raise FedMapError(
                f"round {rnd}: fewer than faults.min_clients={faults.min_clients} valid replies "
                f"in each of {faults.max_attempts} attempts (faults.max_attempts)"
            )
        accepted = outcome.accepted
        server.finish_round([m for _, m in accepted])  # aggregation
        evaluation = self.evaluator.evaluate(server.model.values)  # evaluation
        server.observe(rnd, evaluation.val_accuracy)
        totals = sum_entries(ledger)
        self.bytes_cum += totals.total
        self.wall_s += time.perf_counter() - started
        self.round = rnd
        losses = [m.train_loss for _, m in accepted]
        return RoundRecord(
            round=rnd,
            iteration=server.strategy.iteration,
            density=server.model.mask.density,
            pruned=plan.pruned,
            cohort=tuple(outcome.participants),
            evaluation=evaluation,
            train_loss=float(np.mean(losses)) if losses else math.nan,
            bytes=totals,
            bytes_cum=self.bytes_cum,
            bootstraps=counts["bootstraps"],
            rejected=counts["rejected"],
            wall_s=self.wall_s,
            ledger=tuple(ledger),
            sampled=counts["sampled"],
            answered=len(accepted),
            dropped=counts["dropped"],
            late=counts["late"],
            discarded=counts["discarded"],
            attempts=attempt + 1,
            sim_time_s=sim_time,
            events=tuple(events),
            mask_sha=server.model.mask.digest,
            extra=self._round_extra(rnd),
        )

    def _attempt(
        self,
        rnd: int,
        attempt: int,
        cohort: list[int],
        fates: dict[int, Fate],
        ledger: list[LedgerEntry],
        events: list[Event],
        counts: dict[str, int],
    ) -> _Attempt:
        """Send the round to ``cohort``, collect, validate and screen the replies."""
        raise NotImplementedError

    def _round_extra(self, rnd: int) -> dict[str, Any]:
        """Extra metrics columns of round ``rnd`` (the Flower app adds its wire bytes)."""
        return {}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue after the last finished round (server included)."""
        tensors, server_meta = self.server.state_dict()
        masks: dict[int, Mask] = {}
        for state in self.states.values():
            if state.mask is not None:
                masks.setdefault(state.epoch, state.mask)
        for epoch, mask in masks.items():
            tensors[f"client_mask.{epoch}"] = mask.prunable_bits()
        meta = {
            "round": self.round,
            "bytes_cum": self.bytes_cum,
            "wall_s": self.wall_s,
            "client_epochs": {str(c): s.epoch for c, s in sorted(self.states.items())},
            "server": server_meta,
        }
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the next :meth:`run` starts after it."""
        self.server.load_state_dict(tensors, meta["server"])
        layout, current = self.server.layout, self.server.model
        masks: dict[int, Mask] = {}
        self.states = {}
        for client, epoch in meta["client_epochs"].items():
            if epoch not in masks:
                bits = tensors.get(f"client_mask.{epoch}")
                if bits is None:
                    raise ProtocolError(f"checkpoint lacks the mask of epoch {epoch}")
                mask = Mask.from_prunable_bits(layout, bits)
                masks[epoch] = current.mask if mask.same_as(current.mask) else mask
            self.states[int(client)] = ClientState(int(epoch), masks[epoch])
        self.round = int(meta["round"])
        self.bytes_cum = int(meta["bytes_cum"])
        self.wall_s = float(meta["wall_s"])


class Simulation(RoundLoop):
    """The round loop with clients trained in this process by an engine.

    Parameters
    ----------
    server, engine, evaluator
        The protocol's server, how clients are trained, how the model is scored.
    num_clients, fraction, train, seed, faults
        As for :class:`RoundLoop`.
    intruder
        Optional source of extra hostile replies (tests and fuzzing).
    """

    def __init__(
        self,
        server: Server,
        engine: Engine,
        evaluator: Evaluator,
        *,
        num_clients: int,
        fraction: float,
        train: TrainConfig,
        seed: int,
        faults: FaultModel | None = None,
        intruder: Intruder | None = None,
    ) -> None:
        super().__init__(
            server,
            evaluator,
            num_clients=num_clients,
            fraction=fraction,
            train=train,
            seed=seed,
            faults=faults,
        )
        self.engine = engine
        self.intruder = intruder

    def _attempt(
        self,
        rnd: int,
        attempt: int,
        cohort: list[int],
        fates: dict[int, Fate],
        ledger: list[LedgerEntry],
        events: list[Event],
        counts: dict[str, int],
    ) -> _Attempt:
        """One attempt: downlinks, local training, uplinks, validation and the norm screen."""
        server, faults = self.server, self.faults
        layout, dtype = server.layout, server.dtype
        participants = []
        # Each kind of downlink is one bytes object per round, and decoding is a pure
        # function of (bytes, epoch, mask): clients holding the same state would all
        # decode (and prune) to the same result, so the simulator does it once.
        decoded: dict[tuple[int, int, int], tuple[bytes, ClientState]] = {}
        for client in cohort:  # 1. downlinks: each client decodes and updates its own mask
            state = self.states.get(client, ClientState())
            encoded, sent_mask = server.downlink(state.epoch, client)
            ledger.append(
                ledger_entry(
                    encoded, round=rnd, client=client, direction="down", mask=sent_mask, dtype=dtype
                )
            )
            counts["bootstraps"] += encoded.mask_nbytes > 0
            key = (id(encoded.data), state.epoch, id(state.mask))
            if key not in decoded:  # the bytes are kept in the value, so the id stays theirs
                received = receive_downlink(encoded.data, state, layout)
                checked = _check_agreement(received.values, received.state, server, client)
                decoded[key] = (encoded.data, checked)
            new_state = decoded[key][1]
            fate = fates[client]
            if fate.dropped:  # crashed mid-round: its new state is lost with it
                counts["dropped"] += 1
                events.append(Event(rnd, attempt, client, "dropped", "went offline"))
                continue
            self.states[client] = new_state
            if fate.late(faults.deadline_s):
                counts["late"] += 1
                events.append(
                    Event(
                        rnd,
                        attempt,
                        client,
                        "late",
                        f"reply due at {fate.latency_s:.2f} s > deadline {faults.deadline_s} s",
                    )
                )
                continue
            participants.append(client)
        model, task = server.model, server.plan.task if server.plan else None
        start = pack(model.values, model.mask)
        round_cfg = RoundConfig.for_task(rnd, self.seed, self.train, task)
        results = (
            self.engine.train_cohort(start, model.mask, participants, round_cfg)  # 2. training
            if participants
            else []
        )
        sent: list[tuple[int, bytes]] = []
        statistics: dict[int, bytes] = {}
        results.reverse()  # popped from the end: each trained model is freed once encoded
        while results:  # 3. uplinks: encoded and priced
            result = results.pop()
            packed = result.packed.float()
            if result.client_id in faults.attackers:
                packed = attack_update(packed, start, faults.attack, faults.attack_scale)
            reply = make_reply(
                task,
                packed,
                model.mask,
                self.states[result.client_id],
                round=rnd,
                num_samples=result.num_samples,
                train_loss=result.train_loss,
                dtype=dtype,
                layout=layout,
                grad_mean=result.grad_mean,
                grad_sq=result.grad_sq,
                chosen=result.own_mask,
            )
            entry = ledger_entry(
                reply.update,
                round=rnd,
                client=result.client_id,
                direction="up",
                mask=reply.mask,
                dtype=dtype,
            )
            ledger.append(entry)
            sent.append((result.client_id, reply.update.data))
            if reply.statistics is not None:  # PruneFL: a second message, priced as well
                ledger.append(statistics_entry(reply.statistics, entry))
                statistics[result.client_id] = reply.statistics.data
        if self.intruder is not None:
            sent += self.intruder(rnd, list(sent))
        accepted = []
        sent.reverse()  # likewise: each reply's bytes are freed once decoded
        while sent:  # 4. validation, one reply at a time
            client, data = sent.pop()
            try:
                accepted.append((client, server.read_reply(data, client)))
            except UpdateRejected as error:
                counts["rejected"] += 1
                events.append(Event(rnd, attempt, client, "rejected", str(error)))
                continue
            if client in statistics:
                try:
                    server.read_statistics(statistics.pop(client), client)
                except UpdateRejected as error:  # the update stands; only its scores are lost
                    events.append(Event(rnd, attempt, client, "rejected", str(error)))
        screening = server.screen(accepted)  # 5. the cohort-level norm screen
        for client, reason in screening.rejected:
            counts["rejected"] += 1
            events.append(Event(rnd, attempt, client, "rejected", reason))
        events += [Event(rnd, attempt, c, "capped", reason) for c, reason in screening.capped]
        return _Attempt(screening.accepted, participants)


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
