"""Where a command's Ray comes from: an embedded Ray of its own, or a cluster it joins.

Embedded (:func:`start_local_ray`): always a new Ray on this machine, ``ray.init(address=
"local")``. A bare ``ray.init()`` would instead join the cluster named by ``RAY_ADDRESS`` or
recorded by an earlier ``ray start`` (``<tmp>/ray/ray_current_cluster``), or fail there.

Joining (:func:`join_ray`): Ray turns token authentication on by default (for a local
``ray.init()`` from 2.59, for ``ray start --head`` on a machine that has a token, for every
cluster from 2.61), and then every request must carry the cluster's token. Ray turns the token
mode on for a driver only when it finds the cluster itself (``address=None``/``auto``); a driver
that lacks it retries for about 20 seconds, then raises ``ConnectionError``. So the cluster is
asked first, once, in well under a second: when it refuses this machine, the token mode is
turned on if a token is at hand (``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``,
or ``~/.ray/auth_token``, Ray's own order), and a missing or refused token is a
:class:`~esper.conf.ConfigError` (exit status 2) that says where to put the cluster's token.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from esper.conf import ConfigError
from esper.config import EsperConfig

__all__ = ["join_ray", "quiet_ray", "start_local_ray", "start_ray"]

AUTH_MODE_ENV = "RAY_AUTH_MODE"
"""Ray's authentication mode (``token`` or ``disabled``), read from the environment only."""
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
"""Where Ray (``ray get-auth-token --generate``) keeps this user's token."""
REACH_TIMEOUT_S = 5.0
"""How long the cluster's address may take to accept a TCP connection."""
_FIX = (
    f"set {TOKEN_ENV} to the cluster's token (`ray get-auth-token` prints it on the head node), "
    f"or put it in {DEFAULT_TOKEN_FILE} or a file named by {TOKEN_PATH_ENV}"
)


_QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air", "ray.data", "mlflow", "alembic")


_QUIET_ENV = "ESPER_QUIET_RAY"
"""Set by :func:`quiet_ray`: the Ray this process starts or joins logs errors only."""


def _ray_logging_level() -> int:
    return logging.ERROR if os.environ.get(_QUIET_ENV) == "1" else logging.INFO


def quiet_ray(verbose: bool = False) -> None:
    """Keep Ray's, Tune's and MLflow's banners, INFO lines and warnings off the terminal (the
    commands print their own progress); ``verbose`` leaves them as the libraries set them.
    Errors still show. Call before Ray starts: the environment switches are read then."""
    if verbose:
        return
    os.environ[_QUIET_ENV] = "1"
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's banners print despite verbose=0
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(ray|mlflow|sqlalchemy|alembic|pydantic)(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def start_ray(cfg: EsperConfig, address: str | None) -> None:
    """Join the cluster at ``address`` (or ``cluster.address``), or start an embedded Ray of
    ``cluster.num_cpus`` CPUs; nothing if Ray is already up in this process.

    Raises:
        ConfigError: the cluster cannot be found or reached, or refuses this machine's token.
    """
    if ray.is_initialized():
        return
    address = address or cfg.cluster.address
    if address:
        join_ray(address)
    else:
        start_local_ray(cfg.cluster.num_cpus)


def start_local_ray(num_cpus: int | None) -> None:
    """A new Ray on this machine with ``num_cpus`` logical CPUs (``None``: all), never a
    cluster that ``RAY_ADDRESS`` or an earlier ``ray start`` names; it stops with
    ``ray.shutdown()`` or this process."""
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             logging_level=_ray_logging_level())  # fmt: skip


def join_ray(address: str) -> None:
    """Connect this process to the Ray cluster at ``address`` (``host:port``, or ``auto`` for
    ``RAY_ADDRESS`` or the cluster ``ray start`` started on this machine), with the cluster's
    token when it asks for one.

    Raises:
        ConfigError: no cluster at ``address``, or it needs a token this machine lacks or
            refuses the one it has.
    """
    if "://" not in address:  # Ray Client (ray://) authenticates through its own proxy
        _authenticate(_gcs_address(address))
    ray.init(address=address, log_to_driver=False, logging_level=_ray_logging_level())


