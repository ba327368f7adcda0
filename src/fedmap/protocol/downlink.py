"""What the server sends: one round's plan and its downlink messages, each kind encoded once.

A client in step gets the round's values packed with the mask it holds (plus the
prune instruction on a prune round); a client that already holds the new mask
(it took this round's step in an earlier attempt) gets values packed with it; a
new or stale client gets a bootstrap that carries the mask. Messages do not
depend on the client otherwise, so each kind is one bytes object per round.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmap.core.codec import DOWNLINK, Encoded, Message, PruneInstruction, encode
from fedmap.core.mask import Mask, pack
from fedmap.methods.base import ClientTask, GlobalModel

IN_STEP, CURRENT, BOOTSTRAP = "in_step", "current", "bootstrap"


@dataclass(frozen=True)
class RoundPlan:
    """What the server sends this round, fixed once at the start of the round."""

    round: int
    in_step_version: int | None  # a client holding this version gets values only; None: none does
    in_step_mask: Mask  # the mask in-step values are packed with (the old one on a prune round)
    prune: PruneInstruction | None
    pruned: bool  # the mask changed at the start of this round
    task: ClientTask | None = None  # the clients' extra work this round (baselines)


def encode_values(
    model: GlobalModel, round: int, dtype: str, fingerprint: int, prune: PruneInstruction | None
) -> Encoded:
    """``model``'s kept values for a client holding its mask (and the round's prune step)."""
    packed = pack(model.values, model.mask)
    return encode(Message(DOWNLINK, round, model.version, packed, dtype, prune), fingerprint)


def encode_bootstrap(model: GlobalModel, round: int, dtype: str, fingerprint: int) -> Encoded:
    """``model``'s mask and kept values, for a client that cannot derive the mask."""
    bits = model.mask.prunable_bits().numpy()
    packed = pack(model.values, model.mask)
    message = Message(DOWNLINK, round, model.version, packed, dtype, mask_bits=bits)
    return encode(message, fingerprint)


class Downlinks:
    """One round's downlink messages, encoded on first use and then reused.

    Parameters
    ----------
    plan
        The round's plan.
    model
        The global model after the round's step (what a current client trains).
    dtype, fingerprint
        Transport dtype and layout fingerprint of every message.
    in_step
        On a prune round, the values packed with the old mask and the instruction
        (encoded by the server before it pruned its own model).
    """

    def __init__(
        self,
        plan: RoundPlan,
        model: GlobalModel,
        dtype: str,
        fingerprint: int,
        in_step: Encoded | None = None,
    ) -> None:
        self.plan = plan
        self.model = model
        self.dtype = dtype
        self.fingerprint = fingerprint
        self._cache: dict[str, tuple[Encoded, Mask]] = {}
        if in_step is not None:
            self._cache[IN_STEP] = (in_step, plan.in_step_mask)

    def kind_for(self, version: int) -> str:
        """Which message a client holding mask ``version`` gets."""
        if version == self.plan.in_step_version:
            return IN_STEP
        if version == self.model.version:  # took this round's step or bootstrap already
            return CURRENT
        return BOOTSTRAP

    def for_version(self, version: int) -> tuple[Encoded, Mask]:
        """The message for a client holding ``version``, and the mask its values use."""
        kind = self.kind_for(version)
        if kind not in self._cache:
            model, round = self.model, self.plan.round
            if kind == BOOTSTRAP:
                encoded = encode_bootstrap(model, round, self.dtype, self.fingerprint)
            else:
                encoded = encode_values(model, round, self.dtype, self.fingerprint, None)
            self._cache[kind] = (encoded, model.mask)
        return self._cache[kind]
