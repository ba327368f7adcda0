"""Tests for fedmap.data.partition: disjoint covers, skew, local test splits, validation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap.data.partition import (
    PARTITION_NAMES,
    ClientData,
    label_counts,
    partition_clients,
    partition_dirichlet,
    partition_iid,
    partition_pathological,
    split_local_test,
    write_partition_csv,
)
from fedmap.errors import ConfigError, DataError


def make_labels(num_samples: int = 600, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, num_samples)


def assert_disjoint_cover(parts: list[np.ndarray], num_samples: int) -> None:
    joined = np.concatenate(parts)
    assert all(part.dtype == np.int64 for part in parts)
    assert joined.size == num_samples
    assert np.array_equal(np.sort(joined), np.arange(num_samples))


def all_indices(clients: list[ClientData]) -> list[np.ndarray]:
    return [c.train_idx for c in clients] + [c.test_idx for c in clients]


def build(scheme: str, labels: np.ndarray, seed: int = 0, **overrides) -> list[ClientData]:
    kwargs = dict(
        scheme=scheme, num_clients=10, alpha=0.5, classes_per_client=2, local_test_fraction=0.1
    )
    kwargs.update(overrides)
    return partition_clients(labels, rng=np.random.default_rng(seed), **kwargs)


def distinct_classes(clients: list[ClientData], labels: np.ndarray) -> np.ndarray:
    counts = label_counts(clients, labels, 10) + label_counts(
        [ClientData(c.client_id, c.test_idx, c.train_idx) for c in clients], labels, 10
    )
    return (counts > 0).sum(axis=1)


# ---- schemes ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", PARTITION_NAMES)
def test_partition_is_disjoint_cover_and_deterministic(scheme: str) -> None:
    labels = make_labels()
    first, again, other = (
        build(scheme, labels, 1),
        build(scheme, labels, 1),
        build(scheme, labels, 2),
    )
    assert_disjoint_cover(all_indices(first), labels.size)
    assert [c.client_id for c in first] == list(range(10))
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.train_idx, b.train_idx) and np.array_equal(a.test_idx, b.test_idx)
    assert any(
        not np.array_equal(a.train_idx, b.train_idx) for a, b in zip(first, other, strict=True)
    )


@settings(max_examples=40, deadline=None)
@given(
    scheme=st.sampled_from(PARTITION_NAMES),
    num_samples=st.integers(40, 300),
    num_classes=st.integers(1, 6),
    num_clients=st.integers(1, 8),
    fraction=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_disjoint_cover_property(
    scheme: str, num_samples: int, num_classes: int, num_clients: int, fraction: float, seed: int
) -> None:
    labels = make_labels(num_samples, num_classes, seed)
    classes_per_client = -(-num_classes // num_clients)  # enough shards for every class
    clients = build(
        scheme,
        labels,
        seed,
        num_clients=num_clients,
        alpha=10.0,
        classes_per_client=classes_per_client,
        local_test_fraction=fraction,
    )
    assert len(clients) == num_clients
    assert_disjoint_cover(all_indices(clients), num_samples)


def test_iid_sizes_balanced() -> None:
    parts = partition_iid(make_labels(103), 10, np.random.default_rng(0))
    assert sorted(p.size for p in parts) == [10] * 7 + [11] * 3
    assert_disjoint_cover(parts, 103)


def test_dirichlet_small_alpha_more_skewed_than_large() -> None:
    labels = make_labels(2000)
    skewed = build("dirichlet", labels, alpha=0.1, local_test_fraction=0.0)
    uniform = build("dirichlet", labels, alpha=100.0, local_test_fraction=0.0)
    assert distinct_classes(skewed, labels).mean() < 6 < distinct_classes(uniform, labels).mean()
    assert min(c.train_idx.size for c in skewed) >= 2


def test_dirichlet_min_size_unreachable_is_config_error() -> None:
    labels = np.zeros(30, dtype=np.int64)  # one class: with tiny alpha one client takes all
    with pytest.raises(ConfigError, match="data.alpha"):
        partition_dirichlet(labels, 3, 1e-4, np.random.default_rng(0), min_size=5)
    with pytest.raises(ConfigError, match="data.num_clients"):
        partition_dirichlet(labels, 20, 1.0, np.random.default_rng(0), min_size=2)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_at_most_k_classes(k: int) -> None:
    labels = make_labels(1000)
    parts = partition_pathological(labels, 10, k, np.random.default_rng(k))
    assert_disjoint_cover(parts, labels.size)
    assert max(np.unique(labels[p]).size for p in parts) <= k
    sizes = [p.size for p in parts]
    assert max(sizes) <= 2 * min(sizes)


def test_pathological_too_few_shards_for_classes() -> None:
    with pytest.raises(ConfigError, match="data.classes_per_client"):
        partition_pathological(make_labels(100), 2, 2, np.random.default_rng(0))


# ---- local test split -------------------------------------------------------------------


def test_split_local_test_sizes_and_disjointness() -> None:
    parts = [np.arange(0, 20), np.arange(20, 25), np.arange(25, 27), np.arange(27, 28)]
    clients = split_local_test(parts, 0.25, np.random.default_rng(0))
    # round(0.25 * n), halves up: 20 -> 5, 5 -> 1.25 -> 1, 2 -> 0.5 -> 1, 1 -> 0 (keeps 1 to train)
    assert [c.test_idx.size for c in clients] == [5, 1, 1, 0]
    assert [c.train_idx.size for c in clients] == [15, 4, 1, 1]
    for client, part in zip(clients, parts, strict=True):
        assert np.intersect1d(client.train_idx, client.test_idx).size == 0
        assert np.array_equal(np.sort(np.concatenate([client.train_idx, client.test_idx])), part)


def test_split_local_test_small_fraction_keeps_one() -> None:
    clients = split_local_test([np.arange(10)], 0.01, np.random.default_rng(0))
    assert clients[0].test_idx.size == 1 and clients[0].train_idx.size == 9
    none = split_local_test([np.arange(10)], 0.0, np.random.default_rng(0))
    assert none[0].test_idx.size == 0 and none[0].test_idx.dtype == np.int64


# ---- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"scheme": "shards"}, "data.partition"),
        ({"num_clients": 0}, "data.num_clients"),
        ({"num_clients": 601}, "data.num_clients"),
        ({"num_clients": 2.5}, "data.num_clients"),
        ({"num_clients": True}, "data.num_clients"),
        ({"alpha": -1}, "data.alpha"),
        ({"alpha": 0.0}, "data.alpha"),
        ({"alpha": float("nan")}, "data.alpha"),
        ({"alpha": "1"}, "data.alpha"),
        ({"classes_per_client": 0}, "data.classes_per_client"),
        ({"classes_per_client": 1.5}, "data.classes_per_client"),
        ({"local_test_fraction": 1.0}, "data.local_test_fraction"),
        ({"local_test_fraction": -0.1}, "data.local_test_fraction"),
    ],
)
def test_invalid_argument_names_field(override: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        rest = {key: value for key, value in override.items() if key != "scheme"}
        build(override.get("scheme", "iid"), make_labels(), **rest)
    assert repr(next(iter(override.values()))) in str(info.value)


def test_alpha_message_format() -> None:
    with pytest.raises(ConfigError, match="data.alpha: expected a positive float, got -1"):
        build("dirichlet", make_labels(), alpha=-1)


def test_bad_labels_are_data_errors() -> None:
    with pytest.raises(DataError, match="labels"):
        partition_iid(np.zeros((4, 2), dtype=np.int64), 2, np.random.default_rng(0))
    with pytest.raises(DataError, match="labels"):
        partition_iid(np.array([0.5, 1.0]), 2, np.random.default_rng(0))
    with pytest.raises(DataError, match="labels"):
        partition_iid(np.array([0, -1]), 2, np.random.default_rng(0))


# ---- counts and csv ---------------------------------------------------------------------


def test_label_counts_by_hand() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    clients = [
        ClientData(0, np.array([0, 1]), np.array([2])),
        ClientData(1, np.array([3, 4, 5]), np.array([], dtype=np.int64)),
    ]
    expected = np.array([[1, 1, 0, 0], [0, 0, 3, 0]])
    assert np.array_equal(label_counts(clients, labels, 4), expected)
    with pytest.raises(DataError, match="num_classes"):
        label_counts(clients, labels, 2)


def test_write_partition_csv(tmp_path: Path) -> None:
    labels = make_labels(200, 3)
    clients = build("dirichlet", labels, num_clients=4, alpha=1.0)
    path = tmp_path / "partition.csv"
    write_partition_csv(path, clients, labels, 3)
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["client", "num_train", "num_test", "label_0", "label_1", "label_2"]
    assert len(rows) == 1 + 4
    for client, row in zip(clients, rows[1:], strict=True):
        values = [int(v) for v in row]
        assert values[:3] == [client.client_id, client.train_idx.size, client.test_idx.size]
        assert sum(values[3:]) == client.train_idx.size
    assert sum(int(r[1]) + int(r[2]) for r in rows[1:]) == 200
