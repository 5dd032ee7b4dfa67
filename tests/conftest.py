"""Shared fixtures: small sources built once per session."""

from __future__ import annotations

import pytest

from esper.workloads import PoolSource, make_source


@pytest.fixture(scope="session")
def digits() -> PoolSource:
    source = make_source("digits")
    assert isinstance(source, PoolSource)
    return source


@pytest.fixture(scope="session")
def gaussian() -> PoolSource:
    source = make_source("gaussian_mixture", num_classes=4, dim=6, num_samples=400)
    assert isinstance(source, PoolSource)
    return source
