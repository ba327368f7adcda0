import torch

from fedmap.methods.registry import build_method
from fedmap.rounds.sampling import sample_clients
from fedmap.runs.experiment import prepare


def test_fedmap_prunes_on_schedule_and_learns(tmp_path, run_tiny):
    experiment, summary, rows = run_tiny("a")
    n = experiment.layout.num_prunable
    expected, kept = [], n
    for rnd in range(1, 7):
        if 2 <= rnd and 1 - kept / n < 0.6:
            kept -= int(0.2 * kept + 0.5)
        expected.append(kept / n)
    assert [r["density"] for r in rows] == expected
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[-1]["test_accuracy"] > 0.5  # digits: chance is 0.1
    assert summary["bytes_total"] < summary["bytes_dense_fedavg"]


def test_bytes_shrink_with_density_and_masks_travel_only_in_bootstraps(tmp_path, run_tiny):
    _, _, rows = run_tiny("b")
    first, last = rows[0], rows[-1]
    assert last["bytes_up"] < 0.6 * first["bytes_up"]
    for row in rows:
        assert (row["bytes_mask"] > 0) == (row["bootstraps"] > 0)
        assert row["bytes_up"] + row["bytes_down"] <= row["bytes_dense"] + row["bytes_mask"]


def test_dense_method_keeps_every_weight(tmp_path, run_tiny):
    _, summary, rows = run_tiny("c", pruning__method="none")
    assert {r["density"] for r in rows} == {1.0}
    assert summary["final_sparsity"] == 0.0


def test_same_seed_same_metrics_and_pruned_values_exactly_zero(tmp_path, run_tiny, without_wall):
    e1, _, rows1 = run_tiny("d1")
    _, _, rows2 = run_tiny("d2")
    assert without_wall(rows1) == without_wall(rows2)
    from fedmap.runs.export import load_model

    state, mask, _ = load_model(tmp_path / "d1" / "model.safetensors")
    flat = e1.layout.flatten(state)
    assert torch.all(flat[~mask.flat] == 0.0)


def test_float16_transport_halves_value_bytes(tmp_path, run_tiny):
    _, s32, _ = run_tiny("f32", pruning__method="none")
    _, s16, _ = run_tiny("f16", pruning__method="none", transport__dtype="float16")
    assert 0.49 < s16["bytes_total"] / s32["bytes_total"] < 0.52


def test_client_sampling_is_fixed_by_seed_and_round():
    a = sample_clients(100, 0.1, seed=1, round=5)
    assert a == sample_clients(100, 0.1, seed=1, round=5)
    assert len(a) == 10 and len(set(a)) == 10
    assert a != sample_clients(100, 0.1, seed=1, round=6)
    assert len(sample_clients(3, 0.01, seed=0, round=1)) == 1


def test_the_configured_method_is_built(tiny_config):
    experiment = prepare(tiny_config(pruning__method="none"))
    assert build_method(experiment.config, experiment.initial_values).name == "none"
