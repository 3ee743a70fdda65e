"""The project's Dagster instance: event bookkeeping that scales with partitions.

A range run over N asset partitions makes Dagster store about 2N asset events (a planned event
and a materialization per partition). Stock SQLite storage writes each one alone: a new engine
and connection, a transaction on the run's shard and another on the index shard, so a one-year
backfill spent most of its time in SQLite commits (``../shared/spec/dagster-notes.md``,
"Per-partition overhead"). Three things change that, and all three are on by default for every
process that opens the project's instance (``dagster.yaml`` names this module, so the CLI,
``dagster dev``, its daemon and every run worker import it):

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

Both variables are defaults: a value already set in the environment wins (``0`` turns batching
off). The storage class overrides private methods of Dagster's SQLite storage, so it is pinned to
the Dagster minor version it was written and tested against (:data:`SUPPORTED_DAGSTER`); on any
other version it warns once and stores events one by one, exactly as stock Dagster does.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import dagster
import yaml
from dagster import DagsterInstance
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData

__all__ = [
    "BatchingSqliteEventLogStorage",
    "NexusInstance",
    "NexusSqliteStorage",
    "EVENT_DEFAULTS",
    "SUPPORTED_DAGSTER",
    "batch_writes_supported",
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


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """SQLite event-log storage that writes a batch of events in one transaction per shard.

    Same database files, schema and location as the stock storage (``<instance>/history/runs``),
    so an existing instance switches to it, and back, freely.
    """

    _warned = False

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


class NexusSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (runs, event log, schedules under one base dir), with the
    batching event log. The base dir is the instance's own, whether ``$DAGSTER_HOME`` or the
    temporary folder ``dagster dev``/``dagster asset materialize`` use without it."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = BatchingSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)  # the stock one names its own class

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(__name__, BatchingSqliteEventLogStorage.__name__,
                                     yaml.dump({"base_dir": _event_logs_directory(self.base_dir)}, default_flow_style=False))


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
    """Dagster's instance with two defaults of the project: its storage (:class:`NexusSqliteStorage`)
    and its folder (:func:`project_home`: ``./.dagster_home`` instead of a temporary one)."""

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
