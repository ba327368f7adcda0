"""Split a training set over clients: IID, Dirichlet label skew, or pathological shards.

Every scheme returns a disjoint cover of ``range(len(labels))``: each training
sample belongs to exactly one client. Each client then holds out a small local
test split of its own samples, on which per-client accuracy is reported. All
randomness comes from the ``rng`` argument, so a seed fixes the partition.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from os import PathLike

import numpy as np

from fedmap.errors import ConfigError, DataError

PARTITION_NAMES = ("iid", "dirichlet", "pathological")
MAX_DIRICHLET_TRIES = 100


@dataclass(frozen=True)
class ClientData:
    """The samples one client owns, as indices into ``dataset.x_train``.

    Attributes
    ----------
    client_id
        Position of the client in the partition, 0-based.
    train_idx
        int64 indices the client trains on.
    test_idx
        int64 indices of the client's local test split: drawn from its own
        partition and never trained on, so its accuracy measures the global
        model on that client's own label mix.
    """

    client_id: int
    train_idx: np.ndarray
    test_idx: np.ndarray


def partition_iid(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle all indices and cut them into ``num_clients`` parts whose sizes differ by <= 1."""
    labels = _check_labels(labels)
    _check_num_clients(num_clients, labels.size)
    order = rng.permutation(labels.size)
    return [part.astype(np.int64) for part in np.array_split(order, num_clients)]


def partition_dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Label-skewed split: each class is spread over clients by Dirichlet(alpha) proportions.

    This is the scheme of Hsu et al. (2019) as implemented in NIID-Bench (Li et
    al., 2022): small ``alpha`` gives each client few dominant classes, large
    ``alpha`` tends to IID. As in NIID-Bench, a client already holding more than
    ``N / num_clients`` samples gets no more of later classes, which keeps sizes
    from diverging. The whole draw is repeated until every client has at least
    ``min_size`` samples.

    Raises
    ------
    ConfigError
        A bad argument, or no valid draw within :data:`MAX_DIRICHLET_TRIES` tries
        (the message suggests a larger ``data.alpha`` or fewer clients).
    """
    labels = _check_labels(labels)
    _check_num_clients(num_clients, labels.size)
    _check_alpha(alpha)
    _check_min_size(min_size, num_clients, labels.size)
    for _ in range(MAX_DIRICHLET_TRIES):
        parts = _draw_dirichlet(labels, num_clients, float(alpha), rng)
        if min(part.size for part in parts) >= min_size:
            return [rng.permutation(part) for part in parts]
    raise ConfigError(
        f"data.alpha: with alpha={alpha} no Dirichlet draw in {MAX_DIRICHLET_TRIES} tries gave "
        f"each of {num_clients} clients >= {min_size} samples; raise data.alpha "
        "or lower data.num_clients"
    )


def _draw_dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One NIID-Bench draw: per class, cut its shuffled indices at Dirichlet proportions."""
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    cap = labels.size / num_clients
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        capped = proportions * (sizes < cap)
        if capped.sum() > 0:  # all mass on full clients (tiny alpha): ignore the cap
            proportions = capped
        proportions = proportions / proportions.sum()
        cuts = (np.cumsum(proportions) * members.size).astype(np.int64)[:-1]
        for client, chunk in enumerate(np.split(members, cuts)):
            buckets[client].append(chunk)
            sizes[client] += chunk.size
    return [np.concatenate(chunks).astype(np.int64) for chunks in buckets]


