"""The project's Dagster instance: event bookkeeping that scales with partitions.

A range run over N asset partitions makes Dagster store about 2N asset events (a planned event
and a materialization per partition). Stock SQLite storage writes each one alone: a new engine
and connection, a transaction on the run's shard and another on the index shard, so a one-year
backfill spent most of its time in SQLite commits (measured with Dagster 1.13.27 on 2 cores: seven
chained assets x 365 days, one range run, took 56.7 s against 2.1 s for the same writes without
Dagster). Three things change that, and all three are on by default for every process that
opens the project's instance (``dagster.yaml`` names this module, so the CLI, ``dagster dev``, its
daemon and every run worker import it):

- ``DAGSTER_EVENT_BATCH_SIZE`` (default here 1000): Dagster hands the materializations of one
  step output, and the planned events of one run, to ``store_event_batch`` in batches;
- ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1``: one planned event per asset and run,
  holding the run's partition subset, instead of one per partition. Dagster's own trade-off: the
  partitions of a run that fails are then shown as *missing*, not *failed*, in the partition
  grid. An operator sees the failure on the run (the Runs page, the asset's latest run, the
  run's failure event and its step error) and in the ``qml_contract``/freshness checks; the
  README's operations section says so;
- :class:`NexusInstance` (``instance_class`` in ``dagster.yaml``): Dagster's default instance whose
  default SQLite storage (:class:`NexusSqliteStorage`, used whenever ``dagster.yaml`` configures
  no ``storage``) keeps its event log with :class:`BatchingSqliteEventLogStorage`, SQLite
  event-log storage whose ``store_event_batch``
  writes a whole batch in one transaction per shard (stock SQLite loops over single writes;
  stock PostgreSQL already batches, so a PostgreSQL instance needs only the two variables).

The SQLite files are also opened once per process, not once per write (:class:`KeptOpenEngines`).
Stock storage opens and closes a connection for every event and every run update; closing the
last connection of a WAL database checkpoints it (two fsyncs), so each of the ~200 writes of a
range run waited ~18 ms on a shared disk whatever its size. Kept open, a commit costs what it
writes; with ``PRAGMA synchronous=NORMAL`` (the default here, :data:`SQLITE_SYNCHRONOUS_ENV`) a
commit no longer fsyncs either. The durability trade-off (SQLite's own for WAL + NORMAL): a
crashed *process* loses nothing; a power cut or kernel crash can lose the last commits (the
database stays consistent), so the newest events of a run may be missing after one, and its
partitions then show as not materialised, though their Parquet files are there (those are synced
before their materialisation is recorded): re-running the range rewrites the same bytes. Set
``NEXUS_SQLITE_SYNCHRONOUS=FULL`` for stock durability (every commit fsync'd; still no
connection churn). The UI follows a live run by watching its ``<run_id>.db`` file, which stock
storage modified at every checkpoint-on-close; a kept-open connection writes only the ``-wal``
file, so the run's file is touched after each transaction that wrote (no fsync), as before.

The instance also keeps two runs from writing one instrument at once: it tags every run with the
instruments its partitions cover (:func:`instrument_tags`) and gives the run queue a limit of one
run per such tag (:meth:`NexusInstance.get_concurrency_config`), on SQLite as on PostgreSQL
(``deploy/postgres/dagster.yaml`` keeps this class).

Both variables are defaults: a value already set in the environment wins (``0`` turns batching
off). The storage class overrides private methods of Dagster's SQLite storage, so it is pinned to
the Dagster minor version it was written and tested against (:data:`SUPPORTED_DAGSTER`); on any
other version it warns once and stores events one by one, exactly as stock Dagster does.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dagster
import sqlalchemy as db
import yaml
from dagster import DagsterInstance, MultiPartitionsDefinition
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
from dagster._core.instance.config import ConcurrencyConfig
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster._serdes import ConfigurableClassData

__all__ = [
    "BatchingSqliteEventLogStorage",
    "KeptOpenEngines",
    "NexusInstance",
    "NexusSqliteRunStorage",
    "NexusSqliteStorage",
    "EVENT_DEFAULTS",
    "INSTRUMENT_RUN_LIMIT",
    "INSTRUMENT_TAG_PREFIX",
    "SQLITE_SYNCHRONOUS_ENV",
    "SUPPORTED_DAGSTER",
    "batch_writes_supported",
    "instrument_tags",
    "sqlite_synchronous",
]

SUPPORTED_DAGSTER = "1.13."
"""The Dagster minor version whose SQLite storage internals the batch writer was tested against."""

EVENT_DEFAULTS = {
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
}
"""Environment defaults for every process that loads the project's instance or code."""

