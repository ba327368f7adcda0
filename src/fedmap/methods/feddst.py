"""``feddst``: FedDST (Bibikar et al., "Federated Dynamic Sparse Training", AAAI 2022).

As its reference code (github.com/bibikar/feddst, ``dst.py`` and ``models.py``)
runs it, not a paraphrase of it:

- *Initial mask* (the server, once, round 1): each prunable tensor keeps its
  largest initial weights by magnitude, at the count FedDST's ``erk`` layer
  distribution gives it (:func:`erk_counts`), and everyone receives it as a
  bootstrap. There is no dense warm-up.
- *Readjustment* (clients): in rounds ``2, 2 + ΔR, 2 + 2ΔR, ...`` (the reference's
  0-based rounds ``1, 1 + ΔR, ...``; ``ΔR = rounds_per_step``) while
  ``α_t = α/2 (1 + cos(π t / T_end)) > 0``, ``t`` the 0-based round and ``T_end``
  half the run's rounds, each client, after its local training, drops each tensor's
  smallest weights down to its ERK count at density ``d (1 - α_t)`` and regrows it
  to its count where its dense gradient is largest (RigL's step,
  :func:`drop_and_regrow`); regrown weights start at 0.0. It
  sends its values with its new mask.
- *Aggregation* (server): each weight is averaged over the clients that kept it,
  weighted by sample count, and the union of the clients' masks is pruned back by
  magnitude to each tensor's count (:meth:`FedDST.merge`). Between
  readjustments the rounds are FedAvg on a fixed mask and carry values only.

Deviations, each small and documented in docs/methods.md: clients readjust at
the end of local training (the reference's defaults; its epoch gate would skip
most participations at one local epoch); the regrowth gradient is the mean over
the client's local data (the reference takes its last batch); regrowth chooses
among weights not kept (the reference's top-k over every position also zeroes
kept weights it happens to pick, leaving the layer short); ``α_t`` is decayed as
the paper writes it (the reference computes it but prunes with the undecayed
``α``); ties among the zeros the union re-prune must choose from go to the most
votes (the reference leaves them to top-k's order).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.core.prune import keep_top
from fedmap.methods.base import ClientTask, GlobalModel, Method, Step
from fedmap.methods.registry import register

if TYPE_CHECKING:
    from fedmap.runs.config import Config


def erk_counts(layout: Layout, density: float) -> list[int]:
    """Weights each tensor keeps at ``density`` under FedDST's ``erk`` distribution.

    The reference (``PrunableNet._weights_by_layer``) gives layer ``i`` the raw
    sparsity ``1 - (n_in + n_out + Σk) / (n_in n_out Πk)`` (``Σk`` and ``Πk`` over
    the kernel, empty for a linear layer), scales all of them by one factor so that
    ``Σ s_i n_i = (1 - density) Σ n_i`` with ``n_i`` the layer's weights plus its
    bias, and keeps ``floor((1 - s_i) n_i)`` of the layer's weights. This is not
    RigL's ERK: it moves a little density from the large layers to the first
    convolution and the classifier (FedAvg CNN at 95 % sparsity: conv1 10 %,
    classifier 15 %, the others 5 %). Counts are clipped to [1, numel] where the
    scaling would leave a layer empty or overfull (the reference then leaves the
    layer dense). FedDST's server and clients both count by it. One entry per
    tensor of ``layout``; non-prunable tensors get 0.
    """
    sizes: list[int] = []
    raw: list[float] = []
    prunable = [i for i, p in enumerate(layout.prunable) if p]
    for i in prunable:
        shape = layout.shapes[i]
        n_out, n_in, kernel = shape[0], shape[1] if len(shape) > 1 else 1, shape[2:]
        fan = n_in * n_out * math.prod(kernel)
        raw.append(1.0 - (n_in + n_out + sum(kernel)) / fan)
        bias = layout.names[i].removesuffix("weight") + "bias"
        extra = math.prod(layout.shapes[layout.names.index(bias)]) if bias in layout.names else 0
        sizes.append(math.prod(shape) + extra)
    weighted = sum(s * n for s, n in zip(raw, sizes, strict=True))
    scale = (1.0 - density) * sum(sizes) / weighted if weighted != 0 else 0.0
    counts = [0] * len(layout.names)
    for i, s, n in zip(prunable, raw, sizes, strict=True):
        numel = math.prod(layout.shapes[i])
        counts[i] = min(numel, max(1, math.floor((1.0 - s * scale) * n)))
    return counts


def drop_and_regrow(
    values: torch.Tensor, gradient: torch.Tensor, mask: Mask, drop_to: float
) -> tuple[Mask, torch.Tensor]:
    """RigL's step per tensor, as FedDST's reference client runs it; also the grown weights.

    In every prunable tensor, drop the kept weights with the smallest ``|w|`` down
    to the tensor's :func:`erk_counts` at ``drop_to`` (the
    reference's ``layer_prune`` at ``s + (1 - s) α``), then grow as many among the
    weights not kept after the drop, just-dropped ones included, where ``|gradient|``
    is largest (ties: lower index). Each tensor keeps its received count. The
    second result flags the grown weights, which start from 0.0 (the reference's
    ``layer_grow`` zeroes them), a just-dropped one included.
    """
    layout = mask.layout
    flat = mask.flat.clone()
    grown = torch.zeros_like(flat)
    magnitude = values.detach().abs()
    grad = gradient.detach().abs().to(torch.float64)
    targets = erk_counts(layout, drop_to)
    for i, is_prunable in enumerate(layout.prunable):
        if not is_prunable:
            continue
        part = layout.slice_of(i)
        keep = flat[part]
        kept_index = keep.nonzero().squeeze(1)
        count = max(0, kept_index.numel() - targets[i])
        if count == 0:
            continue
        order = torch.sort(magnitude[part][kept_index], stable=True).indices
        keep[kept_index[order[:count]]] = False
        free = (~keep).nonzero().squeeze(1)
        grow = free[torch.sort(-grad[part][free], stable=True).indices[:count]]
        keep[grow] = True
        grown[part][grow] = True
    return Mask(layout, flat), grown


def initial_mask(values: torch.Tensor, mask: Mask, density: float) -> Mask:
    """Each prunable tensor's largest ``|values|`` at its :func:`erk_counts` (ties: lower index)."""
    layout = mask.layout
    magnitude = values.detach().abs()
    for i, count in enumerate(erk_counts(layout, density)):
        if layout.prunable[i]:
            candidates = torch.zeros(layout.numel, dtype=torch.bool)
            candidates[layout.slice_of(i)] = True
            mask = keep_top(magnitude, candidates, count, mask)
    return mask


