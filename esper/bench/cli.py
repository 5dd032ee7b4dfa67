"""The ``esper bench`` subcommands: ``perf``, ``quality``, ``held-out``, ``primacy``,
``strategies`` and ``double-loss``.

Each handler imports its benchmark when it runs (they load Ray and torch), records results as
JSON with the machine, and exits 2 on bad input before any work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from esper.files import add_force_flag

__all__ = ["add_bench_parser"]


def _refused_as_exit_2(run: Callable[[], object]) -> int:
    """Run a benchmark; a ``ValueError`` (bad input, found before any work) exits 2 with its
    message."""
    try:
        run()
    except ValueError as err:
        print(f"esper: {err}", file=sys.stderr)
        return 2
    return 0


def _primacy(args: argparse.Namespace) -> int:
    from esper.bench.primacy import run_primacy

    return _refused_as_exit_2(
        lambda: run_primacy(args.preset, args.json, args.checkpoint, args.address, args.num_cpus)
    )


def _held_out(args: argparse.Namespace) -> int:
    from esper.bench.held_out import run_held_out

    return _refused_as_exit_2(
        lambda: run_held_out(args.preset, args.checkpoint, args.json, args.address, args.num_cpus)
    )


def _strategies(args: argparse.Namespace) -> int:
    from esper.bench.strategies import run_strategies

    checkpoints: dict[str, Path] = {}
    for given in args.checkpoint:
        label, sep, path = given.partition("=")
        if not sep or not label or not path:
            print(f"esper: --checkpoint {given!r} must be LABEL=PATH", file=sys.stderr)
            return 2
        checkpoints[label] = Path(path)
    out = args.json
    if out is None:  # each preset its own file, so one run never replaces another's results
        suffix = "" if args.preset == "small" else f"-{args.preset}"
        out = Path("benchmarks/results") / f"strategies{suffix}.json"
    return _refused_as_exit_2(
        lambda: run_strategies(
            args.preset, checkpoints, out, Path(args.storage), args.address, args.num_cpus
        )
    )


def _double_loss(args: argparse.Namespace) -> int:
    from esper.bench.double_loss import run_double_loss

    try:
        run_double_loss(
            args.preset, args.json, args.address, args.num_cpus, strategy=args.strategy,
            overrides=tuple(args.override),
        )  # fmt: skip
    except KeyError as err:
        print(f"esper: {err.args[0]}", file=sys.stderr)
        return 2
    return 0


def _quality(args: argparse.Namespace) -> int:
    from esper.bench.quality import run_quality

    try:
        run_quality(args.preset, args.json, args.readme, args.address, args.num_cpus,
                    args.storage, checkpoint=args.checkpoint,
                    train_overrides=args.train_override)  # fmt: skip
    except (KeyError, ValueError) as err:
        print(f"esper: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    return 0


def _perf(args: argparse.Namespace) -> int:
    from esper.bench.perf import run_perf
    from esper.registry import UnknownNameError

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        run_perf(only, args.json, Console())
    except UnknownNameError as err:
        print(f"esper: {err}", file=sys.stderr)
        return 2
    return 0


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and its suites to the ``esper`` command's subparsers."""
    bench = sub.add_parser("bench", help="run benchmarks and record them as JSON")
    bench_sub = bench.add_subparsers(dest="suite", metavar="SUITE", required=True)
    perf = bench_sub.add_parser(
        "perf", help="overhead of sensing and masking against plain steps and other libraries"
    )
    perf.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    perf.add_argument("--only", default="", metavar="NAME,...", help="run only these benchmarks")
    add_force_flag(perf)
    perf.set_defaults(func=_perf)
    quality = bench_sub.add_parser(
        "quality", help="train Emrakul, score every surgeon on the drift suite with intervals"
    )
    quality.add_argument(
        "--preset",
        default="small",
        choices=[
            "small",
            "learning",
            "learning_long",
            "learning_sweep",
            "elastic",
            "anchors",
            "standard",
            "standard_part",
            "full",
        ],
        help="small: every baseline, anchor and ablation (≈ 60 min on 2 cores); learning: "
        "does Emrakul learn (3 training runs, retrained blind ablations; ≈ 60 min); "
        "learning_long: its run 0 trained 4× as long (≈ 35 min); learning_sweep: its run 0 "
        "trained by a PBT sweep on the platform, 20,352 surgeries (--num-cpus 8); elastic: an "
        "elastic budget against RigL and scripted breathing at equal mean FLOPs (≈ 30 min); "
        "anchors: a --checkpoint against RigL, Shrink & Perturb, SWR, UPGD, L2 Init and layer "
        "norm + weight decay (≈ 27 min); standard: a --checkpoint on UPGD's input-permuted MNIST "
        "protocol on MNIST-1D (200 tasks × 5,000 steps at batch 1; a cluster, --address); "
        "standard_part: its first 10 tasks, 1 seed (≈ 20 min); full: a cluster or GPU machine",
    )
    quality.add_argument(
        "--json",
        type=Path,
        default=Path("benchmarks/results/quality.json"),
        metavar="PATH",
        help="write the results here (and PATH-plasticity.png)",
    )
    quality.add_argument(
        "--readme",
        type=Path,
        default=None,
        metavar="PATH",
        help="replace the table between the quality markers of this file",
    )
    quality.add_argument("--address", default=None, help="join this Ray cluster")
    quality.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray")
    quality.add_argument("--storage", default="runs", help="where checkpoint candidates go")
    quality.add_argument(
        "--checkpoint", type=Path, default=None, metavar="PATH",
        help="evaluate this Emrakul policy instead of training one (presets without ablations "
        "and with one training run), e.g. benchmarks/results/quality-learning-emrakul.pt",
    )  # fmt: skip
    quality.add_argument(
        "--train-override", action="append", default=[], metavar="KEY=VALUE",
        help="a config override appended to every in-process Emrakul training and its "
        "organisms (repeatable), e.g. policy.params.specialist_log_std=-1.5; recorded in the JSON",
    )  # fmt: skip
    add_force_flag(quality)
    quality.set_defaults(func=_quality)
    held_out = _experiment_parser(
        bench_sub, "held-out", "score a trained Emrakul on streams and hosts the suite never "
        "used", "about 20 min", "held-out.json", "PATH.md",
    )  # fmt: skip
    held_out.add_argument(
        "--checkpoint", type=Path, required=True, metavar="PATH",
        help="Emrakul's policy, e.g. benchmarks/results/quality-emrakul.pt",
    )  # fmt: skip
    held_out.set_defaults(func=_held_out)
    primacy = _experiment_parser(
        bench_sub, "primacy", "an agent misled first: which surgeon restores its plasticity (RL)",
        "about 20 min", "primacy.json", "PATH.md, PATH-curves.png",
    )  # fmt: skip
    primacy.add_argument(
        "--checkpoint", type=Path, default=Path("benchmarks/results/quality-emrakul.pt"),
        metavar="PATH", help="Emrakul's policy (default: the quality benchmark's)",
    )  # fmt: skip
    primacy.set_defaults(func=_primacy)
    strategies = _experiment_parser(
        bench_sub, "strategies", "which of the seed's strategies trained Emrakuls show, how "
        "often, and whether they help", "about 5 min", "strategies.json",
        "PATH-breathing.png, PATH-lazarus.png",
        more=(("heated", "small under Hard Concrete with sampling checkpoints, so their heat "
               "bursts happen and act"),),
    )  # fmt: skip
    strategies.add_argument(
        "--checkpoint", action="append", default=[], metavar="LABEL=PATH",
        help="an Emrakul policy and its label in the report (repeat for several)",
    )  # fmt: skip
    strategies.add_argument("--storage", default="runs", help="where the recorded runs go")
    strategies.set_defaults(func=_strategies, json=None)  # by preset: strategies[-PRESET].json
    double = _experiment_parser(
        bench_sub, "double-loss", "weights and data pruned together: does synchronized "
        "retention help?", "about 2 min", "double-loss.json", "PATH.md, PATH-tail.png",
    )  # fmt: skip
    double.add_argument(
        "--strategy", default=None, metavar="RULE",
        help="the buffers' selection rule (default: the preset's, reservoir)",
    )  # fmt: skip
    double.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="a config override for every run, e.g. workload.memory.retention.serve_fraction=0.1",
    )  # fmt: skip
    double.set_defaults(func=_double_loss)


def _experiment_parser(
    bench_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    small: str,
    result: str,
    also: str,
    more: tuple[tuple[str, str], ...] = (),
) -> argparse.ArgumentParser:
    """A ``bench`` experiment's parser: ``--preset small|tiny`` (and the presets ``more``
    names, with what each is), ``--json``, the Ray flags and ``--force``."""
    parser: argparse.ArgumentParser = bench_sub.add_parser(name, help=help)
    presets = ", ".join([f"small: {small} on 2 cores", "tiny: a smoke run",
                         *(f"{k}: {v}" for k, v in more)])  # fmt: skip
    parser.add_argument("--preset", default="small", choices=["small", "tiny", *dict(more)],
                        help=presets)  # fmt: skip
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results") / result, metavar="PATH",
        help=f"write the results here (and {also})",
    )  # fmt: skip
    parser.add_argument("--address", default=None, help="join this Ray cluster")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray")
    add_force_flag(parser)
    return parser
