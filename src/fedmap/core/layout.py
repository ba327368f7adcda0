"""The canonical order in which every party flattens a model.

Server and clients never exchange tensor names on the wire: both flatten the
transmitted tensors in ``state_dict`` order, elements row-major, and a
:class:`Layout` is that agreement written down. Its :meth:`Layout.fingerprint`
travels in every message header so that a client holding a different model is
refused instead of silently mis-reading values.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch

from fedmap.errors import ProtocolError


@dataclass(frozen=True)
class Layout:
    """Names, shapes and prunability of the transmitted tensors, in canonical order.

    Parameters
    ----------
    names
        ``state_dict`` keys of every transmitted (floating-point) tensor, in order.
    shapes
        One shape per name.
    prunable
        One flag per name: True for Conv/Linear weights that masks may prune.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    prunable: tuple[bool, ...]
    _offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.shapes) == len(self.prunable)):
            raise ValueError("Layout: names, shapes and prunable must have the same length")
        if len(set(self.names)) != len(self.names):
            raise ValueError("Layout: tensor names must be unique")
        offsets = [0]
        for shape in self.shapes:
            offsets.append(offsets[-1] + _numel(shape))
        object.__setattr__(self, "_offsets", tuple(offsets))

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor], prunable: Sequence[str]) -> Layout:
        """Build the layout of ``state`` (in its iteration order) with the given prunable names."""
        unknown = set(prunable) - set(state)
        if unknown:
            raise ValueError(f"Layout: prunable names not in the state: {sorted(unknown)}")
        chosen = set(prunable)
        return cls(
            names=tuple(state),
            shapes=tuple(tuple(t.shape) for t in state.values()),
            prunable=tuple(name in chosen for name in state),
        )

    @property
    def numel(self) -> int:
        """Number of transmitted scalars (prunable or not)."""
        return self._offsets[-1]

    def slice_of(self, index: int) -> slice:
        """Flat range of tensor ``index`` in the canonical vector."""
        return slice(self._offsets[index], self._offsets[index + 1])

    @cached_property
    def prunable_flat(self) -> torch.Tensor:
        """Bool vector (numel,): True where the coordinate belongs to a prunable tensor."""
        flags = torch.zeros(self.numel, dtype=torch.bool)
        for i, is_prunable in enumerate(self.prunable):
            if is_prunable:
                flags[self.slice_of(i)] = True
        return flags

    @cached_property
    def num_prunable(self) -> int:
        """Number of prunable scalars."""
        return sum(_numel(s) for s, p in zip(self.shapes, self.prunable, strict=True) if p)

    @cached_property
    def fingerprint(self) -> int:
        """CRC32 of names, shapes and prunability: equal layouts, equal fingerprints."""
        text = ";".join(
            f"{n}:{'x'.join(map(str, s))}:{int(p)}"
            for n, s, p in zip(self.names, self.shapes, self.prunable, strict=True)
        )
        return zlib.crc32(text.encode())

    def flatten(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``state`` into one float32 CPU vector (numel,) in canonical order."""
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ProtocolError(f"state is missing transmitted tensors: {missing[:3]}")
        parts = [state[n].detach().reshape(-1).to("cpu", torch.float32) for n in self.names]
        return torch.cat(parts) if parts else torch.zeros(0)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a canonical vector (numel,) back into named tensors (views of ``flat``)."""
        if flat.numel() != self.numel:
            raise ProtocolError(f"expected {self.numel} values, got {flat.numel()}")
        return {
            name: flat[self.slice_of(i)].view(shape)
            for i, (name, shape) in enumerate(zip(self.names, self.shapes, strict=True))
        }


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count
