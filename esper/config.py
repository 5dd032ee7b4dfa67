"""Typed configuration: one plain dataclass per config group.

Every field is documented where it is declared (the CleanRL ``Args`` style). The groups are
``workload`` (data stream and host network), ``policy`` (who operates on the network), ``reward``
(Emrakul's composite reward weights), ``search`` (Ray Tune sweep), ``cluster`` (where it runs) and
``experiment`` (name, seed, run directory, lengths).

These are plain, picklable dataclasses with no Hydra or torch import, so the layers that take
them (workloads, policies, Ray actors) never load Hydra. :mod:`esper.conf.store` registers them
as Hydra structured configs with the named options of each group; :mod:`esper.conf.compose`
composes and validates them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

MISSING: Any = "???"
"""OmegaConf's marker of a value that composition must fill (a group chosen by the defaults
list); spelled out here so that this module does not import OmegaConf."""

__all__ = [
    "HP_PREFIX",
    "ClusterConfig",
    "ComponentConfig",
    "EsperConfig",
    "ExperimentConfig",
    "Optimizer",
    "OrganismConfig",
    "PolicyConfig",
    "RewardConfig",
    "ScalpelConfig",
    "SearchAlgorithm",
    "SearchConfig",
    "TrainingConfig",
    "WorkloadConfig",
    "lookup",
    "searched_values",
    "to_plain",
]


@dataclass
class ComponentConfig:
    """A registry entry and its parameters (a drift primitive, a schedule, a host, a dataset)."""

    name: str = MISSING
    """Registry name, e.g. ``permute_inputs``, ``abrupt``, ``mlp``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the entry; unknown names are rejected with the allowed ones."""


@dataclass
class ScalpelConfig:
    """How the host's prunable tensors are masked (the Scalpel)."""

    mechanism: ComponentConfig = field(default_factory=lambda: ComponentConfig("masked"))
    """Mask mechanism: ``masked``, ``straight_through``, ``gumbel_softmax``, ``hard_concrete``,
    ``gumbel_topk``, ``nm`` or ``atm``, with its parameters."""
    distribution: str = "erk"
    """Initial spread of the density budget over layers: ``uniform`` or ``erk``."""
    selection: str = "random"
    """Initial supports drawn ``random`` or by ``magnitude``."""
    keep_dense: list[str] = field(default_factory=list)
    """Prunable tensors kept fully dense (still counted in the global density)."""
    penalty_weight: float = 0.0
    """Weight of the mechanism's penalty in the loss (Hard Concrete's expected L0)."""
    rescale_init: bool = True
    """Sparsity-aware initialisation: scale each layer's surviving initial weights by
    ``1/sqrt(density)`` so activations keep the dense network's variance (Evci et al. 2022,
    "Gradient Flow in Sparse Neural Networks and How Lottery Tickets Win"). Without it a
    network at 90% sparsity starts with near-zero logits and barely learns."""


@dataclass
class OrganismConfig:
    """The organism around the host: sensing and surgery timing."""

    sensors: dict[str, Any] = field(default_factory=dict)
    """Nervous System settings (fields of ``esper.workloads.sensors.SensorConfig``)."""
    sense_batches: int = 4
    """Most recent training batches the sensors read at each surgery."""
    spike_window: int = 5
    """Steps before and after a surgery compared by the loss-spike reward term."""


@dataclass
class MemoryConfig:
    """The organism's data side: a replay buffer co-evolving with the topology
    (``esper.workloads.memory``). Off at capacity 0."""

    capacity: int = 0
    """Most samples the buffer holds (the data budget); 0: no data side."""
    strategy: str = "reservoir"
    """Selection rule: ``reservoir``, ``class_balanced``, ``forgetting`` or ``gradient``."""
    replay_ratio: float = 1.0
    """Replayed samples mixed into each training batch, per stream sample."""
    refresh: float = 1.0
    """Share of the buffer's members up for replacement at each surgery."""
    synchronized: bool = False
    """Synchronized retention: never prune the weights serving tail classes while their
    samples are locked in the buffer."""
    retention: dict[str, Any] = field(default_factory=dict)
    """Further retention settings (``tail_fraction``, ``serve_fraction``, ``quantile``,
    ``lock_fraction`` of ``esper.workloads.memory.Retention``)."""


