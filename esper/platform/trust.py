"""Trusting a sweep's Tune state before ``esper sweep --resume`` unpickles it.

``tune.Tuner.restore`` deserializes the experiment directory (``RUN/tune``) with
``cloudpickle``: ``tuner.pkl``, the ``experiment_state-*.json`` files (JSON around pickled
objects: Tune's ``CLOUDPICKLE_FALLBACK`` values and each trial's non-JSON fields), the searcher,
search-generator and callback states (``searcher-state-*.pkl``, ``basic-variant-state-*.json``,
``callback-states-*.pkl``), and in each trial's folder ``params.pkl`` and the pickled error
(``error.pkl``). Unpickling runs whatever code whoever wrote those files put in them, so
resuming someone else's sweep would run their code as you.

So a sweep is signed when it stops (:func:`sign_sweep`) and checked before it is resumed
(:func:`verify_sweep`). The signature is an HMAC-SHA256, keyed by a secret of this user, over
every ``*.json`` and ``*.pkl`` file under ``RUN/tune`` at any depth: their paths relative to
``RUN/tune`` and their contents (as SHA-256 digests), in sorted order. It is written to
``RUN/tune-signature.json`` with the per-file digests, so that a refusal can name the files that
changed. The trials' checkpoints are not signed: Esper loads them itself with
``torch.load(weights_only=True)`` after a checksum check (:mod:`esper.checkpoint`), which
cannot run code.

The secret is 32 random bytes, created on first use as a file only its owner can read (mode
``0600``, in a folder of mode ``0700``): ``$ESPER_SECRET_FILE`` if set, otherwise
``$XDG_CONFIG_HOME/esper/secret`` (``~/.config/esper/secret``). A secret file that others can
read, or that another user owns, is refused (anyone who reads it can sign). To resume on
another machine sweeps signed on this one, give both the same secret file.

A sweep killed without stopping (``SIGKILL``, the out-of-memory killer, a lost node) is left
unsigned or with a stale signature; its owner resumes it with ``--trust``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

from esper.conf import ConfigError
from esper.files import atomic_write_text

__all__ = [
    "SECRET_ENV",
    "SIGNATURE_FILE",
    "TUNE_STATE_SUFFIXES",
    "secret_path",
    "sign_sweep",
    "signed_files",
    "user_key",
    "verify_sweep",
]

SECRET_ENV = "ESPER_SECRET_FILE"
"""Environment variable naming the secret file (tests point it into a temporary folder)."""
SIGNATURE_FILE = "tune-signature.json"
"""The signature's file in a sweep's run directory, beside (not in) Tune's folder."""
TUNE_STATE_SUFFIXES = (".json", ".pkl")
"""Files Tune deserializes on restore: the ones it copies back to the driver (its
``sync_down_experiment_state``) and the trials' ``params.pkl`` and ``error.pkl``."""

_TUNE_DIR = "tune"
"""Tune's experiment folder in a run directory (:data:`esper.platform.sweep.TUNE_DIR`, which
imports Ray; this module must not)."""
_KEY_BYTES = 32
"""Length of the secret: 256 bits, the strength of HMAC-SHA256."""
_FORMAT = 1
"""Version of the signature file's layout and of what is signed."""
_DOMAIN = b"esper-sweep-signature-v1\0"
"""Prefix of the signed message: a signature means this and nothing else."""
_KEY_ID_DOMAIN = b"esper-key-id-v1\0"
"""Prefix of the hash that names a key without revealing it."""
_LISTED = 5
"""Changed files named in a refusal before the rest are counted."""


def secret_path() -> Path:
    """Where this user's secret lives: ``$ESPER_SECRET_FILE``, else
    ``$XDG_CONFIG_HOME/esper/secret``, else ``~/.config/esper/secret``."""
    if chosen := os.environ.get(SECRET_ENV):
        return Path(chosen).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "esper" / "secret"


def user_key() -> bytes:
    """This user's signing key, read from :func:`secret_path` (created there on first use).

    Raises:
        ConfigError: the secret file is readable or writable by others, owned by another
            user, or not a secret Esper wrote.
    """
    path = secret_path()
    if not path.exists():
        _create_secret(path)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"the signing secret {path} belongs to another user: use your own "
            f"(unset {SECRET_ENV} or point it at a file of yours)"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(
            f"the signing secret {path} can be read or written by others "
            f"(mode {stat.S_IMODE(info.st_mode):o}), so they could sign a sweep as you: "
            f"chmod 600 {path}"
        )
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise ConfigError(
            f"the signing secret {path} is not one Esper wrote ({_KEY_BYTES} bytes in hex): "
            "remove it to make a new one (sweeps signed with it will then need --trust)"
        )
    return key


