"""Shared fixtures: small sources built once per session."""

from __future__ import annotations

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _own_signing_secret(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sweeps sign their Tune state with the user's secret: tests use one of their own, never
    the home folder's."""
    monkeypatch.setenv("ESPER_SECRET_FILE", str(tmp_path_factory.getbasetemp() / "secret"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Tiny models run fastest on one thread, and timings don't depend on other processes'
    load (two OpenMP threads on a busy 2-core machine can be 100× slower)."""
    torch.set_num_threads(1)
