"""Datasets (normalised tensors) and their partition over federated clients."""

from fedmap.data.datasets import (
    DATASET_NAMES,
    DEFAULT_FASHION_MNIST_DIR,
    Dataset,
    check_dataset_available,
    load_dataset,
    load_digits_dataset,
    load_fashion_mnist,
    load_npz,
    make_synthetic,
)
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

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_FASHION_MNIST_DIR",
    "PARTITION_NAMES",
    "ClientData",
    "Dataset",
    "check_dataset_available",
    "label_counts",
    "load_dataset",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_npz",
    "make_synthetic",
    "partition_clients",
    "partition_dirichlet",
    "partition_iid",
    "partition_pathological",
    "split_local_test",
    "write_partition_csv",
]
