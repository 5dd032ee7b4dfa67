"""The ``esper`` command.

Subcommands take Hydra overrides (``KEY=VALUE``, ``GROUP=OPTION``) after their own flags.
A bad configuration exits with status 2 and a message naming the key and the allowed values.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from esper.bench.cli import add_bench_parser
from esper.files import add_force_flag, output_problem

__all__ = ["main"]

_EPILOG = "Overrides are Hydra syntax, e.g. workload=mnist1d_permuted experiment.seed=3."


def _config_show(args: argparse.Namespace) -> int:
    from esper.conf import compose, compose_dictconfig, to_yaml

    compose(args.overrides)  # validates registry names and parameters
    sys.stdout.write(to_yaml(compose_dictconfig(args.overrides)))
    return 0


def _config_groups(args: argparse.Namespace) -> int:
    from esper.conf import GROUPS, options

    for group in GROUPS:
        print(f"{group}: {', '.join(options(group))}")
    return 0


def _prequential(args: argparse.Namespace) -> int:
    from esper.commands.naming import chosen_workload
    from esper.commands.prequential import run_prequential
    from esper.conf import compose, compose_dictconfig, to_yaml

    cfg = compose(args.overrides)
    yaml = to_yaml(compose_dictconfig(args.overrides))
    run_prequential(cfg, chosen_workload(cfg, args.overrides), yaml, Console())
    return 0


def _wide_console() -> Console:
    """A console for tables with many columns: wide enough when writing to a file or pipe."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _demo(args: argparse.Namespace) -> int:
    from esper.commands.sweep import demo_command
    from esper.platform.ray_runtime import quiet_ray

    quiet_ray(args.verbose)
    demo_command(args.overrides, args.address, _wide_console())
    return 0


def _run(args: argparse.Namespace) -> int:
    from esper.commands.sweep import run_command
    from esper.platform.ray_runtime import quiet_ray

    quiet_ray(args.verbose)
    run_command(_with_policy(args.overrides, "emrakul"), args.address, _wide_console())
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from esper.commands.sweep import replay_command, sweep_command
    from esper.conf import ConfigError
    from esper.platform.ray_runtime import quiet_ray

    quiet_ray(args.verbose)
    if args.replay is not None or args.trial is not None:
        if args.replay is None or args.trial is None or args.resume is not None:
            raise ConfigError("--replay RUN goes with --trial TRIAL (and without --resume)")
        replay_command(args.replay, args.trial, args.overrides, args.address, _wide_console())
        return 0
    # With --resume, overrides are passed on so that sweep_command refuses them by name.
    overrides = args.overrides if args.resume else _with_policy(args.overrides, "emrakul")
    sweep_command(overrides, args.address, args.resume, _wide_console(), trust=args.trust)
    return 0


def _with_policy(overrides: Sequence[str], policy: str) -> list[str]:
    """``overrides`` with ``policy=POLICY`` first unless they choose a policy themselves."""
    chosen = any(o.startswith("policy=") for o in overrides)
    return list(overrides) if chosen else [f"policy={policy}", *overrides]


def _split_checkpoint(overrides: Sequence[str]) -> tuple[Path | None, list[str]]:
    """Take ``checkpoint=PATH`` out of the overrides (it is not a config key)."""
    checkpoint: Path | None = None
    rest: list[str] = []
    for override in overrides:
        if override.startswith("checkpoint="):
            checkpoint = Path(override.split("=", 1)[1])
        else:
            rest.append(override)
    return checkpoint, rest


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from esper.commands.evaluate import evaluate_command
    from esper.conf import ConfigError, compose
    from esper.files import atomic_write_text

    checkpoint, overrides = _split_checkpoint(args.overrides)
    if checkpoint is not None and not checkpoint.exists():
        raise ConfigError(f"checkpoint={checkpoint} does not exist")
    if checkpoint is not None:  # a damaged or foreign file is refused before any work
        from esper.policies.checkpoints import load_policy

        load_policy(checkpoint)
    if checkpoint is not None:
        overrides = _with_policy(overrides, "emrakul")  # the organism at Emrakul's budget
    cfg = compose(overrides)
    reports = evaluate_command(
        cfg, overrides, checkpoint, args.baselines, args.surgeries, Console()
    )
    if args.json is not None:
        payload = {"reports": [r.to_json() for r in reports], "overrides": overrides}
        atomic_write_text(args.json, json.dumps(payload, indent=2))
    diverged = [r.policy for r in reports if r.diverged]
    if diverged:
        print(f"esper: diverged (run marked failed): {', '.join(diverged)}", file=sys.stderr)
        return 1
    return 0


def _train_policy(args: argparse.Namespace) -> int:
    from esper.commands.naming import chosen_workload
    from esper.commands.train import train_command
    from esper.conf import ConfigError, compose

    overrides = _with_policy(args.overrides, "emrakul")
    cfg = compose(overrides)
    if cfg.policy.name != "emrakul":
        raise ConfigError(f"train-policy trains 'emrakul', not policy.name={cfg.policy.name!r}")
    train_command(cfg, chosen_workload(cfg, overrides), args.out, Console())
    return 0


def _export_policy(args: argparse.Namespace) -> int:
    from esper.commands.export import export_command

    export_command(args.run, args.trial, args.out, Console())
    return 0


