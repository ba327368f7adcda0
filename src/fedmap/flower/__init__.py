"""FedMap over Flower 1.42: a ServerApp and a ClientApp around the same core.

The only package that imports ``flwr`` (install the ``fedmap[flower]`` extra). The
ServerApp runs fedmap's own round loop with Flower's Grid as its transport
(:mod:`fedmap.flower.transport`), and the clients call :mod:`fedmap.protocol.client`
and the simulator's engine, so a Flower run sends the same bytes and holds the
same masks as ``fedmap run`` with the same config.
"""
