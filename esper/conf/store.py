"""The named options of each config group, registered in Hydra's ``ConfigStore``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hydra.core.config_store import ConfigStore

from esper.conf.checks import ConfigError
from esper.config import (
    ClusterConfig,
    ComponentConfig,
    EsperConfig,
    ExperimentConfig,
    MemoryConfig,
    Optimizer,
    PolicyConfig,
    RewardConfig,
    SearchAlgorithm,
    SearchConfig,
    WorkloadConfig,
)

__all__ = ["GROUPS", "PRIMARY", "options", "register"]

PRIMARY = "esper"
GROUPS = ("workload", "policy", "reward", "search", "cluster", "experiment")


def _c(name: str, **params: object) -> ComponentConfig:
    return ComponentConfig(name, dict(params))


def _workloads() -> dict[str, WorkloadConfig]:
    abrupt = _c("abrupt", task_length=300)
    return {
        "digits_permuted": WorkloadConfig(drifts=[_c("permute_inputs")], schedule=abrupt),
        "digits_rotated": WorkloadConfig(
            drifts=[_c("rotate", degrees_per_task=45.0)], schedule=abrupt
        ),
        "digits_class_incremental": WorkloadConfig(
            drifts=[_c("class_incremental", classes_per_task=2)], schedule=abrupt
        ),
        "digits_label_permuted": WorkloadConfig(drifts=[_c("permute_labels")], schedule=abrupt),
        "digits_long_tail": WorkloadConfig(
            drifts=[_c("imbalance", rare=[7, 8, 9], fraction=0.02), _c("permute_inputs")],
            schedule=abrupt,
            memory=MemoryConfig(capacity=100),
        ),
        "digits_gradual": WorkloadConfig(
            drifts=[_c("permute_inputs")], schedule=_c("gradual", task_length=300, window=100)
        ),
        "digits_recurring": WorkloadConfig(
            drifts=[_c("permute_inputs")],
            schedule=_c("recurring", task_length=300, pattern=[0, 1]),
            num_tasks=6,
        ),
        "digits_affine_cnn": WorkloadConfig(drifts=[_c("affine")], schedule=abrupt, host=_c("cnn")),
        "mnist1d_permuted": WorkloadConfig(
            dataset=_c("mnist1d"), drifts=[_c("permute_inputs")], schedule=abrupt
        ),
        # UPGD's input-permuted MNIST (Elsayed & Mahmood, ICLR 2024) as closely as MNIST-1D
        # allows: 60,000 generated samples (MNIST's training-set size) with a new input
        # permutation every 5,000 steps, 200 tasks (1M samples), batch 1, a 300×150 ReLU MLP,
        # plain SGD (UPGD's baselines and UPGD itself have no momentum) at step size 0.01,
        # not tuned here. The ``standard`` quality preset (esper.bench.quality_streams).
        "mnist1d_permuted_standard": WorkloadConfig(
            dataset=_c("mnist1d", num_samples=60_000),
            drifts=[_c("permute_inputs", first_identity=False)],
            schedule=_c("abrupt", task_length=5000),
            num_tasks=200,
            batch_size=1,
            host=_c("mlp", hidden=[300, 150]),
            lr=0.01,
            momentum=0.0,
        ),
        "mnist1d_covariate": WorkloadConfig(
            dataset=_c("mnist1d"), drifts=[_c("covariate_shift", shift=1.0)], schedule=abrupt
        ),
        "mnist1d_shifted_cnn": WorkloadConfig(
            dataset=_c("mnist1d"),
            drifts=[_c("covariate_shift", shift=0.5), _c("noise_burst", sigma=0.5)],
            schedule=abrupt,
            host=_c("cnn"),
        ),
        "gaussian_covariate": WorkloadConfig(
            dataset=_c("gaussian_mixture"),
            drifts=[_c("covariate_shift"), _c("noise_burst")],
            schedule=_c("gradual", task_length=300, window=60),
        ),
        "digits_transformer": WorkloadConfig(
            drifts=[_c("permute_labels")],
            schedule=abrupt,
            host=_c("transformer"),
            optimizer=Optimizer.adam,
            lr=3e-3,
        ),
        "slowly_changing_regression": WorkloadConfig(
            dataset=_c("slowly_changing_regression"),
            drifts=[],
            schedule=_c("abrupt", task_length=1000),
            num_tasks=10,
            batch_size=10,
            host=_c("mlp", hidden=[5]),
            lr=0.01,
            momentum=0.0,
        ),
        # Agents (esper.workloads.rl): a DQN host acting in a classic-control environment
        # whose dynamics drift; K host updates = K environment steps between surgeries.
        "cartpole_drifting": WorkloadConfig(
            dataset=_c("cartpole", exploration_steps=3000, target_period=200),
            drifts=[_c("physics", quantity="gravity"), _c("physics", quantity="length")],
            schedule=_c("abrupt", task_length=4000),
            num_tasks=5,
            batch_size=64,
            host=_c("mlp", hidden=[128, 128]),
            optimizer=Optimizer.adam,
            lr=5e-4,
        ),
        # The primacy-bias setting: a misleading first phase (every step costs a point), then
        # the real task (esper bench primacy).
        "cartpole_misled": WorkloadConfig(
            dataset=_c("cartpole", exploration_steps=3000, target_period=250),
            drifts=[_c("reward_scale", low=1.0, high=1.0, flip=True)],
            schedule=_c("recurring", task_length=8000, pattern=[1, 0]),
            num_tasks=2,
            batch_size=64,
            host=_c("mlp", hidden=[128, 128]),
            optimizer=Optimizer.adam,
            lr=5e-4,
        ),
        # MinAtar's 10×10 Breakout with its actions permuted per task: millions of frames
        # to learn well (ANCHORS.md), a preset for clusters; tests use tiny budgets.
        "minatar_breakout_permuted": WorkloadConfig(
            dataset=_c("minatar_breakout", exploration_steps=20000, target_period=1000),
            drifts=[_c("permute_actions")],
            schedule=_c("abrupt", task_length=100000),
            num_tasks=5,
            batch_size=64,
            host=_c("mlp", hidden=[256, 128]),
            optimizer=Optimizer.adam,
            lr=2.5e-4,
        ),
        "acrobot_permuted": WorkloadConfig(
            dataset=_c("acrobot", exploration_steps=3000, target_period=200),
            drifts=[_c("permute_actions")],
            schedule=_c("abrupt", task_length=4000),
            num_tasks=5,
            batch_size=64,
            host=_c("mlp", hidden=[128, 128]),
            optimizer=Optimizer.adam,
            lr=5e-4,
        ),
    }


def _policies() -> dict[str, PolicyConfig]:
    """Every surgeon at the default 90% sparsity budget (``dense`` keeps everything)."""
    budget = 0.1
    sparse = ("static", "set", "cbp", "redo", "random", "fgsf", "emrakul")
    dense = ("periodic_reset",)  # resets a dense network, as the paper
    options = {"dense": PolicyConfig(), **{n: PolicyConfig(name=n, density=budget) for n in sparse}}
    options.update({n: PolicyConfig(name=n) for n in dense})
    # Paper settings on the default stream (5 tasks × 300 steps, K = 100): GMP prunes a dense
    # network to the budget over the first two thirds; RigL stops updating at ~75% (T_end).
    options["gmp"] = PolicyConfig(  # built dense, pruned to the budget (dense_start)
        name="gmp", density=budget, params={"frequency": 100, "steps": 10}
    )
    options["rigl"] = PolicyConfig(
        name="rigl", density=budget, params={"alpha": 0.3, "delta_t": 100, "t_end": 1100}
    )
    options["rigl_elastic"] = PolicyConfig(  # RigL's settings, breathing around the budget
        name="rigl_elastic", density=budget, params={"alpha": 0.3, "delta_t": 100, "t_end": 1100}
    )
    # Shrink & Perturb once per task, when new data arrives as in Ash & Adams; SWR with the
    # paper's incremental-CIFAR period and threshold (its permuted-MNIST period, 2048 steps,
    # outlasts the stream).
    options["shrink_perturb"] = PolicyConfig(
        name="shrink_perturb", density=budget, params={"interval": 300}
    )
    options["swr"] = PolicyConfig(
        name="swr", density=budget, params={"interval": 128, "factor": 5e-4}
    )
    return options


def _rewards() -> dict[str, RewardConfig]:
    return {
        "composite": RewardConfig(),
        "accuracy_only": RewardConfig(beta=0.0, gamma=0.0, delta=0.0, epsilon=0.0),
        "frugal": RewardConfig(beta=0.5, gamma=0.2),
    }


def _searches() -> dict[str, SearchConfig]:
    reward_bounds = {
        "reward.beta": [0.0, 0.5],
        "reward.gamma": [0.0, 0.5],
        "reward.delta": [0.0, 0.2],
        "reward.epsilon": [0.0, 0.5],
    }
    return {
        # Nothing is ranked (``esper run``, copies of one config): no twin, raw online accuracy.
        "none": SearchConfig(reference="none", metric="online_accuracy"),
        "random": SearchConfig(
            algorithm=SearchAlgorithm.random, num_samples=4, bounds=reward_bounds
        ),
        "grid": SearchConfig(algorithm=SearchAlgorithm.grid, grid_points=2, bounds=reward_bounds),
        "pbt": SearchConfig(algorithm=SearchAlgorithm.pbt, num_samples=4, bounds=reward_bounds),
        "pb2": SearchConfig(algorithm=SearchAlgorithm.pb2, num_samples=4, bounds=reward_bounds),
        "optuna": SearchConfig(
            algorithm=SearchAlgorithm.optuna, num_samples=8, bounds=reward_bounds
        ),
    }


def _clusters() -> dict[str, ClusterConfig]:
    return {
        "local": ClusterConfig(),
        "laptop": ClusterConfig(num_cpus=4, replica_cpus=0.25, learner_cpus=0.25),
        "ray_cluster": ClusterConfig(
            address="auto", storage_path="/mnt/shared/esper/runs", mlflow_uri="http://mlflow:5000"
        ),
    }


def _experiments() -> dict[str, ExperimentConfig]:
    return {
        "demo": ExperimentConfig(),
        "smoke": ExperimentConfig(name="smoke", steps=60, log_every=10, recovery_window=5),
    }


_OPTIONS: dict[str, Callable[[], Mapping[str, object]]] = {
    "workload": _workloads,
    "policy": _policies,
    "reward": _rewards,
    "search": _searches,
    "cluster": _clusters,
    "experiment": _experiments,
}


def options(group: str) -> list[str]:
    """The option names of config group ``group``, sorted.

    Raises:
        ConfigError: ``group`` is not a config group (the message lists the groups).
    """
    if group not in _OPTIONS:
        raise ConfigError(f"unknown config group {group!r}; valid groups: {', '.join(GROUPS)}")
    return sorted(_OPTIONS[group]())


def register() -> None:
    """Register the primary config and every group option, once per process (storing them
    costs half a second: every option is converted to an OmegaConf node)."""
    cs = ConfigStore.instance()
    if f"{PRIMARY}.yaml" in cs.repo:
        return
    cs.store(name=PRIMARY, node=EsperConfig)
    for group, make in _OPTIONS.items():
        for name, node in make().items():
            cs.store(group=group, name=name, node=node)
