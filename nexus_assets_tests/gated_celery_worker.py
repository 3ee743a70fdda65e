"""The project's Celery app (:mod:`nexus_assets.celery_worker`) with one gate, for the test of a
worker lost in the middle of a step.

``NEXUS_TEST_GATE=<asset>=<marker file>``: the first worker to store ``<asset>``'s files (its step
has computed and serialised them, nothing is published yet) creates the marker, writes its name in
it and waits there until it is killed; the step's retry, on another worker, finds the marker and
goes through. Without the variable the app is the project's, unchanged. A step that is fast on a
few days no longer finishes before the test can kill its worker.
"""

from __future__ import annotations

import os
import time

from celery import current_task

from nexus_assets.celery_worker import app, execute_plan
from nexus_assets.defs import storage
from nexus_assets_tests.services import GATE_ENV

__all__ = ["GATE_ENV", "app", "execute_plan"]

_publish = storage.write_many_atomic


def _gated_publish(items):
    gate = os.environ.get(GATE_ENV)
    if gate:
        asset, marker = gate.split("=", 1)
        if any(f"/{asset}/" in str(path) for path, _ in items):
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pass  # the retry: go through
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(current_task.request.hostname)
                while True:  # until SIGKILL
                    time.sleep(1)
    return _publish(items)


storage.write_many_atomic = _gated_publish
