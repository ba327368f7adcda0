"""The server's half of the protocol, shared by the simulator and the Flower app.

Per round: ask the strategy what changes, build each client's downlink (values
packed with the mask it holds, or a bootstrap), validate every reply before it can
touch the model, aggregate packed vectors, and keep the global model exactly in
the transport dtype so that every client decodes precisely the server's numbers.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

from fedmap.client.rules import ClientTask
from fedmap.core.aggregate import aggregate, masked_mean, weighted_mean
from fedmap.core.codec import (
    DOWNLINK,
    STATISTICS,
    UPLINK,
    Encoded,
    Message,
    PruneInstruction,
    decode,
    encode,
    quantize,
)
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack, unpack
from fedmap.core.prune import kept_for_density
from fedmap.errors import CodecError, UpdateRejected
from fedmap.strategies.base import GlobalModel, Strategy

MIN_COHORT_FOR_NORM_SCREEN = 3  # a median of fewer norms says nothing about outliers
NORM_FLOOR = 0.01  # distances below this share of the model's own norm are never outliers


@dataclass
class RoundPlan:
    """What the server sends this round, fixed once at the start of the round."""

    round: int
    in_step_epoch: int | None  # a client holding this epoch gets values only; None: all bootstrap
    in_step_mask: Mask  # the mask in-step values are packed with (the old one on a prune round)
    prune: PruneInstruction | None
    pruned: bool  # the mask changed at the start of this round
    task: ClientTask | None = None  # the clients' extra work this round (baselines)
    expected: set[int] = field(default_factory=set)  # clients sent a downlink this round
    replied: set[int] = field(default_factory=set)  # clients whose reply was accepted
    statistics: dict[int, Message] = field(default_factory=dict)  # accepted statistics
    weights: dict[int, int] = field(default_factory=dict)  # accepted replies' (capped) samples
    _cache: dict[str, tuple[Encoded, Mask]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Screening:
    """What the cohort-level screen let through, refused, and capped (with the reasons)."""

    accepted: list[tuple[int, Message]]
    rejected: list[tuple[int, str]]
    capped: list[tuple[int, str]]  # accepted, but their sample count was capped


class Server:
    """Holds the global model and runs one round at a time.

    Parameters
    ----------
    strategy
        The method (FedMap, dense, baselines).
    layout
        Canonical order of the transmitted tensors.
    initial_values
        Canonical vector of the freshly initialised model.
    dtype
        Transport dtype of values, both directions.
    rule, trim_fraction
        Aggregation rule over packed vectors.
    norm_threshold
        Reject an update whose distance from the global model exceeds this many times
        the cohort's median distance (``inf`` disables the screen).
    """

    def __init__(
        self,
        strategy: Strategy,
        layout: Layout,
        initial_values: torch.Tensor,
        *,
        dtype: str = "float32",
        rule: str = "mean",
        trim_fraction: float = 0.1,
        norm_threshold: float = math.inf,
    ) -> None:
        self.strategy = strategy
        self.layout = layout
        self.dtype = dtype
        self.rule = rule
        self.trim_fraction = trim_fraction
        self.norm_threshold = norm_threshold
        self.model = GlobalModel(quantize(initial_values, dtype), Mask.dense(layout), 0)
        self.plan: RoundPlan | None = None

    def start_round(self, round: int) -> RoundPlan:
        """Apply the strategy's decision for ``round`` to the global model and fix what to send."""
        model = self.model
        step = self.strategy.plan(round, model)
        if step.reset_values is not None and step.mask is not None:
            values = quantize(step.reset_values, self.dtype).masked_fill(~step.mask.flat, 0.0)
            self.model = GlobalModel(values, step.mask, model.epoch + 1)
            self.plan = RoundPlan(round, None, step.mask, None, pruned=True)
        elif step.prune is not None and step.mask is not None:
            values = model.values.masked_fill(~step.mask.flat, 0.0)
            self.model = GlobalModel(values, step.mask, model.epoch + 1)
            self.plan = RoundPlan(round, model.epoch, model.mask, step.prune, pruned=True)
            self.plan._cache["in_step"] = (self._encode_values(model, step.prune), model.mask)
        else:
            self.plan = RoundPlan(round, model.epoch, model.mask, None, pruned=False)
        self.plan.task = self.strategy.client_task(round)
        return self.plan

    def downlink(self, client_epoch: int, client: int | None = None) -> tuple[Encoded, Mask]:
        """The message for a client holding ``client_epoch``, and the mask its values use.

        A client in step gets values only (plus the prune instruction on a prune
        round); one already holding the new mask (it took this round's step in an
        earlier attempt) gets values packed with it; a stale or new one gets a
        bootstrap with the mask. Messages do not depend on the client otherwise, so
        each kind is encoded once per round. ``client`` is remembered as a party
        whose reply this round may be accepted.
        """
        plan = self._current_plan()
        if client is not None:
            self.expect(client)
        if client_epoch == plan.in_step_epoch:
            kind = "in_step"
        elif client_epoch == self.model.epoch:  # took this round's step or bootstrap already
            kind = "current"
        else:
            kind = "bootstrap"
        if kind not in plan._cache:
            if kind == "bootstrap":
                plan._cache[kind] = (self._encode_bootstrap(), self.model.mask)
            else:
                plan._cache[kind] = (self._encode_values(self.model, None), self.model.mask)
        return plan._cache[kind]

    def expect(self, client: int) -> None:
        """Accept a reply from ``client`` this round (it was sent the model another way)."""
        self._current_plan().expected.add(client)

    def read_reply(self, data: bytes, client: int) -> Message:
        """Decode and validate ``client``'s reply; raise :class:`UpdateRejected` with the reason.

        Nothing here changes the model: a rejected reply leaves no trace but the
        count. Content is checked first, then identity: a reply must come from a
        client sent a downlink this round that has not replied yet (so a replay is
        refused). An accepted reply marks ``client`` as answered.
        """
        plan = self.plan
        if plan is None:
            raise UpdateRejected("no round in progress")
        try:
            message = decode(data, self.layout.fingerprint, self.layout.num_prunable)
        except CodecError as error:
            raise UpdateRejected(f"undecodable reply: {error}") from error
        own_mask = plan.task is not None and plan.task.sends_mask
        if message.mask_bits is not None and not own_mask:
            raise UpdateRejected("reply carries a mask, which this round's method does not send")
        kept = self.model.mask.num_kept
        if message.mask_bits is not None:
            kept = int(message.mask_bits.sum()) + self.layout.numel - self.layout.num_prunable
        expected = {
            "kind": (message.kind, UPLINK),
            "round": (message.round, plan.round),
            "epoch": (message.epoch, self.model.epoch),
            "dtype": (message.dtype, self.dtype),
            "length": (message.values.numel(), kept),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise UpdateRejected(f"reply {name} is {got!r}, expected {want!r}")
        if message.prune is not None:
            raise UpdateRejected("reply carries a prune instruction (downlink only)")
        if message.mask_bits is not None and plan.task is not None:
            problem = self._own_mask_problem(message.mask_bits, plan.task)
            if problem is not None:
                raise UpdateRejected(problem)
        if message.num_samples <= 0:
            raise UpdateRejected(f"reply reports {message.num_samples} training samples")
        if not bool(torch.isfinite(message.values).all()) or not math.isfinite(message.train_loss):
            raise UpdateRejected("reply contains NaN or Inf")
        if client not in plan.expected:
            raise UpdateRejected(f"reply from unknown client {client!r} (not sent this round)")
        if client in plan.replied:
            raise UpdateRejected(f"second reply from client {client} this round")
        plan.replied.add(client)
        plan.weights[client] = message.num_samples
        return message

    def read_statistics(self, data: bytes, client: int) -> Message:
        """Decode and validate ``client``'s statistics message (PruneFL's importance).

        Accepted only from a client whose reply this round was accepted, once, when
        the round asked for them; one scalar per prunable weight, finite, >= 0.
        """
        plan = self.plan
        if plan is None:
            raise UpdateRejected("no round in progress")
        if plan.task is None or not plan.task.importance:
            raise UpdateRejected("statistics sent in a round that did not ask for them")
        try:
            message = decode(data, self.layout.fingerprint, self.layout.num_prunable)
        except CodecError as error:
            raise UpdateRejected(f"undecodable statistics: {error}") from error
        expected = {
            "kind": (message.kind, STATISTICS),
            "round": (message.round, plan.round),
            "length": (message.values.numel(), self.layout.num_prunable),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise UpdateRejected(f"statistics {name} is {got!r}, expected {want!r}")
        if not bool(torch.isfinite(message.values).all()) or bool((message.values < 0).any()):
            raise UpdateRejected("statistics contain NaN, Inf or negative values")
        if client not in plan.replied or client in plan.statistics:
            raise UpdateRejected(f"statistics from client {client} without an accepted reply")
        plan.statistics[client] = message
        return message

    def discard_replies(self) -> None:
        """Forget this attempt's accepted replies (the round is retried with a fresh sample)."""
        plan = self._current_plan()
        plan.replied.clear()
        plan.expected.clear()
        plan.statistics.clear()
        plan.weights.clear()

    def screen(self, replies: list[tuple[int, Message]]) -> Screening:
        """Refuse updates far outside the cohort's; cap sample counts far above it.

        The yardstick is the median distance from the global model, robust to a
        minority of attackers; a reply more than ``norm_threshold`` times it away is
        refused. Near convergence most clients barely move while a few with harder
        data still do, so the yardstick never drops below :data:`NORM_FLOOR` of the
        model's norm (without that floor, honest clients were refused late in long
        runs). A claimed sample count above ``norm_threshold`` times the median is
        capped there rather than refused (honest label-skewed clients can hold 10x
        the median), so no one reply can buy the FedAvg weights. Cohorts smaller than
        three are not screened: their median is no reference.
        """
        if not math.isfinite(self.norm_threshold) or len(replies) < MIN_COHORT_FOR_NORM_SCREEN:
            return Screening(list(replies), [], [])
        start = self.model.values.double()
        norms = [
            float(torch.linalg.vector_norm(self.dense(m).double() - start)) for _, m in replies
        ]
        floor = NORM_FLOOR * float(torch.linalg.vector_norm(start))
        limit = self.norm_threshold * max(statistics.median(norms), floor)
        most = max(
            1,
            math.floor(self.norm_threshold * statistics.median(m.num_samples for _, m in replies)),
        )
        accepted, rejected, capped = [], [], []
        for (client, message), norm in zip(replies, norms, strict=True):
            if norm > limit:
                rejected.append((client, f"update norm {norm:.4g} exceeds {limit:.4g}"))
                if self.plan is not None:
                    self.plan.statistics.pop(client, None)
                continue
            if message.num_samples > most:
                capped.append((client, f"sample count {message.num_samples} capped to {most}"))
                message = dataclasses.replace(message, num_samples=most)
                if self.plan is not None:
                    self.plan.weights[client] = most
            accepted.append((client, message))
        return Screening(accepted, rejected, capped)

    def _own_mask_problem(self, bits: Any, task: ClientTask) -> str | None:
        """Why a client's own mask breaks this round's task (None: it does not).

        A client-local prune keeps exactly the round's count inside the model's mask
        (so no one reply can make the union dense); a drop-and-regrow keeps each
        tensor's count (so no one reply can shift the votes by keeping more).
        """
        own = Mask.from_prunable_bits(self.layout, torch.from_numpy(bits))
        model = self.model.mask
        if task.drop_to is not None:
            for i, is_prunable in enumerate(self.layout.prunable):
                part = self.layout.slice_of(i)
                if is_prunable and int(own.flat[part].sum()) != int(model.flat[part].sum()):
                    return f"reply's mask changes the kept count of {self.layout.names[i]}"
            return None
        if task.prune_to is not None:
            if not own.is_subset_of(model):
                return "reply's mask keeps weights the global model has pruned"
            want = min(
                model.num_kept_prunable, kept_for_density(self.layout.num_prunable, task.prune_to)
            )
            if own.num_kept_prunable != want:
                return f"reply's mask keeps {own.num_kept_prunable} weights, the round asks {want}"
        return None

    def dense(self, message: Message) -> torch.Tensor:
        """A reply's values as a canonical vector (its own mask, or the model's)."""
        return unpack(message.values, self.reply_mask(message))

    def reply_mask(self, message: Message) -> Mask:
        """The mask a validated reply's values are packed with."""
        if message.mask_bits is None:
            return self.model.mask
        return Mask.from_prunable_bits(self.layout, torch.from_numpy(message.mask_bits))

    def finish_round(self, replies: list[Message]) -> None:
        """Aggregate validated replies into the global model (kept in the transport dtype).

        Replies that carry their own masks (client-local pruning, FedDST) are
        averaged per coordinate over the clients that kept it, and the strategy
        chooses the new mask from the result; a changed mask opens a new epoch, so
        every client receives it with the next round's bootstrap. Statistics of the
        accepted clients reach the strategy as one sample-weighted mean.
        """
        plan, self.plan = self.plan, None  # the round is closed: late replies find no round
        if not replies:
            return
        if plan is not None and plan.statistics:  # weighted as the clients' accepted replies
            clients = sorted(plan.statistics)
            mean = weighted_mean(
                [plan.statistics[c].values for c in clients], [plan.weights[c] for c in clients]
            )
            self.strategy.observe_statistics(plan.round, mean)
        if any(m.mask_bits is not None for m in replies):
            self._merge([m for m in replies], plan.round if plan else 0)
            return
        packed = aggregate(
            [m.values for m in replies],
            [m.num_samples for m in replies],
            self.rule,
            self.trim_fraction,
        )
        values = quantize(unpack(packed, self.model.mask), self.dtype)
        self.model = GlobalModel(values, self.model.mask, self.model.epoch)

    def _merge(self, replies: list[Message], round: int) -> None:
        """Per-coordinate FedAvg over the clients' own masks; the strategy picks the new mask."""
        masks = [self.reply_mask(m) for m in replies]
        values, votes = masked_mean(
            [unpack(m.values, mask) for m, mask in zip(replies, masks, strict=True)],
            [mask.flat for mask in masks],
            [m.num_samples for m in replies],
        )
        mask = self.strategy.merge(round, self.model, values, votes)
        values = quantize(values.masked_fill(~mask.flat, 0.0), self.dtype)
        if mask.same_as(self.model.mask):  # same support: clients in step keep their epoch
            self.model = GlobalModel(values, self.model.mask, self.model.epoch)
        else:  # a new mask no client can derive: the next round bootstraps everyone
            self.model = GlobalModel(values, mask, self.model.epoch + 1)

    def observe(self, round: int, val_accuracy: float) -> None:
        """Pass the end-of-round validation accuracy to the strategy."""
        self.strategy.observe(round, self.model, val_accuracy)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The global model and the strategy's memory, as tensors and JSON-able values."""
        tensors, meta = self.strategy.state_dict()
        tensors = {f"strategy.{k}": v for k, v in tensors.items()}
        tensors["server.values"] = self.model.values
        tensors["server.mask"] = self.model.mask.prunable_bits()
        return tensors, {"epoch": self.model.epoch, "strategy": meta}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (between rounds)."""
        mask = Mask.from_prunable_bits(self.layout, tensors["server.mask"])
        self.model = GlobalModel(tensors["server.values"].clone(), mask, int(meta["epoch"]))
        prefix = "strategy."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.strategy.load_state_dict(own, meta["strategy"], self.layout)
        self.plan = None

    def _encode_values(self, model: GlobalModel, prune: PruneInstruction | None) -> Encoded:
        plan = self._current_plan()
        message = Message(
            DOWNLINK, plan.round, model.epoch, pack(model.values, model.mask), self.dtype, prune
        )
        return encode(message, self.layout.fingerprint)

    def _encode_bootstrap(self) -> Encoded:
        model, plan = self.model, self._current_plan()
        bits = model.mask.prunable_bits().numpy()
        message = Message(
            DOWNLINK,
            plan.round,
            model.epoch,
            pack(model.values, model.mask),
            self.dtype,
            mask_bits=bits,
        )
        return encode(message, self.layout.fingerprint)

    def _current_plan(self) -> RoundPlan:
        if self.plan is None:
            raise RuntimeError("start_round must be called before a round's messages")
        return self.plan
