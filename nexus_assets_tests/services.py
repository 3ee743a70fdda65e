"""Real servers for the `services` tests, started on loopback in a temporary folder and stopped
after: PostgreSQL (Debian's ``postgresql`` package: ``initdb`` / ``pg_ctl``) and an S3-compatible
store (moto's standalone server, ``moto[server]``).

Without the PostgreSQL binaries a test is skipped, except under ``CI=true`` (``.ci/run`` installs
them), where it fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest

__all__ = ["PostgresServer", "S3Server", "free_port", "moto_server", "postgres_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin() -> str | None:
    """The folder of ``initdb`` and ``pg_ctl``: on the PATH, else Debian's versioned folder."""
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(os.path.realpath(found))
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return folders[-1] if folders else None


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (.ci/run installs it)")
    pytest.skip(what)


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    db: str

    def new_database(self) -> PostgresServer:
        """This server with an empty database of its own (one per test: no runs of another test)."""
        import psycopg2

        name = f"dagster_{secrets.token_hex(4)}"
        connection = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                      dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return replace(self, db=name)

    def env(self) -> dict[str, str]:
        """The connection, in the variables ``deploy/postgres/dagster.yaml`` reads."""
        return {
            "DAGSTER_POSTGRES_HOST": self.host, "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_USER": self.user, "DAGSTER_POSTGRES_PASSWORD": self.password,
            "DAGSTER_POSTGRES_DB": self.db,
        }


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of its own on 127.0.0.1 (a free port), password-authenticated, small
    (16 MB of shared buffers), removed when done. As root, the cluster belongs to the ``postgres``
    user, since ``initdb`` refuses root."""
    bindir = _pg_bin()
    if bindir is None:
        _missing("PostgreSQL is not installed (apt-get install -y postgresql)")
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _missing("no `postgres` user to own the test cluster")
    folder = tempfile.mkdtemp(prefix="nexus-pg-")
    data = os.path.join(folder, "data")
    password, user, port = secrets.token_hex(16), "nexus", free_port()
    pwfile = os.path.join(folder, "pw")
    with open(pwfile, "w") as handle:
        handle.write(password)
    if owner is not None:
        for path in (folder, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def as_owner(*args: str, **kwargs) -> subprocess.CompletedProcess:
        command = [*(["runuser", "-u", "postgres", "--"] if owner is not None else []), *args]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, **kwargs)

    started = False
    try:
        as_owner(os.path.join(bindir, "initdb"), "-D", data, "-U", user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                 "-E", "UTF8", "--locale=C")
        options = (f"-h 127.0.0.1 -p {port} -k {folder} -c shared_buffers=16MB -c max_connections=60 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        as_owner(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", os.path.join(folder, "log"), "-w", "-t", "60",
                 "-o", options, "start")
        started = True
        yield PostgresServer("127.0.0.1", port, user, password, "postgres").new_database()
    finally:
        if started:
            as_owner(os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    process: subprocess.Popen

    def env(self, bucket: str, prefix: str) -> dict[str, str]:
        """The standard AWS variables and the data root, as an operator sets them."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "nexus-test",
            "AWS_SECRET_ACCESS_KEY": "nexus-test-secret", "AWS_DEFAULT_REGION": "us-east-1",
            "NEXUS_DATA_DIR": f"s3://{bucket}/{prefix}",
        }


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """moto's standalone S3-compatible server on 127.0.0.1 (a free port), in a child process."""
    try:
        import moto.server  # noqa: F401  (the `server` extra: flask)
    except ImportError:
        _missing("moto[server] is not installed (pip install -e '.[test]')")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        _missing("s3fs is not installed (pip install -e '.[deploy]')")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint}") from None
                time.sleep(0.2)
        yield S3Server(endpoint, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
