"""The :class:`Mask` type: which coordinates of the canonical vector are kept.

A mask is one flat bool vector over the layout's canonical order. Coordinates of
non-prunable tensors (biases, normalisation) are always kept, so "packed" values
are simply ``flat[mask.flat]``. Masks are immutable: a prune step returns a new
mask, which lets server and simulated clients share one object once they agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from fedmap.core.layout import Layout
from fedmap.errors import ProtocolError


@dataclass(frozen=True, eq=False)
class Mask:
    """A checked keep-mask over a :class:`Layout`.

    Parameters
    ----------
    layout
        The canonical order the mask refers to.
    flat
        Bool CPU vector (layout.numel,); True = kept. Non-prunable coordinates must be True.
    """

    layout: Layout
    flat: torch.Tensor

    def __post_init__(self) -> None:
        if self.flat.dtype != torch.bool or self.flat.shape != (self.layout.numel,):
            raise ProtocolError(
                f"mask must be a bool vector of length {self.layout.numel}, "
                f"got {self.flat.dtype} {tuple(self.flat.shape)}"
            )
        if self.flat.device.type != "cpu":
            object.__setattr__(self, "flat", self.flat.cpu())
        if not bool(self.flat[~self.layout.prunable_flat].all()):
            raise ProtocolError("mask prunes a non-prunable coordinate")

    @classmethod
    def dense(cls, layout: Layout) -> Mask:
        """The all-kept mask every run starts from."""
        return cls(layout, torch.ones(layout.numel, dtype=torch.bool))

    @cached_property
    def num_kept(self) -> int:
        """Kept scalars, prunable or not: the length of a packed vector."""
        return int(self.flat.sum())

    @cached_property
    def num_kept_prunable(self) -> int:
        """Kept scalars among the prunable ones."""
        return int(self.flat[self.layout.prunable_flat].sum())

    @property
    def density(self) -> float:
        """Fraction of prunable weights kept (1.0 for a model with nothing prunable)."""
        total = self.layout.num_prunable
        return self.num_kept_prunable / total if total else 1.0

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights removed."""
        return 1.0 - self.density

    def prunable_bits(self) -> torch.Tensor:
        """The mask restricted to prunable coordinates (what a bootstrap must transmit)."""
        return self.flat[self.layout.prunable_flat]

    @classmethod
    def from_prunable_bits(cls, layout: Layout, bits: torch.Tensor) -> Mask:
        """Inverse of :meth:`prunable_bits`: non-prunable coordinates are set kept."""
        if bits.numel() != layout.num_prunable:
            raise ProtocolError(f"expected {layout.num_prunable} mask bits, got {bits.numel()}")
        flat = torch.ones(layout.numel, dtype=torch.bool)
        flat[layout.prunable_flat] = bits.to(torch.bool)
        return cls(layout, flat)

    def is_subset_of(self, other: Mask) -> bool:
        """True when every coordinate kept here is kept in ``other`` (masks nest)."""
        return bool((self.flat & ~other.flat).sum() == 0)

    def same_as(self, other: Mask) -> bool:
        """Exact equality of layout and bits."""
        return self.layout == other.layout and bool(torch.equal(self.flat, other.flat))

    @cached_property
    def digest(self) -> str:
        """First 16 hex digits of the SHA-256 of the packed mask bits.

        Two runs (the simulator and a Flower deployment, say) held the same mask in a
        round exactly when their digests match; cached, since masks are immutable.
        """
        bits = np.packbits(self.flat.numpy().astype(np.uint8))
        return hashlib.sha256(bits.tobytes()).hexdigest()[:16]

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Named bool tensors (views), for training code that works per parameter."""
        return self.layout.unflatten(self.flat)


def pruned_multipliers(mask: Mask, device: torch.device) -> dict[str, torch.Tensor]:
    """0/1 float32 tensors on ``device`` for the tensors that have a pruned weight.

    What local training multiplies gradients by. Tensors the mask keeps whole are
    left out: multiplying by 1.0 changes nothing and costs a pass over the weights.
    """
    return {
        name: keep.to(device, torch.float32)
        for name, keep in mask.to_dict().items()
        if not bool(keep.all())
    }


def pack(values: torch.Tensor, mask: Mask) -> torch.Tensor:
    """Kept values (num_kept,) of a canonical vector, in canonical order."""
    if values.shape != mask.flat.shape:
        raise ProtocolError(f"expected {mask.flat.numel()} values, got {values.numel()}")
    if mask.num_kept == mask.layout.numel:  # dense: a copy, without the boolean gather
        return values.clone()
    return values[mask.flat]


def unpack(packed: torch.Tensor, mask: Mask) -> torch.Tensor:
    """Canonical vector (numel,) with ``packed`` at kept coordinates and exact 0.0 elsewhere."""
    if packed.numel() != mask.num_kept:
        raise ProtocolError(f"mask keeps {mask.num_kept} values, got {packed.numel()}")
    if mask.num_kept == mask.layout.numel:  # dense: a copy, without the boolean scatter
        return packed.reshape(-1).to("cpu", copy=True)
    flat = torch.zeros(mask.layout.numel, dtype=packed.dtype)
    flat[mask.flat] = packed
    return flat
