"""Fixtures every test folder shares.

``rng``: a numpy generator seeded from the test's id (a failure replays the same data),
or from ``$TRILOBIT_SEED`` when set; the seed is printed, so pytest shows it on failure.
``fresh_cache``: points the build cache (``$TRILOBIT_CACHE``) at an empty folder for tests
that must see a real first build; every other test shares the default cache, where an
identical Verilator build is reused for free.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "verilator: builds and runs a Verilator model (slower)")
    config.addinivalue_line("markers", "slow: long-running check")


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """Seed of this test's random data: ``$TRILOBIT_SEED`` or a hash of the test id."""
    value = int(os.environ.get("TRILOBIT_SEED") or zlib.crc32(request.node.nodeid.encode()))
    print(f"random seed {value} (rerun with TRILOBIT_SEED={value})")
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    """A numpy generator seeded with :func:`seed`."""
    return np.random.default_rng(seed)


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty build cache for this test only (``$TRILOBIT_CACHE``)."""
    cache = tmp_path / "trilobit-cache"
    cache.mkdir()
    monkeypatch.setenv("TRILOBIT_CACHE", str(cache))
    return cache