class Optimizer(str, Enum):
    """Optimizer of the host network (``esper.workloads.optimizers.OPTIMIZERS``)."""

    sgd = "sgd"
    adam = "adam"
    upgd = "upgd"


@dataclass
class WorkloadConfig:
    """The living network's world: a drifting stream and the host network learning on it."""

    dataset: ComponentConfig = field(default_factory=lambda: ComponentConfig("digits"))
    """Source: ``digits``, ``mnist1d``, ``gaussian_mixture``, ``slowly_changing_regression``."""
    drifts: list[ComponentConfig] = field(default_factory=list)
    """Drift primitives applied in order (see ``esper.workloads.drift.DRIFTS``)."""
    schedule: ComponentConfig = field(default_factory=lambda: ComponentConfig("abrupt"))
    """When distributions change: ``abrupt``, ``gradual`` or ``recurring``."""
    num_tasks: int = 5
    """Length of the stream, in tasks."""
    batch_size: int = 32
    """Examples per SGD step."""
    host: ComponentConfig = field(default_factory=lambda: ComponentConfig("mlp"))
    """Host network: ``mlp``, ``cnn`` or ``transformer``."""
    optimizer: Optimizer = Optimizer.sgd
    """Optimizer of the host network: ``sgd``, ``adam`` (decoupled weight decay, as AdamW) or
    ``upgd`` (utility-based perturbed gradient descent, Elsayed & Mahmood 2024)."""
    lr: float = 0.02
    """Learning rate of the host network."""
    momentum: float = 0.9
    """SGD momentum (ignored by Adam and UPGD)."""
    weight_decay: float = 0.0
    """Weight decay of the host's parameters: coupled for SGD (``g + wd·θ``), decoupled for Adam
    and UPGD (``θ·(1 − lr·wd)``). 0: none."""
    l2_init: float = 0.0
    """L2 Init's λ (Kumar et al. 2023, "Maintaining Plasticity in Continual Learning via
    Regenerative Regularization"): the loss gains ``λ‖θ − θ₀‖²`` toward the weights the organism
    started from, on active weights (``esper.workloads.l2_init``). 0: off; the paper sweeps
    1e-2 … 1e-5."""
    optimizer_params: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of the optimizer (UPGD: ``beta_utility``, ``sigma``; Adam:
    ``betas``, ``eps``); unknown names are rejected with the allowed ones."""
    scalpel: ScalpelConfig = field(default_factory=ScalpelConfig)
    """Masks on the host's prunable tensors."""
    organism: OrganismConfig = field(default_factory=OrganismConfig)
    """Sensing and surgery timing of the organism."""
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    """The organism's data side (replay buffer and synchronized retention)."""


@dataclass
class TrainingConfig:
    """How ``esper train-policy`` trains Emrakul."""

    learner: str = "mappo"
    """Learner of the Specialists (``esper.policies.learners.LEARNERS``): ``mappo`` (Yu et al.
    2021) or ``qmix`` (Rashid et al. 2018). The Surgeon General always learns with MAPPO."""
    surgeries: int = 64
    """Training budget: surgeries over all organisms."""
    rollout: int = 16
    """Surgeries per episode (one learner update per episode)."""
    workloads: list[str] = field(default_factory=list)
    """Workload presets to train on, taking turns (empty: the ``workload`` group's)."""
    imitation: int = 0
    """Surgeries of RigL demonstrations per organism, behaviour-cloned into the continuous
    Specialist actor before RL (learners that train that actor: ``mappo``): on the training
    organisms under ``esper train-policy``, on twins of the replicas' organisms before a
    platform member's first iteration (``esper run``, ``esper sweep``)."""
    control: str = "none"
    """Variance-reduced credit (:mod:`esper.policies.credit`): ``none`` rewards a surgery's raw
    online accuracy; a surgeon's name (``rigl``, ``set``, ``static`` …) gives each training
    organism a control twin operated on by that surgeon, and the reward's accuracy term becomes
    the organism's online accuracy minus its twin's on the same SGD steps. On the platform the
    twin is the fitness's reference twin (``search.reference`` must be ``none`` or the same)."""
    credit: str = "change"
    """How the control enters the reward (:class:`esper.policies.credit.Credit`): ``level``
    (accuracy minus the twin's) or ``change`` (that relative accuracy's change since the
    interval before the surgery; it follows a surgery's own effect best:
    ``benchmarks/results/credit.json``)."""
    replicas: int = 2
    """Replica organisms per population member (``esper run`` / ``esper sweep``), each under
    the next workload of ``workloads`` (cycled) and its own seed."""
    cohort: int = 1
    """Organisms per replica actor, trained together as one batched network
    (:class:`esper.workloads.cohort.Cohort`; SGD and the ``masked`` mechanism). Each has its own
    seed, stream and event-log partition (replica id ``replica × cohort + index``), so a member
    acts on ``replicas × cohort`` organisms. 1: one organism per actor."""
    iterations: int = 8
    """Learner updates per member on the platform; each update takes one episode of
    ``rollout`` surgeries from every replica (``surgeries`` budgets the in-process trainer)."""
    asynchronous: bool = False
    """Learn from whichever episodes arrive first (``ray.wait``) instead of waiting for every
    replica; episodes acted on weights older than ``max_staleness`` updates are dropped."""
    max_staleness: int = 1
    """Asynchronous mode: oldest policy version (updates behind the learner) still learned from."""
    learner_params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the Specialists' learner (e.g. ``lr``, ``batch_size``)."""
    general_params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the Surgeon General's MAPPO learner (e.g. ``lr``)."""


