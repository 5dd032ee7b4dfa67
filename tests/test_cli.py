"""The ``esper`` command, run as a user would: subprocesses with tiny budgets (one smoke run
per entry point); refusals of bad input run :func:`esper.cli.main` in this process (the same
code path without a fresh interpreter's five seconds of imports)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esper.cli import _parser, main
from esper.conf import options


def esper(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esper", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """Every subcommand path of ``parser`` (``("config", "show")``), read from the parser."""
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((name,))
                found.extend((name, *path) for path in _subcommands(sub))
    return found


def esper_here(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``esper ARGS`` run by :func:`main` in this process, its output captured."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code if isinstance(exit_.code, int) else 2
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["esper", *args], code, out.out, out.err)


SUBCOMMANDS = _subcommands(_parser())
TOP_LEVEL = [path[0] for path in SUBCOMMANDS if len(path) == 1]


def test_subcommands_are_read_from_the_parser() -> None:
    assert {"config", "demo", "train-policy", "evaluate", "events", "bench"} <= set(TOP_LEVEL)
    assert {("config", "show"), ("config", "groups"), ("bench", "perf")} <= set(SUBCOMMANDS)


def test_help_lists_the_subcommands() -> None:
    out = esper("--help")
    assert out.returncode == 0, out.stderr
    for command in TOP_LEVEL:
        assert re.search(rf"^\s+{re.escape(command)}\s", out.stdout, re.MULTILINE), command


@pytest.mark.parametrize("path", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: esper {' '.join(path)}")
    assert "-h, --help" in out


def test_config_show_prints_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    out = esper_here(capsys, "config", "show", "workload=digits_permuted")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["workload"]["dataset"]["name"] == "digits"
    assert cfg["workload"]["drifts"] == [{"name": "permute_inputs", "params": {}}]
    assert set(cfg) == {"workload", "policy", "reward", "search", "cluster", "experiment"}


def test_config_show_unknown_workload_exits_2_naming_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = esper_here(capsys, "config", "show", "workload=__nope__")
    assert out.returncode == 2
    assert "__nope__" in out.stderr
    for name in options("workload"):
        assert name in out.stderr
    assert out.stdout == ""


def test_config_groups_lists_every_group(capsys: pytest.CaptureFixture[str]) -> None:
    out = esper_here(capsys, "config", "groups")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].startswith("workload: acrobot_permuted, cartpole_drifting")


def test_prequential_smoke_writes_a_run(tmp_path: Path) -> None:
    out = esper(
        "prequential",
        "experiment=smoke",
        "workload.schedule.params.task_length=20",
        f"cluster.storage_path={tmp_path}",
    )
    assert out.returncode == 0, out.stderr
    assert "Online (prequential) performance per task" in out.stdout
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("smoke-prequential-digits_permuted+")  # task length overridden
    summary = json.loads((run / "prequential.json").read_text())
    assert run.name.startswith(f"smoke-prequential-{summary['workload']}-s0-")
    assert summary["steps"] == 60 and [t["task_index"] for t in summary["tasks"]] == [0, 1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["experiment"]["name"] == "smoke"


@pytest.mark.parametrize("command", ["prequential", "demo", "run", "sweep"])
def test_bad_config_exits_2_and_writes_nothing(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = esper_here(capsys, command, "workload.lr=fast", f"cluster.storage_path={tmp_path}")
    assert out.returncode == 2
    assert "workload.lr" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_sweep_refuses_bad_search_settings_before_starting_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = esper_here(
        capsys,
        "sweep",
        "search=pbt",
        "search.quantile_fraction=0.9",
        f"cluster.storage_path={tmp_path}",
    )
    assert out.returncode == 2 and "search.quantile_fraction" in out.stderr
    out = esper_here(capsys, "sweep", "--resume", str(tmp_path / "nope"))
    assert out.returncode == 2 and "not a sweep's run directory" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_perf_unknown_name_exits_2_naming_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = esper_here(capsys, "bench", "perf", "--only", "warp_speed")
    assert out.returncode == 2
    assert "unknown benchmark 'warp_speed'" in out.stderr and "masked_step_vs_dense" in out.stderr


def test_bench_perf_writes_json_with_machine_and_results(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    out = esper(
        "bench",
        "perf",
        "--only",
        "masked_step_vs_dense,semi_structured_speedup",
        "--json",
        str(path),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert {"cpu", "cpu_count", "torch", "python"} <= set(data["machine"])
    result = data["results"]["masked_step_vs_dense"]
    assert {"ours_s", "anchor", "anchor_s", "ratio", "goal", "direction"} <= set(result)
    assert result["ratio"] == pytest.approx(result["ours_s"] / result["anchor_s"])
    assert result["goal"] == 1.10 and result["direction"] == "<="
    if "semi_structured_speedup" not in data["results"]:
        assert "CUDA" in data["skipped"]["semi_structured_speedup"]


_TINY = [
    "workload.num_tasks=1",
    "policy.surgery_interval=10",
    "workload.schedule.params.task_length=60",
]


def test_evaluate_every_baseline_at_90_percent_sparsity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "baselines.json"
    store = f"cluster.storage_path={tmp_path / 'runs'}"
    out = esper_here(
        capsys, "evaluate", "--baselines", "--surgeries", "2", *_TINY, store, "--json", str(path)
    )
    assert out.returncode == 0, out.stderr
    assert "Baselines" in out.stdout and "Mean reward components" in out.stdout
    reports = {r["policy"]: r for r in json.loads(path.read_text())["reports"]}
    assert set(reports) == {"dense", "static", "gmp", "set", "rigl", "cbp", "redo", "random",
                            "fgsf", "periodic_reset", "shrink_perturb", "swr",
                            "rigl_elastic"}  # fmt: skip
    for name, report in reports.items():
        assert report["surgeries"] == 2
        assert set(report["components"]) == {"accuracy", "flops", "oscillation", "gsnr", "spike"}
        if name not in ("dense", "gmp", "periodic_reset"):  # GMP starts dense and prunes on
            assert report["density"] == pytest.approx(0.1, abs=0.002)  # its schedule
    assert reports["dense"]["density"] == reports["periodic_reset"]["density"] == 1.0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 13
    for run in runs:
        assert {"run.json", "config.yaml", "report.json", "metrics"} <= {
            p.name for p in run.iterdir()
        }
        assert list((run / "metrics" / "trial=t0" / "replica=0").glob("part-*.parquet"))
        assert json.loads((run / "run.json").read_text())["state"] == "complete"


def test_train_policy_then_evaluate_its_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "policy.pt"
    store = f"cluster.storage_path={tmp_path / 'runs'}"
    train = esper(
        "train-policy",
        store,
        "policy.training.surgeries=4",
        "policy.training.rollout=2",
        *_TINY,
        "--out",
        str(ckpt),
    )
    assert train.returncode == 0, train.stderr
    assert ckpt.exists() and (tmp_path / "history.json").exists()
    path = tmp_path / "eval.json"
    evaluate = esper(
        "evaluate", f"checkpoint={ckpt}", "--surgeries", "2", *_TINY, store, "--json", str(path)
    )
    assert evaluate.returncode == 0, evaluate.stderr
    (report,) = json.loads(path.read_text())["reports"]
    assert report["policy"] == "emrakul" and report["density"] == pytest.approx(0.1, abs=0.002)
    eval_run, train_run = sorted((tmp_path / "runs").iterdir())
    # _TINY overrides the preset: both runs carry the same digest of the composed workload.
    label = json.loads((train_run / "run.json").read_text())["workload"]
    assert re.fullmatch(r"digits_permuted\+[0-9a-f]{6}", label)
    assert train_run.name.startswith(f"demo-train-{label}-emrakul-s0-")
    assert eval_run.name.startswith(f"demo-evaluate-{label}-emrakul-s0-")
    for run in (train_run, eval_run):
        assert list((run / "events" / "trial=t0" / "replica=0").glob("part-*.parquet"))
        assert list((run / "metrics" / "trial=t0" / "replica=0").glob("part-*.parquet"))

    # The analysis commands work on the runs these commands wrote.
    query = "SELECT action, sum(count) AS n FROM events GROUP BY action ORDER BY action"
    events = esper_here(capsys, "events", str(eval_run), "--sql", query, "--format", "csv")
    assert events.returncode == 0, events.stderr
    assert events.stdout.splitlines()[0] == "action,n" and "prune," in events.stdout
    strategies = esper_here(
        capsys, "strategies", str(train_run), "--json", str(tmp_path / "s.json")
    )
    assert strategies.returncode == 0, strategies.stderr
    assert set(json.loads((tmp_path / "s.json").read_text())["detectors"]) >= {
        "flipflop",
        "lazarus",
    }
    compare = esper_here(capsys, "compare", str(train_run), str(eval_run), "--by", "command")
    assert compare.returncode == 0, compare.stderr
    assert "evaluate" in compare.stdout and "train-policy" in compare.stdout
    report = esper_here(
        capsys, "report", str(train_run), str(eval_run), "--out", str(tmp_path / "r.html")
    )
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_train_and_evaluate_refuse_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = esper_here(capsys, "evaluate", f"checkpoint={tmp_path / 'missing.pt'}")
    assert missing.returncode == 2
    bad = esper_here(capsys, "train-policy", "policy.training.learner=sarsa")
    assert bad.returncode == 2 and "valid learners: mappo, qmix" in bad.stderr
    assert esper_here(capsys, "evaluate", "policy.name=oracle").returncode == 2


def test_gmp_prunes_a_dense_organism_down_to_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gmp.json"
    store = f"cluster.storage_path={tmp_path / 'runs'}"
    schedule = ["policy=gmp", "policy.density=0.05", "policy.params.frequency=10",
                "policy.params.steps=2"]  # fmt: skip
    out = esper_here(capsys, "evaluate", *_TINY, *schedule, store, "--json", str(path))
    assert out.returncode == 0, out.stderr
    (report,) = json.loads(path.read_text())["reports"]
    assert report["density"] == pytest.approx(0.05, abs=0.002)  # from 1.0, not from 0.05


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--json", "{dir}"],
        ["evaluate", "--baselines", "--json", "{file}/r.json"],
        ["train-policy", "--out", "{dir}"],
        ["bench", "perf", "--json", "{dir}"],
        ["events", "{dir}", "--format", "csv", "--out", "{dir}"],
    ],
)
def test_an_unwritable_output_is_refused_before_any_work(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = [a.format(dir=tmp_path, file=blocker) for a in argv]
    if argv[0] in ("evaluate", "train-policy"):
        args.append(f"cluster.storage_path={tmp_path / 'runs'}")
    before = sorted(tmp_path.rglob("*"))
    assert main(args) == 2
    assert "cannot write" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def test_dense_with_a_sparse_budget_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"cluster.storage_path={tmp_path / 'runs'}"
    assert main(["evaluate", "policy=dense", "policy.density=0.1", storage]) == 2
    assert "use policy=static" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [b"not a checkpoint", bytes(range(256)) * 4])
def test_a_damaged_checkpoint_is_refused_before_any_work(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    storage = f"cluster.storage_path={tmp_path / 'runs'}"
    assert main(["evaluate", f"checkpoint={bad}", storage]) == 2
    err = capsys.readouterr().err
    assert "is not a safe Esper checkpoint" in err and "weights_only" not in err
    assert not (tmp_path / "runs").exists()


_AGENT = [
    "workload=cartpole_drifting",
    "workload.host.params.hidden=[32,32]",
    "workload.batch_size=16",
    "workload.schedule.params.task_length=60",
    "workload.dataset.params.exploration_steps=100",
    "policy.surgery_interval=20",
    "workload.organism.spike_window=2",
]


def test_evaluate_runs_an_agent_workload_and_its_log_reads_like_any_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "runs"
    path = tmp_path / "agent.json"
    out = esper_here(capsys, "evaluate", *_AGENT, "policy=rigl", "policy.density=0.2",
                     "--surgeries", "4", "policy.params.delta_t=20",
                     f"cluster.storage_path={storage}", "--json", str(path))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (report,) = json.loads(path.read_text())["reports"]
    assert 0.0 <= report["online_accuracy"] <= 1.0 and report["surgeries"] == 4
    (run,) = storage.iterdir()
    query = "SELECT DISTINCT drift, action FROM events WHERE action = 'regrow'"
    events = esper_here(capsys, "events", str(run), "--sql", query)
    assert events.returncode == 0 and "physics+physics" in events.stdout, events.stdout
    html = tmp_path / "agent.html"
    report = esper_here(capsys, "report", str(run), "--out", str(html))  # no special case
    assert report.returncode == 0, report.stderr[-2000:]
    assert html.stat().st_size > 10_000


def test_leaderboard_columns_name_searched_keys_apart() -> None:
    from esper.commands.sweep import _short

    keys = ["reward.beta", "reward.gamma", "workload.scalpel.mechanism.params.beta"]
    assert [_short(k, keys) for k in keys] == ["reward.beta", "gamma", "params.beta"]