def partition_pathological(
    labels: np.ndarray, num_clients: int, classes_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """McMahan et al. (2017) shards: each client gets ``classes_per_client`` single-class shards.

    Indices are sorted by label and cut into ``num_clients * classes_per_client``
    shards of near-equal size; shards are dealt at random, k to each client.
    Unlike a plain cut of the sorted list, no shard straddles two classes (each
    class gets a number of shards in proportion to its size), so every client
    really ends with at most k distinct classes.

    Raises
    ------
    ConfigError
        A bad argument, or fewer shards than classes or samples than shards.
    """
    labels = _check_labels(labels)
    _check_num_clients(num_clients, labels.size)
    _check_classes_per_client(classes_per_client)
    classes, counts = np.unique(labels, return_counts=True)
    num_shards = num_clients * classes_per_client
    if not classes.size <= num_shards <= labels.size:
        raise ConfigError(
            f"data.classes_per_client: expected num_clients * classes_per_client between "
            f"{classes.size} (classes) and {labels.size} (samples), got "
            f"{num_clients} * {classes_per_client} = {num_shards}"
        )
    shards: list[np.ndarray] = []
    for label, num in zip(classes, _shards_per_class(counts, num_shards), strict=True):
        members = rng.permutation(np.flatnonzero(labels == label))
        shards.extend(np.array_split(members, num))
    dealt = rng.permutation(num_shards).reshape(num_clients, classes_per_client)
    return [np.concatenate([shards[s] for s in row]).astype(np.int64) for row in dealt]


def _shards_per_class(counts: np.ndarray, num_shards: int) -> np.ndarray:
    """Apportion ``num_shards`` over classes by size, each class getting 1..count shards.

    Largest remainder first, then corrections one shard at a time toward the
    class whose shards are largest (adding) or smallest (removing), so shard
    sizes stay as even as the class sizes allow.
    """
    shares = np.clip(np.floor(counts * num_shards / counts.sum()), 1, counts).astype(np.int64)
    while shares.sum() < num_shards:
        room = np.where(shares < counts, counts / shares, -np.inf)
        shares[int(np.argmax(room))] += 1
    while shares.sum() > num_shards:
        room = np.where(shares > 1, counts / shares, np.inf)
        shares[int(np.argmin(room))] -= 1
    return shares


def split_local_test(
    parts: list[np.ndarray], fraction: float, rng: np.random.Generator
) -> list[ClientData]:
    """Hold out ``fraction`` of each client's samples as its local test split.

    A client of n samples keeps ``round(fraction * n)`` (halves rounded up) for
    testing, at least 1 when ``fraction > 0`` and n >= 2, and always at least
    one sample for training. The held-out samples are drawn at random from the
    client's own part, so the local test split has the client's label mix.
    """
    _check_fraction(fraction)
    clients = []
    for client_id, part in enumerate(parts):
        shuffled = rng.permutation(np.asarray(part, dtype=np.int64))
        num_test = math.floor(fraction * shuffled.size + 0.5)
        if fraction > 0 and shuffled.size >= 2:
            num_test = max(num_test, 1)
        num_test = min(num_test, max(shuffled.size - 1, 0))
        clients.append(ClientData(client_id, shuffled[num_test:], shuffled[:num_test]))
    return clients


def partition_clients(
    labels: np.ndarray,
    *,
    scheme: str,
    num_clients: int,
    alpha: float,
    classes_per_client: int,
    local_test_fraction: float,
    rng: np.random.Generator,
) -> list[ClientData]:
    """Partition by ``scheme`` (``data.partition``) and split each client's local test set.

    Every argument is validated up front, even those the scheme does not use,
    so a bad config value is reported on the first run rather than the first
    run that happens to use it.

    Raises
    ------
    ConfigError
        Naming ``data.partition``, ``data.num_clients``, ``data.alpha``,
        ``data.classes_per_client`` or ``data.local_test_fraction`` with the
        expected and the received value.
    """
    if scheme not in PARTITION_NAMES:
        raise ConfigError(
            f"data.partition: expected one of {', '.join(PARTITION_NAMES)}, got {scheme!r}"
        )
    labels = _check_labels(labels)
    _check_num_clients(num_clients, labels.size)
    _check_alpha(alpha)
    _check_classes_per_client(classes_per_client)
    _check_fraction(local_test_fraction)
    if scheme == "iid":
        parts = partition_iid(labels, num_clients, rng)
    elif scheme == "dirichlet":
        parts = partition_dirichlet(labels, num_clients, alpha, rng)
    else:
        parts = partition_pathological(labels, num_clients, classes_per_client, rng)
    return split_local_test(parts, local_test_fraction, rng)


def label_counts(clients: list[ClientData], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Return the (num_clients, num_classes) int64 counts of each client's TRAIN labels."""
    labels = _check_labels(labels)
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(
            f"labels: expected values below num_classes={num_classes}, got {int(labels.max())}"
        )
    counts = np.zeros((len(clients), num_classes), dtype=np.int64)
    for row, client in enumerate(clients):
        counts[row] = np.bincount(labels[client.train_idx], minlength=num_classes)
    return counts


def write_partition_csv(
    path: str | PathLike[str], clients: list[ClientData], labels: np.ndarray, num_classes: int
) -> None:
    """Write ``partition.csv``: one row per client, for reports on data heterogeneity.

    Header: ``client,num_train,num_test,label_0,...,label_{C-1}``. The
    ``label_*`` columns count the client's TRAIN samples only (the data that
    shapes its updates); the local test split appears only in ``num_test``.
    """
    counts = label_counts(clients, labels, num_classes)
    header = ["client", "num_train", "num_test"] + [f"label_{c}" for c in range(num_classes)]
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        for client, row in zip(clients, counts, strict=True):
            sizes = [client.client_id, client.train_idx.size, client.test_idx.size]
            writer.writerow(sizes + row.tolist())


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a 1-D int64 array of non-negative values, or raise DataError."""
    array = np.asarray(labels)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise DataError(
            f"labels: expected a 1-D integer array, got shape {array.shape} dtype {array.dtype}"
        )
    if array.size and int(array.min()) < 0:
        raise DataError(f"labels: expected non-negative values, got {int(array.min())}")
    return array.astype(np.int64, copy=False)


def _is_int(value: object) -> bool:
    """True for Python and numpy integers, but not for bools (True is not a count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_num_clients(num_clients: int, num_samples: int) -> None:
    """Raise ConfigError unless 1 <= num_clients <= num_samples."""
    if not _is_int(num_clients) or not 1 <= num_clients <= num_samples:
        raise ConfigError(
            f"data.num_clients: expected an integer in [1, {num_samples}], got {num_clients!r}"
        )


def _check_min_size(min_size: int, num_clients: int, num_samples: int) -> None:
    """Raise ConfigError unless ``num_clients`` clients can each get ``min_size`` samples."""
    if not _is_int(min_size) or min_size < 0:
        raise ConfigError(f"min_size: expected a non-negative integer, got {min_size!r}")
    if min_size * num_clients > num_samples:
        raise ConfigError(
            f"data.num_clients: expected at most {num_samples // max(min_size, 1)} clients so "
            f"each gets {min_size} of {num_samples} samples, got {num_clients}"
        )


def _check_alpha(alpha: float) -> None:
    """Raise ConfigError unless alpha is a positive, finite number."""
    ok = isinstance(alpha, (int, float, np.integer, np.floating)) and not isinstance(alpha, bool)
    if not ok or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"data.alpha: expected a positive float, got {alpha!r}")


def _check_classes_per_client(classes_per_client: int) -> None:
    """Raise ConfigError unless classes_per_client is an integer >= 1."""
    if not _is_int(classes_per_client) or classes_per_client < 1:
        raise ConfigError(
            f"data.classes_per_client: expected an integer >= 1, got {classes_per_client!r}"
        )


def _check_fraction(fraction: float) -> None:
    """Raise ConfigError unless 0 <= fraction < 1 (a client must keep data to train on)."""
    ok = isinstance(fraction, (int, float, np.integer, np.floating)) and not isinstance(
        fraction, bool
    )
    if not ok or not math.isfinite(fraction) or not 0 <= fraction < 1:
        raise ConfigError(f"data.local_test_fraction: expected a float in [0, 1), got {fraction!r}")
