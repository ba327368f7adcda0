"""Every federated method fedmap runs: FedMap, dense FedAvg and the baselines, one module each.

:mod:`fedmap.methods.base` is the interface, :mod:`fedmap.methods.registry` the list
every other part reads (config validation, the composition root, reports, sweeps).
"""