def _add_analysis_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``events``, ``strategies``, ``compare`` and ``report``: they read run directories."""
    from esper.analysis.compare_cli import add_compare_parser, add_report_parser
    from esper.analysis.events_cli import add_events_parser
    from esper.analysis.strategies_cli import add_strategies_parser

    add_events_parser(sub)
    add_strategies_parser(sub)
    add_compare_parser(sub)
    add_report_parser(sub)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper",
        description="Esper: living neural networks on drifting data, operated on by Emrakul.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = sub.add_parser("config", help="inspect the composed configuration", epilog=_EPILOG)
    config_sub = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = config_sub.add_parser("show", help="print the composed config as YAML", epilog=_EPILOG)
    show.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    show.set_defaults(func=_config_show)
    groups = config_sub.add_parser("groups", help="list the config groups and their options")
    groups.set_defaults(func=_config_groups)

    demo = sub.add_parser(
        "demo",
        help="a small PBT sweep of Emrakul over reward weights on this machine (the main job)",
        epilog=_EPILOG,
    )
    demo.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    demo.set_defaults(func=_demo)

    run = sub.add_parser(
        "run", help="train one population member on Ray actors (no Tune)", epilog=_EPILOG
    )
    run.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    run.set_defaults(func=_run)

    sweep = sub.add_parser(
        "sweep",
        help="search a population with Ray Tune (search=pbt|pb2|optuna|random|grid)",
        epilog=_EPILOG,
    )
    sweep.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    sweep.add_argument(
        "--resume", type=Path, default=None, metavar="RUN", help="continue an interrupted sweep"
    )
    sweep.add_argument(
        "--trust",
        action="store_true",
        help="resume a sweep whose Tune state you did not sign (resuming unpickles it: it can "
        "run its writer's code)",
    )
    sweep.add_argument(
        "--replay",
        type=Path,
        default=None,
        metavar="RUN",
        help="re-run one member's PBT schedule of the sweep RUN from scratch (with --trial)",
    )
    sweep.add_argument(
        "--trial", default=None, metavar="TRIAL", help="the member to replay (e.g. 620d2_00003)"
    )
    sweep.set_defaults(func=_sweep)
    for command in (demo, run, sweep):
        command.add_argument(
            "--verbose",
            action="store_true",
            help="show Ray's, Tune's and MLflow's own banners, INFO lines and warnings",
        )
        command.add_argument(
            "--address", default=None, metavar="ADDRESS",
            help="join this Ray cluster (auto, or HOST:PORT) instead of starting one here",
        )  # fmt: skip

    prequential = sub.add_parser(
        "prequential",
        help="train a dense network prequentially on a drifting stream and report each drift",
        epilog=_EPILOG,
    )
    prequential.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    prequential.set_defaults(func=_prequential)

    train = sub.add_parser(
        "train-policy",
        help="train Emrakul (MAPPO or QMIX, policy.training.learner) and save a checkpoint",
        epilog=_EPILOG,
    )
    train.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    train.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="checkpoint path (default: run dir)"
    )
    add_force_flag(train)
    train.set_defaults(func=_train_policy)

    evaluate = sub.add_parser(
        "evaluate",
        help="run a policy (policy=NAME or checkpoint=PATH) on a stream and report it",
        epilog=_EPILOG,
    )
    evaluate.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    evaluate.add_argument(
        "--baselines", action="store_true", help="run every heuristic baseline and compare"
    )
    evaluate.add_argument(
        "--surgeries", type=int, default=None, help="surgeries to run (default: whole stream)"
    )
    evaluate.add_argument("--json", type=Path, default=None, metavar="PATH", help="write here")
    add_force_flag(evaluate)
    evaluate.set_defaults(func=_evaluate)

    export = sub.add_parser(
        "export-policy",
        help="save a sweep member's policy (the best by fitness, or --trial) as a checkpoint",
    )
    export.add_argument("run", type=Path, metavar="RUN", help="the sweep's (or run's) directory")
    export.add_argument(
        "--trial", default=None, metavar="TRIAL", help="the member (default: the best by fitness)"
    )
    export.add_argument("--out", type=Path, required=True, metavar="PATH", help="checkpoint path")
    add_force_flag(export)
    export.set_defaults(func=_export_policy)

    _add_analysis_parsers(sub)

    add_bench_parser(sub)
    return parser


_OUTPUT_FLAGS = ("json", "out")
"""Flags naming a file a command writes; each is checked by :func:`main` before it runs (an
existing file is replaced only with ``--force``, :func:`esper.files.add_force_flag`)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``esper`` command; returns the exit status."""
    from esper import allocator
    from esper.conf import ConfigError
    from esper.errors import CheckpointError, RunError

    parser = _parser()
    # Overrides may stand between flags (``evaluate a=1 --json p b=2``): argparse leaves the
    # later ones unrecognised, so they are gathered here.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    replace = bool(getattr(args, "force", False))
    for flag in _OUTPUT_FLAGS:  # before any work: a run must not fail at its last step
        path = getattr(args, flag, None)
        if isinstance(path, Path) and (problem := output_problem(path, replace)) is not None:
            print(f"esper: cannot write --{flag} {path}: {problem}", file=sys.stderr)
            return 2
    try:  # ESPER_KEEP_FREED_MEMORY=1: readings reuse their buffers' pages
        allocator.from_environment()
    except ValueError as err:
        print(f"esper: {err}", file=sys.stderr)
        return 2
    try:
        status: int = args.func(args)
    except ConfigError as err:
        print(f"esper: config error: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"esper: {err}", file=sys.stderr)
        return 2
    except RunError as err:  # the run started and could not go on; run.json says failed
        print(f"esper: run failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("esper: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
