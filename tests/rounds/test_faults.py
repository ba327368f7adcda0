"""The fault model: reproducible draws, the deadline, attackers and their updates."""

import math

import pytest
import torch

from fedmap.rounds.faults import (
    Fate,
    FaultModel,
    attack_update,
    choose_attackers,
    client_fates,
    round_duration,
)


def test_fates_are_fixed_by_seed_round_and_attempt():
    faults = FaultModel(dropout=0.3, straggler_fraction=0.2)
    cohort = list(range(50))
    assert client_fates(faults, 1, 4, 0, cohort) == client_fates(faults, 1, 4, 0, cohort)
    assert client_fates(faults, 1, 4, 0, cohort) != client_fates(faults, 1, 4, 1, cohort)
    assert client_fates(faults, 1, 4, 0, cohort) != client_fates(faults, 1, 5, 0, cohort)


def test_dropout_and_straggler_rates_match_their_settings():
    faults = FaultModel(dropout=0.3, straggler_fraction=0.2)
    fates = [f for r in range(1, 201) for f in client_fates(faults, 0, r, 0, range(10)).values()]
    dropped = sum(f.dropped for f in fates) / len(fates)
    assert dropped == pytest.approx(0.3, abs=0.03)
    slow = sum(f.latency_s > 1.2 for f in fates) / len(fates)  # responsive: <= 1.2 s
    assert slow == pytest.approx(0.2, abs=0.03)


def test_no_faults_means_everyone_answers_within_nominal_time():
    fates = client_fates(FaultModel(), 0, 1, 0, range(100)).values()
    assert not any(f.dropped for f in fates)
    assert all(0.8 <= f.latency_s <= 1.2 for f in fates)


def test_late_means_after_the_deadline_and_dropped_is_never_late():
    assert Fate(False, 3.0).late(2.0)
    assert not Fate(False, 1.0).late(2.0)
    assert not Fate(True, 9.0).late(2.0)
    assert not Fate(False, 1e9).late(math.inf)


def test_round_lasts_until_the_slowest_reply_or_the_deadline():
    fates = [Fate(False, 1.0), Fate(False, 5.0), Fate(True, 50.0)]
    assert round_duration(fates, math.inf) == 5.0
    assert round_duration(fates, 2.0) == 2.0
    assert round_duration([Fate(True, 1.0)], 2.0) == 0.0


def test_attackers_are_a_fixed_fraction_of_the_population():
    chosen = choose_attackers(100, 0.1, seed=3)
    assert len(chosen) == 10 and chosen == choose_attackers(100, 0.1, seed=3)
    assert chosen != choose_attackers(100, 0.1, seed=4)
    assert choose_attackers(100, 0.0, seed=3) == frozenset()


def test_attacks_scale_or_flip_the_update_only():
    start = torch.tensor([1.0, 2.0, 3.0])
    trained = torch.tensor([1.5, 2.0, 2.0])
    assert torch.allclose(attack_update(trained, start, "scale", 10.0), torch.tensor([6.0, 2, -7]))
    assert torch.allclose(
        attack_update(trained, start, "sign_flip", 2.0), torch.tensor([0.0, 2, 5])
    )
    assert torch.equal(attack_update(trained, start, "none", 5.0), trained)
    with pytest.raises(ValueError, match="faults.attack"):
        FaultModel(attack="backdoor")
