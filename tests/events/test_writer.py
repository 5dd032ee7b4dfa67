"""The crash-safe Parquet writer: validation, parts, restarts, SIGKILL, lost-row detection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from esper.analysis import EventLog
from esper.events.schema import SCHEMA_VERSION
from esper.events.writer import EventWriter, EventWriterConfig, SchemaMismatchError
from tests.events._event_log_data import LAYERS, make_event, parts_of, write_run


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"trial_id": "a/b"}, "trial_id"),
        ({"trial_id": ""}, "trial_id"),
        ({"replica_id": -1}, "replica_id"),
        ({"table": "nope"}, "valid tables: events, metrics"),
        ({"flush_rows": 0}, "flush_rows"),
        ({"flush_seconds": 0.0}, "flush_seconds"),
    ],
)
def test_config_is_validated(tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    base: dict[str, Any] = {"run_dir": str(tmp_path), "trial_id": "t0", "replica_id": 0}
    with pytest.raises(ValueError, match=needle):
        EventWriterConfig(**{**base, **kwargs})


def test_config_pickles(tmp_path: Path) -> None:
    import pickle

    config = EventWriterConfig(str(tmp_path), "t0", 3, flush_rows=7)
    assert pickle.loads(pickle.dumps(config)) == config


def test_row_counts_preserved_through_many_parts(tmp_path: Path) -> None:
    config = EventWriterConfig(str(tmp_path), "t0", 0, flush_rows=97)
    n_rows = 0
    with EventWriter(config) as writer:
        for start in range(0, 3000, 130):
            writer.write(make_event(i) for i in range(start, start + 130))
            n_rows += 130
        table = pa.Table.from_pylist([make_event(i).to_row() for i in range(500)])
        writer.write_table(table)
        writer.write_table(table.to_batches()[0])
        n_rows += 500 + table.to_batches()[0].num_rows
    parts = parts_of(tmp_path)
    assert len(parts) > 20
    assert [p.name for p in parts] == [f"part-{i:06d}.parquet" for i in range(len(parts))]
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in parts) == n_rows
    log = EventLog.open(tmp_path)
    got = log.table()
    assert got.num_rows == n_rows
    assert sorted(got["seq"].to_pylist()) == list(range(n_rows))
    assert set(got["writer_id"].to_pylist()) == {writer.writer_id}
    assert got.schema.metadata[b"esper.schema_version"] == str(SCHEMA_VERSION).encode()
    gaps = log.gaps()
    assert gaps["missing"].tolist() == [0] and gaps["closed"].tolist() == [True]
    first = got.filter(pa.compute.equal(got["seq"], 4)).to_pylist()[0]
    assert first["indices"] == list(range(4)) and first["layer"] == LAYERS[1]


def test_durable_writer_leaves_parts_and_manifest_only(tmp_path: Path) -> None:
    config = EventWriterConfig(str(tmp_path), "t0", 0, flush_rows=10, durable=True)
    with EventWriter(config) as writer:
        writer.write(make_event(i) for i in range(25))
    directory = tmp_path / "events" / "trial=t0" / "replica=0"
    assert sorted(os.listdir(directory)) == sorted(
        [*(f"part-{i:06d}.parquet" for i in range(3)), f"_writer-{writer.writer_id}.json"]
    )
    assert EventLog.open(tmp_path).table().num_rows == 25


def test_restarted_writer_appends_parts(tmp_path: Path) -> None:
    config = EventWriterConfig(str(tmp_path), "t0", 0, flush_rows=10)
    with EventWriter(config) as writer:
        writer.write(make_event(i) for i in range(30))
    with EventWriter(config) as second:
        second.write(make_event(i) for i in range(15))
    assert [p.name for p in parts_of(tmp_path)] == [f"part-{i:06d}.parquet" for i in range(5)]
    gaps = EventLog.open(tmp_path).gaps()
    assert sorted(gaps["rows"]) == [15, 30] and gaps["missing"].sum() == 0


def test_flush_by_time(tmp_path: Path) -> None:
    writer = EventWriter(EventWriterConfig(str(tmp_path), "t0", 0, flush_seconds=0.05))
    writer.write([make_event(0)])
    assert parts_of(tmp_path) == [] and writer.buffered_rows == 1
    time.sleep(0.1)
    writer.write([make_event(1)])
    assert len(parts_of(tmp_path)) == 1 and writer.buffered_rows == 0
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        writer.write([make_event(2)])


def test_bad_rows_name_the_columns_and_buffer_nothing(tmp_path: Path) -> None:
    writer = EventWriter(EventWriterConfig(str(tmp_path), "t0", 0))
    row = make_event(0).to_row()
    bad = {k: v for k, v in row.items() if k != "layer"} | {"colour": "red"}
    with pytest.raises(
        SchemaMismatchError, match=r"missing columns: layer.*unknown columns: colour"
    ):
        writer.write([row, bad])
    with pytest.raises(SchemaMismatchError, match="assigned by the writer"):
        writer.write([row | {"seq": 3}])
    with pytest.raises(SchemaMismatchError, match="'count'"):
        writer.write([row, row | {"count": "many"}])
    with pytest.raises(SchemaMismatchError, match="missing columns: indices"):
        writer.write_table(pa.Table.from_pylist([row]).drop_columns(["indices"]))
    with pytest.raises(SchemaMismatchError, match="not a 'metrics' row"):
        EventWriter(EventWriterConfig(str(tmp_path), "t0", 0, table="metrics")).write(
            [make_event(0)]
        )
    assert writer.buffered_rows == 0
    writer.close()
    assert parts_of(tmp_path) == []


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from esper.events.writer import EventWriter, EventWriterConfig
    from esper.events.record import SurgicalEvent
    run = sys.argv[1]
    writer = EventWriter(EventWriterConfig(run, "t0", 0, flush_rows=400))
    rows = [SurgicalEvent("r", "t0", 0, "d", 0, i, i, "layers.0.weight", "prune", 1,
                          list(range(50))).to_row() for i in range(400)]
    print("ready", flush=True)
    while True:
        writer.write(rows)
    """
)