@dataclass
class PolicyConfig:
    """Who operates on the host network, and at what budget."""

    name: str = "dense"
    """Surgery policy (see ``esper.policies.POLICIES``); ``dense`` never prunes."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the policy; unknown names are rejected with the allowed ones."""
    density: float = 1.0
    """Global density budget: the fraction of prunable weights kept, counted over every layer."""
    surgery_interval: int = 100
    """SGD steps between two surgeries (``K``)."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """Training of a learned policy (``esper train-policy``)."""


@dataclass
class RewardConfig:
    """Weights of Emrakul's reward ``R = α·Acc − β·FLOPs − γ·Osc + δ·GSNR − ε·Spike``."""

    alpha: float = 1.0
    """α: online accuracy since the last surgery."""
    beta: float = 0.1
    """β: dense-relative FLOPs of the forward pass."""
    gamma: float = 0.1
    """γ: mask oscillation (flip-flop) rate."""
    delta: float = 0.05
    """δ: mean gradient signal-to-noise ratio."""
    epsilon: float = 0.1
    """ε: loss spike right after surgery."""


class SearchAlgorithm(str, Enum):
    """How Ray Tune explores reward weights and temperatures."""

    none = "none"
    random = "random"
    grid = "grid"
    pbt = "pbt"
    pb2 = "pb2"
    optuna = "optuna"


@dataclass
class SearchConfig:
    """The population search run by Ray Tune."""

    algorithm: SearchAlgorithm = SearchAlgorithm.none
    """``none`` (the config as composed, ``num_samples`` copies), ``random`` (uniform draws in
    ``bounds``), ``grid`` (``grid_points`` per bound), ``pbt`` (Jaderberg et al. 2017),
    ``pb2`` (Parker-Holder et al. 2020) or ``optuna`` (TPE)."""
    num_samples: int = 1
    """Trials (population members); with ``grid``, repetitions of the whole grid."""
    perturbation_interval: int = 4
    """Training iterations between PBT/PB2 exploit-and-explore steps (checkpoints are taken at
    the same interval, so an exploit copies a member's state of that iteration)."""
    quantile_fraction: float = 0.25
    """Fraction of the population that is replaced by (and copies from) the top fraction."""
    resample_probability: float = 0.25
    """PBT: chance that an explored value is drawn anew from its bound instead of perturbed."""
    grid_points: int = 3
    """``grid``: evenly spaced values per bound (both ends included)."""
    metric: str = "fitness"
    """What the search ranks members by: ``fitness`` (online accuracy relative to the
    ``reference`` twin, smoothed over ``fitness_window`` iterations: it ranks members, not
    stream phases) or any other iteration metric (``online_accuracy``, raw). Never the shaped
    reward, whose scale differs between members."""
    reference: str = "rigl"
    """Reference surgeon of the ``fitness``: every organism gets a twin (same workload, seeds
    and steps, hence the same batches) operated on by this registry policy with its defaults at
    the same density, ``none`` for no twin. The twins roughly double the organisms' work."""
    fitness_window: int = 3
    """Iterations the ``fitness`` averages the member's relative accuracy over (≥ 1)."""
    mode: str = "max"
    """``max`` or ``min``."""
    bounds: dict[str, list[float]] = field(default_factory=dict)
    """Search range ``[low, high]`` per hyperparameter, addressed by its config key: reward
    weights (``reward.beta``), Emrakul parameters (``policy.params.heat_tau``), learner
    settings (``policy.training.learner_params.lr``)."""
    seed: int | None = None
    """Seed of the searcher and scheduler (``null``: ``experiment.seed``)."""


