import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name, so each failure replays the same data."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
