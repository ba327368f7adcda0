"""fedmap: federated learning with iterative magnitude pruning (FedMap).

Every party derives the same nested mask from the same global values, so masks
never travel and each round costs only the kept values on the wire.
"""

__version__ = "0.1.0"