def _top(primary: torch.Tensor, secondary: torch.Tensor, count: int) -> torch.Tensor:
    """Bools: the ``count`` largest by ``primary``, then ``secondary``, then lower index."""
    by_secondary = torch.sort(-secondary.double(), stable=True).indices
    order = by_secondary[torch.sort(-primary.double()[by_secondary], stable=True).indices]
    keep = torch.zeros(primary.numel(), dtype=torch.bool)
    keep[order[:count]] = True
    return keep


@register
class FedDST(Method):
    """``pruning.method = "feddst"``.

    Parameters
    ----------
    target_sparsity
        The fixed sparsity of every mask.
    rate
        ``α``: share of kept weights dropped and regrown at a readjustment (before decay).
    rounds_per_step
        ``ΔR``: rounds between readjustments.
    rounds
        The run's length; ``α_t`` decays to 0 at half of it (the reference's
        ``rate_decay_end`` default).
    """

    name = "feddst"
    label = "FedDST"
    colour = "#17becf"
    order = 7
    revision = 2  # 2026-11-28: the reference code's ERK magnitude mask, schedule and union re-prune
    sends_masks = True

    def __init__(
        self, target_sparsity: float, rate: float, rounds_per_step: int, rounds: int
    ) -> None:
        self.target_sparsity = target_sparsity
        self.rate = rate
        self.rounds_per_step = rounds_per_step
        self.decay_end = max(rounds // 2, 1)
        self._readjustments = 0

    @classmethod
    def from_config(cls, config: Config, initial_values: torch.Tensor) -> FedDST:
        """Target, ``α`` (``pruning.rate``), ``ΔR`` (``rounds_per_step``) and the run's length."""
        p = config.pruning
        return cls(p.target_sparsity, p.rate, p.rounds_per_step, config.rounds)

    @property
    def iteration(self) -> int:
        """Mask readjustments so far."""
        return self._readjustments

    def alpha(self, round: int) -> float:
        """FedDST's cosine-decayed drop-and-regrow share in ``round`` (1-based); 0 from T_end."""
        t = round - 1
        if t >= self.decay_end:
            return 0.0
        return self.rate / 2 * (1 + math.cos(math.pi * t / self.decay_end))

    def is_readjustment(self, round: int) -> bool:
        """Whether clients drop and regrow at the end of ``round``."""
        return (round - 2) % self.rounds_per_step == 0 and self.alpha(round) > 0

    def plan(self, round: int, model: GlobalModel) -> Step:
        """Round 1: the initial mask (a bootstrap to everyone); later: nothing."""
        if round == 1 and model.mask.num_kept_prunable == model.mask.layout.num_prunable:
            mask = initial_mask(model.values, model.mask, 1.0 - self.target_sparsity)
            return Step(mask=mask, reset_values=model.values.masked_fill(~mask.flat, 0.0))
        return Step()

    def client_task(self, round: int) -> ClientTask | None:
        """On readjustment rounds, clients drop to the ERK counts at ``d (1 - α_t)`` and regrow.

        The reference prunes each layer to its count at sparsity ``s + (1 - s) α``
        and grows it back to its count at ``s``, both by :func:`erk_counts`.
        """
        if not self.is_readjustment(round):
            return None
        return ClientTask(drop_to=(1.0 - self.target_sparsity) * (1.0 - self.alpha(round)))

    def merge(
        self, round: int, model: GlobalModel, values: torch.Tensor, votes: torch.Tensor
    ) -> Mask:
        """The union of the clients' masks, pruned back by ``|w|`` to each tensor's count.

        ``values`` is already each weight's mean over the clients that kept it, so a
        weight survives the re-prune by its averaged magnitude, as in the reference.
        Regrown weights arrive as 0.0: they fill a tensor only where its nonzero
        weights fall short of the count (weights every client of the cohort
        dropped), the most-voted first, so the mask changes where the whole cohort
        agrees.
        """
        layout = model.mask.layout
        flat = model.mask.flat.clone()
        for i, is_prunable in enumerate(layout.prunable):
            if not is_prunable:
                continue
            part = layout.slice_of(i)
            count = int(flat[part].sum())
            union = votes[part] > 0
            outside = torch.where(flat[part], -1.0, -2.0)  # a short union keeps the old mask
            magnitude = torch.where(union, values[part].abs().double(), outside.double())
            flat[part] = _top(magnitude, votes[part], count)
        self._readjustments += 1
        return Mask(layout, flat)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The readjustment count (the ``iteration`` column)."""
        return {}, {"readjustments": self._readjustments}

    def load_state_dict(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], layout: Layout
    ) -> None:
        """Restore the readjustment count."""
        self._readjustments = int(meta["readjustments"])
