"""The instance's SQLite files kept open (nexus_assets.instance.KeptOpenEngines): what another
reader sees, the UI's watcher, the synchronous level, forks and eviction."""

import os
import shutil
import time

import pytest
from dagster import DagsterInstance
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage

# the classes through the module, at call time: test_instance reloads nexus_assets.instance, and a name
# imported here before that would be the old class (isinstance then fails on an equal-named class)
from nexus_assets import instance as project_instance
from nexus_assets_tests.defs.conftest import REPO

RUN = "0a1b2c3d-0000-4000-8000-000000000001"


def _log(message: str, run_id: str = RUN) -> EventLogEntry:
    return EventLogEntry(error_info=None, level=20, user_message=message, run_id=run_id, timestamp=time.time())


def _messages(storage, run_id: str = RUN) -> list[str]:
    return [r.event_log_entry.user_message for r in storage.get_records_for_run(run_id).records]


def test_events_written_through_a_kept_open_connection_are_seen_by_a_stock_reader(tmp_path):
    storage = project_instance.NexusSqliteStorage(str(tmp_path))
    events = storage.event_log_storage
    assert isinstance(events, project_instance.BatchingSqliteEventLogStorage)
    for i in range(5):
        events.store_event(_log(f"m{i}"))
    # Still open in this process: a reader with its own connection (as another process) sees every commit.
    stock = SqliteEventLogStorage(str(tmp_path / "history" / "runs"))
    assert _messages(stock) == [f"m{i}" for i in range(5)]
    assert os.path.exists(events.path_for_shard(RUN) + "-wal")  # open: the commits live in the WAL
    storage.dispose()
    assert not os.path.exists(events.path_for_shard(RUN) + "-wal")  # closed: checkpointed into the file
    assert _messages(SqliteEventLogStorage(str(tmp_path / "history" / "runs"))) == [f"m{i}" for i in range(5)]


def test_a_write_touches_the_run_file_the_ui_watches_and_a_read_does_not(tmp_path):
    events = project_instance.NexusSqliteStorage(str(tmp_path)).event_log_storage
    events.store_event(_log("first"))
    path = events.path_for_shard(RUN)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    _messages(events)  # a read: the watcher re-reads on every touch, so a read must not touch (no loop)
    assert os.stat(path).st_mtime_ns == 1_000_000_000
    events.store_event(_log("second"))
    assert os.stat(path).st_mtime_ns > 1_000_000_000
    events.dispose()


def test_the_run_storage_keeps_its_file_open_and_stays_readable(tmp_path):
    instance = DagsterInstance.from_config(str(_home(tmp_path)))
    assert type(instance.run_storage).__name__ == "NexusSqliteRunStorage"
    engines = []
    real = project_instance.KeptOpenEngines.get

    def counting(self, conn_string):
        engine = real(self, conn_string)
        engines.append(id(engine))
        return engine

    try:
        project_instance.KeptOpenEngines.get = counting
        for _ in range(3):
            instance.run_storage.get_runs()
    finally:
        project_instance.KeptOpenEngines.get = real
    assert len(engines) == 3 and len(set(engines)) == 1  # one engine, reused
    instance.dispose()