for _name, _value in EVENT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)


def batch_writes_supported(version: str = dagster.__version__) -> bool:
    return version.startswith(SUPPORTED_DAGSTER)


SQLITE_SYNCHRONOUS_ENV = "NEXUS_SQLITE_SYNCHRONOUS"
"""``NORMAL`` (default: a commit does not fsync; see the module docstring) or ``FULL`` (stock: it does)."""


def sqlite_synchronous() -> str:
    """The ``PRAGMA synchronous`` level for the instance's SQLite files, from :data:`SQLITE_SYNCHRONOUS_ENV`."""
    value = os.environ.get(SQLITE_SYNCHRONOUS_ENV, "").strip().upper() or "NORMAL"
    if value not in ("NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"{SQLITE_SYNCHRONOUS_ENV}={value!r}: use NORMAL (the default) or FULL (every commit fsync'd)")
    return value


class KeptOpenEngines:
    """SQLAlchemy engines over SQLite files, kept open for the life of the process.

    One engine (a pool holding one idle connection) per file, the ``limit`` most recently used
    (an evicted one is closed, which checkpoints it as stock storage does at every write). Every
    new connection gets WAL journaling (what stock storage gives each file right after creating
    its tables, so new files skip the rollback journal's fsyncs) and the configured
    ``synchronous`` level. A forked child drops its parent's engines without closing them: a
    connection must never be shared across processes.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def get(self, conn_string: str) -> db.engine.Engine:
        with self._lock:
            if self._pid != os.getpid():
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._pid = os.getpid()
            engine = self._engines.pop(conn_string, None)
            if engine is None:
                engine = db.create_engine(conn_string, poolclass=db.pool.QueuePool, pool_size=1, max_overflow=16,
                                          connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False})
                db.event.listen(engine, "connect", _sqlite_pragmas(sqlite_synchronous()))
            self._engines[conn_string] = engine
            while len(self._engines) > self._limit:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    def dispose(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for engine in self._engines.values():
                    engine.dispose()
            self._engines.clear()


def _sqlite_pragmas(synchronous: str):
    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()
    return on_connect


def _new_file_in_wal_mode(path: str) -> bool:
    """Create an empty SQLite file in WAL mode at ``path`` unless one exists (True when created).

    Stock storage creates its tables in rollback-journal mode and switches to WAL right after:
    the same end state, but every statement of the schema then fsyncs a journal (~1.5 s for a new
    instance on a shared disk). Created in WAL mode first, the same schema costs ~0.2 s."""
    if os.path.exists(path):
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
    return True


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """SQLite event-log storage that writes a batch of events in one transaction per shard.

    Same database files, schema and location as the stock storage (``<instance>/history/runs``),
    so an existing instance switches to it, and back, freely.
    """

    _warned = False
    KEPT_OPEN = 9
    """Shard files kept open per process: the index and the last few runs' (a run writes one)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._kept_open = KeptOpenEngines(self.KEPT_OPEN)
        index = os.path.join(os.path.abspath(base_dir), f"{INDEX_SHARD_NAME}.db")
        fresh = batch_writes_supported() and _new_file_in_wal_mode(index)
        super().__init__(base_dir, inst_data=inst_data)  # finds the index file, so does not set it up...
        if fresh:  # ...which is done here, as the stock constructor does it
            self._initdb(self._kept_open.get(self.conn_string_for_shard(INDEX_SHARD_NAME)), for_index_shard=True)
            self._initialized_dbs.add(INDEX_SHARD_NAME)
            self.reindex_events()
            self.reindex_assets()

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.engine.Connection]:
        # The stock ``_connect`` (a new engine and connection per call, closed after) with an engine
        # kept open per shard; on another Dagster version, the stock one.
        if not batch_writes_supported():
            with super()._connect(shard) as conn:
                yield conn
            return
        with self._db_lock:
            engine = self._kept_open.get(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                before = conn.connection.dbapi_connection.total_changes
                with conn.begin():
                    yield conn
                wrote = conn.connection.dbapi_connection.total_changes != before
        if wrote and shard != INDEX_SHARD_NAME:
            _touch(self.path_for_shard(shard))  # wakes the UI's watcher of this run (see the module docstring)

    def dispose(self) -> None:
        super().dispose()
        self._kept_open.dispose()

    def store_event_batch(self, events: Sequence) -> None:
        if not events:
            return
        if not batch_writes_supported() or len({event.run_id for event in events}) != 1:
            if not batch_writes_supported() and not BatchingSqliteEventLogStorage._warned:
                BatchingSqliteEventLogStorage._warned = True
                warnings.warn(f"nexus_assets.instance: Dagster {dagster.__version__} is not {SUPPORTED_DAGSTER}x; "
                              "event batches are stored one event at a time (stock behaviour)", stacklevel=2)
            return super().store_event_batch(events)
        # The rows of the stock per-event INSERTs (``prepare_insert_event`` is ``insert().values(**row)``),
        # written as one executemany per shard: one compiled statement, not one per event.
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:  # one transaction on the run's shard
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        indexed = [(event, row) for event, row in zip(events, rows)
                   if event.is_dagster_event and event.dagster_event_type in ASSET_EVENTS]
        if indexed:  # mirrored into the index shard, with tags and asset rows: one transaction
            with self.index_transaction() as conn:
                insert = SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id, sort_by_parameter_order=True)
                ids = [row[0] for row in conn.execute(insert, [row for _, row in indexed]).all()]
                if len(ids) != len(indexed) or any(event_id is None for event_id in ids):
                    raise dagster.DagsterInvariantViolationError("Cannot store asset event tags for null event id.")
                self._store_asset_event_tags(conn, [event for event, _ in indexed], ids)
                for event, event_id in _last_per_asset(indexed, ids):
                    self._store_asset_event(conn, event, event_id)
        for event, row in zip(events, rows):  # rare in a batch: as the stock store_event does
            if not event.is_dagster_event or (event.dagster_event_type not in ASSET_CHECK_EVENTS
                                              and event.dagster_event_type not in EVENT_TYPE_TO_PIPELINE_RUN_STATUS):
                continue
            statement = SqlEventLogStorageTable.insert().values(**row)
            if event.dagster_event_type in ASSET_CHECK_EVENTS:
                with self.index_connection() as conn, db_result(conn, statement) as result:
                    event_id = result.inserted_primary_key[0]
                self.store_asset_check_event(event, event_id)
            if event.dagster_event_type in EVENT_TYPE_TO_PIPELINE_RUN_STATUS:
                with self.index_connection() as conn:
                    conn.execute(statement)


class NexusSqliteRunStorage(SqliteRunStorage):
    """Dagster's SQLite run storage with its file kept open (:class:`KeptOpenEngines`) instead of
    a new engine and connection per call; on another Dagster version, the stock behaviour."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None):
        self._kept_open = KeptOpenEngines(1)
        super().__init__(conn_string, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)  # the stock one names its own class

    @contextmanager
    def connect(self) -> Iterator[db.engine.Connection]:
        if not batch_writes_supported():
            with super().connect() as conn:
                yield conn
            return
        with self._kept_open.get(self._conn_string).connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._kept_open.dispose()


class NexusSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (runs, event log, schedules under one base dir), with the
    batching event log. The base dir is the instance's own, whether ``$DAGSTER_HOME`` or the
    temporary folder ``dagster dev``/``dagster asset materialize`` use without it."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # The stock constructor with two of its three storages replaced (not built and then
        # replaced: each opens and checks its database).
        self.base_dir = base_dir
        if batch_writes_supported():
            _new_file_in_wal_mode(os.path.join(_runs_directory(base_dir), "runs.db"))
            _new_file_in_wal_mode(os.path.join(_schedule_directory(base_dir), "schedules.db"))
        self._run_storage = NexusSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = BatchingSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)  # the stock one names its own class

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(__name__, BatchingSqliteEventLogStorage.__name__,
                                     yaml.dump({"base_dir": _event_logs_directory(self.base_dir)}, default_flow_style=False))

    @property
    def run_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(__name__, NexusSqliteRunStorage.__name__,
                                     yaml.dump({"base_dir": _runs_directory(self.base_dir)}, default_flow_style=False))


TMP_DAGSTER_HOME_PREFIX = ".tmp_dagster_home_"
"""Dagster's prefix for the temporary instance folders of its CLI (``dagster._cli.utils``, not
imported: that module costs every process 0.15 s; a test holds the two equal)."""

PROJECT_HOME = ".dagster_home"
"""The project's instance folder, beside ``dagster.yaml``: where every command keeps runs and events."""


