"""``python -m fedmap``: the same command line as the ``fedmap`` script (sweeps use it)."""

from fedmap.cli import main

main()
