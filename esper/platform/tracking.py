"""MLflow tracking of a sweep, written from the driver only.

Tune's ``MLflowLoggerCallback`` runs in the driver process, so one process writes the store
(many workers writing one SQLite file lock it). Each trial is one MLflow run: its parameters
(the composed config, flattened, and the sampled values) are logged once when the trial first
starts; the values each iteration ran with are metrics ``hp/<key>`` (so the UI plots PBT's
schedule of every member), and each exploit is a tag naming its source trial. Tags name the
git revision, the config digest and the Esper version; at the end of a trial its composed
config and the location of its event log are logged as artifacts.
"""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from ray.air.integrations.mlflow import MLflowLoggerCallback

from esper.config import EsperConfig
from esper.platform.runs import config_digest
from esper.platform.search import RUN_DIR_KEY
from esper.platform.trainable import EXPLOIT_SOURCE

__all__ = ["EsperMLflowCallback", "artifact_root", "mlflow_uri", "prepare_experiment", "run_tags"]


def mlflow_uri(cfg: EsperConfig, storage: Path) -> str:
    """``cluster.mlflow_uri``, or a SQLite store beside the runs (``<storage>/mlflow.db``)."""
    if cfg.cluster.mlflow_uri:
        return cfg.cluster.mlflow_uri
    return f"sqlite:///{(storage / 'mlflow.db').resolve()}"


def artifact_root(cfg: EsperConfig, storage: Path) -> Path | None:
    """Where the default store's artifacts go: ``<storage>/mlartifacts``, beside
    ``mlflow.db``, so that the store and its artifacts move (or are deleted) together with the
    runs. ``None`` with ``cluster.mlflow_uri`` set: that server decides."""
    return None if cfg.cluster.mlflow_uri else (storage / "mlartifacts").resolve()


def prepare_experiment(uri: str, name: str, artifacts: Path | None) -> None:
    """Create the MLflow experiment ``name`` with its artifacts under ``artifacts`` (the
    callback would otherwise create it with MLflow's default, ``./mlruns`` of the current
    directory, outside the runs); an existing experiment is left as it is."""
    if artifacts is None:
        return
    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifacts.as_uri())


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def run_tags(cfg: EsperConfig, run_dir: Path) -> dict[str, str]:
    """Tags of every MLflow run of a sweep."""
    try:
        esper_version = version("esper")
    except PackageNotFoundError:
        esper_version = "unknown"
    return {
        "esper.version": esper_version,
        "esper.git_revision": _git_revision(),
        "esper.config_digest": config_digest(cfg),
        "esper.run_dir": str(run_dir),
    }


class EsperMLflowCallback(MLflowLoggerCallback):
    """``MLflowLoggerCallback`` that logs parameters once per trial and explored values as
    metrics, and logs each trial's config and event-log location as artifacts."""

    def __init__(self, tracking_uri: str, experiment_name: str, tags: dict[str, str]) -> None:
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name, tags=tags)
        self._uri = tracking_uri
        self._started: set[str] = set()

    def log_trial_start(self, trial: Any) -> None:
        """Start the trial's run and log its parameters (first start only)."""
        if trial not in self._trial_runs:
            tags = {**(self.tags or {}), "trial_name": str(trial)}
            run = self.mlflow_util.start_run(tags=tags, run_name=str(trial))
            self._trial_runs[trial] = run.info.run_id
        run_id = self._trial_runs[trial]
        if run_id not in self._started:
            self._started.add(run_id)
            params = {k: v for k, v in trial.config.items() if k != RUN_DIR_KEY}
            self.mlflow_util.log_params(run_id=run_id, params_to_log=params)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        """The iteration's metrics, with the values the member ran with (``hp/<key>``, from
        the member's own report, so PBT's schedule plots per member); an exploit becomes the
        tags ``exploit.<iteration>`` (the source trial) and ``exploited_from`` (the latest)."""
        # Tune copies the trial config into each result ("config/..."): parameters, not metrics.
        metrics = {k: v for k, v in result.items() if k != "config" and not k.startswith("config/")}
        source = metrics.pop(EXPLOIT_SOURCE, None)
        run_id = self._trial_runs.get(trial)
        if source is not None and run_id is not None:
            client = MlflowClient(self._uri)
            step = int(result.get("training_iteration", iteration))
            client.set_tag(run_id, f"exploit.{step:04d}", str(source))
            client.set_tag(run_id, "exploited_from", str(source))
        super().log_trial_result(iteration, trial, metrics)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        """Log the trial's composed config and where its events are, then end its run."""
        run_id = self._trial_runs.get(trial)
        if run_id is not None:
            client = MlflowClient(self._uri)
            run_dir = Path(trial.config[RUN_DIR_KEY])
            client.log_text(run_id, json.dumps(trial.config, indent=2, default=str), "config.json")
            where = {
                "run_dir": str(run_dir),
                "events": str(run_dir / "events" / f"trial={trial.trial_id}"),
                "metrics": str(run_dir / "metrics" / f"trial={trial.trial_id}"),
                "query": f'esper events {run_dir} --sql "SELECT * FROM events WHERE trial = '
                f"'{trial.trial_id}'\"",
            }
            client.log_text(run_id, json.dumps(where, indent=2), "event_log.json")
        super().log_trial_end(trial, failed)