def project_home(base_dir: str) -> str:
    """The folder an instance configured by the project's ``dagster.yaml`` stores everything in.

    ``$DAGSTER_HOME`` when it is set (``base_dir`` is then that folder). Without it, ``dagster dev``
    and ``dagster asset materialize`` make a temporary instance folder in the working directory
    (named with Dagster's ``.tmp_dagster_home_`` prefix) and remove it when they exit; that is
    replaced by ``./.dagster_home`` next to it, so the runs, events and schedules of every command
    started from the project folder land in the one instance the UI shows (and ``nexus-assets demo``
    uses the same folder).
    """
    path = os.path.abspath(base_dir)
    if os.path.basename(path).startswith(TMP_DAGSTER_HOME_PREFIX):
        path = os.path.join(os.path.dirname(path), PROJECT_HOME)
        os.makedirs(path, exist_ok=True)
    return path


class NexusInstance(DagsterInstance):
    """Dagster's instance with the project's defaults: its storage (:class:`NexusSqliteStorage`; a
    ``storage:`` block in ``dagster.yaml``, e.g. PostgreSQL's, replaces it), its folder
    (:func:`project_home`: ``./.dagster_home`` instead of a temporary one), and one writer per
    instrument in the run queue (:func:`instrument_tags`, :meth:`get_concurrency_config`)."""

    def create_run(self, **kwargs):
        # Every run the daemons, the UI and the CLI create passes here (a re-execution copies its
        # parent's tags), so every queued run names the instruments it writes.
        kwargs["tags"] = {**(kwargs.get("tags") or {}),
                          **instrument_tags(kwargs.get("tags"), kwargs["asset_graph"], kwargs.get("asset_selection"))}
        return super().create_run(**kwargs)

    def create_run_for_job(self, job_def, *args, **kwargs):
        # In-process runs (``materialize``, ``execute_in_process``) carry the same tags.
        tags = kwargs.get("tags") or {}
        kwargs["tags"] = {**tags, **instrument_tags(tags, job_def.asset_layer.asset_graph, kwargs.get("asset_selection"))}
        return super().create_run_for_job(job_def, *args, **kwargs)

    def get_concurrency_config(self):
        """The configured run queue, plus a limit of :data:`INSTRUMENT_RUN_LIMIT` run on every
        instrument tag any run has carried: two queued runs that write one instrument never run
        at once, whatever the catalog (the daemon counts limits by exact tag key, so the keys are
        listed from the run storage, one query per queue pass)."""
        config = super().get_concurrency_config()
        queue = config.run_queue_config
        if queue is None:
            return config
        limited = {limit["key"] for limit in queue.tag_concurrency_limits}
        extra = [{"key": key, "limit": INSTRUMENT_RUN_LIMIT} for key in sorted(self.get_run_tag_keys())
                 if key.startswith(INSTRUMENT_TAG_PREFIX) and key not in limited]
        if not extra:
            return config
        return ConcurrencyConfig(pool_config=config.pool_config,
                                 run_queue_config=queue._replace(tag_concurrency_limits=[*queue.tag_concurrency_limits, *extra]))

    @classmethod
    def config_schema(cls):
        return {}

    @staticmethod
    def config_defaults(base_dir: str):
        base_dir = project_home(base_dir)
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(__name__, NexusSqliteStorage.__name__,
                                                    yaml.dump({"base_dir": base_dir}, default_flow_style=False))
        return defaults


