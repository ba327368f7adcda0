"""The vectorised engine: a chunk of the cohort trained as one batched program.

In FedMap every client of a round starts from the same global values under the
same mask, so a round is one program over stacked parameters ``(K, *shape)``:
``torch.func.functional_call`` runs the model with one client's parameters,
``vmap(grad_and_value(...))`` runs it for all ``K`` at once, and the masked SGD
step is a handful of tensor ops over the stack. On a GPU this turns ``K`` small
kernels into one large one.

Equal results. Each client keeps exactly what the sequential engine gives it:
its own batch order (the same per-client generator), its own batch sizes (a
client's last, short batch is padded and the padding weighted 0, so its loss is
the mean over real samples), and its own number of steps (a client that has run
out of batches is frozen: neither its weights nor its momentum move). The SGD
arithmetic mirrors ``torch.optim.SGD`` term for term, so results match the
sequential engine within float rounding. Dropout draws differ: both engines are
deterministic per seed, but the vectorised one draws all clients' dropout masks
from one stream seeded per round and chunk.

On a CPU, stacking pays only for small models (per-step overheads dominate
them); a million-weight conv net runs faster one client per core, so chunks of
one client go to worker threads, each training its share of the cohort on its
own replica with one intra-op thread (see :func:`default_chunk`).

Not batched: models with floating-point buffers (BatchNorm's running statistics
change inside the forward pass, once per client); :func:`unbatchable_reason`
names them and the caller falls back to the sequential engine.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack, pruned_multipliers
from fedmap.engines.base import ClientResult, RoundConfig, client_seed, start_values
from fedmap.engines.heap import release_free_heap, share_malloc_arena
from fedmap.engines.sequential import SequentialEngine
from fedmap.training.train import TrainConfig

Params = dict[str, torch.Tensor]
StepFn = Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor], tuple[Params, torch.Tensor]]


def unbatchable_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained client-stacked, or None when it can."""
    buffers = [n for n, b in model.named_buffers() if torch.is_floating_point(b)]
    if buffers:
        return (
            f"{type(model).__name__} has floating-point buffers ({buffers[0]}, ...) that the "
            "forward pass updates per client (BatchNorm running statistics)"
        )
    return None


# On a CPU, clients per chunk are capped so that the chunk's weights, gradients and
# momentum (3 x 4 bytes per parameter) stay within this many bytes.
CPU_CHUNK_BYTES = 32 * 2**20


