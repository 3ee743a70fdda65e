"""Real servers for the `services` tests, started on loopback in a temporary folder and stopped
after: PostgreSQL (Debian's ``postgresql`` package: ``initdb`` / ``pg_ctl``), Redis (Debian's
``redis-server``), Celery workers of the project's app, and an S3-compatible store (moto's
standalone server, ``moto[server]``).

Without the PostgreSQL or Redis binaries a test is skipped, except under ``CI=true`` (``.ci/run``
installs them), where it fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
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

__all__ = ["CeleryWorker", "PostgresServer", "RedisServer", "S3Server", "celery_worker", "free_port", "moto_server",
           "postgres_server", "redis_server"]


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


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    password: str

    def url(self, db: int) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"

    def env(self) -> dict[str, str]:
        """Broker and result store, in the variables ``deploy/celery/celery.yaml`` reads."""
        return {"NEXUS_CELERY_BROKER_URL": self.url(0), "NEXUS_CELERY_BACKEND_URL": self.url(1)}


def _stop(process: subprocess.Popen, group: bool = False) -> None:
    """SIGTERM (to the whole process group if it has its own), then SIGKILL after 60 s."""
    if process.poll() is None:
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Debian's ``redis-server`` on 127.0.0.1 (a free port), password-protected, in memory only
    (no snapshot, no append-only file), in a temporary folder removed when done."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("Redis is not installed (apt-get install -y redis-server)")
    try:
        import redis
    except ImportError:
        _missing("the redis client is not installed (pip install -e '.[deploy]')")
    folder = tempfile.mkdtemp(prefix="nexus-redis-")
    password, port = secrets.token_hex(16), free_port()
    config = os.path.join(folder, "redis.conf")  # the password in a private file, not on a command line
    with open(os.open(config, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        handle.write(f"bind 127.0.0.1\nport {port}\nrequirepass {password}\nsave \"\"\nappendonly no\n"
                     f"dir {folder}\nprotected-mode yes\n")
    process = subprocess.Popen([binary, config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}") from None
                time.sleep(0.1)
        client.close()
        yield RedisServer("127.0.0.1", port, password)
    finally:
        _stop(process)
        shutil.rmtree(folder, ignore_errors=True)


# read by the Celery app of nexus_assets_tests.gated_celery_worker: "<asset>=<marker file>"
GATE_ENV = "NEXUS_TEST_GATE"


@dataclass(frozen=True)
class CeleryWorker:
    name: str
    process: subprocess.Popen
    log: str

    def kill(self) -> None:
        """SIGKILL to the worker and the process running its step at once, as when its machine is lost."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def celery_worker(name: str, env: dict[str, str], folder: str, *,
                  app: str = "nexus_assets.celery_worker") -> Iterator[CeleryWorker]:
    """One Celery worker of the project's app (``nexus_assets.celery_worker``, or a test's wrapper
    of it) on the ``dagster`` queue, one step at a time, in its own process group; stopped (warm:
    its step finishes) when done."""
    log = os.path.join(folder, f"worker-{name}.log")
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", "dagster",
             "-c", "1", "--prefetch-multiplier=1", "-n", f"{name}@%h", "-l", "INFO",
             "--without-gossip", "--without-mingle"],
            env=env, cwd=folder, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield CeleryWorker(name, process, log)
    finally:
        _stop(process, group=True)