INSTRUMENT_TAG_PREFIX = "nexus/instrument/"
"""A run that writes catalog asset ``A`` carries the tag ``nexus/instrument/A: write``."""

INSTRUMENT_RUN_LIMIT = 1
"""Runs writing one instrument at once, in the run queue (the QueuedRunCoordinator's daemon)."""


def instrument_tags(tags: Mapping[str, str] | None, asset_graph, asset_selection=None) -> dict[str, str]:
    """The instrument tags of a run with Dagster's partition ``tags`` (one key, or a range).

    A range ``"A|d1" ... "C|d2"`` of the asset x date grid holds every key between them in the
    grid's order (asset first), so every instrument from ``A`` to ``C`` in the order of the grid's
    ``asset`` dimension, read from the run's assets (``asset_graph``); a run without partition
    tags gets none."""
    tags = tags or {}
    single = tags.get(PARTITION_NAME_TAG)
    first, last = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if single is not None:
        first = last = single
    if first is None or last is None or "|" not in first or "|" not in last:
        return {}
    start, end = first.split("|", 1)[0], last.split("|", 1)[0]
    order = _instrument_order(asset_graph, asset_selection)
    if start in order and end in order and order.index(start) <= order.index(end):
        names = order[order.index(start):order.index(end) + 1]
    else:  # not this project's grid: the two named instruments at least
        names = sorted({start, end})
    return {f"{INSTRUMENT_TAG_PREFIX}{name}": "write" for name in names}


