"""The Celery app that Nexus's workers run: ``celery -A nexus_assets.celery_worker worker -Q dagster``.

dagster-celery's own ``dagster-celery worker start -y FILE`` writes the resolved broker URL
(password included) into a module under ``$DAGSTER_HOME``; this app resolves the same file
(``NEXUS_CELERY_CONFIG``, see :mod:`nexus_assets.executors`) in memory instead. A worker needs
what a run needs: the instance (``DAGSTER_HOME`` and its database variables), the catalog and the
data root (``NEXUS_CATALOG``, ``NEXUS_DATA_DIR``), and the QML variables for the steps that pull.
"""

from __future__ import annotations

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from nexus_assets.executors import celery_app_args

__all__ = ["app", "execute_plan"]

app = make_app(celery_app_args())
execute_plan = create_task(app)
