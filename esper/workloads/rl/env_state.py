"""An environment's episode state as tensors and plain data, and back: what makes an agent's
checkpoint continue exactly mid-episode (same observations, actions and returns).

gymnasium does not save environments, and a checkpoint never holds pickled objects
(:mod:`esper.checkpoint`), so each family's state is read attribute by attribute: the
classic-control environments keep theirs in ``state`` and ``np_random`` (plus CartPole's
``steps_beyond_terminated``); a MinAtar game (Young & Tian 2019) in the plain attributes and
NumPy ``RandomState`` of its ``game`` and ``game.env`` objects. The time-limit wrapper's step
count is saved for both.
"""

from __future__ import annotations

import json
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch

__all__ = ["load_env_state", "save_env_state"]

_PLAIN = (bool, int, float, str, type(None))


def _wrappers(env: gym.Env[Any, Any]) -> list[Any]:
    chain, node = [], env
    while isinstance(node, gym.Wrapper):
        chain.append(node)
        node = node.env
    return chain


def _encode(value: Any) -> Any:
    """A plain or tensor form of one attribute (``None``: not saved, e.g. a display)."""
    if isinstance(value, np.random.RandomState):
        state = cast(tuple[str, np.ndarray, int, int, float], value.get_state())
        kind, keys, pos, has_gauss, gauss = state
        return {"random_state": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                 int(has_gauss), float(gauss)]}  # fmt: skip
    if isinstance(value, np.ndarray):
        return {"array": torch.from_numpy(np.ascontiguousarray(value).copy()),
                "dtype": str(value.dtype)}  # fmt: skip
    if isinstance(value, _PLAIN):
        return {"plain": value}
    if isinstance(value, list | tuple) and all(isinstance(v, _PLAIN) for v in value):
        return {"plain": list(value)}
    return None


def _decode(encoded: dict[str, Any], current: Any) -> Any:
    if "random_state" in encoded:
        kind, keys, pos, has_gauss, gauss = encoded["random_state"]
        current.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        return current
    if "array" in encoded:
        return encoded["array"].numpy().astype(encoded["dtype"]).copy()
    value = encoded["plain"]
    return type(current)(value) if isinstance(current, tuple) else value


def _attributes(obj: Any) -> dict[str, Any]:
    return {k: e for k, v in vars(obj).items() if (e := _encode(v)) is not None}


def _restore(obj: Any, saved: dict[str, Any]) -> None:
    for key, encoded in saved.items():
        setattr(obj, key, _decode(encoded, getattr(obj, key)))


def save_env_state(env: gym.Env[Any, Any]) -> dict[str, Any]:
    """The episode state of ``env`` (a classic-control or MinAtar environment, wrapped).

    Raises:
        TypeError: an environment family this module does not know.
    """
    inner: Any = env.unwrapped
    limit = next((w for w in _wrappers(env) if hasattr(w, "_elapsed_steps")), None)
    out: dict[str, Any] = {"elapsed": int(getattr(limit, "_elapsed_steps", 0) or 0)}
    if hasattr(inner, "game"):  # MinAtar
        out["game"] = _attributes(inner.game)
        out["game_env"] = _attributes(inner.game.env)
    elif hasattr(inner, "state") and hasattr(inner, "np_random"):
        out["state"] = torch.as_tensor(np.asarray(inner.state, dtype=np.float64))
        out["np_random"] = json.dumps(inner.np_random.bit_generator.state)
        out["beyond"] = getattr(inner, "steps_beyond_terminated", None)
    else:
        raise TypeError(f"cannot save the state of {type(inner).__name__}")
    return out


def load_env_state(env: gym.Env[Any, Any], state: dict[str, Any]) -> None:
    """Restore :func:`save_env_state` into an environment built the same way."""
    inner: Any = env.unwrapped
    for wrapper in _wrappers(env):
        if hasattr(wrapper, "_elapsed_steps"):
            wrapper._elapsed_steps = state["elapsed"]
    if "game" in state:
        _restore(inner.game, state["game"])
        _restore(inner.game.env, state["game_env"])
        return
    inner.state = state["state"].numpy().copy()
    inner.np_random.bit_generator.state = json.loads(state["np_random"])
    if hasattr(inner, "steps_beyond_terminated"):
        inner.steps_beyond_terminated = state["beyond"]
