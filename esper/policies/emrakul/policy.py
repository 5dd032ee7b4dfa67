"""The ``emrakul`` policy: the Surgeon General and the Specialists acting on an organism.

At every surgery each Specialist samples (or, when greedy, takes the mode of) its action from
its layer's observation; every ``general_interval`` surgeries the Surgeon General re-allocates
the kept weights over layers from the global state. Between General decisions the allocation's
logits stay fixed while harmonic annealing moves the global target, so the kept count of each
layer follows ``allocate_counts(logits, sizes, d_t)``. The logits are relative to the layers'
densities at :meth:`EmrakulPolicy.reset`, so an untrained General keeps the initial (ERK or
uniform) allocation.

Training code reads :attr:`EmrakulPolicy.last` (observations, raw actions, log-probabilities)
after :meth:`EmrakulPolicy.act`; QMIX plugs in through :attr:`EmrakulPolicy.q_agent` with
``discrete=True``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from esper.policies.anesthesia import HarmonicAnnealing
from esper.policies.base import POLICIES, Policy
from esper.policies.elastic import ElasticDensity
from esper.policies.emrakul.ablation import FIXED_RULES
from esper.policies.emrakul.actions import SpecialistAction, decode_discrete, layer_action
from esper.policies.emrakul.decision import Decision, DiscreteAgent
from esper.policies.emrakul.episode import EpisodeState
from esper.policies.emrakul.general import SurgeonGeneral, allocate_counts
from esper.policies.emrakul.params import check_params
from esper.policies.emrakul.senses import actor_inputs, drop_groups
from esper.policies.emrakul.specialist import ActionCodec, SpecialistActor
from esper.seeding import generator
from esper.workloads.actions import LayerAction
from esper.workloads.memory import DataAction
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["Decision", "DiscreteAgent", "EmrakulPolicy"]


@POLICIES.register("emrakul")
class EmrakulPolicy(Policy):
    """Emrakul: a Surgeon General allocating densities and shared-parameter Specialists.

    Args:
        budget: Global density budget (``None``: the organism's density at reset).
        general_interval: ``M``, surgeries between Surgeon General decisions.
        use_general: Let the General re-allocate densities (otherwise layer densities stay).
        min_density: Floor of every layer's density under the General.
        general_bound: A trust region ``b`` on the General: its logits (log-ratios of each
            layer's density to its density at :meth:`reset`) are clipped to ``[−b, b]`` before
            allocation (``None``: unbounded).
        max_turnover: Turnover of a saturated Specialist.
        amplitude: Harmonic annealing amplitude of the global target (0: none); it acts
            through the General's allocation, so it needs ``use_general``.
        elastic: The General also chooses the global density, in ``[budget / elastic_span,
            budget · elastic_span]``, held to a mean FLOPs ratio of ``budget`` over the run
            (:mod:`esper.policies.elastic`); its state gains the account's features.
        elastic_span: The elastic density range's factor (≥ 1).
        period: Harmonic annealing period, in surgeries.
        sedation_steps: SGD steps a Specialist's sedation lasts.
        heat_surgeries: Surgeries a heat burst lasts.
        heat_tau: Factor on ``τ`` during a heat burst.
        heat_turnover: Factor on turnover during a heat burst (capped at ``max_turnover``).
        regrow_init: Initial value of regrown weights (``zero`` as RigL).
        mechanism_tau: Also pin the mask mechanism's temperature to the Specialist's ``τ``
            (where the mechanism has one). Off by default: the selection τ (about 0.001–0.05)
            is on another scale than a mechanism's, which a sweep may search. Events record
            the Specialist's ``τ`` and heat bit either way (``policy_tau``, ``heat``).
        mechanism_heat: A heat burst also multiplies the mechanism's temperature by
            ``heat_tau`` (where it has one and ``mechanism_tau`` is off), returning it to its
            configured, possibly searched, value when the burst ends: the heat decision acts
            on the mask's relaxation, as Lazarus tunnelling needs. A hotter relaxation is a
            softer one: Hard Concrete's training gates are pulled towards their mean (less
            random, less discrete, active weights damped), Gumbel-softmax's straight-through
            gate keeps its forward and flattens its gradient (``1/τ``). On by default; it
            changes nothing under mechanisms without a temperature (``masked``).
        greedy: Act with the distributions' modes (evaluation) instead of sampling.
        discrete: Act through a discrete learner (QMIX) set as :attr:`q_agent`.
        blind: Sensor groups (:data:`~esper.policies.emrakul.ablation.SENSOR_GROUPS`) zeroed
            in what the actors see (an ablation).
        sensor_dropout: Probability, in ``[0, 1)``, that an exploring decision sees a sensor
            group zeroed; greedy ones see every group (:mod:`esper.policies.emrakul.senses`).
        specialists: ``False`` replaces every Specialist's action by ``fixed_rule`` (an
            ablation).
        fixed_rule: What the Specialists are replaced by without ``specialists``: ``rigl``
            (:data:`~esper.policies.emrakul.ablation.RIGL_RULE`) or ``random``
            (:data:`~esper.policies.emrakul.ablation.RANDOM_RULE`, random surgery).
        data_action: Let the General also decide the data side's refresh share and selection
            rule (:meth:`SurgeonGeneral.data`; an organism without a data side ignores it).
        protect: Give the Specialists a protect bit: spare the layer's tail-serving weights
            and lock their samples (synchronized retention as a learned choice; needs a data
            side, ``workload.memory``, to act; continuous learners only).
        max_layers: Layer slots of the networks (at most the global state's slots).
        hidden: Hidden width of the actors.
        embed_dim: Width of the Specialists' layer embedding.
        specialist_log_std, general_log_std: Initial log standard deviations of the actors'
            Gaussians: the exploration noise RL starts from (behaviour cloning keeps them).
        seed: Seed of the networks and of the sampling stream.
    """

    name = "emrakul"

    def __init__(
        self,
        budget: float | None = None,
        general_interval: int = 4,
        use_general: bool = True,
        min_density: float = 0.01,
        general_bound: float | None = None,
        max_turnover: float = 0.5,
        amplitude: float = 0.0,
        elastic: bool = False,
        elastic_span: float = 2.0,
        period: int = 8,
        sedation_steps: int = 10,
        heat_surgeries: int = 3,
        heat_tau: float = 10.0,
        heat_turnover: float = 2.0,
        regrow_init: str = "zero",
        mechanism_tau: bool = False,
        mechanism_heat: bool = True,
        greedy: bool = False,
        discrete: bool = False,
        blind: Sequence[str] = (),
        sensor_dropout: float = 0.0,
        specialists: bool = True,
        fixed_rule: str = "rigl",
        data_action: bool = False,
        protect: bool = False,
        max_layers: int = 16,
        hidden: int = 64,
        embed_dim: int = 8,
        specialist_log_std: float = -0.5,
        general_log_std: float = -1.0,
        seed: int = 0,
    ) -> None:
        self.params: dict[str, Any] = {
            k: v for k, v in locals().items() if k not in ("self", "__class__")
        }
        check_params(**self.params)
        self.budget = budget
        self.general_interval = general_interval
        self.use_general = use_general
        self.min_density = min_density
        self.general_bound = general_bound
        self.codec = ActionCodec(max_turnover, sedation_steps, protect=protect)
        self.amplitude = amplitude
        self.elastic = elastic
        self.elastic_span = elastic_span
        self.period = period
        self.heat = (heat_surgeries, heat_tau, heat_turnover)
        self.regrow_init = regrow_init
        self.mechanism_tau = mechanism_tau
        self.mechanism_heat = mechanism_heat
        self.greedy = greedy
        self.discrete = discrete
        self.blind = tuple(blind)
        self.sensor_dropout = sensor_dropout
        self.specialists = specialists
        self.fixed_rule = FIXED_RULES[fixed_rule]
        self.data_choice = data_action
        self.max_layers = max_layers
        self.hidden = hidden
        self.embed_dim = embed_dim
        self.log_std = (specialist_log_std, general_log_std)
        self.seed = seed
        self.policy_version = 0
        self.specialist: SpecialistActor | None = None
        self.general: SurgeonGeneral | None = None
        self.q_agent: DiscreteAgent | None = None
        self.last: Decision | None = None
        self.generator = generator(seed, "emrakul", "act")
        self.episode = EpisodeState()

    # -- networks ------------------------------------------------------------------------

    def build(self, obs_dim: int, state_dim: int, strategy: str | None = None) -> None:
        """Create the Specialist and General networks (done by :meth:`reset` if needed);
        ``strategy`` is the buffer rule an untrained General's data action keeps."""
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.specialist = SpecialistActor(
                obs_dim,
                self.max_layers,
                self.hidden,
                self.embed_dim,
                bits=self.codec.bits,
                init_log_std=self.log_std[0],
            )
            self.general = SurgeonGeneral(
                state_dim + self._extra, self.max_layers, self.hidden,
                data_action=self.data_choice, strategy=strategy, elastic=self.elastic,
                init_log_std=self.log_std[1],
            )  # fmt: skip

    @property
    def _extra(self) -> int:
        """State columns the policy adds to the organism's global state (the account's)."""
        return len(ElasticDensity.FEATURES) if self.elastic else 0

    def _networks(self) -> tuple[SpecialistActor, SurgeonGeneral]:
        if self.specialist is None or self.general is None:
            raise RuntimeError("the policy has no networks yet: call reset(organism, first)")
        return self.specialist, self.general

    # -- the Policy interface ------------------------------------------------------------

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Start an episode: build the networks on first use, note the initial allocation."""
        names = organism.scalpel.names
        if len(names) > self.max_layers:
            raise ValueError(
                f"the organism has {len(names)} prunable layers but max_layers={self.max_layers}"
            )
        obs_dim = first.observations[names[0]].width
        state_dim = first.global_state.width
        if self.specialist is None:
            side = organism.data_side
            self.build(obs_dim, state_dim, side.memory.default.strategy if side else None)
        specialist, general = self._networks()
        if specialist.obs_dim != obs_dim or general.state_dim != state_dim + self._extra:
            raise ValueError(
                f"the policy was built for observations of width {specialist.obs_dim} and "
                f"states of width {general.state_dim}, this organism has {obs_dim} and "
                f"{state_dim}"
            )
        self.episode = EpisodeState()
        budget = self.budget if self.budget is not None else organism.scalpel.global_density()
        floor = min(self.min_density, budget)
        self.episode.annealing = HarmonicAnnealing(budget, self.amplitude, self.period, floor=floor)
        if self.elastic:
            self.episode.elastic = ElasticDensity(budget, self.elastic_span, organism)
        self.episode.prior = {n: max(organism.scalpel.density(n), 1e-6) for n in names}

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """Sample (or, if :attr:`greedy`, take the modes of) the surgery after ``step``."""
        return self.decide(organism, step, explore=not self.greedy)

    def decide(
        self, organism: Organism, step: OrganismStep, explore: bool = True
    ) -> dict[str, LayerAction]:
        """:meth:`act` with explicit exploration; the decision is kept in :attr:`last`."""
        if self.episode.annealing is None:
            self.reset(organism, step)
        specialist, general = self._networks()
        names = organism.scalpel.names
        obs, ids, state = self.inputs(organism, step)
        if explore and self.sensor_dropout > 0:
            drop_groups(obs, state, step.observations[names[0]].names,
                        step.global_state.names, self.sensor_dropout, self.generator)  # fmt: skip
        if self.discrete:
            if self.q_agent is None:
                raise RuntimeError("discrete=True needs a QMIX learner attached as q_agent")
            raw = self.q_agent.act(obs, ids, explore).long()
            log_prob = torch.zeros(len(names))
            chosen = {n: decode_discrete(int(i)) for n, i in zip(names, raw, strict=True)}
        else:
            with torch.no_grad():
                dist = specialist.distribution(obs, ids)
                raw = dist.sample(self.generator) if explore else dist.mode()
                log_prob = dist.log_prob(raw)
            chosen = {n: self.codec.decode(r) for n, r in zip(names, raw, strict=True)}
        general_raw = general_log_prob = None
        if self.use_general and self.episode.surgery % self.general_interval == 0:
            with torch.no_grad():
                gdist = general.distribution(state.unsqueeze(0))
                g = gdist.sample(self.generator) if explore else gdist.mode()
                general_log_prob = gdist.log_prob(g)[0]
            general_raw = g[0]
            self.episode.logits = general_raw[: len(names)].clone()
            self.episode.gain = general.amplitude_gain(general_raw)
            self.episode.data = general.data(general_raw)
            if self.episode.elastic is not None:
                self.episode.elastic.ask_logit(float(general.density_logit(general_raw) or 0.0))
        targets = self._targets(organism) if self.use_general else None
        actions = {}
        for name in names:
            decided = chosen[name] if self.specialists else self.fixed_rule
            action = chosen[name] = self._heated(name, decided)
            target = None if targets is None else targets[name]
            actions[name] = layer_action(
                action, organism, step, name, self.generator, target, self.regrow_init,
                self.mechanism_tau, heat=action is not decided,
                heat_factor=self.heat[1] if self.mechanism_heat else None,
            )  # fmt: skip
            if general_raw is not None and target is not None:  # a new allocation this surgery
                actions[name].target_density = target / organism.scalpel.numel(name)
        self.last = Decision(
            names, obs, ids, state, raw, log_prob, chosen, general_raw, general_log_prob, targets
        )
        self.episode.surgery += 1
        return actions

    def inputs(
        self, organism: Organism, step: OrganismStep, hide: Sequence[str] = ()
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the actors see of ``step`` (:func:`~esper.policies.emrakul.senses.actor_inputs`)
        with the :attr:`blind` groups and the groups ``hide`` zeroed (no sensor dropout: that
        is drawn by :meth:`decide`)."""
        obs, ids, state = actor_inputs(organism, step, (*self.blind, *hide))
        if self.elastic:  # the account (zeros before the episode starts)
            extra = self.state_of(step)[state.numel() :]
            state = torch.cat([state, extra])
        return obs, ids, state

    def state_of(self, step: OrganismStep) -> torch.Tensor:
        """The critic's state after ``step``: its global state, and the account's features
        under an elastic budget (what :attr:`last` ``.state`` holds at a decision)."""
        state = step.global_state.to_tensor().float()
        if not self.elastic:
            return state
        seen = self.episode.elastic.features() if self.episode.elastic else [0.0] * self._extra
        return torch.cat([state, torch.tensor(seen, dtype=state.dtype)])

    def data_action(self) -> DataAction | None:
        """The General's last data-side decision (held between its decisions)."""
        return self.episode.data

    def _targets(self, organism: Organism) -> dict[str, int]:
        episode = self.episode
        assert episode.annealing is not None and episode.logits is not None
        names = organism.scalpel.names
        bound = self.general_bound
        logits = episode.logits if bound is None else episode.logits.clamp(-bound, bound)
        logits = logits + torch.tensor([math.log(episode.prior[n]) for n in names])
        sizes = [organism.scalpel.numel(n) for n in names]

        def allocate(density: float) -> list[int]:
            return allocate_counts(logits, sizes, density, min(self.min_density, density))

        if episode.elastic is not None:  # the density the account grants
            counts = episode.elastic.counts(organism, allocate)[1]
        else:
            counts = allocate(episode.annealing.target(episode.surgery, episode.gain))
        return dict(zip(names, counts, strict=True))

    def _heated(self, name: str, action: SpecialistAction) -> SpecialistAction:
        surgeries, tau_factor, turnover_factor = self.heat
        left = self.episode.heat_left.get(name, 0)
        if action.heat and left == 0:
            left = surgeries
        if left > 0:
            self.episode.heat_left[name] = left - 1
            return action.heated(tau_factor, turnover_factor, self.codec.max_turnover)
        return action

    # -- checkpoints ---------------------------------------------------------------------

    def bump_version(self) -> int:
        """Count one more learner update of the weights; returns the new version."""
        self.policy_version += 1
        return self.policy_version

    def state_dict(self) -> dict[str, Any]:
        """Constructor parameters, network sizes and weights, version, sampling stream and the
        episode in progress (surgery counter, the General's logits and gain, heat bursts left,
        the initial allocation and the annealing schedule), so that a policy restored
        mid-stream acts exactly as the original. A discrete head (QMIX) is restored with its
        learner."""
        specialist, general = self.specialist, self.general
        return {
            "params": dict(self.params),
            "obs_dim": None if specialist is None else specialist.obs_dim,
            "state_dim": None if general is None else general.state_dim - self._extra,
            "specialist": None if specialist is None else specialist.state_dict(),
            "general": None if general is None else general.state_dict(),
            "policy_version": self.policy_version,
            "generator": self.generator.get_state(),
            "discrete": self.discrete,
            "episode": self.episode.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (building the networks if needed)."""
        if state["obs_dim"] is not None:
            if self.specialist is None:
                self.build(int(state["obs_dim"]), int(state["state_dim"]))
            specialist, general = self._networks()
            specialist.load_state_dict(state["specialist"])
            general.load_state_dict(state["general"])
        self.policy_version = int(state["policy_version"])
        self.generator.set_state(state["generator"])
        self.discrete = bool(state["discrete"])
        self.episode = EpisodeState.from_state_dict(state["episode"], self.amplitude)
