"""The Parquet store and the dashboard site on an S3-compatible store (``NEXUS_DATA_DIR=s3://...``).

A real S3 API on loopback (moto's standalone server, started here), reached through s3fs and the
standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) as
an operator would set them: a small materialisation must store exactly the objects, byte for
byte, that a local-folder run stores as files; a writer killed in the middle of a write leaves
no partial object visible.
"""

import os
import signal
import subprocess
import sys
import time

import boto3
import pytest
from dagster import DagsterInstance
from upath import UPath

from nexus_assets.definitions import MAIN_JOB, build_definitions
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets.settings import Settings
from nexus_assets_tests.defs.conftest import REPO, sandbox_catalog_text
from nexus_assets_tests.loopback import secret_leaks
from nexus_assets_tests.services import moto_server

pytestmark = [pytest.mark.slow, pytest.mark.services]

ASSET = "9001_SP500"
FIRST, LAST = "2018-01-02", "2018-01-12"


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        yield server


@pytest.fixture
def bucket(s3, monkeypatch, request):
    """A new bucket, and the AWS variables (with ``NEXUS_DATA_DIR``) pointing at it."""
    name = f"nexus-{abs(hash(request.node.name)) % 10**8}"
    env = s3.env(name, "prod/nexus")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    client.create_bucket(Bucket=name)
    return name, client, env


def _run(settings: Settings):
    definitions = build_definitions(settings)
    instance = DagsterInstance.ephemeral()
    result = definitions.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance, raise_on_error=False,
        tags={RANGE_START_TAG: f"{ASSET}|{FIRST}", RANGE_END_TAG: f"{ASSET}|{LAST}"},
    )
    return instance, result


def _objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return {key[len(prefix):]: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in sorted(keys)}


def test_a_materialisation_on_s3_stores_what_a_local_folder_run_stores(tmp_path, bucket):
    name, client, env = bucket
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(sandbox_catalog_text(keys=(ASSET,)))
    settings = Settings.from_env({**env, "NEXUS_CATALOG": str(catalog)})
    assert settings.data_dir == f"s3://{name}/prod/nexus"  # taken as is: not a local path
    instance, result = _run(settings)
    assert result.success
    local = tmp_path / "data"
    _, local_result = _run(Settings(catalog_path=str(catalog), data_dir=str(local)))
    assert local_result.success

    want = {str(p.relative_to(local)): p.read_bytes() for p in sorted(local.rglob("*")) if p.is_file()}
    got = _objects(client, name, "prod/nexus/")
    assert got == want
    days = 11
    assert sum(k.startswith("horizon_slices/") for k in got) == days
    assert "dashboard/index.html" in got and any(k.startswith("dashboard/asset=") and k.endswith(".html") for k in got)
    # the secret key is in no event, run record or object
    assert secret_leaks(env["AWS_SECRET_ACCESS_KEY"], instance, [result.run_id]) == []
    assert not any(env["AWS_SECRET_ACCESS_KEY"].encode() in blob for blob in got.values())


# A writer over an existing object, killed after the store has received part of the new bytes:
# 120 MB go as a multipart upload (s3fs sends 50 MB parts), visible only once completed.
_WRITER = """
import os, sys
from upath import UPath
from nexus_assets.atomic import write_bytes_atomic
write_bytes_atomic(UPath(sys.argv[1]), os.urandom(120 * 2**20))
print("completed", flush=True)
"""


def test_a_writer_killed_mid_write_leaves_no_partial_object(bucket):
    name, client, env = bucket
    key = "prod/nexus/qml_models/asset=9001_SP500/date=2018-01-02.parquet"
    old = b"the previous version of the partition"
    client.put_object(Bucket=name, Key=key, Body=old)
    child_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, f"s3://{name}/{key}"], env=child_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = 0
    try:
        deadline = time.monotonic() + 120
        while parts == 0:  # the upload has begun, and at least one part of it is stored
            assert writer.poll() is None, f"the writer ended before it was killed: {writer.communicate()}"
            assert time.monotonic() < deadline, "no part of the upload reached the store in 120 s"
            for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                parts += len(client.list_parts(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", []))
            time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        out, _ = writer.communicate()
    assert b"completed" not in out
    # readers see the old object, and nothing else: the stored part belongs to no visible object
    assert _objects(client, name, "prod/nexus/") == {key[len("prod/nexus/"):]: old}
    assert UPath(f"s3://{name}/{key}").read_bytes() == old
    assert client.list_multipart_uploads(Bucket=name).get("Uploads")  # the abandoned upload, invisible

