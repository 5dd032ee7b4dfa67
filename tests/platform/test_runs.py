"""Run names: experiment, command, workload label, policy, seed and time; digests are stable."""

from __future__ import annotations

import calendar
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest

from esper.commands.naming import chosen_workload
from esper.conf import compose
from esper.config import Optimizer, WorkloadConfig
from esper.platform.runs import config_digest, new_run_dir, run_name, workload_label

ROOT = Path(__file__).resolve().parents[2]
_ROTATED = ["workload=digits_permuted", "workload.drifts=[{name: rotate}]"]


def _label(overrides: list[str]) -> str:
    return chosen_workload(compose(overrides), overrides)


def test_a_plain_preset_is_named_without_a_digest() -> None:
    assert _label([]) == "digits_permuted"
    assert _label(["workload=digits_rotated", "experiment.seed=3", "policy=rigl"]) == (
        "digits_rotated"
    )
    # Setting a key to the preset's own value does not change the preset.
    assert _label(["workload=digits_permuted", "workload.lr=0.02"]) == "digits_permuted"


def test_an_overridden_workload_gets_a_digest_of_its_config() -> None:
    rotated = _label(_ROTATED)
    assert re.fullmatch(r"digits_permuted\+[0-9a-f]{6}", rotated)
    assert rotated == f"digits_permuted+{config_digest(compose(_ROTATED).workload)}"
    other = _label(["workload=digits_permuted", "workload.lr=0.05"])
    assert other.startswith("digits_permuted+") and other != rotated
    # The label names the preset the overrides started from.
    assert _label(["workload=digits_rotated", "workload.lr=0.05"]).startswith("digits_rotated+")


def test_the_digest_is_the_same_in_another_process() -> None:
    code = (
        "from esper.conf import compose; from esper.platform.runs import config_digest; "
        f"print(config_digest(compose({_ROTATED!r}).workload))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == config_digest(compose(_ROTATED).workload)


class _Mode(Enum):
    fast = 1


@dataclass
class _WithEnum:
    mode: _Mode = _Mode.fast


@dataclass
class _WithValue:
    mode: int = 1


def test_digest_reads_enums_as_values_and_refuses_non_dataclasses() -> None:
    assert config_digest(_WithEnum()) == config_digest(_WithValue())
    assert config_digest(WorkloadConfig(optimizer=Optimizer.adam)) != config_digest(
        WorkloadConfig()
    )
    with pytest.raises(TypeError, match="dataclass instance"):
        config_digest({"lr": 0.1})
    with pytest.raises(TypeError, match="dataclass instance"):
        config_digest(WorkloadConfig)


def test_workload_label_compares_configs() -> None:
    preset = WorkloadConfig()
    assert workload_label("w", preset, WorkloadConfig()) == "w"
    changed = WorkloadConfig(lr=0.5)
    assert workload_label("w", preset, changed) == f"w+{config_digest(changed)}"


def test_run_names_carry_experiment_command_workload_policy_seed_and_time(
    tmp_path: Path,
) -> None:
    cfg = compose(["experiment=smoke", "experiment.seed=7", f"cluster.storage_path={tmp_path}"])
    when = calendar.timegm((2024, 5, 6, 7, 8, 9))
    assert run_name(cfg, "demo", "digits_permuted", when=when) == (
        "smoke-demo-digits_permuted-s7-20240506T070809"
    )
    assert run_name(cfg, "evaluate", "w+3f9a2c", "rigl", when=when) == (
        "smoke-evaluate-w+3f9a2c-rigl-s7-20240506T070809"
    )
    run_dir = new_run_dir(cfg, "train", "digits_permuted")
    assert run_dir.parent == tmp_path.resolve() and not run_dir.exists()
    assert run_dir.name.startswith("smoke-train-digits_permuted-dense-s7-")


@pytest.mark.parametrize(
    ("raised", "state"), [(None, "complete"), (RuntimeError("boom"), "failed"),
                          (KeyboardInterrupt(), "interrupted")],
)  # fmt: skip
def test_run_json_records_how_the_run_ended(
    tmp_path: Path, raised: BaseException | None, state: str
) -> None:
    import json

    from esper.conf import compose
    from esper.platform.runs import create_run, run_state

    run = tmp_path / "r"
    create_run(run, compose([]), "evaluate", "digits_permuted", "rigl")
    assert json.loads((run / "run.json").read_text())["state"] == "running"
    try:
        with run_state(run):
            if raised is not None:
                raise raised
    except BaseException as err:
        assert err is raised
    meta = json.loads((run / "run.json").read_text())
    assert meta["state"] == state and "finished" in meta
    assert (meta.get("error") == "RuntimeError: boom") == (state == "failed")
