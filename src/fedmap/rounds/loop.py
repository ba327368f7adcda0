"""The round loop: plan, sample, attempt, retry, aggregate, evaluate, record; once for all.

Each round reads top to bottom as the protocol does: the server applies the
method's decision (maybe a prune step), a cohort is sampled and the transport
delivers the round to it; if fewer than ``min_clients`` valid replies came back
the attempt's replies are discarded and the round is retried with a fresh
sample; the accepted replies are folded into the model, which is evaluated, and
the round is recorded. The simulator and the Flower app run this same loop over
two transports (:mod:`fedmap.rounds.transport`). Its whole memory (the server, the
clients' masks where the transport holds them, byte totals) can be saved and
restored between rounds, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedmap.core.ledger import sum_entries
from fedmap.engines.evaluation import Evaluation, Evaluator
from fedmap.errors import FedMapError
from fedmap.protocol.downlink import RoundPlan
from fedmap.protocol.server import Server
from fedmap.rounds.faults import FaultModel, client_fates, round_duration
from fedmap.rounds.records import AttemptResult, Counts, Event, RoundRecord
from fedmap.rounds.sampling import sample_clients
from fedmap.rounds.transport import AttemptRequest, Transport


@dataclass(frozen=True)
class Attempts:
    """A round's attempts, the last of them the one that counted."""

    results: tuple[AttemptResult, ...]
    events: tuple[Event, ...]  # every attempt's, with the loop's discards and retries between
    discarded: int
    sim_time_s: float

    @property
    def last(self) -> AttemptResult:
        """The attempt whose replies are aggregated."""
        return self.results[-1]


class RoundLoop:
    """The round loop and its memory, resumable between rounds.

    Parameters
    ----------
    server, evaluator, transport
        The protocol's server, how the model is scored, how messages reach clients.
    num_clients, fraction, seed
        Population, share sampled per round, run seed.
    faults
        Simulated fates, retries (``min_clients``, ``max_attempts``) and attackers.
    """

    def __init__(
        self,
        server: Server,
        evaluator: Evaluator,
        transport: Transport,
        *,
        num_clients: int,
        fraction: float,
        seed: int,
        faults: FaultModel | None = None,
    ) -> None:
        self.server = server
        self.evaluator = evaluator
        self.transport = transport
        self.num_clients = num_clients
        self.fraction = fraction
        self.seed = seed
        self.faults = faults or FaultModel()
        self.round = 0  # last finished round
        self.bytes_cum = 0
        self.wall_s = 0.0  # seconds spent in finished rounds, across resumes

    def run(self, rounds: int) -> Iterator[RoundRecord]:
        """Run the rounds after the last finished one up to ``rounds``, one record each."""
        for round in range(self.round + 1, rounds + 1):
            yield self.step(round)

    def step(self, round: int) -> RoundRecord:
        """Run ``round`` to the end: attempts until enough valid replies, then aggregate."""
        started = time.perf_counter()
        plan = self.server.start_round(round)  # 1. the method's decision
        attempts = self.attempt(round)  # 2. sample, deliver, validate; retry if too few
        accepted = attempts.last.accepted
        self.server.finish_round([m for _, m in accepted])  # 3. aggregate
        evaluation = self.evaluator.evaluate(self.server.model.values)  # 4. evaluate
        self.server.observe(round, evaluation.val_accuracy)
        self.wall_s += time.perf_counter() - started
        self.round = round
        return self.record(round, plan, attempts, evaluation)  # 5. record

    def attempt(self, round: int) -> Attempts:
        """Attempt ``round`` until enough valid replies arrive; fail after ``max_attempts``."""
        faults = self.faults
        size = self.server.method.cohort_size(round)
        needed = faults.min_clients if size is None else min(faults.min_clients, size)
        results: list[AttemptResult] = []
        events: list[Event] = []
        discarded, sim_time = 0, 0.0
        for attempt in range(faults.max_attempts):
            cohort = sample_clients(
                self.num_clients, self.fraction, self.seed, round, attempt, size
            )
            fates = client_fates(faults, self.seed, round, attempt, cohort)
            sim_time += round_duration(list(fates.values()), faults.deadline_s)
            result = self.transport.run_attempt(
                AttemptRequest(round, attempt, tuple(cohort), fates)
            )
            results.append(result)
            events += result.events
            if len(result.accepted) >= needed:  # a method may fix a smaller cohort (PruneFL)
                return Attempts(tuple(results), tuple(events), discarded, sim_time)
            self.server.discard_replies()
            discarded += len(result.accepted)
            reason = "the attempt had too few valid replies"
            events += [Event(round, attempt, c, "discarded", reason) for c, _ in result.accepted]
            events.append(
                Event(
                    round,
                    attempt,
                    -1,
                    "retry",
                    f"{len(result.accepted)} valid replies < faults.min_clients "
                    f"{faults.min_clients}",
                )
            )
        raise FedMapError(
            f"round {round}: fewer than faults.min_clients={faults.min_clients} valid replies "
            f"in each of {faults.max_attempts} attempts (faults.max_attempts)"
        )

    def record(
        self, round: int, plan: RoundPlan, attempts: Attempts, evaluation: Evaluation
    ) -> RoundRecord:
        """The round's record: what the metrics, the ledger and the events get."""
        ledger = tuple(entry for result in attempts.results for entry in result.ledger)
        totals = sum_entries(list(ledger))
        self.bytes_cum += totals.total
        counts = Counts(discarded=attempts.discarded)
        for result in attempts.results:
            counts += result.counts
        losses = [m.train_loss for _, m in attempts.last.accepted]
        end = self.transport.end_round(round)
        return RoundRecord(
            round=round,
            iteration=self.server.method.iteration,
            density=self.server.model.mask.density,
            pruned=plan.pruned,
            cohort=attempts.last.participants,
            evaluation=evaluation,
            train_loss=float(np.mean(losses)) if losses else math.nan,
            bytes=totals,
            bytes_cum=self.bytes_cum,
            wall_s=self.wall_s,
            ledger=ledger,
            counts=counts,
            answered=len(attempts.last.accepted),
            attempts=len(attempts.results),
            sim_time_s=attempts.sim_time_s,
            events=attempts.events,
            mask_sha=self.server.model.mask.digest,
            extra=end.columns,
            files=end.files,
        )

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue after the last finished round."""
        tensors, server_meta = self.server.state_dict()
        client_tensors, clients_meta = self.transport.state_dict()
        tensors.update({f"clients.{k}": v for k, v in client_tensors.items()})
        meta = {
            "round": self.round,
            "bytes_cum": self.bytes_cum,
            "wall_s": self.wall_s,
            "server": server_meta,
            "clients": clients_meta,
        }
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the next :meth:`run` starts after it."""
        self.server.load_state_dict(tensors, meta["server"])
        prefix = "clients."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.transport.load_state_dict(own, meta["clients"])
        self.round = int(meta["round"])
        self.bytes_cum = int(meta["bytes_cum"])
        self.wall_s = float(meta["wall_s"])
