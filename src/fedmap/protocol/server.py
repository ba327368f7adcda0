"""The server's half of the protocol: one small stateful object over the pure steps.

Per round: ask the method what changes (:meth:`Server.start_round`), hand out each
client's downlink (:mod:`~fedmap.protocol.downlink`), validate every reply before it
can touch the model (:mod:`~fedmap.protocol.checks`), screen the cohort
(:mod:`~fedmap.protocol.screen`) and fold the accepted replies into the model
(:mod:`~fedmap.protocol.fold`). The global model is kept exactly in the transport
dtype, so every client decodes precisely the server's numbers. The simulator and
the Flower transport drive the same object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from fedmap.core.codec import Encoded, Message, quantize
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, unpack
from fedmap.errors import UpdateRejected
from fedmap.methods.base import GlobalModel, Method
from fedmap.protocol.checks import (
    Expected,
    check_reply,
    check_sender,
    check_statistics,
    check_statistics_asked,
    decode_reply,
)
from fedmap.protocol.downlink import Downlinks, RoundPlan, encode_values
from fedmap.protocol.fold import fold_own_masks, fold_packed, mean_statistics
from fedmap.protocol.screen import Screening, screen_by_norm


@dataclass
class _Round:
    """The server's memory of the round in progress."""

    plan: RoundPlan
    downlinks: Downlinks
    expected: set[int] = field(default_factory=set)  # clients sent a downlink this attempt
    replied: set[int] = field(default_factory=set)  # clients whose reply was accepted
    statistics: dict[int, Message] = field(default_factory=dict)  # accepted statistics
    weights: dict[int, int] = field(default_factory=dict)  # accepted replies' (capped) samples