def test_sigkill_mid_write_leaves_only_readable_parts(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 20
        while len(parts_of(tmp_path)) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.013)  # land somewhere inside a later write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    parts = parts_of(tmp_path)
    assert len(parts) >= 5
    for part in parts:
        assert pq.ParquetFile(part).metadata.num_rows == 400
    log = EventLog.open(tmp_path)
    assert log.table().num_rows == 400 * len(parts)
    assert int(log.sql("SELECT count(*) AS n FROM events")["n"][0]) == 400 * len(parts)
    gaps = log.gaps()
    assert gaps["missing"].tolist() == [0] and gaps["closed"].tolist() == [False]


def test_temporary_files_are_never_read(tmp_path: Path) -> None:
    write_run(tmp_path)
    directory = tmp_path / "events" / "trial=t0" / "replica=0"
    good = parts_of(tmp_path)[0].read_bytes()
    (directory / ".part-000099.parquet.tmp").write_bytes(b"garbage, not parquet")
    (directory / ".part-000100.deadbeef.parquet.tmp").write_bytes(good[: len(good) // 2])
    (directory / "part-000101.parquet.tmp").write_bytes(good[: len(good) // 3])
    log = EventLog.open(tmp_path)
    assert log.table().num_rows == 240
    assert len(log.to_pandas(filters={"trial": "t0", "replica": 0})) == 60
    assert int(log.sql("SELECT count(*) AS n FROM events")["n"][0]) == 240
    assert all(p.name.startswith("part-") for p in log.parts())


def test_sequence_numbers_reveal_a_lost_part(tmp_path: Path) -> None:
    config = EventWriterConfig(str(tmp_path), "t0", 0, flush_rows=10)
    with EventWriter(config) as writer:
        writer.write(make_event(i) for i in range(50))
    parts = parts_of(tmp_path)
    parts[1].unlink()  # seq 10..19
    log = EventLog.open(tmp_path)
    gaps = log.gaps()
    row = gaps.iloc[0]
    assert row["writer_id"] == writer.writer_id
    assert (row["rows"], row["expected"], row["missing"]) == (40, 50, 10)
    assert row["missing_ranges"] == [(10, 19)]
    parts[-1].unlink()  # the last part: only the writer's manifest can tell
    row = log.gaps().iloc[0]
    assert (row["rows"], row["expected"], row["missing"]) == (30, 50, 20)
    assert row["missing_ranges"] == [(10, 19), (40, 49)]


def test_a_full_disk_is_an_error_naming_the_rows_and_nothing_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import esper.events.writer as writer_module
    from esper.errors import EventLogWriteError

    real = writer_module.atomic_write
    full = {"on": True}

    def atomic_write(*args: Any, **kwargs: Any) -> None:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "atomic_write", atomic_write)
    w = EventWriter(EventWriterConfig(str(tmp_path), "t0", 0, flush_rows=1000))
    w.write([make_event(i) for i in range(3)])
    with pytest.raises(EventLogWriteError, match=r"could not write 3 events rows.*No space left"):
        w.flush()
    assert w.buffered_rows == 3 and not parts_of(tmp_path)  # kept, not dropped
    full["on"] = False  # space again: the same rows are written, once
    w.write([make_event(3)])
    w.close()
    seqs = EventLog.open(tmp_path).sql("SELECT list(seq ORDER BY seq) AS s FROM events")["s"]
    assert seqs[0].tolist() == [0, 1, 2, 3]
