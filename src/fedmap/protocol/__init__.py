"""The wire protocol: what the server sends, what a client does with it, what comes back.

One package for both front doors (the in-process simulation and Flower):
:mod:`~fedmap.protocol.server` builds downlinks and validates and aggregates replies,
:mod:`~fedmap.protocol.client` decodes a downlink, keeps the client's mask in step
and encodes its reply, :mod:`~fedmap.protocol.task` does a round's extra client work.
"""