def _gcs_address(address: str) -> str:
    """``host:port`` of the cluster's GCS, as ``ray.init`` resolves ``address``."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        gcs = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as err:
        raise ConfigError(f"Ray cluster address {address!r}: {err}") from None
    if gcs is None:  # "local": nothing to join
        raise ConfigError(f"Ray cluster address {address!r} names no cluster to join")
    host, _, port = gcs.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:
        raise ConfigError(
            f"no Ray cluster answers at {gcs} (address {address!r}): {err}; start it, or "
            "check the host and port (the head's `ray start --port`, 6379 by default)"
        ) from None
    return gcs


def _authenticate(gcs: str) -> None:
    """Ask the cluster at ``gcs`` whether it accepts this process; turn Ray's token mode on
    when the cluster asks for a token and one is at hand."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled
    from ray.exceptions import AuthenticationError

    if is_token_auth_enabled():
        _ask_with_token(gcs, f"{AUTH_MODE_ENV}=token but this machine has no Ray token")
        return
    try:
        _ask(gcs)
        return
    except AuthenticationError:
        pass
    if AUTH_MODE_ENV in os.environ:
        raise ConfigError(
            f"the Ray cluster at {gcs} uses token authentication but "
            f"{AUTH_MODE_ENV}={os.environ[AUTH_MODE_ENV]} here: unset it and {_FIX}"
        )
    _ask_with_token(
        gcs, f"the Ray cluster at {gcs} uses token authentication and this machine has no token"
    )


def _ask_with_token(gcs: str, no_token: str) -> None:
    """Ask again in token mode; ``no_token`` is the message when there is no token."""
    from ray.exceptions import AuthenticationError

    source = _token_source()
    if source is None:  # in token mode Ray aborts the process at its first request
        raise ConfigError(f"{no_token}: {_FIX}")
    _enable_token_mode()
    try:
        _ask(gcs)
    except AuthenticationError:
        raise ConfigError(
            f"the Ray cluster at {gcs} refuses the token from {source}: {_FIX}"
        ) from None


def _token_source() -> str | None:
    """Where Ray will read this process's token from, in Ray's order; ``None`` if nowhere."""
    if os.environ.get(TOKEN_ENV):
        return TOKEN_ENV
    named = os.environ.get(TOKEN_PATH_ENV)
    path = Path(named).expanduser() if named else DEFAULT_TOKEN_FILE.expanduser()
    try:
        has_token = bool(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        has_token = False
    if named:  # Ray aborts on an unreadable or empty RAY_AUTH_TOKEN_PATH: refuse it here
        if not has_token:
            raise ConfigError(f"{TOKEN_PATH_ENV}={named}: no token in that file")
        return f"{TOKEN_PATH_ENV} ({path})"
    return str(path) if has_token else None


def _enable_token_mode() -> None:
    """``RAY_AUTH_MODE=token`` for this process (Ray's config re-read) and its children."""
    os.environ[AUTH_MODE_ENV] = "token"
    _raylet().Config.initialize("")
    _raylet().AuthenticationTokenLoader.instance().reset_cache()


def _ask(gcs: str) -> None:
    """One request to the cluster's GCS (its cluster id), which raises
    ``ray.exceptions.AuthenticationError`` at once when the cluster refuses this process.
    Ray's C++ client logs the refusal itself: that line is kept off the terminal."""
    from ray.exceptions import RpcError

    try:
        with _quiet_stderr():
            _raylet().GcsClient(address=gcs)
    except RpcError as err:  # something listens there, but not a Ray GCS that answers
        raise ConfigError(f"the Ray cluster at {gcs} does not answer: {err}") from None


def _raylet() -> Any:
    """Ray's compiled core, ``ray._raylet``, whose type stub leaves out the classes used here."""
    return importlib.import_module("ray._raylet")


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to a scratch file for the block (Ray's C++ logs bypass ``sys``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
