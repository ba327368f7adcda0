"""The sequential engine: one reusable model, the cohort's clients one after another.

Client state between rounds is data only (index arrays); the single module is
reloaded from the global values for each client, so memory does not grow with
the number of clients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack, pruned_multipliers
from fedmap.engines.base import ClientResult, RoundConfig, client_seed, start_values
from fedmap.methods.prunefl import initial_pruning
from fedmap.training.train import gradient_stats, load_values, train_local


class SequentialEngine:
    """Trains clients one at a time on ``device``.

    Parameters
    ----------
    model
        The architecture; its values are overwritten for every client.
    layout
        Canonical order of the transmitted tensors.
    x_train, y_train
        The whole training set, already on ``device``.
    client_indices
        Training indices per client id (into ``x_train``).
    """

    def __init__(
        self,
        model: nn.Module,
        layout: Layout,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        client_indices: Sequence[torch.Tensor],
    ) -> None:
        self.model = model
        self.layout = layout
        self.x_train = x_train
        self.y_train = y_train
        self.client_indices = [idx.to(x_train.device) for idx in client_indices]
        self.device = x_train.device
        self._mask_cache: tuple[Mask, dict[str, torch.Tensor]] | None = None

    def train_cohort(
        self,
        global_packed: torch.Tensor,
        mask: Mask,
        clients: Sequence[int],
        round_cfg: RoundConfig,
    ) -> list[ClientResult]:
        """Train each client from the global model; return packed kept values."""
        start = start_values(global_packed, mask, self.device)
        masks = self.prunable_masks(mask)
        return [
            self.train_client(self.model, start, masks, mask, client, round_cfg)
            for client in clients
        ]

    def train_client(
        self,
        model: nn.Module,
        start: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        mask: Mask,
        client: int,
        round_cfg: RoundConfig,
        seed_dropout: bool = True,
    ) -> ClientResult:
        """Train one client on ``model`` (this engine's, or a replica of it) from ``start``.

        ``seed_dropout`` seeds the global generator with the client's seed for
        dropout, inside ``fork_rng``; callers training clients in parallel threads
        pass False (the generator is process-wide) and use models without dropout.
        """
        seed = client_seed(round_cfg.seed, round_cfg.round, client)
        generator = torch.Generator().manual_seed(seed)
        index = self.client_indices[client]
        load_values(model, start)
        x, y = self.x_train[index], self.y_train[index]
        density = round_cfg.initial_pruning
        if density is not None:  # PruneFL's round 1: the client chooses its own mask
            with self._seeded(seed, seed_dropout):
                pruned = initial_pruning(
                    model, self.layout, mask, x, y, density, round_cfg.train, generator
                )
            packed = pack(self.layout.flatten(model.state_dict()), mask)
            return ClientResult(client, packed, len(index), pruned.train_loss, own_mask=pruned.mask)
        with self._seeded(seed, seed_dropout):
            loss = train_local(model, masks, x, y, round_cfg.train, generator)
        state = model.state_dict()
        trained = self.layout.flatten(state)
        if not round_cfg.gradients:
            return ClientResult(client, pack(trained, mask), len(index), loss)
        mean, squares = gradient_stats(model, x, y, round_cfg.train.batch_size)
        grad_mean = self.layout.flatten({**state, **mean})  # buffers: their values, unused
        grad_sq = self.layout.flatten({**state, **squares})
        return ClientResult(client, pack(trained, mask), len(index), loss, grad_mean, grad_sq)

    @contextlib.contextmanager
    def _seeded(self, seed: int, enabled: bool) -> Iterator[None]:
        """Dropout draws from the global generator: seed it with the client's, inside fork_rng."""
        if not enabled:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def prunable_masks(self, mask: Mask) -> dict[str, torch.Tensor]:
        """0/1 float multipliers for the pruned parameters, cached per mask object."""
        if self._mask_cache is None or self._mask_cache[0] is not mask:
            masks = pruned_multipliers(mask, self.device)
            self._mask_cache = (mask, masks)
        return self._mask_cache[1]
