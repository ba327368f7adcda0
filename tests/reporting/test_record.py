"""RunData and groups take names, colours, order and the dense reference from the registry."""

from __future__ import annotations

from fedmap.methods.registry import all_methods, get_method
from fedmap.reporting.record import (
    Group,
    RunData,
    flat_config,
    method_colour,
    method_label,
    method_rank,
    nested_config,
)


def run(method: str, target: float = 0.9) -> RunData:
    config = {"pruning": {"method": method, "target_sparsity": target}}
    return RunData(method, "/runs", config, {}, [], [], [])


def test_a_method_that_does_not_prune_has_no_target_and_is_the_reference():
    dense = next(cls for cls in all_methods() if not cls.prunes)
    assert run(dense.name).target is None
    assert Group("IID", dense.name, None, []).is_reference
    assert run("fedmap").target == 0.9 and not Group("IID", "fedmap", 0.9, []).is_reference


def test_labels_colours_and_order_are_the_registrys():
    for rank, cls in enumerate(all_methods()):
        assert (method_label(cls.name), method_colour(cls.name)) == (cls.label, cls.colour)
        assert method_rank(cls.name) == rank
    assert Group("IID", "fedmap", 0.9, [], "pruning.rate=0.5").label == (
        f"{get_method('fedmap').label} [pruning.rate=0.5]"
    )


def test_an_unregistered_method_is_named_as_configured_and_ranked_last():
    assert method_label("mystery") == "mystery" and method_colour("mystery") is None
    assert method_rank("mystery") == len(all_methods())
    assert run("mystery").target == 0.9  # pruning settings apply unless the registry says not


def test_flat_and_nested_configs_are_inverse():
    config = {"seed": 1, "data": {"name": "digits", "alpha": 0.5}, "pruning": {"method": "none"}}
    flat = flat_config(config)
    assert flat == {"seed": 1, "data.name": "digits", "data.alpha": 0.5, "pruning.method": "none"}
    assert nested_config(flat) == config
