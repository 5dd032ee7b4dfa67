"""Deterministic seed derivation.

Every random stream in Esper is seeded from the experiment seed plus a path of names and
numbers, hashed with BLAKE2b. Python's built-in ``hash(str)`` is salted per process, so seeds
derived from it differ across Ray workers (the bug behind ``seed=hash(var.name)`` in rigl);
this module never uses it.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["SEED_MODULUS", "derive_seed", "generator", "small_seed"]

SEED_MODULUS = 2**31
"""Seeds handed to constructors and configs are reduced below 2³¹, which every consumer
(NumPy, scikit-learn, ``torch.manual_seed``) accepts."""


def derive_seed(seed: int, *path: object) -> int:
    """A 63-bit seed that depends only on ``seed`` and the ``path`` components.

    Args:
        seed: The root seed of the experiment.
        *path: Names and numbers identifying one random stream, e.g. ``("permute_inputs", 3)``.
    """
    text = "/".join([str(int(seed)), *(str(p) for p in path)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def small_seed(seed: int, *path: object) -> int:
    """:func:`derive_seed` reduced below :data:`SEED_MODULUS` (for constructor arguments)."""
    return derive_seed(seed, *path) % SEED_MODULUS


def generator(seed: int, *path: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *path))
    return g
