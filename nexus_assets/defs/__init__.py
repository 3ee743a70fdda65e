"""The Dagster layer: assets, checks, schedules, storage. Numbers come from ``nexus_assets.core``."""

import warnings

from dagster import BetaWarning

# The project builds on Dagster beta APIs on purpose, and their warnings tell an operator nothing
# to act on, so they are silenced here, once, for this package's own calls only: single-run
# backfill policies (one pull per asset and run), MultiPartitionMapping and
# TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=...) (the asset x date history
# windows, which must start at the catalog's first day), and Output(data_version=...) (the payload
# hash as qml_models' data version).
warnings.filterwarnings("ignore", category=BetaWarning, module=r"nexus_assets\.")
# (Dagster attributes the backfill-policy warning to its own decorator module, so it is matched by text.)
warnings.filterwarnings("ignore", category=BetaWarning, message=r"Parameter `backfill_policy` of function `asset`")
