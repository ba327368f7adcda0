"""The server's half of the protocol, shared by the simulator and the Flower app.

Per round: ask the strategy what changes, build each client's downlink (values
packed with the mask it holds, or a bootstrap), validate every reply before it can
touch the model, aggregate packed vectors, and keep the global model exactly in
the transport dtype so that every client decodes precisely the server's numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fedmap.core.aggregate import aggregate
from fedmap.core.codec import (
    DOWNLINK,
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
from fedmap.errors import CodecError, UpdateRejected
from fedmap.strategies.base import GlobalModel, Strategy


@dataclass
class RoundPlan:
    """What the server sends this round, fixed once at the start of the round."""

    round: int
    in_step_epoch: int | None  # a client holding this epoch gets values only; None: all bootstrap
    in_step_mask: Mask  # the mask in-step values are packed with (the old one on a prune round)
    prune: PruneInstruction | None
    pruned: bool  # the mask changed at the start of this round
    _cache: dict[str, tuple[Encoded, Mask]] = field(default_factory=dict, repr=False)


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
    ) -> None:
        self.strategy = strategy
        self.layout = layout
        self.dtype = dtype
        self.rule = rule
        self.trim_fraction = trim_fraction
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
        return self.plan

    def downlink(self, client_epoch: int) -> tuple[Encoded, Mask]:
        """The message for a client holding ``client_epoch``, and the mask its values use.

        A client in step gets values only (plus the prune instruction on a prune
        round); a stale or new one gets a bootstrap with the mask. Messages do not
        depend on the client otherwise, so each kind is encoded once per round.
        """
        plan = self._current_plan()
        kind = "in_step" if client_epoch == plan.in_step_epoch else "bootstrap"
        if kind not in plan._cache:
            if kind == "in_step":
                plan._cache[kind] = (self._encode_values(self.model, None), self.model.mask)
            else:
                plan._cache[kind] = (self._encode_bootstrap(), self.model.mask)
        return plan._cache[kind]

    def read_reply(self, data: bytes) -> Message:
        """Decode and validate one client reply; raise :class:`UpdateRejected` with the reason."""
        plan = self._current_plan()
        try:
            message = decode(data, self.layout.fingerprint, self.layout.num_prunable)
        except CodecError as error:
            raise UpdateRejected(f"undecodable reply: {error}") from error
        expected = {
            "kind": (message.kind, UPLINK),
            "round": (message.round, plan.round),
            "epoch": (message.epoch, self.model.epoch),
            "dtype": (message.dtype, self.dtype),
            "length": (message.values.numel(), self.model.mask.num_kept),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise UpdateRejected(f"reply {name} is {got!r}, expected {want!r}")
        if message.num_samples <= 0:
            raise UpdateRejected(f"reply reports {message.num_samples} training samples")
        if not bool(torch.isfinite(message.values).all()) or not math.isfinite(message.train_loss):
            raise UpdateRejected("reply contains NaN or Inf")
        return message

    def finish_round(self, replies: list[Message]) -> None:
        """Aggregate validated replies into the global model (kept in the transport dtype)."""
        if not replies:
            return
        packed = aggregate(
            [m.values for m in replies],
            [m.num_samples for m in replies],
            self.rule,
            self.trim_fraction,
        )
        values = quantize(unpack(packed, self.model.mask), self.dtype)
        self.model = GlobalModel(values, self.model.mask, self.model.epoch)

    def observe(self, round: int, val_accuracy: float) -> None:
        """Pass the end-of-round validation accuracy to the strategy."""
        self.strategy.observe(round, self.model, val_accuracy)

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
