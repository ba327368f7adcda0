"""Cells of the grid tables, and the warm-up digest."""

from __future__ import annotations

import math

import pytest

from fedmap.reporting.grid_format import (
    DIGEST_CHARS,
    LAST_ROUNDS,
    decode,
    encode,
    kind_of,
    last_mean,
    warmup_digest,
)


@pytest.mark.parametrize(
    "value, kind, text",
    [
        (None, "float", ""),
        (True, "bool", "true"),
        (0.1, "float", "0.1"),
        (float.fromhex("0x1.3333340000000p-1"), "float32", "0.6"),
        (math.inf, "float", "inf"),
        (3, "int", "3"),
        ("iid", "str", "iid"),
        ([1, 0.5], "json", "[1, 0.5]"),
    ],
)
def test_a_value_is_written_as_its_shortest_exact_text_and_read_back(value, kind, text):
    assert encode(value, kind) == text
    assert decode(text, kind) == value


@pytest.mark.parametrize(
    "values, kind",
    [
        ([0.5, None, 0.25], "float32"),  # both are exact float32 values
        ([0.5, 0.1], "float"),
        ([1, 2], "int"),
        ([1, 0.5], "json"),  # mixed: JSON keeps each value's type
        (["a", "b"], "str"),
        ([True, False], "bool"),
    ],
)
def test_a_column_takes_the_one_kind_that_writes_all_its_values(values, kind):
    assert kind_of(values) == kind


@pytest.mark.parametrize("text, kind", [("yes", "bool"), ("1", "complex")])
def test_an_unreadable_cell_is_refused(text, kind):
    with pytest.raises(ValueError):
        decode(text, kind)


def rows(densities: list[float], loss: float = 1.0) -> list[dict]:
    return [
        {"round": r + 1, "test_loss": loss, "test_accuracy": 0.5, "val_accuracy": 0.4, "density": d}
        for r, d in enumerate(densities)
    ]


def config(method: str = "fedmap", warmup: int = 2) -> dict:
    return {"pruning": {"method": method, "warmup_rounds": warmup}}


def test_the_warmup_digest_covers_exactly_the_warmup_rounds():
    digest = warmup_digest(config(), rows([1.0, 1.0, 0.8]))
    assert len(digest) == DIGEST_CHARS
    later = rows([1.0, 1.0, 0.8])
    later[2]["test_loss"] = 9.0  # after the warm-up: same digest
    assert warmup_digest(config(), later) == digest
    early = rows([1.0, 1.0, 0.8])
    early[1]["val_accuracy"] = 0.41  # in the warm-up: another digest
    assert warmup_digest(config(), early) != digest


@pytest.mark.parametrize(
    "method, warmup, densities",
    [
        ("none", 2, [1.0, 1.0, 1.0]),  # the dense reference has no warm-up of its own
        ("prunefl", 2, [0.1, 0.1, 0.1]),  # starts sparse
        ("fedmap", 0, [0.8, 0.8, 0.8]),
        ("fedmap", 5, [1.0, 1.0, 1.0]),  # fewer rounds than the warm-up
    ],
)
def test_no_dense_warmup_no_digest(method, warmup, densities):
    assert warmup_digest(config(method, warmup), rows(densities)) == ""


def test_last_mean_averages_the_last_rounds():
    accuracies = [{"test_accuracy": float(a)} for a in range(LAST_ROUNDS + 3)]
    assert last_mean(accuracies) == sum(range(3, LAST_ROUNDS + 3)) / LAST_ROUNDS
    assert math.isnan(last_mean([]))
