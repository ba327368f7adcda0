"""FedMap over Flower 1.42: a ServerApp and a ClientApp around the same core.

The only package that imports ``flwr`` (install the ``fedmap[flower]`` extra). The
server drives :class:`~fedmap.strategies.server.Server` and the clients call
:mod:`fedmap.client.protocol` and the simulator's engine, so a Flower run sends the
same bytes and holds the same masks as ``fedmap run`` with the same config.
"""
