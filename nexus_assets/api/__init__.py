"""The serving API: the materialised partitions over HTTP (``nexus-assets api``), see docs/api.md.

- :mod:`~nexus_assets.api.store`: which partitions are stored, their frames and content hashes;
- :mod:`~nexus_assets.api.queries`: what each endpoint answers, as frames (no HTTP);
- :mod:`~nexus_assets.api.encoding`: an answer as JSON, CSV or Parquet;
- :mod:`~nexus_assets.api.keys`: API keys, stored hashed under the instance folder;
- :mod:`~nexus_assets.api.openapi`: the OpenAPI description of every route;
- :mod:`~nexus_assets.api.app`: the FastAPI application (keys, rate limits, ETags, errors);
- :mod:`~nexus_assets.api.commands`: the ``api`` and ``keys`` subcommands.
"""
