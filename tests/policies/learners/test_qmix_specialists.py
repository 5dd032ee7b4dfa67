"""QMIX on Emrakul's discrete Specialist actions: a toy organism whose best surgery is known.

Each layer (agent) sees a local observation; the team reward is highest when every layer
chooses turnover 15 % pruning by Fisher information and regrowing by dense gradient, without
sedation. The reward is computed from the *decoded* ``SpecialistAction``, so the test exercises
the discrete table the Emrakul policy uses with QMIX.
"""

from __future__ import annotations

import torch

from esper.policies.emrakul.actions import (
    N_DISCRETE_ACTIONS,
    PRUNE_CRITERIA,
    REGROW_CRITERIA,
    SpecialistAction,
    decode_discrete,
)
from esper.policies.learners.qmix import QMIXLearner

_OBS, _STATE = 6, 8


def _score(action: SpecialistAction) -> float:
    """1.0 for the known best surgery, partial credit for getting parts of it right."""
    active = action.turnover > 0
    prune = PRUNE_CRITERIA[max(range(5), key=lambda i: action.prune_mix[i])] if active else ""
    regrow = REGROW_CRITERIA[max(range(3), key=lambda i: action.regrow_mix[i])] if active else ""
    return (
        0.4 * (abs(action.turnover - 0.15) < 1e-6)
        + 0.3 * (prune == "fisher")
        + 0.2 * (regrow == "gradient")
        + 0.1 * (action.sedation == 1.0)
    )


def _team_reward(actions: torch.Tensor) -> float:
    return float(sum(_score(decode_discrete(int(a))) for a in actions) / len(actions))


def test_qmix_learns_the_best_discrete_surgery() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    learner = QMIXLearner(
        _OBS,
        _STATE,
        N_DISCRETE_ACTIONS,
        max_agents=3,
        epsilon_anneal=600,
        batch_size=32,
        target_update=50,
        lr=3e-3,
        seed=0,
    )
    agents = torch.arange(3)

    def observe() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(3, _OBS, generator=g), torch.randn(_STATE, generator=g)

    obs, state = observe()
    before = _team_reward(learner.act(obs, agents, explore=False))
    for _ in range(900):
        obs, state = observe()
        actions = learner.act(obs, agents, explore=True)
        next_obs, next_state = observe()
        learner.store(
            obs, agents, state, actions, _team_reward(actions), next_obs, next_state, True
        )
        learner.update()
    evaluations = [
        _team_reward(learner.act(observe()[0], agents, explore=False)) for _ in range(20)
    ]
    after = sum(evaluations) / len(evaluations)
    assert before < 0.7
    assert after > 0.95, f"greedy team reward {after:.3f} (initial {before:.3f})"
