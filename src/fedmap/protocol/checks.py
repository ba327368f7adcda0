"""Reply checks: everything a reply must satisfy before it may touch the global model.

Pure functions, in the order the server applies them: content first (decodable;
a mask only when the round's task asks for one; the expected kind, round, mask
version, dtype and length; no prune instruction; an own mask that keeps to the
round's task; a positive sample count; finite numbers), then identity (sent a
downlink this round, not replied yet), so a forged or replayed message is
refused whatever it holds. Each failure raises
:class:`~fedmap.errors.UpdateRejected` with a one-line reason naming what was
expected and what arrived.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import torch

from fedmap.core.codec import STATISTICS, UPLINK, Message, decode
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import kept_for_density
from fedmap.errors import CodecError, UpdateRejected
from fedmap.methods.base import ClientTask, Method


@dataclass(frozen=True)
class Expected:
    """What this round's replies must carry."""

    round: int
    version: int
    dtype: str
    mask: Mask  # the global model's mask
    task: ClientTask | None
    method: Method  # may check a reply's own mask more strictly than its task does


def decode_reply(data: bytes, layout: Layout, what: str = "reply") -> Message:
    """Decode received bytes; a malformation is a rejection, not an error of the server."""
    try:
        return decode(data, layout.fingerprint, layout.num_prunable)
    except CodecError as error:
        raise UpdateRejected(f"undecodable {what}: {error}") from error


def check_reply(message: Message, expected: Expected) -> None:
    """Refuse an update whose content does not fit the round (see module docstring)."""
    layout = expected.mask.layout
    own_mask = expected.task is not None and expected.task.sends_mask
    if message.mask_bits is not None and not own_mask:
        raise UpdateRejected("reply carries a mask, which this round's method does not send")
    kept = expected.mask.num_kept
    if message.mask_bits is not None:
        kept = int(message.mask_bits.sum()) + layout.numel - layout.num_prunable
    _compare(
        "reply",
        {
            "kind": (message.kind, UPLINK),
            "round": (message.round, expected.round),
            "mask version": (message.mask_version, expected.version),
            "dtype": (message.dtype, expected.dtype),
            "length": (message.values.numel(), kept),
        },
    )
    if message.prune is not None:
        raise UpdateRejected("reply carries a prune instruction (downlink only)")
    if message.mask_bits is not None and expected.task is not None:
        own = Mask.from_prunable_bits(layout, torch.from_numpy(message.mask_bits))
        problem = own_mask_problem(own, expected.mask, expected.task)
        problem = problem or expected.method.check_own_mask(own, expected.mask, expected.task)
        if problem is not None:
            raise UpdateRejected(problem)
    if message.num_samples <= 0:
        raise UpdateRejected(f"reply reports {message.num_samples} training samples")
    if not bool(torch.isfinite(message.values).all()) or not math.isfinite(message.train_loss):
        raise UpdateRejected("reply contains NaN or Inf")


def own_mask_problem(own: Mask, model: Mask, task: ClientTask) -> str | None:
    """Why a reply's own mask breaks what its kind of task requires (None: it does not).

    A drop-and-regrow keeps each tensor's count, so no one reply can shift the
    votes by keeping more; a client-local prune keeps exactly the round's count
    inside the model's mask, so no one reply can make the union dense.
    """
    layout = model.layout
    if task.drop_to is not None:
        for i, is_prunable in enumerate(layout.prunable):
            part = layout.slice_of(i)
            if is_prunable and int(own.flat[part].sum()) != int(model.flat[part].sum()):
                return f"reply's mask changes the kept count of {layout.names[i]}"
        return None
    if task.prune_to is not None:
        if not own.is_subset_of(model):
            return "reply's mask keeps weights the global model has pruned"
        want = min(model.num_kept_prunable, kept_for_density(layout.num_prunable, task.prune_to))
        if own.num_kept_prunable != want:
            return f"reply's mask keeps {own.num_kept_prunable} weights, the round asks {want}"
    return None


def check_sender(client: int, expected: Collection[int], replied: Collection[int]) -> None:
    """Refuse a reply from a client not sent this round's model, or a second one."""
    if client not in expected:
        raise UpdateRejected(f"reply from unknown client {client!r} (not sent this round)")
    if client in replied:
        raise UpdateRejected(f"second reply from client {client} this round")


def check_statistics_asked(task: ClientTask | None) -> None:
    """Refuse statistics in a round whose task does not ask for them (checked before decoding)."""
    if task is None or not task.importance:
        raise UpdateRejected("statistics sent in a round that did not ask for them")


def check_statistics(message: Message, round: int, layout: Layout) -> None:
    """Refuse statistics that are not one finite score >= 0 per prunable weight of the round."""
    _compare(
        "statistics",
        {
            "kind": (message.kind, STATISTICS),
            "round": (message.round, round),
            "length": (message.values.numel(), layout.num_prunable),
        },
    )
    if not bool(torch.isfinite(message.values).all()) or bool((message.values < 0).any()):
        raise UpdateRejected("statistics contain NaN, Inf or negative values")


def _compare(what: str, fields: dict[str, tuple[object, object]]) -> None:
    """Raise for the first field whose received value is not the expected one."""
    for name, (got, want) in fields.items():
        if got != want:
            raise UpdateRejected(f"{what} {name} is {got!r}, expected {want!r}")