@dataclass
class ClusterConfig:
    """Where Ray runs and where results go."""

    address: str | None = None
    """Ray address; ``null`` starts an embedded local Ray, ``auto`` joins a running cluster."""
    num_cpus: int | None = None
    """Logical CPUs of the embedded Ray (``null``: all of this machine's). Tiny organisms
    leave a core idle between steps, so declaring more than the cores can pay."""
    storage_path: str = "runs"
    """Root of run directories, checkpoints and event logs (shared storage on a cluster)."""
    mlflow_uri: str | None = None
    """MLflow tracking URI: a tracking server (``http://...``) or a SQLite file; ``null`` puts
    ``sqlite:///<storage_path>/mlflow.db`` beside the runs."""
    replica_cpus: float = 0.5
    """Logical CPUs reserved per replica actor (fractions allowed)."""
    replica_gpus: float = 0.0
    """GPUs per replica actor (with ``experiment.device=cuda``; fractions share a GPU)."""
    learner_cpus: float = 0.5
    """Logical CPUs reserved for a trial's learner (the trial's own process)."""
    max_restarts: int = 2
    """Times Ray restarts a crashed replica actor; it resumes from its last checkpoint."""


@dataclass
class ExperimentConfig:
    """One run: its name, seed and lengths."""

    name: str = "demo"
    """Run name prefix; the run directory adds the command, workload, policy, seed and time."""
    seed: int = 0
    """Root seed; every random stream is derived from it deterministically."""
    device: str = "cpu"
    """Where organisms and policies run: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when
    available)."""
    steps: int | None = None
    """SGD steps to run; ``null`` runs the whole stream (``num_tasks × task_length``)."""
    log_every: int = 25
    """Steps between progress updates."""
    recovery_window: int = 20
    """Steps averaged when measuring accuracy right before and right after a drift."""


@dataclass
class EsperConfig:
    """The composed configuration of an Esper command."""

    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"workload": "digits_permuted"},
            {"policy": "dense"},
            {"reward": "composite"},
            {"search": "none"},
            {"cluster": "local"},
            {"experiment": "demo"},
        ]
    )
    workload: WorkloadConfig = MISSING
    policy: PolicyConfig = MISSING
    reward: RewardConfig = MISSING
    search: SearchConfig = MISSING
    cluster: ClusterConfig = MISSING
    experiment: ExperimentConfig = MISSING


def to_plain(cfg: Any) -> Any:
    """A config dataclass as nested dicts, lists and scalars (enums by their value): the form
    saved in checkpoints, hashed for run names and sent to Ray actors."""
    return _plain(asdict(cfg)) if hasattr(cfg, "__dataclass_fields__") else _plain(cfg)


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


HP_PREFIX = "hp/"
"""Prefix of a searched value in an iteration's metrics (``hp/reward.beta``): the value the
member ran that iteration with, so MLflow and the learning curves keep PBT's schedule."""


def lookup(plain: Any, dotted: str) -> Any:
    """The value at ``dotted`` (``reward.beta``) in plain config data, ``None`` where absent."""
    node = plain
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def searched_values(cfg: EsperConfig) -> dict[str, Any]:
    """``hp/<key>`` → ``cfg``'s value, for every key of ``cfg.search.bounds``."""
    plain = to_plain(cfg)
    return {f"{HP_PREFIX}{key}": lookup(plain, key) for key in cfg.search.bounds}