def _home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.mark.parametrize(("value", "level"), [(None, 1), ("normal", 1), ("FULL", 2)])
def test_the_synchronous_level_comes_from_the_environment(tmp_path, monkeypatch, value, level):
    if value is None:
        monkeypatch.delenv(project_instance.SQLITE_SYNCHRONOUS_ENV, raising=False)
    else:
        monkeypatch.setenv(project_instance.SQLITE_SYNCHRONOUS_ENV, value)
    engines = project_instance.KeptOpenEngines(2)
    engine = engines.get(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == level  # 1 NORMAL, 2 FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engines.dispose()


def test_an_unknown_synchronous_level_is_refused(monkeypatch):
    monkeypatch.setenv(project_instance.SQLITE_SYNCHRONOUS_ENV, "OFF")  # could corrupt on power loss
    with pytest.raises(ValueError, match="NORMAL"):
        project_instance.sqlite_synchronous()


def test_the_least_recently_used_file_is_closed_beyond_the_limit(tmp_path):
    engines = project_instance.KeptOpenEngines(2)
    a, b = (engines.get(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db"))
    assert engines.get(f"sqlite:///{tmp_path / 'a.db'}") is a  # reused, and now the most recent
    engines.get(f"sqlite:///{tmp_path / 'c.db'}")
    assert engines.get(f"sqlite:///{tmp_path / 'a.db'}") is a
    assert engines.get(f"sqlite:///{tmp_path / 'b.db'}") is not b  # b was evicted (closed), then reopened
    engines.dispose()


def test_a_forked_child_never_uses_its_parents_connections(tmp_path, monkeypatch):
    engines = project_instance.KeptOpenEngines(2)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    parent = engines.get(url)
    with parent.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    closed = []
    monkeypatch.setattr(type(parent), "dispose", lambda self, close=True: closed.append(close))
    monkeypatch.setattr(project_instance.os, "getpid", lambda: os.getppid() + 10_000_000)  # as in a child
    child = engines.get(url)
    assert child is not parent
    assert closed == [False]  # the parent's pool dropped without closing its connections


def test_the_uis_live_watch_of_a_run_sees_each_write_of_a_kept_open_writer(tmp_path):
    """``dagster dev`` follows a running run by watching its ``<run_id>.db`` (watchdog); the writer
    (the run's process) keeps that file open, so only the touch after each write wakes the watch."""
    import threading

    writer = project_instance.NexusSqliteStorage(str(tmp_path)).event_log_storage
    writer.store_event(_log("before"))
    ui = SqliteEventLogStorage(str(tmp_path / "history" / "runs"))
    seen, arrived = [], threading.Event()

    def callback(entry, _cursor):
        seen.append(entry.user_message)
        if entry.user_message == "after":
            arrived.set()

    ui.watch(RUN, None, callback)
    try:
        time.sleep(0.2)  # the observer's inotify watch in place
        writer.store_event(_log("after"))
        assert arrived.wait(10), f"the watch saw {seen}"
    finally:
        ui.end_watch(RUN, callback)
        ui.dispose()
        writer.dispose()


def _describe(path) -> dict:
    """A SQLite file's schema, journal mode, alembic revision and the data migrations marked done."""
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {
            "schema": sorted(connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")),
            "journal": connection.execute("PRAGMA journal_mode").fetchone(),
            "alembic": sorted(connection.execute("SELECT * FROM alembic_version")) if "alembic_version" in tables else None,
            "migrations": (sorted(r[0] for r in connection.execute("SELECT name FROM secondary_indexes"))
                           if "secondary_indexes" in tables else None),
        }
    finally:
        connection.close()


@pytest.mark.slow  # over 1 s: the whole suite runs it, the fast subset does not
def test_a_new_instance_has_the_files_a_stock_instance_has(tmp_path):
    """Created in WAL mode from the start (no rollback-journal fsyncs), the same schema, revisions
    and data migrations as stock storage gives a new instance."""
    from dagster._core.storage.sqlite_storage import DagsterSqliteStorage

    ours, stock = project_instance.NexusSqliteStorage(str(tmp_path / "ours")), DagsterSqliteStorage(str(tmp_path / "stock"))
    ours.event_log_storage.store_event(_log("x"))
    stock.event_log_storage.store_event(_log("x"))
    ours.dispose()
    stock.dispose()
    files = sorted(p.relative_to(tmp_path / "stock") for p in (tmp_path / "stock").rglob("*.db"))
    assert files == sorted(p.relative_to(tmp_path / "ours") for p in (tmp_path / "ours").rglob("*.db"))
    assert len(files) == 4  # runs, schedules, the event-log index and the run's shard
    for name in files:
        assert _describe(tmp_path / "ours" / name) == _describe(tmp_path / "stock" / name), name
    assert _describe(tmp_path / "ours" / "history" / "runs" / "index.db")["migrations"]  # reindexed, as stock
