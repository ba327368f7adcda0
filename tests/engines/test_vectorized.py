"""The vectorised engine against the sequential one, masks, fallback and memory at scale."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask, pack, unpack
from fedmap.core.prune import compute_mask
from fedmap.data.datasets import make_synthetic
from fedmap.engines.base import RoundConfig
from fedmap.engines.sequential import SequentialEngine
from fedmap.engines.vectorized import VectorizedEngine, default_chunk, unbatchable_reason
from fedmap.models import build_model
from fedmap.runs.experiment import build_loop, prepare
from fedmap.training.train import TrainConfig

CPU = torch.device("cpu")
ROUND = RoundConfig(
    4, 11, TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3)
)


def _engines(tiny_config, model: str, chunk: int):
    """A digits experiment with unequal client sizes, and both engines over its data."""
    config = tiny_config(
        model__name=model, data__partition="dirichlet", data__alpha=0.3, data__num_clients=6
    )
    e = prepare(config)
    idx = [torch.from_numpy(c.train_idx) for c in e.clients]
    x, y = e.dataset.x_train, e.dataset.y_train
    seq = SequentialEngine(e.model, e.layout, x, y, idx)
    vec = VectorizedEngine(e.model, e.layout, x, y, idx, CPU, chunk=chunk)
    return e, seq, vec


def _pruned(e, density: float) -> Mask:
    """A magnitude mask of the initial values at roughly ``density``."""
    return compute_mask(e.initial_values, Mask.dense(e.layout), 1 - density)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("chunk", [0, 4])
def test_matches_the_sequential_engine_with_unequal_clients(tiny_config, model, chunk):
    e, seq, vec = _engines(tiny_config, model, chunk)
    sizes = [len(c.train_idx) for c in e.clients]
    assert len(set(sizes)) > 2 and any(s % 16 for s in sizes)  # unequal, short last batches
    mask = _pruned(e, 0.4)
    start = pack(e.initial_values, mask)
    clients = [5, 0, 3, 1, 4, 2]
    a = seq.train_cohort(start, mask, clients, ROUND)
    b = vec.train_cohort(start, mask, clients, ROUND)
    assert [r.client_id for r in b] == clients
    for ra, rb in zip(a, b, strict=True):
        assert rb.num_samples == ra.num_samples
        torch.testing.assert_close(rb.packed, ra.packed, rtol=1e-5, atol=1e-5)
        assert rb.train_loss == pytest.approx(ra.train_loss, rel=1e-5)
        assert not torch.equal(rb.packed, start)  # it trained


def test_chunks_of_one_run_the_sequential_loop_bit_for_bit(tiny_config):
    e, seq, vec = _engines(tiny_config, "cnn", 1)
    mask = _pruned(e, 0.5)
    start = pack(e.initial_values, mask)
    a = seq.train_cohort(start, mask, [2, 4], ROUND)
    b = vec.train_cohort(start, mask, [2, 4], ROUND)
    assert all(torch.equal(ra.packed, rb.packed) for ra, rb in zip(a, b, strict=True))


def test_parallel_one_at_a_time_equals_the_one_thread_sequential_run(tiny_config):
    e, seq, vec = _engines(tiny_config, "cnn", 1)
    mask = _pruned(e, 0.5)
    start = pack(e.initial_values, mask)
    clients = [5, 0, 3, 1, 4]
    expected = seq.train_cohort(start, mask, clients, ROUND)  # one thread (conftest)
    torch.set_num_threads(2)  # two workers, one thread each; the fixture restores it
    got = vec.train_cohort(start, mask, clients, ROUND)
    assert len(vec._replicas) == 2  # the parallel path ran
    assert torch.get_num_threads() == 2
    assert [r.client_id for r in got] == clients
    assert all(torch.equal(a.packed, b.packed) for a, b in zip(expected, got, strict=True))


def test_compiled_step_matches_eager(tiny_config):
    e, _, eager = _engines(tiny_config, "mlp", 0)
    idx = [torch.from_numpy(c.train_idx) for c in e.clients]
    x, y = e.dataset.x_train, e.dataset.y_train
    compiled = VectorizedEngine(e.model, e.layout, x, y, idx, CPU, chunk=0, compile=True)
    mask = _pruned(e, 0.5)
    start = pack(e.initial_values, mask)
    a = eager.train_cohort(start, mask, [0, 1, 2], ROUND)
    b = compiled.train_cohort(start, mask, [0, 1, 2], ROUND)
    for ra, rb in zip(a, b, strict=True):
        torch.testing.assert_close(rb.packed, ra.packed, rtol=1e-5, atol=1e-5)


def test_pruned_weights_stay_exactly_zero(tiny_config):
    e, _, vec = _engines(tiny_config, "mlp", 0)
    mask = _pruned(e, 0.3)
    values = e.layout.unflatten(unpack(pack(e.initial_values, mask), mask))
    keep = {n: t.float() for n, t in mask.to_dict().items() if n.endswith("weight")}
    params, _ = vec.train_stack(values, keep, [0, 1, 2], ROUND)  # weight decay and momentum on
    for name, stacked in params.items():
        if name in keep:
            pruned = keep[name].expand_as(stacked) == 0
            assert pruned.any()
            assert torch.all(stacked[pruned] == 0.0)
            assert not torch.equal(stacked[~pruned], values[name].expand_as(stacked)[~pruned])


def test_a_finished_client_does_not_move_while_others_train(tiny_config):
    e, _, vec = _engines(tiny_config, "mlp", 0)
    small, large = sorted(range(6), key=lambda c: len(e.clients[c].train_idx))[::5]
    mask = Mask.dense(e.layout)
    start = pack(e.initial_values, mask)
    alone = vec.train_cohort(start, mask, [small], ROUND)[0]
    together = vec.train_cohort(start, mask, [large, small], ROUND)[1]
    torch.testing.assert_close(together.packed, alone.packed, rtol=1e-5, atol=1e-6)


def test_stacked_dropout_is_reproducible_and_drawn_per_client():
    data = make_synthetic(0, num_train=40, num_test=10)
    torch.manual_seed(0)
    model = build_model("simple_cnn", (3, 32, 32), 10)
    layout = Layout.from_state(
        dict(model.state_dict()), [n for n in model.state_dict() if n.endswith("weight")]
    )
    same = torch.arange(0, 40)
    engine = VectorizedEngine(model, layout, data.x_train, data.y_train, [same, same], CPU, chunk=0)
    mask = Mask.dense(layout)
    start = pack(layout.flatten(model.state_dict()), mask)
    cfg = RoundConfig(1, 0, TrainConfig(batch_size=40, lr=0.05))  # one full batch: order is moot

    def gap() -> float:
        a, b = engine.train_cohort(start, mask, [0, 1], cfg)
        again = engine.train_cohort(start, mask, [0, 1], cfg)
        assert torch.equal(a.packed, again[0].packed)  # reproducible
        return float((a.packed - b.packed).abs().max())

    assert gap() > 1e-3  # same data, same start: only the dropout masks differ
    model.eval()  # as the evaluator leaves it after scoring a round
    assert gap() > 1e-3  # training turns dropout back on
    model.dropout_conv.p = model.dropout_fc.p = 0.0
    assert gap() < 1e-5  # without dropout the two clients agree


def test_batchnorm_model_falls_back_to_sequential_and_says_so(tiny_config):
    torch.manual_seed(0)
    assert "BatchNorm" in (unbatchable_reason(build_model("resnet20", (3, 32, 32), 10)) or "")
    assert unbatchable_reason(build_model("cnn", (1, 8, 8), 10)) is None
    e = prepare(tiny_config(engine="vectorized", data__name="synthetic", model__name="resnet20"))
    assert e.engine == "sequential"
    assert len(e.notes) == 1 and "resnet20" in e.notes[0] and "sequential" in e.notes[0]
    assert isinstance(build_loop(e).transport.engine, SequentialEngine)  # type: ignore[attr-defined]


def test_cli_warns_once_about_the_fallback(tmp_path, write_tiny):
    from typer.testing import CliRunner

    from fedmap.cli import app

    config = write_tiny(rounds=1)
    args = ["run", str(config), "--out", str(tmp_path / "r"), "--quiet"]
    args += ["--set", "engine=vectorized", "--set", "data.name=synthetic"]
    args += ["--set", "model.name=resnet20"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("cannot batch model 'resnet20'") == 1


def test_a_vectorized_run_tracks_the_sequential_run(run_tiny, without_wall):
    _, s_seq, seq = run_tiny("seq")
    _, s_vec, vec = run_tiny("vec", engine="vectorized")
    _, _, again = run_tiny("vec2", engine="vectorized")
    assert s_vec["engine"] == "vectorized" and s_seq["engine"] == "sequential"
    assert [r["density"] for r in vec] == [r["density"] for r in seq]
    assert [r["bytes_up"] for r in vec] == [r["bytes_up"] for r in seq]
    for a, b in zip(seq, vec, strict=True):
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.01
    assert without_wall(again) == without_wall(vec)  # bit-identical reruns


def test_cpu_chunks_follow_the_working_set_and_cuda_takes_everyone():
    assert default_chunk(torch.device("cuda"), 10**9) == 0
    assert default_chunk(CPU, 1_663_370) == 1  # FedAvg CNN: one client at a time
    assert default_chunk(CPU, 55_210) == 50  # digits MLP: 50 clients per program


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_ten_thousand_clients_memory_does_not_grow_over_rounds(tiny_config):
    big = make_synthetic(0, num_train=40_000, num_test=200, shape=(16,))
    config = tiny_config(
        engine="vectorized",
        rounds=50,
        data__name="synthetic",
        data__num_clients=10_000,
        data__local_test_fraction=0.0,
        client__fraction=0.01,
        client__batch_size=4,
        pruning__method="none",
    )
    loop = build_loop(prepare(config, dataset=big))
    rss = []
    for rnd in range(1, 51):
        record = loop.step(rnd)
        assert record.counts.sampled == 100
        if rnd in (10, 50):
            rss.append(_rss_bytes())
    print(f"RSS round 10: {rss[0] / 2**20:.1f} MiB, round 50: {rss[1] / 2**20:.1f} MiB")
    assert rss[1] - rss[0] < 16 * 2**20, f"grew {(rss[1] - rss[0]) / 2**20:.1f} MiB"


def _rss_bytes() -> int:
    """Resident memory of this process."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")
