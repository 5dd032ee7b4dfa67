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


def _demo(args: argparse.Namespace) -> int:
    from esper.conf import chosen_option, compose, compose_dictconfig, to_yaml
    from esper.demo import run_demo

    cfg = compose(args.overrides)
    yaml = to_yaml(compose_dictconfig(args.overrides))
    run_demo(cfg, chosen_option("workload", args.overrides), yaml, Console())
    return 0


def _bench_perf(args: argparse.Namespace) -> int:
    from esper.bench.perf import run_perf
    from esper.registry import UnknownNameError

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        run_perf(only, args.json, Console())
    except UnknownNameError as err:
        print(f"esper: {err}", file=sys.stderr)
        return 2
    return 0


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
        help="train a dense network prequentially on a drifting stream and report each drift",
        epilog=_EPILOG,
    )
    demo.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser("bench", help="run benchmarks and record them as JSON")
    bench_sub = bench.add_subparsers(dest="suite", metavar="SUITE", required=True)
    perf = bench_sub.add_parser(
        "perf", help="overhead of sensing and masking against plain steps and other libraries"
    )
    perf.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    perf.add_argument("--only", default="", metavar="NAME,...", help="run only these benchmarks")
    perf.set_defaults(func=_bench_perf)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``esper`` command; returns the exit status."""
    from esper.conf import ConfigError

    args = _parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except ConfigError as err:
        print(f"esper: config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("esper: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
