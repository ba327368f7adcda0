import math

from fedmap.core.schedule import Schedule, ScheduleState, after_prune, decide, observe


def prune_rounds(schedule, rounds, sparsity_after):
    state, sparsity, pruned = ScheduleState(), 0.0, []
    for rnd in range(1, rounds + 1):
        if decide(schedule, state, rnd, sparsity).prune:
            state = after_prune(state, rnd)
            sparsity = sparsity_after(state.steps)
            pruned.append(rnd)
        state = observe(state, 0.5)
    return pruned


def test_fixed_trigger_warmup_then_every_r_rounds_until_target():
    schedule = Schedule(warmup_rounds=3, rounds_per_step=2, target_sparsity=0.5)
    pruned = prune_rounds(schedule, 20, lambda k: 1 - 0.8**k)
    # 1 - 0.8^k >= 0.5 first at k = 4 (0.5904)
    assert pruned == [4, 6, 8, 10]


def test_plateau_trigger_waits_for_patience_rounds_without_improvement():
    schedule = Schedule(1, 1, 0.99, trigger="plateau", patience=2)
    state = ScheduleState()
    accs = [0.1, 0.2, 0.2, 0.2]  # improves at rounds 1, 2; flat at 3, 4
    decisions = []
    for rnd, acc in enumerate(accs, start=1):
        decisions.append(decide(schedule, state, rnd, 0.0).prune)
        state = observe(state, acc)
    assert decisions == [False, False, False, False]
    assert decide(schedule, state, 5, 0.0).prune  # two rounds without improvement


def test_guard_reverts_when_a_mask_costs_more_than_delta():
    schedule = Schedule(1, 1, 0.9, guard_delta=0.01)
    state = observe(ScheduleState(), 0.90)  # dense best 0.90
    state = after_prune(state, 2)
    state = observe(state, 0.895)  # within 0.01
    assert decide(schedule, state, 3, 0.2).prune
    state = after_prune(state, 3)
    state = observe(state, 0.85)  # costs 5 points
    decision = decide(schedule, state, 4, 0.36)
    assert decision.revert and not decision.prune
    assert math.isinf(Schedule(1, 1, 0.9).guard_delta)
