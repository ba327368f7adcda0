"""Flower tests need the ``fedmap[flower]`` extra; skip them cleanly without it."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="the fedmap[flower] extra is not installed")