class Server:
    """Holds the global model and runs one round at a time.

    Parameters
    ----------
    method
        FedMap, dense FedAvg or a baseline (:mod:`fedmap.methods`).
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
        method: Method,
        layout: Layout,
        initial_values: torch.Tensor,
        *,
        dtype: str = "float32",
        rule: str = "mean",
        trim_fraction: float = 0.1,
        norm_threshold: float = math.inf,
    ) -> None:
        self.method = method
        self.layout = layout
        self.dtype = dtype
        self.rule = rule
        self.trim_fraction = trim_fraction
        self.norm_threshold = norm_threshold
        self.model = GlobalModel(quantize(initial_values, dtype), Mask.dense(layout), 0)
        self._round: _Round | None = None

    @property
    def plan(self) -> RoundPlan | None:
        """The plan of the round in progress (None between rounds)."""
        return None if self._round is None else self._round.plan

    def start_round(self, round: int) -> RoundPlan:
        """Apply the method's decision for ``round`` to the global model and fix what to send."""
        model, fingerprint = self.model, self.layout.fingerprint
        step = self.method.plan(round, model)
        task = self.method.client_task(round)
        in_step: Encoded | None = None
        if step.reset_values is not None and step.mask is not None:
            values = quantize(step.reset_values, self.dtype).masked_fill(~step.mask.flat, 0.0)
            self.model = GlobalModel(values, step.mask, model.version + 1)
            plan = RoundPlan(round, None, step.mask, None, True, task)
        elif step.prune is not None and step.mask is not None:
            in_step = encode_values(model, round, self.dtype, fingerprint, step.prune)
            values = model.values.masked_fill(~step.mask.flat, 0.0)
            self.model = GlobalModel(values, step.mask, model.version + 1)
            plan = RoundPlan(round, model.version, model.mask, step.prune, True, task)
        else:
            plan = RoundPlan(round, model.version, model.mask, None, False, task)
        downlinks = Downlinks(plan, self.model, self.dtype, fingerprint, in_step)
        self._round = _Round(plan, downlinks)
        return plan

    def downlink(self, version: int, client: int | None = None) -> tuple[Encoded, Mask]:
        """The message for a client holding mask ``version``, and the mask its values use.

        ``client`` is remembered as a party whose reply this round may be accepted.
        """
        current = self._current()
        if client is not None:
            current.expected.add(client)
        return current.downlinks.for_version(version)

    def expect(self, client: int) -> None:
        """Accept a reply from ``client`` this round (it was sent the model another way)."""
        self._current().expected.add(client)

    def read_reply(self, data: bytes, client: int) -> Message:
        """Decode and validate ``client``'s reply; raise :class:`UpdateRejected` with the reason.

        Nothing here changes the model: a rejected reply leaves no trace but the
        count. An accepted reply marks ``client`` as answered (a replay is refused).
        """
        if self._round is None:
            raise UpdateRejected("no round in progress")
        current = self._round
        message = decode_reply(data, self.layout)
        check_reply(message, self._expected(current.plan))
        check_sender(client, current.expected, current.replied)
        current.replied.add(client)
        current.weights[client] = message.num_samples
        return message

    def read_statistics(self, data: bytes, client: int) -> Message:
        """Decode and validate ``client``'s statistics message (PruneFL's importance).

        Accepted only from a client whose reply this round was accepted, once, when
        the round asked for them; one scalar per prunable weight, finite, >= 0.
        """
        if self._round is None:
            raise UpdateRejected("no round in progress")
        current = self._round
        check_statistics_asked(current.plan.task)
        message = decode_reply(data, self.layout, "statistics")
        check_statistics(message, current.plan.round, self.layout)
        if client not in current.replied or client in current.statistics:
            raise UpdateRejected(f"statistics from client {client} without an accepted reply")
        current.statistics[client] = message
        return message

    def discard_replies(self) -> None:
        """Forget this attempt's accepted replies (the round is retried with a fresh sample)."""
        current = self._current()
        for book in (current.replied, current.expected, current.statistics, current.weights):
            book.clear()

    def screen(self, replies: list[tuple[int, Message]]) -> Screening:
        """The cohort-level norm screen (:mod:`fedmap.protocol.screen`) over accepted replies."""
        screening = screen_by_norm(replies, self.model.values, self.dense, self.norm_threshold)
        if self._round is not None:
            for client, _ in screening.rejected:  # their statistics go with them
                self._round.statistics.pop(client, None)
            for client, message in screening.accepted:
                if client in self._round.weights:
                    self._round.weights[client] = message.num_samples
        return screening

    def dense(self, message: Message) -> torch.Tensor:
        """A reply's values as a canonical vector (its own mask, or the model's)."""
        return unpack(message.values, self.reply_mask(message))

    def reply_mask(self, message: Message) -> Mask:
        """The mask a validated reply's values are packed with."""
        if message.mask_bits is None:
            return self.model.mask
        return Mask.from_prunable_bits(self.layout, torch.from_numpy(message.mask_bits))

    def finish_round(self, replies: list[Message]) -> None:
        """Fold validated replies into the global model (:mod:`fedmap.protocol.fold`).

        The round closes here, so late replies find no round. Statistics of the
        accepted clients reach the method as one sample-weighted mean.
        """
        current, self._round = self._round, None
        if not replies:
            return
        round = current.plan.round if current is not None else 0
        if current is not None and current.statistics:
            clients = sorted(current.statistics)
            mean = mean_statistics(
                [current.statistics[c] for c in clients], [current.weights[c] for c in clients]
            )
            self.method.observe_statistics(round, mean)
        if any(m.mask_bits is not None for m in replies):
            masks = [self.reply_mask(m) for m in replies]
            self.model = fold_own_masks(self.model, replies, masks, self.method, round, self.dtype)
        else:
            self.model = fold_packed(self.model, replies, self.rule, self.trim_fraction, self.dtype)

    def observe(self, round: int, val_accuracy: float) -> None:
        """Pass the end-of-round validation accuracy to the method."""
        self.method.observe(round, self.model, val_accuracy)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The global model and the method's memory, as tensors and JSON-able values."""
        tensors, meta = self.method.state_dict()
        tensors = {f"method.{k}": v for k, v in tensors.items()}
        tensors["server.values"] = self.model.values
        tensors["server.mask"] = self.model.mask.prunable_bits()
        return tensors, {"mask_version": self.model.version, "method": meta}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (between rounds)."""
        mask = Mask.from_prunable_bits(self.layout, tensors["server.mask"])
        self.model = GlobalModel(tensors["server.values"].clone(), mask, int(meta["mask_version"]))
        prefix = "method."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.method.load_state_dict(own, meta["method"], self.layout)
        self._round = None

    def _expected(self, plan: RoundPlan) -> Expected:
        model = self.model
        return Expected(plan.round, model.version, self.dtype, model.mask, plan.task, self.method)

    def _current(self) -> _Round:
        if self._round is None:
            raise RuntimeError("start_round must be called before a round's messages")
        return self._round