def _instrument_order(asset_graph, asset_selection) -> list[str]:
    from nexus_assets.defs.partitions import ASSET_DIM  # the grid's dimension names live there

    keys = sorted(asset_selection or asset_graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    for key in keys:
        partitions = asset_graph.get(key).partitions_def
        if isinstance(partitions, MultiPartitionsDefinition) and ASSET_DIM in partitions.partition_dimension_names:
            return list(partitions.get_partitions_def_for_dimension(ASSET_DIM).get_partition_keys())
    return []


def _last_per_asset(indexed, ids):
    """The events whose asset-row update survives the batch. Each ``_store_asset_event`` overwrites
    the asset's row (last materialization, last run, timestamp) with that event's values, so of
    several events of one asset and one type in a batch only the last one's update remains; it
    alone is applied. An asset with events of several types keeps every update, in order."""
    kinds: dict = {}
    for event, _ in indexed:
        kinds.setdefault(event.dagster_event.asset_key, set()).add(event.dagster_event_type)
    last = {}
    for position, (event, _) in enumerate(indexed):
        last[event.dagster_event.asset_key] = position
    return [(event, event_id) for position, ((event, _), event_id) in enumerate(zip(indexed, ids))
            if event.dagster_event.asset_key is None or len(kinds[event.dagster_event.asset_key]) > 1
            or last[event.dagster_event.asset_key] == position]
