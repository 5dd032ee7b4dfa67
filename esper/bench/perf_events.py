"""Performance benchmarks of the event log (writer and DuckDB queries).

- ``event_write_rows_per_s``: rows per second through :meth:`EventWriter.write_table` (the
  replica's path: it gathers a surgery's events as Arrow columns), ``indices`` lists empty,
  Parquet parts of 64k rows written and renamed into place. Goal: ≥ 1,000,000 rows/s.
- ``event_write_vs_mlflow``: seconds per event of our writer (``write`` of the same
  :class:`SurgicalEvent` objects, flushed) ÷ one ``mlflow.log_metric`` per event into a local
  ``sqlite:///`` store. Recorded, not a target.
- ``event_query_10m_s``: DuckDB group-by (layer, action) over 10M event rows in Parquet parts.
  Goal: ≤ 1 s.

Each benchmark works in its own temporary directory, removed afterwards. Importing this module
registers the benchmarks in :data:`~esper.bench.harness.PERF`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from esper.bench.harness import PERF, BenchResult, SkipBenchmark
from esper.events.record import ACTIONS, SurgicalEvent
from esper.events.schema import EVENTS
from esper.events.writer import BOOKKEEPING_COLUMNS, EventWriter, EventWriterConfig

__all__ = [
    "event_query_10m_s",
    "event_write_rows_per_s",
    "event_write_vs_mlflow",
    "synthetic_events",
]

_LAYERS = tuple(f"layers.{i}.weight" for i in range(8))


@contextmanager
def _tempdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def synthetic_events(rows: int, seed: int = 0, surgery_offset: int = 0) -> pa.Table:
    """``rows`` plausible event rows (without the writer's columns), ``indices`` empty.

    Strings repeat (run, trial, drift, 8 layers, the actions), measurements are random floats
    (the worst case for compression), built vectorised with numpy.
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {}
    layer_codes = rng.integers(0, len(_LAYERS), rows).astype(np.int32)
    # Mostly prune and regrow, the other actions now and then.
    p = np.full(len(ACTIONS), 0.1 / (len(ACTIONS) - 2))
    p[ACTIONS.index("prune")] = p[ACTIONS.index("regrow")] = 0.45
    action_codes = rng.choice(len(ACTIONS), rows, p=p).astype(np.int32)
    steps = np.arange(surgery_offset, surgery_offset + rows, dtype=np.int64) // len(_LAYERS)
    for field in EVENTS:
        name = field.name
        if name in BOOKKEEPING_COLUMNS:
            continue
        if name == "layer":
            columns[name] = pa.DictionaryArray.from_arrays(
                pa.array(layer_codes), pa.array(_LAYERS)
            ).cast(pa.string())
        elif name == "action":
            columns[name] = pa.DictionaryArray.from_arrays(
                pa.array(action_codes), pa.array(ACTIONS)
            ).cast(pa.string())
        elif name == "indices":
            columns[name] = pa.ListArray.from_arrays(
                pa.array(np.zeros(rows + 1, dtype=np.int32)), pa.array([], pa.uint32())
            )
        elif pa.types.is_string(field.type):
            value = {"run_id": "bench", "trial_id": "t0", "drift": "permute"}.get(name, "x")
            columns[name] = pa.repeat(pa.scalar(value, pa.string()), rows)
        elif name in ("surgery_step", "sgd_step", "policy_version"):
            columns[name] = pa.array(steps * (100 if name == "sgd_step" else 1), field.type)
        elif name == "count":
            columns[name] = pa.array(rng.integers(0, 5000, rows), field.type)
        elif pa.types.is_integer(field.type):
            columns[name] = pa.array(np.zeros(rows, dtype=np.int64), pa.int64()).cast(field.type)
        elif pa.types.is_boolean(field.type):  # the heat bit: a burst now and then
            columns[name] = pa.array(rng.random(rows) < 0.05)
        else:
            columns[name] = pa.array(rng.random(rows))
    names = [f.name for f in EVENTS if f.name not in BOOKKEEPING_COLUMNS]
    return pa.table([columns[n] for n in names], names=names)


@PERF.register("event_write_rows_per_s")
def event_write_rows_per_s() -> BenchResult:
    """Rows/s of ``write_table`` in 4096-row batches, 64k-row parts (``indices`` empty)."""
    rows, batch, repeats = 1 << 20, 4096, 3
    data = synthetic_events(rows)
    batches = [data.slice(i, batch) for i in range(0, rows, batch)]
    times = []
    with _tempdir("esper-bench-write-") as root:
        for r in range(repeats + 1):
            config = EventWriterConfig(str(root / f"r{r}"), "t0", 0, flush_rows=1 << 16)
            start = time.perf_counter()
            with EventWriter(config) as writer:
                for b in batches:
                    writer.write_table(b)
            elapsed = time.perf_counter() - start
            if r:  # the first run warms up
                times.append(elapsed)
        parts = len(list((root / "r1").glob("events/*/*/part-*.parquet")))
    seconds = statistics.median(times)
    rate = rows / seconds
    return BenchResult(
        ours_s=seconds * 1_000_000 / rows,
        anchor="1,000,000 rows/s (goal); ours_s = seconds per 1M rows",
        anchor_s=1.0,
        ratio=rate,
        goal=1_000_000.0,
        direction=">=",
        notes=(
            f"{rows} rows in {batch}-row write_table batches, {parts} parts of 65536 rows, "
            f"snappy, median of {repeats}"
        ),
    )


def _events(n: int) -> list[SurgicalEvent]:
    data = synthetic_events(n).to_pylist()
    return [SurgicalEvent(**row) for row in data]


@PERF.register("event_write_vs_mlflow")
def event_write_vs_mlflow() -> BenchResult:
    """Per-event seconds: our writer ÷ ``mlflow.log_metric`` (local SQLite store)."""
    try:
        import mlflow
    except ImportError as err:  # pragma: no cover - mlflow is a dependency
        raise SkipBenchmark(f"mlflow is not importable: {err}") from err
    n_mlflow, n_ours = 200, 200
    events = _events(max(n_mlflow, n_ours))
    with _tempdir("esper-bench-mlflow-") as root:
        # Ours: write() the same events and flush them into one part, as a replica would.
        ours = []
        for r in range(6):
            config = EventWriterConfig(str(root / "run"), "t0", r, flush_rows=1 << 16)
            start = time.perf_counter()
            with EventWriter(config) as writer:
                writer.write(events[:n_ours])
            ours.append((time.perf_counter() - start) / n_ours)
        ours_s = statistics.median(ours[1:])

        previous_uri = mlflow.get_tracking_uri()
        previous_env = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
            experiment = mlflow.set_experiment("esper-bench")
            with mlflow.start_run(experiment_id=experiment.experiment_id):
                mlflow.log_metric("reward", 0.0, step=0)  # warm-up
                start = time.perf_counter()
                for i, event in enumerate(events[:n_mlflow]):
                    mlflow.log_metric("reward", event.reward, step=i + 1)
                anchor_s = (time.perf_counter() - start) / n_mlflow
        finally:
            mlflow.set_tracking_uri(previous_uri)
            if previous_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env
    return BenchResult(
        ours_s=ours_s,
        anchor="mlflow.log_metric per event, local sqlite:/// store",
        anchor_s=anchor_s,
        ratio=ours_s / anchor_s,
        goal=1.0,
        direction="<=",
        notes=(
            f"seconds per event; ours: write() of {n_ours} SurgicalEvents (all columns) + "
            f"flush to one Parquet part, median of 5; mlflow: {n_mlflow} log_metric calls "
            f"(one metric per event); record only"
        ),
    )


@PERF.register("event_query_10m_s")
def event_query_10m_s() -> BenchResult:
    """Seconds of a DuckDB group-by (layer, action) over 10M event rows."""
    from esper.analysis.event_log import EventLog

    total, chunk, replicas = 10_000_000, 1_000_000, 4
    query = (
        "SELECT layer, action, count(*) AS n, sum(count) AS weights, avg(density_after) AS d "
        "FROM events GROUP BY layer, action"
    )
    with _tempdir("esper-bench-query-") as root:
        writers = [
            EventWriter(EventWriterConfig(str(root), "t0", r, flush_rows=1 << 20))
            for r in range(replicas)
        ]
        for i, offset in enumerate(range(0, total, chunk)):
            writers[i % replicas].write_table(
                synthetic_events(min(chunk, total - offset), seed=i, surgery_offset=offset)
            )
        for writer in writers:
            writer.close()
        log = EventLog.open(root)
        try:
            rows = int(log.sql("SELECT count(*) AS n FROM events")["n"][0])
            if rows != total:
                raise RuntimeError(f"wrote {total} rows, read back {rows}")
            times = []
            for r in range(6):
                start = time.perf_counter()
                result = log.sql(query)
                if r:
                    times.append(time.perf_counter() - start)
            groups = len(result)
            parts = len(log.parts())
        finally:
            log.close()
    seconds = statistics.median(times)
    return BenchResult(
        ours_s=seconds,
        anchor="1 s (goal)",
        anchor_s=1.0,
        ratio=seconds,
        goal=1.0,
        direction="<=",
        notes=(
            f"{total} rows in {parts} parts over {replicas} replicas, "
            f"{groups} groups, DuckDB {_duckdb_threads()} threads, median of 5"
        ),
    )


def _duckdb_threads() -> str:
    import duckdb

    row = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()
    return str(row[0]) if row else "?"
