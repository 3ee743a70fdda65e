"""Per-partition materialization metadata in O(1) per partition.

``context.add_asset_metadata(metadata, partition_key=k)`` lists the run's whole partition range
to check ``k`` and copies the step's whole metadata map, on every call: O(N) per call, O(N^2)
per run (8 ms a call at 365 keys, 14 ms at 1,460, measured with Dagster 1.13.27). A
step here knows its facts for every partition at once, so :func:`attach_partition_metadata`
checks the keys once against ``context.partition_keys`` and adds them all in one update of the
step's metadata accumulator: what ``add_asset_metadata`` would have stored, key for key.

The accumulator is private to Dagster, so the fast path is taken only on the Dagster minor
version it was tested against (``nexus_assets.instance.SUPPORTED_DAGSTER``); elsewhere, or if
its shape is not the expected one, the public call is made per partition.

It works from an asset's body (an asset execution context) and from an IO manager's
``handle_output`` (an output context): there, what the manager learnt about each partition (the
bytes of its files) reaches that partition's materialization, whereas ``add_output_metadata``
would give every partition of a range run the run's totals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import AssetKey, DagsterInvariantViolationError, OutputContext

from nexus_assets.instance import batch_writes_supported

__all__ = ["attach_partition_metadata"]


def _step_context(context):
    """The step execution context behind an asset/op context or an IO manager's output context."""
    if isinstance(context, OutputContext):
        return context.step_context
    op_context = getattr(context, "op_execution_context", context)
    return getattr(op_context, "_step_execution_context", None)


def _accumulator_owner(step):
    """``step`` when it holds a metadata accumulator of the known shape, else None."""
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None or not isinstance(getattr(accumulator, "per_output_metadata", None), Mapping):
        return None
    return step


def attach_partition_metadata(context, per_partition: Mapping[str, Mapping[str, Any]]) -> None:
    """Attach ``per_partition[k]`` to the materialization of partition ``k`` of the step's asset."""
    if not per_partition:
        return
    output = isinstance(context, OutputContext)
    targeted = set(context.asset_partition_keys if output else context.partition_keys)
    stray = [key for key in per_partition if key not in targeted]
    if stray:
        raise DagsterInvariantViolationError(f"metadata for partition key {stray[0]!r}, which this run does not target")
    asset_key = AssetKey.from_coercible(context.asset_key if output else context.assets_def.key)
    step = _accumulator_owner(_step_context(context)) if batch_writes_supported() else None
    if step is None:
        add = context.step_context.add_asset_metadata if output else context.add_asset_metadata
        for key, metadata in per_partition.items():
            if output:
                add(dict(metadata), asset_key=asset_key, partition_key=key)
            else:
                add(dict(metadata), partition_key=key)
        return
    from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator

    merged = dict(step._metadata_accumulator.per_output_metadata)
    for key, metadata in per_partition.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=key)
        merged[handle] = {**merged.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)
