"""Where a command's Ray comes from (:mod:`esper.platform.ray_runtime`), against real Ray.

Every driver that starts or joins a Ray is a subprocess of its own, so that its Ray stays apart
from the test process and from the other modules' fixtures. The cluster is a
``ray start --head`` with token authentication (:mod:`tests.platform.ray_nodes`), shared by
the module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from esper.conf import ConfigError
from esper.platform.ray_runtime import _token_source as token_source
from esper.platform.ray_runtime import join_ray
from tests.platform.ray_nodes import TOKEN, driver_env, free_ports, start_head, stop_node

DRIVER_TIMEOUT_S = 120
"""Generous: the machine's cores are shared; a refusal itself takes well under a second."""
REFUSAL_S = 5.0
"""How long ``start_ray`` may take to refuse a token (Ray's own retries last ~20 s)."""
_DRIVER = """
import json, sys, time
import ray
from esper.conf import ConfigError
from esper.config import ClusterConfig, EsperConfig
from esper.platform.ray_runtime import start_ray

began = time.monotonic()
try:
    start_ray(EsperConfig(cluster=ClusterConfig(num_cpus=1)), sys.argv[1] or None)
except ConfigError as err:
    print(json.dumps({"error": str(err), "seconds": time.monotonic() - began}))
    sys.exit(0)
seconds = time.monotonic() - began
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "seconds": seconds}))
ray.shutdown()
"""
"""``start_ray`` with ``cluster.num_cpus=1`` and the address in ``argv[1]``: one JSON line,
the GCS address it got or the :class:`ConfigError` it raised."""


def _start_ray(address: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, address], env=env, capture_output=True, text=True,
        timeout=DRIVER_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _port(address: object) -> str:
    return str(address).rpartition(":")[2]


@pytest.fixture(scope="module")
def token_cluster() -> Iterator[str]:
    """The address of a one-node cluster that wants :data:`TOKEN` from every client."""
    temp_dir = Path(tempfile.mkdtemp(prefix="esper-ray-", dir="/tmp"))  # short socket paths
    address, head = start_head(1, temp_dir)
    try:
        yield address
    finally:
        stop_node(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- the embedded Ray -------------------------------------------------------------------------


def test_the_embedded_ray_is_new_whatever_cluster_is_recorded() -> None:
    """``RAY_ADDRESS`` and a stale ``ray_current_cluster`` (as ``ray start`` leaves it) name a
    cluster that is gone: a bare ``ray.init()`` would try to join it; ``start_ray`` without an
    address starts a Ray of its own. ``RAY_TMPDIR`` keeps the recorded file out of /tmp/ray."""
    temp_dir = Path(tempfile.mkdtemp(prefix="esper-rt-", dir="/tmp"))
    try:
        gone = f"127.0.0.1:{free_ports(1)[0]}"
        (temp_dir / "ray").mkdir()
        (temp_dir / "ray" / "ray_current_cluster").write_text(gone)
        env = driver_env(RAY_TMPDIR=str(temp_dir), RAY_ADDRESS=gone, HOME=str(temp_dir))
        result = _start_ray("", env)
        assert "error" not in result, result
        assert _port(result["gcs"]) != _port(gone)
        assert any((temp_dir / "ray").glob("session_*")), "the new Ray's session is not here"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- joining a cluster with token authentication ----------------------------------------------


@pytest.mark.parametrize("where", ["RAY_AUTH_TOKEN", "~/.ray/auth_token"])
def test_start_ray_joins_with_the_clusters_token(
    token_cluster: str, where: str, tmp_path: Path
) -> None:
    """The token alone is enough (no ``RAY_AUTH_MODE``), from the variable or Ray's file."""
    if where == "RAY_AUTH_TOKEN":
        env = driver_env(HOME=str(tmp_path), RAY_AUTH_TOKEN=TOKEN)
    else:
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text(TOKEN + "\n")
        env = driver_env(HOME=str(tmp_path))
    result = _start_ray(token_cluster, env)
    assert "error" not in result, result
    assert _port(result["gcs"]) == _port(token_cluster)


@pytest.mark.parametrize(
    "auth, expected",
    [
        ({}, "uses token authentication and this machine has no token"),
        ({"RAY_AUTH_TOKEN": "not-the-token"}, "refuses the token from RAY_AUTH_TOKEN"),
        ({"RAY_AUTH_MODE": "token"}, "RAY_AUTH_MODE=token but this machine has no Ray token"),
        (
            {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
            "refuses the token from RAY_AUTH_TOKEN",
        ),
        ({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": TOKEN}, "RAY_AUTH_MODE=disabled here"),
    ],
    ids=["no-token", "wrong-token", "token-mode-no-token", "token-mode-wrong", "mode-disabled"],
)
def test_start_ray_refuses_a_missing_or_wrong_token_at_once(
    token_cluster: str, auth: dict[str, str], expected: str, tmp_path: Path
) -> None:
    result = _start_ray(token_cluster, driver_env(HOME=str(tmp_path), **auth))
    assert expected in str(result.get("error")), result
    assert "RAY_AUTH_TOKEN" in str(result["error"])  # the fix is named
    assert float(str(result["seconds"])) < REFUSAL_S


def test_esper_sweep_without_the_token_exits_2_with_the_fix(
    token_cluster: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "esper", "sweep", "--address", token_cluster, "search=none",
         "search.num_samples=1", f"cluster.storage_path={tmp_path}"],
        env=driver_env(HOME=str(tmp_path)), cwd=tmp_path, capture_output=True, text=True,
        timeout=DRIVER_TIMEOUT_S,
    )  # fmt: skip
    seconds = time.monotonic() - began
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "esper: config error: the Ray cluster at" in done.stderr
    assert "set RAY_AUTH_TOKEN to the cluster's token" in done.stderr
    assert "Traceback" not in output and "InvalidAuthToken" not in output  # no Ray retries
    assert seconds < DRIVER_TIMEOUT_S


# --- without Ray --------------------------------------------------------------------------------


def test_nothing_listening_is_refused_at_once() -> None:
    began = time.monotonic()
    with pytest.raises(ConfigError, match="no Ray cluster answers at"):
        join_ray(f"127.0.0.1:{free_ports(1)[0]}")
    assert time.monotonic() - began < REFUSAL_S


def test_the_token_is_looked_for_in_rays_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert token_source() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t\n")
    assert token_source() == str(tmp_path / ".ray" / "auth_token")
    named = tmp_path / "named"
    named.write_text("")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    with pytest.raises(ConfigError, match="no token in that file"):
        token_source()  # Ray would abort the process on it
    named.write_text("t")
    assert token_source() == f"RAY_AUTH_TOKEN_PATH ({named})"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    assert token_source() == "RAY_AUTH_TOKEN"
