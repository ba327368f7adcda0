"""The in-process transport: every message really encoded, decoded and priced, in this process.

Each sampled client decodes its own downlink and updates its own mask
(:func:`~fedmap.protocol.client.receive_downlink`); the engine trains the cohort;
each reply is encoded (:func:`~fedmap.protocol.client.make_reply`), charged, and
validated by the server. The transport checks at run time that every client's
mask and values equal the server's (invariant 2).

Faults (:mod:`fedmap.rounds.faults`) are simulated here: dropped and late clients
do not answer, attackers send hostile but well-formed updates, an optional
intruder injects arbitrary bytes. The clients' memory (mask version and mask) is
this transport's, so it is saved with every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fedmap.core.ledger import ledger_entry, statistics_entry
from fedmap.core.mask import Mask, pack
from fedmap.engines.base import Engine, RoundConfig
from fedmap.errors import ProtocolError
from fedmap.protocol.client import ClientState, make_reply, receive_downlink
from fedmap.protocol.server import Server
from fedmap.rounds.attempt import AttemptLog
from fedmap.rounds.faults import FaultModel, attack_update
from fedmap.rounds.records import AttemptResult, RoundEnd
from fedmap.rounds.transport import AttemptRequest
from fedmap.training.train import TrainConfig

# Extra replies an intruder slips in after the honest ones: (round, honest replies) -> replies.
Intruder = Callable[[int, list[tuple[int, bytes]]], list[tuple[int, bytes]]]
Sent = list[tuple[int, bytes]]


class InProcessTransport:
    """Clients in this process, trained by ``engine``; faults simulated (see module docstring).

    Parameters
    ----------
    server
        The protocol's server.
    engine
        Trains a cohort from the global model.
    train, seed
        Local SGD settings and the run seed (each client's batches follow from it).
    faults
        Deadline and attackers (the loop draws the fates).
    intruder
        Optional source of extra hostile replies (tests and fuzzing).
    """

    columns: tuple[str, ...] = ()
    resumable = True

    def __init__(
        self,
        server: Server,
        engine: Engine,
        *,
        train: TrainConfig,
        seed: int,
        faults: FaultModel | None = None,
        intruder: Intruder | None = None,
    ) -> None:
        self.server = server
        self.engine = engine
        self.train = train
        self.seed = seed
        self.faults = faults or FaultModel()
        self.intruder = intruder
        self.states: dict[int, ClientState] = {}

    def run_attempt(self, request: AttemptRequest) -> AttemptResult:
        """Downlinks, local training, uplinks, validation and the norm screen."""
        log = AttemptLog(self.server, request.round, request.attempt)
        log.sampled(len(request.cohort))
        participants = self._deliver(request, log)  # 1. downlinks; simulated fates
        sent, statistics = self._train(request.round, participants, log)  # 2-3. train, reply
        if self.intruder is not None:
            sent += self.intruder(request.round, list(sent))
        accepted = []
        sent.reverse()  # popped from the end: each reply's bytes are freed once decoded
        while sent:  # 4. validation, one reply at a time
            client, data = sent.pop()
            message = log.read(client, data)
            if message is None:
                continue
            accepted.append((client, message))
            if client in statistics:
                log.read_statistics(client, statistics.pop(client))
        return log.result(log.screen(accepted), participants)  # 5. the cohort's norm screen

    def _deliver(self, request: AttemptRequest, log: AttemptLog) -> list[int]:
        """Each client decodes its downlink and updates its mask; those due to answer.

        Each kind of downlink is one bytes object per round, and decoding is a pure
        function of (bytes, version, mask): clients holding the same state would all
        decode (and prune) to the same result, so it is done once per state.
        """
        layout, deadline = self.server.layout, self.faults.deadline_s
        decoded: dict[tuple[int, int, int], tuple[bytes, ClientState]] = {}
        participants = []
        for client in request.cohort:
            state = self.states.get(client, ClientState())
            encoded, _ = log.downlink(client, state.version)
            key = (id(encoded.data), state.version, id(state.mask))
            if key not in decoded:  # the bytes are kept in the value, so the id stays theirs
                received = receive_downlink(encoded.data, state, layout)
                checked = _check_agreement(received.values, received.state, self.server, client)
                decoded[key] = (encoded.data, checked)
            fate = request.fates[client]
            if fate.dropped:  # crashed mid-round: its new state is lost with it
                log.event(client, "dropped", "went offline")
                continue
            self.states[client] = decoded[key][1]
            if fate.late(deadline):
                reason = f"reply due at {fate.latency_s:.2f} s > deadline {deadline} s"
                log.event(client, "late", reason)
                continue
            participants.append(client)
        return participants

    def _train(
        self, round: int, participants: list[int], log: AttemptLog
    ) -> tuple[Sent, dict[int, bytes]]:
        """Train the participants; encode and charge their replies (attackers' included)."""
        server, faults = self.server, self.faults
        model, plan = server.model, server.plan
        task = plan.task if plan is not None else None
        start = pack(model.values, model.mask)
        round_cfg = RoundConfig.for_task(round, self.seed, self.train, task)
        results = (
            self.engine.train_cohort(start, model.mask, participants, round_cfg)
            if participants
            else []
        )
        sent: Sent = []
        statistics: dict[int, bytes] = {}
        results.reverse()  # popped from the end: each trained model is freed once encoded
        while results:
            result = results.pop()
            packed = result.packed.float()
            if result.client_id in faults.attackers:
                packed = attack_update(packed, start, faults.attack, faults.attack_scale)
            reply = make_reply(
                task,
                packed,
                model.mask,
                self.states[result.client_id],
                round=round,
                num_samples=result.num_samples,
                train_loss=result.train_loss,
                dtype=server.dtype,
                layout=server.layout,
                grad_mean=result.grad_mean,
                grad_sq=result.grad_sq,
                chosen=result.own_mask,
            )
            entry = ledger_entry(
                reply.update,
                round=round,
                client=result.client_id,
                direction="up",
                mask=reply.mask,
                dtype=server.dtype,
            )
            log.charge(entry)
            sent.append((result.client_id, reply.update.data))
            if reply.statistics is not None:  # PruneFL: a second message, priced as well
                log.charge(statistics_entry(reply.statistics, entry))
                statistics[result.client_id] = reply.statistics.data
        return sent, statistics

    def end_round(self, round: int) -> RoundEnd:
        """No columns or files of its own."""
        return RoundEnd()

    def summary(self) -> dict[str, Any]:
        """Nothing to add to the summary."""
        return {}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Each client's mask version, and each distinct mask once."""
        masks: dict[int, Mask] = {}
        for state in self.states.values():
            if state.mask is not None:
                masks.setdefault(state.version, state.mask)
        tensors = {f"mask.{version}": mask.prunable_bits() for version, mask in masks.items()}
        versions = {str(c): s.version for c, s in sorted(self.states.items())}
        return tensors, {"versions": versions}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the server's state first)."""
        layout, current = self.server.layout, self.server.model
        masks: dict[int, Mask] = {}
        self.states = {}
        for client, version in meta["versions"].items():
            if version not in masks:
                bits = tensors.get(f"mask.{version}")
                if bits is None:
                    raise ProtocolError(f"checkpoint lacks the mask of version {version}")
                mask = Mask.from_prunable_bits(layout, bits)
                masks[version] = current.mask if mask.same_as(current.mask) else mask
            self.states[int(client)] = ClientState(int(version), masks[version])


def _check_agreement(
    values: torch.Tensor, state: ClientState, server: Server, client: int
) -> ClientState:
    """Fail loudly if a client decoded anything but the server's model; share the mask object."""
    model = server.model
    if state.mask is None or state.version != model.version or not state.mask.same_as(model.mask):
        raise ProtocolError(
            f"client {client} disagrees with the server's mask at version {model.version}"
        )
    if not torch.equal(values, model.values):
        raise ProtocolError(f"client {client} decoded values that differ from the server's model")
    return ClientState(state.version, model.mask)  # one mask object for every client in step
