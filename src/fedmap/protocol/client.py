"""The client's half of the protocol: decode, keep the mask in step, reply.

A client remembers only its mask version and mask. When the server's message is
packed for the version it holds, it unpacks with its own mask and, if told to
prune, computes the new mask itself from the values it just received, exactly as
the server did. Anything else must arrive as a bootstrap that carries the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedmap.core.codec import DOWNLINK, STATISTICS, UPLINK, Encoded, Message, decode, encode
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, unpack
from fedmap.core.prune import compute_mask
from fedmap.errors import ProtocolError
from fedmap.methods.base import ClientTask
from fedmap.protocol.task import finish_client

NEW_CLIENT_VERSION = -1  # holds no mask: the next downlink must be a bootstrap


@dataclass(frozen=True)
class ClientState:
    """A client's memory between rounds: the mask version it holds and that mask."""

    version: int = NEW_CLIENT_VERSION
    mask: Mask | None = None


@dataclass(frozen=True)
class Received:
    """A decoded downlink: the dense model to train from and the client's new state."""

    values: torch.Tensor  # canonical float32 vector (numel,), exact 0.0 at pruned coordinates
    state: ClientState
    message: Message


def receive_downlink(data: bytes, state: ClientState, layout: Layout) -> Received:
    """Decode a server message and bring the client's mask up to date."""
    message = decode(data, layout.fingerprint, layout.num_prunable)
    if message.kind != DOWNLINK:
        raise ProtocolError(f"client expected a downlink message, got kind {message.kind}")
    if message.mask_bits is not None:
        mask = Mask.from_prunable_bits(layout, torch.from_numpy(message.mask_bits))
    elif state.mask is not None and state.version == message.mask_version:
        mask = state.mask
    else:
        raise ProtocolError(
            f"values packed for mask version {message.mask_version} but this client holds "
            f"version {state.version} and no mask was sent"
        )
    values = unpack(message.values, mask)
    version = message.mask_version
    prune = message.prune
    if prune is not None:
        mask = compute_mask(
            values,
            mask,
            prune.rate,
            prune.scope,
            prune.ranking,  # type: ignore[arg-type]
        )
        values = values.masked_fill(~mask.flat, 0.0)
        version += 1
    return Received(values=values, state=ClientState(version, mask), message=message)


def encode_reply(
    packed: torch.Tensor,
    state: ClientState,
    *,
    round: int,
    num_samples: int,
    train_loss: float,
    dtype: str,
    layout: Layout,
    own_mask: Mask | None = None,
) -> Encoded:
    """Encode the trained model's kept values (``packed``, canonical order) for the server.

    ``own_mask``: the client chose its own mask (client-local pruning, FedDST); the
    values are packed with it and it travels with them.
    """
    if state.mask is None:
        raise ProtocolError("a client cannot reply before it has received a model")
    mask = own_mask if own_mask is not None else state.mask
    if packed.numel() != mask.num_kept:
        raise ProtocolError(f"mask keeps {mask.num_kept} values, reply has {packed.numel()}")
    message = Message(
        kind=UPLINK,
        round=round,
        mask_version=state.version,
        values=packed,
        dtype=dtype,
        num_samples=num_samples,
        train_loss=train_loss,
        mask_bits=None if own_mask is None else own_mask.prunable_bits().numpy(),
    )
    return encode(message, layout.fingerprint)


def encode_statistics(
    importance: torch.Tensor, state: ClientState, *, round: int, num_samples: int, layout: Layout
) -> Encoded:
    """Encode one float32 score per prunable weight (PruneFL's importance) for the server."""
    if importance.numel() != layout.num_prunable:
        raise ProtocolError(
            f"statistics need {layout.num_prunable} values, got {importance.numel()}"
        )
    message = Message(
        kind=STATISTICS,
        round=round,
        mask_version=state.version,
        values=importance,
        num_samples=num_samples,
    )
    return encode(message, layout.fingerprint)


@dataclass(frozen=True)
class Reply:
    """A client's encoded answer: the update, the mask its values use, maybe statistics."""

    update: Encoded
    mask: Mask
    statistics: Encoded | None = None


def make_reply(
    task: ClientTask | None,
    packed: torch.Tensor,
    mask: Mask,
    state: ClientState,
    *,
    round: int,
    num_samples: int,
    train_loss: float,
    dtype: str,
    layout: Layout,
    grad_mean: torch.Tensor | None = None,
    grad_sq: torch.Tensor | None = None,
    chosen: Mask | None = None,
) -> Reply:
    """Do the round's client ``task`` on a trained model and encode what goes back.

    ``packed`` holds the trained kept values under ``mask`` (the one received). One
    function for every front door, so the simulator and a Flower client send the
    same bytes for the same training.
    """
    update = finish_client(task, packed, mask, grad_mean, grad_sq, chosen)
    encoded = encode_reply(
        update.packed,
        state,
        round=round,
        num_samples=num_samples,
        train_loss=train_loss,
        dtype=dtype,
        layout=layout,
        own_mask=update.mask if update.own_mask else None,
    )
    statistics = None
    if update.importance is not None:
        statistics = encode_statistics(
            update.importance, state, round=round, num_samples=num_samples, layout=layout
        )
    return Reply(encoded, update.mask, statistics)
