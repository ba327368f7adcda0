"""The one small interface every method implements, and the types it trades in.

A method decides, at the start of each round, whether the mask changes and how;
what extra work, if any, the round's clients do before replying; how replies that
carry their own masks fold into a new mask; and it is told the validation accuracy
at the end of each round. Everything else (sending, validating, aggregating) is
the protocol's job (:mod:`fedmap.protocol`) and is shared by all methods, in the
simulator and over Flower alike.

Each method lives in one module of this package that declares, beside its
behaviour, what the rest of fedmap asks of it: its config name and report label,
the revision of its arithmetic, whether its replies carry masks, and how it is
built from a config. :mod:`fedmap.methods.registry` finds them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from fedmap.core.codec import PruneInstruction
from fedmap.core.layout import Layout
from fedmap.core.mask import Mask

if TYPE_CHECKING:
    from fedmap.runs.config import Config


@dataclass(frozen=True)
class GlobalModel:
    """The server's model: canonical values (exact 0.0 where pruned), mask and mask version.

    The version counts mask changes; a client holding the current version needs
    only values, any other one a bootstrap.
    """

    values: torch.Tensor
    mask: Mask
    version: int


@dataclass(frozen=True)
class Step:
    """A method's decision for one round.

    ``prune`` with ``mask``: a step every in-step client can reproduce from the values.
    ``reset_values`` with ``mask``: a new model no client can derive (guard revert,
    rewind, a mask the server chose); every client then receives a bootstrap.
    """

    prune: PruneInstruction | None = None
    mask: Mask | None = None
    reset_values: torch.Tensor | None = None


@dataclass(frozen=True)
class ClientTask:
    """The extra work of one round's clients (``None`` everywhere: FedMap's plain reply).

    This is the vocabulary the server can ask of a client; it travels with the
    round (over Flower as ``task-*`` fields) and :mod:`fedmap.protocol.task` carries
    it out.

    Parameters
    ----------
    prune_to
        Client-local pruning: prune the trained model by magnitude, within the
        received mask, to this density of the prunable weights, and send that mask.
    drop_to
        FedDST: drop each tensor's kept weights with the smallest ``|w|`` down to
        its ERK count at this density, regrow it to its received count where the
        dense gradient is largest, and send the new mask.
    importance
        PruneFL: also send the mean squared gradients of every prunable weight.
    initial_pruning
        PruneFL's round 1: reach ``prune_to`` by the iterative initial pruning of
        :mod:`fedmap.methods.prunefl` instead of training and pruning once.
    """

    prune_to: float | None = None
    drop_to: float | None = None
    importance: bool = False
    initial_pruning: bool = False

    def __post_init__(self) -> None:
        if self.initial_pruning and self.prune_to is None:
            raise ValueError("an initial-pruning task needs the density to prune to (prune_to)")

    @property
    def initial_density(self) -> float | None:
        """The density the client's initial pruning reaches (None: not that task)."""
        return self.prune_to if self.initial_pruning else None

    @property
    def needs_gradients(self) -> bool:
        """Whether the engine must return dense gradient statistics."""
        return self.drop_to is not None or self.importance

    @property
    def sends_mask(self) -> bool:
        """Whether the reply carries the client's own mask."""
        return self.prune_to is not None or self.drop_to is not None


class Method(ABC):
    """A federated training method: FedMap, dense FedAvg or a baseline (see module docstring).

    Class attributes say what the rest of fedmap needs to know without running it.
    """

    name: ClassVar[str]
    """``pruning.method`` value that selects it."""
    label: ClassVar[str]
    """How reports and figures name it."""
    colour: ClassVar[str] = "#999999"
    """Its colour in every figure."""
    order: ClassVar[int] = 100
    """Its place in tables and figures (lower first)."""
    revision: ClassVar[int] = 1
    """Revision of its arithmetic: bump it (and say why in docs/methods.md) when results change."""
    sends_masks: ClassVar[bool] = False
    """Its clients' replies carry masks of their own (only the ``mean`` rule can merge them)."""
    prunes: ClassVar[bool] = True
    """False for dense FedAvg: pruning settings do not apply, and it is every report's reference."""

    @classmethod
    def from_config(cls, config: Config, initial_values: torch.Tensor) -> Method:
        """The method as ``config`` sets it up (``initial_values``: the model at round 0).

        Every registered method overrides this (the registry test builds each one
        from a config); a method made only for a test need not.
        """
        raise NotImplementedError(f"{cls.__name__} cannot be built from a config")

    @abstractmethod
    def plan(self, round: int, model: GlobalModel) -> Step:
        """Return what changes at the start of ``round`` (``Step()`` for nothing)."""

    def observe(self, round: int, model: GlobalModel, val_accuracy: float) -> None:  # noqa: B027
        """Take the validation accuracy of ``model`` at the end of ``round`` (default: ignore)."""

    def client_task(self, round: int) -> ClientTask | None:
        """Extra work the clients of ``round`` do before replying (default: none, FedMap's way)."""
        return None

    def cohort_size(self, round: int) -> int | None:
        """Clients to sample in ``round`` instead of ``fraction`` of them (default: no change)."""
        return None

    def merge(
        self, round: int, model: GlobalModel, values: torch.Tensor, votes: torch.Tensor
    ) -> Mask:
        """The mask after a round whose replies carried their own masks.

        ``values`` is the per-coordinate mean over the clients that kept each
        coordinate and ``votes`` their summed weights. Default: the union of the
        clients' masks (client-local pruning), so a weight one client pruned comes
        back if another kept it.
        """
        layout = model.mask.layout
        return Mask(layout, ~layout.prunable_flat | (votes > 0))

    def check_own_mask(self, own: Mask, model: Mask, task: ClientTask) -> str | None:
        """A stricter check of a reply's own mask than the task's (None: it passes).

        The server first applies what every task of its kind requires
        (:func:`fedmap.protocol.checks.own_mask_problem`); a method adds only what
        is particular to it. Default: nothing more.
        """
        return None

    def observe_statistics(self, round: int, importance: torch.Tensor) -> None:  # noqa: B027
        """Take the clients' sample-weighted mean statistics of ``round`` (default: ignore)."""

    @property
    def iteration(self) -> int:
        """Mask changes so far (the ``iteration`` metrics column)."""
        return 0

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What the method remembers between rounds (for checkpoints); default: nothing."""
        return {}, {}

    def load_state_dict(  # noqa: B027
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], layout: Layout
    ) -> None:
        """Restore what :meth:`state_dict` returned; default: nothing to restore."""