def _create_secret(path: Path) -> None:
    """Write a new secret to ``path`` unless one appears there meanwhile: the whole file is
    written under a private temporary name, then hard-linked into place, which (unlike a
    rename) never replaces a secret that another process created first."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp's file is already mode 0600
            handle.write(secrets.token_hex(_KEY_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with suppress(FileExistsError):  # another process won the race: its secret is it
            os.link(name, path)
    finally:
        os.unlink(name)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(_KEY_ID_DOMAIN + key).hexdigest()[:16]


def signed_files(run_dir: Path) -> list[Path]:
    """The files of ``RUN/tune`` that a signature covers (:data:`TUNE_STATE_SUFFIXES`, at any
    depth, through linked folders too), sorted by their path relative to ``RUN/tune``."""
    root = run_dir / _TUNE_DIR
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:  # a link back up the tree: walked already
            subfolders.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        found.extend(Path(folder, f) for f in files if f.endswith(TUNE_STATE_SUFFIXES))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _manifest(run_dir: Path) -> dict[str, str]:
    """Each signed file's path relative to ``RUN/tune`` and the SHA-256 of its content."""
    root = run_dir / _TUNE_DIR
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in signed_files(run_dir)
    }


def _mac(key: bytes, manifest: dict[str, str]) -> str:
    """HMAC-SHA256 over the manifest's paths and digests, in sorted order, each path's bytes
    ended by a NUL (a path never holds one) so that no two manifests sign alike."""
    message = hmac.new(key, _DOMAIN, hashlib.sha256)
    for relative in sorted(manifest):
        message.update(relative.encode() + b"\0" + bytes.fromhex(manifest[relative]))
    return message.hexdigest()


def sign_sweep(run_dir: Path) -> Path:
    """Sign the Tune state of the sweep in ``run_dir`` with this user's key.

    Writes :data:`SIGNATURE_FILE` in ``run_dir`` atomically (the old signature, or none, until
    the new one is complete).

    Returns:
        The signature file's path.

    Raises:
        ConfigError: the secret cannot be used (see :func:`user_key`).
    """
    key = user_key()
    manifest = _manifest(run_dir)
    signature = {
        "format": _FORMAT,
        "algorithm": "hmac-sha256",
        "key_id": _key_id(key),
        "mac": _mac(key, manifest),
        "files": manifest,
    }
    return atomic_write_text(run_dir / SIGNATURE_FILE, json.dumps(signature, indent=1) + "\n")


def verify_sweep(run_dir: Path, trust: bool) -> None:
    """Refuse to resume the sweep in ``run_dir`` unless this user signed its Tune state as it
    is now, or ``trust`` says to resume it anyway.

    The secret is read (created on first use) even when ``trust`` is given: the resumed sweep
    is signed with it when it stops.

    Raises:
        ConfigError: the state is unsigned, signed with another key, or changed since it was
            signed; the message names why, the risk, and ``--trust``. Or the secret cannot be
            used (see :func:`user_key`).
    """
    key = user_key()
    if trust:
        return
    problem = _problem(run_dir, key)
    if problem is not None:
        raise ConfigError(
            f"--resume {run_dir}: its Tune state ({run_dir / _TUNE_DIR}) {problem}. Resuming "
            "unpickles Python objects from those files, which runs any code whoever wrote them "
            "put there. If you trust who wrote this sweep, resume it with --trust: "
            f"esper sweep --resume {run_dir} --trust"
        )


def _problem(run_dir: Path, key: bytes) -> str | None:
    """Why the Tune state of ``run_dir`` is not trusted (``None`` if it is)."""
    path = run_dir / SIGNATURE_FILE
    if not path.exists():
        return (
            f"is not signed (no {SIGNATURE_FILE}): another user or an older Esper wrote it, or "
            "its sweep was killed before it could sign"
        )
    try:
        signature = json.loads(path.read_text())
        signed = {str(k): str(v) for k, v in signature["files"].items()}
        key_id, mac = str(signature["key_id"]), str(signature["mac"])
        stored_format = signature["format"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"has a signature that is not one Esper wrote ({path})"
    if stored_format != _FORMAT:
        return f"has a signature of format {stored_format!r}, not {_FORMAT} ({path})"
    if not hmac.compare_digest(key_id, _key_id(key)):
        return (
            f"is signed with another key than yours ({secret_path()}): another user's, or "
            f"another machine's (set {SECRET_ENV} to share one secret between your machines)"
        )
    try:
        authentic = hmac.compare_digest(mac, _mac(key, signed))
    except ValueError:  # a digest that is not hex
        authentic = False
    if not authentic:
        return f"has a signature that was altered ({path})"
    current = _manifest(run_dir)
    changed = sorted(
        [f"{name} (added)" for name in current.keys() - signed.keys()]
        + [f"{name} (removed)" for name in signed.keys() - current.keys()]
        + [f"{name} (changed)" for name in current.keys() & signed.keys()
           if current[name] != signed[name]]
    )  # fmt: skip
    if changed:
        more = f" and {len(changed) - _LISTED} more" if len(changed) > _LISTED else ""
        return (
            f"changed since you signed it: {', '.join(changed[:_LISTED])}{more} (a sweep killed "
            "while running leaves its last signature stale)"
        )
    return None
