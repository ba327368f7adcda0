"""The round loop, once for every front door, and the transports it talks to.

:mod:`~fedmap.rounds.loop` plans, samples, attempts, retries, aggregates,
evaluates and records each round; how a round's messages reach clients is a
:class:`~fedmap.rounds.transport.Transport`: in this process
(:mod:`~fedmap.rounds.inprocess`, with simulated faults) or over Flower
(:mod:`fedmap.flower.transport`).
"""