def default_chunk(device: torch.device, num_params: int) -> int:
    """Clients trained at once when the config leaves ``cohort_chunk`` at 0 (0 = all).

    On CUDA the whole cohort: one launch per layer instead of one per client. On a
    CPU, per-step fixed costs dominate small models and stacking pays (digits MLP:
    2.3x faster than one client at a time), but for a conv net of a million
    weights or more the batched kernels lose: the stack falls out of cache, and
    vmap's convolution and pooling rules leave the fast channels-last layout
    (FedAvg CNN, 10 clients: 1.3-1.5x slower than one at a time). Hence this
    working-set rule; docs/performance.md has the measurements.
    """
    if device.type == "cuda":
        return 0
    return max(1, CPU_CHUNK_BYTES // (12 * max(num_params, 1)))


class VectorizedEngine:
    """Trains the cohort in chunks of ``chunk`` clients (0: all at once) on ``device``.

    Parameters
    ----------
    model
        The architecture, used as a stateless template (its own values are not touched).
    layout
        Canonical order of the transmitted tensors; must be the model's parameters.
    x_train, y_train
        The whole training set, on any device; a round's samples are gathered in one
        go and moved to ``device`` (through pinned memory when that is a GPU).
    client_indices
        Training indices per client id (into ``x_train``).
    device
        Where training runs.
    chunk
        Clients per batched program; 0 trains the whole cohort at once, 1 trains
        clients one at a time (stacking one client only adds cost), in parallel
        threads on a multi-core CPU.
    compile
        Wrap the per-step program in ``torch.compile``.
    """

    def __init__(
        self,
        model: nn.Module,
        layout: Layout,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        client_indices: Sequence[torch.Tensor],
        device: torch.device,
        chunk: int = 0,
        compile: bool = False,
    ) -> None:
        reason = unbatchable_reason(model)
        if reason is not None:
            raise ValueError(f"cannot vectorise: {reason}")
        names = [name for name, _ in model.named_parameters()]
        if list(layout.names) != names:
            raise ValueError("layout must list exactly the model's parameters, in order")
        self.model = model
        self.layout = layout
        self.x_train = x_train
        self.y_train = y_train
        self.client_indices = [idx.to(x_train.device) for idx in client_indices]
        self.device = device
        self.chunk = chunk
        self.compile = compile
        self._step: StepFn | None = None
        self._sequential: SequentialEngine | None = None
        self._replicas: list[nn.Module] = []  # models for parallel one-at-a-time training
        self._pool: ThreadPoolExecutor | None = None  # kept: the same threads, the same heaps
        self._pool_size = 0
        self._has_dropout = any(
            isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()
        )

    def train_cohort(
        self,
        global_packed: torch.Tensor,
        mask: Mask,
        clients: Sequence[int],
        round_cfg: RoundConfig,
    ) -> list[ClientResult]:
        """Train ``clients`` from the global model, ``chunk`` at a time; results in order."""
        size = self.chunk or max(len(clients), 1)
        if not round_cfg.plain:  # a method's client task: rare rounds, per client
            return self._sequential_engine().train_cohort(global_packed, mask, clients, round_cfg)
        if size == 1:  # nothing to stack: per-client loops, one per core where possible
            return self._one_at_a_time(global_packed, mask, clients, round_cfg)
        start = start_values(global_packed, mask, self.device)
        masks = pruned_multipliers(mask, self.device)
        results: list[ClientResult] = []
        for first in range(0, len(clients), size):
            chunk = list(clients[first : first + size])
            results += self._train_chunk(start, masks, mask, chunk, round_cfg)
        return results

    def _one_at_a_time(
        self,
        global_packed: torch.Tensor,
        mask: Mask,
        clients: Sequence[int],
        round_cfg: RoundConfig,
    ) -> list[ClientResult]:
        """Clients one at a time; on a multi-core CPU, one client per core in parallel.

        Small-batch convolutions use two cores poorly, so ``W`` threads each train
        their own share of the cohort on a replica of the model with one intra-op
        thread. Each client's result depends only on its own data and seed, so the
        outcome is the same whatever thread ran it, and it equals the sequential
        engine run with one thread, bit for bit. Dropout draws from torch's
        process-wide generator, so models with dropout keep the single loop.
        """
        engine = self._sequential_engine()
        threads = torch.get_num_threads()
        if self.device.type != "cpu" or threads < 2 or len(clients) < 2 or self._has_dropout:
            return engine.train_cohort(global_packed, mask, clients, round_cfg)
        start = start_values(global_packed, mask, self.device)
        masks = engine.prunable_masks(mask)
        workers = min(threads, len(clients))
        while len(self._replicas) < workers:
            self._replicas.append(copy.deepcopy(self.model))

        def share(worker: int) -> list[ClientResult]:
            model = self._replicas[worker]
            return [
                engine.train_client(model, start, masks, mask, c, round_cfg, seed_dropout=False)
                for c in clients[worker::workers]
            ]

        if self._pool is None or self._pool_size < workers:
            share_malloc_arena()
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fedmap-client")
            self._pool_size = threads
        torch.set_num_threads(1)  # process-wide: every worker thread gets one core
        try:
            shares = list(self._pool.map(share, range(workers)))
        finally:
            torch.set_num_threads(threads)
        release_free_heap()
        by_client = {r.client_id: r for part in shares for r in part}
        return [by_client[c] for c in clients]

    def _sequential_engine(self) -> SequentialEngine:
        """The sequential engine over the same data, built on first use (chunks of one)."""
        if self._sequential is None:
            x = self.x_train.to(self.device)
            if x.dim() == 4:  # as the run's model: channels-last kernels are faster on CPU
                x = x.contiguous(memory_format=torch.channels_last)
            self._sequential = SequentialEngine(
                self.model, self.layout, x, self.y_train.to(self.device), self.client_indices
            )
        return self._sequential

    def _train_chunk(
        self,
        start: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        mask: Mask,
        chunk: list[int],
        round_cfg: RoundConfig,
    ) -> list[ClientResult]:
        """Train one chunk together and pack each client's kept values."""
        params, losses = self.train_stack(start, masks, chunk, round_cfg)
        k = len(chunk)
        flat = torch.cat([params[n].reshape(k, -1) for n in self.layout.names], dim=1).cpu()
        return [
            ClientResult(client, pack(flat[i], mask), len(self.client_indices[client]), losses[i])
            for i, client in enumerate(chunk)
        ]

    def train_stack(
        self,
        start: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        chunk: Sequence[int],
        round_cfg: RoundConfig,
    ) -> tuple[Params, list[float]]:
        """Train ``K = len(chunk)`` clients together from ``start``.

        Parameters
        ----------
        start
            Global values by name, on ``device``, pruned coordinates exactly 0.0.
        masks
            0/1 float multipliers by name for the prunable tensors, on ``device``.
        chunk
            Client ids.
        round_cfg
            Round, seed and SGD settings.

        Returns
        -------
        params, losses
            Trained values stacked ``(K, *shape)`` by name, and each client's mean
            batch loss.
        """
        cfg = round_cfg.train
        index, weight = self._batch_plan(list(chunk), round_cfg)  # (K, T, B) each
        x, y = self._gather(index)  # (K, T, B, *sample), (K, T, B)
        active_cpu = weight.sum(dim=2) > 0  # (K, T): the client still has a batch at step t
        everyone = active_cpu.all(dim=0).tolist()  # per step, known up front: no device sync
        weight, active = weight.to(self.device), active_cpu.to(self.device)
        k = len(chunk)
        params = {n: t.unsqueeze(0).repeat(k, *[1] * t.dim()) for n, t in start.items()}
        momenta: Params = {}
        step = self._step_fn()
        self.model.train()  # dropout on: the evaluator shares this module and leaves it in eval
        loss_sum = torch.zeros(k, device=self.device)
        seed = client_seed(round_cfg.seed, round_cfg.round, chunk[0])
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)  # dropout: one stream per round and chunk
            for t in range(index.shape[1]):
                grads, loss = step(params, x[:, t], y[:, t], weight[:, t])  # (K, *shape), (K,)
                _sgd_step(params, momenta, grads, masks, active[:, t], everyone[t], cfg, t == 0)
                loss_sum += torch.where(active[:, t], loss, 0.0)
        losses = (loss_sum / active.sum(dim=1).clamp_min(1)).tolist()
        return params, losses

    def _batch_plan(
        self, chunk: list[int], round_cfg: RoundConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Global sample indices (K, T, B) and 0/1 weights for every client step.

        Client ``k`` runs ``epochs * ceil(n_k / B)`` steps, its batches in the order
        its own generator gives (the sequential engine's draws); steps past its end
        and the tail of a short batch point at sample 0 with weight 0.
        """
        cfg = round_cfg.train
        b = cfg.batch_size
        plans = []
        for client in chunk:
            generator = torch.Generator().manual_seed(
                client_seed(round_cfg.seed, round_cfg.round, client)
            )
            own = self.client_indices[client]
            steps = math.ceil(len(own) / b)
            epochs = []
            for _ in range(cfg.epochs):
                order = torch.randperm(len(own), generator=generator).to(own.device)
                padded = torch.full((steps * b,), -1, dtype=torch.long, device=own.device)
                padded[: len(own)] = own[order]
                epochs.append(padded.view(steps, b))
            plans.append(torch.cat(epochs) if steps else torch.empty(0, b, dtype=torch.long))
        total = max(len(p) for p in plans)
        index = torch.full((len(chunk), total, b), -1, dtype=torch.long, device=plans[0].device)
        for k, plan in enumerate(plans):
            index[k, : len(plan)] = plan
        weight = (index >= 0).float()
        return index.clamp_min(0), weight

    def _gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The round's samples in one gather and one host-to-device copy."""
        x, y = self.x_train[index], self.y_train[index]
        if x.device != self.device:
            if self.device.type == "cuda" and x.device.type == "cpu":
                x, y = x.pin_memory(), y.pin_memory()
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
        return x, y

    def _step_fn(self) -> StepFn:
        """Per-client gradients and losses of one step for the whole stack (built once)."""
        if self._step is None:
            model = self.model

            def loss_of(p: Params, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Any:
                logits = functional_call(model, p, (x,))  # (B, classes)
                per_sample = F.cross_entropy(logits, y, reduction="none")  # (B,)
                return (per_sample * w).sum() / w.sum().clamp_min(1.0)

            fn: Any = vmap(grad_and_value(loss_of), randomness="different")
            if self.compile:
                fn = torch.compile(fn)
            self._step = fn
        return self._step


def _sgd_step(
    params: Params,
    momenta: Params,
    grads: Params,
    masks: Mapping[str, torch.Tensor],
    active: torch.Tensor,
    everyone: bool,
    cfg: TrainConfig,
    first: bool,
) -> None:
    """Masked SGD on the stack, term for term as ``torch.optim.SGD`` (no dampening).

    Gradients of pruned weights are zeroed first, as in the sequential engine.
    Clients with ``active`` False keep their weights and momentum (``everyone``
    says whether all are active, so the common case skips the selection). Everything is
    in place (``params``, ``momenta`` and the fresh ``grads``): on a CPU,
    allocating a new stack of weights every step costs more than the step's
    arithmetic.
    """
    for name, p in params.items():
        g = grads[name]
        if name in masks:
            g.mul_(masks[name])
        if cfg.weight_decay:
            g.add_(p, alpha=cfg.weight_decay)
        flags = active.view(-1, *[1] * (p.dim() - 1))  # (K, 1, ..., 1)
        if not everyone:
            g.mul_(flags)  # a finished client's step is zero ...
        if cfg.momentum:
            if first:
                momenta[name] = g
            else:
                factor = cfg.momentum if everyone else torch.where(flags, cfg.momentum, 1.0)
                momenta[name].mul_(factor).add_(g)  # ... and its momentum is left as it was
            g = momenta[name] if everyone else momenta[name] * flags
        p.add_(g, alpha=-cfg.lr)
