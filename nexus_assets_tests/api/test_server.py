"""`nexus-assets api` for real: uvicorn on 127.0.0.1 started by the CLI, keys made by the CLI,
a busy port refused in one line, the access log without query strings, a clean stop."""

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from nexus_assets_tests.api.conftest import SP

pytestmark = pytest.mark.slow  # integration: subprocesses and a real server

CLI = [sys.executable, "-m", "nexus_assets.cli"]


@pytest.fixture
def env(served, tmp_path):
    out = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_HOME"))}
    out.update(NEXUS_CATALOG=str(served.pipe.catalog_path), NEXUS_DATA_DIR=str(served.data_dir),
               DAGSTER_HOME=str(tmp_path / "home"), PYTHONWARNINGS="ignore")
    return out


def test_keys_commands_and_a_real_server(env, tmp_path):
    created = subprocess.run(CLI + ["keys", "create", "--name", "ci", "--assets", SP, "--rate", "50/min"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"nxk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key) and "shown once" in created.stderr
    listed = subprocess.run(CLI + ["keys", "list"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert "ci" in listed.stdout and SP in listed.stdout and "50/minute" in listed.stdout and key not in listed.stdout
    unknown = subprocess.run(CLI + ["keys", "create", "--name", "x", "--assets", "NOPE"], capture_output=True,
                             text=True, env=env, cwd=tmp_path, timeout=120)
    assert unknown.returncode == 2 and "NOPE" in unknown.stderr

    server = subprocess.Popen(CLI + ["api", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=tmp_path)
    try:
        line = server.stdout.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:([0-9]+)/api/v1/", line)
        assert match, line + server.stderr.read() if server.poll() is not None else line
        port = int(match.group(1))
        base = f"http://127.0.0.1:{port}/api/v1"
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{base}/health").json()["status"] == "ok"
            answer = http.get(f"{base}/signal/{SP}", headers={"X-API-Key": key})
            assert answer.status_code == 200 and answer.json()["asset"] == SP and "server" not in answer.headers
            assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["etag"]
            refused = http.get(f"{base}/signal/{SP}", params={"api_key": key}, headers={"X-API-Key": key})
            assert refused.status_code == 400 and refused.json()["code"] == "KEY_IN_QUERY"
            # a busy port is one line and exit status 2
            busy = subprocess.run(CLI + ["api", "--port", str(port)], capture_output=True, text=True, env=env,
                                  cwd=tmp_path, timeout=120)
            assert busy.returncode == 2
            assert busy.stderr.strip().splitlines() == [
                f"api: port {port} on 127.0.0.1 is already in use (is another server still running?): "
                "stop it, or choose another port with --port (0 picks a free one)"]
            assert http.get(f"{base}/health").status_code == 200  # the first server is unharmed
        revoked = subprocess.run(CLI + ["keys", "revoke", "ci"], capture_output=True, text=True, env=env, cwd=tmp_path,
                                 timeout=120)
        assert revoked.returncode == 0
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{base}/signal/{SP}", headers={"X-API-Key": key}).status_code == 401
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
    assert server.returncode == 0, stderr
    assert f"GET /api/v1/signal/{SP} 200" in stderr and f"GET /api/v1/signal/{SP} 400" in stderr  # the access log
    assert key not in stderr and key.split("_", 2)[-1] not in stderr and "Traceback" not in stderr
