"""Who may read what: the auth matrix, rate limits, keys in query strings, hostile paths and
parameters, and the headers every answer carries."""

import logging

import pytest
from fastapi.testclient import TestClient

from nexus_assets_tests.api.conftest import SP, VIX

pytestmark = pytest.mark.slow  # integration: a materialised catalog

API = "/api/v1"
ERROR_KEYS = {"error", "code", "message", "timestamp"}


@pytest.fixture(scope="module")
def anonymous(served):
    with TestClient(served.app(), raise_server_exceptions=False) as test_client:
        yield test_client


def call(client, path, key=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["X-API-Key"] = key
    return client.get(f"{API}/{path}", headers=headers, **kwargs)


def server_log(caplog) -> str:
    """What the server logged (the test's own HTTP client logs its URLs, query strings included)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))


def expect_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS and body["code"] == code, body
    assert "Traceback" not in response.text
    return body


def test_auth_matrix(anonymous, served):
    path = f"signal/{SP}"
    expect_error(call(anonymous, path), 401, "UNAUTHORIZED")
    assert call(anonymous, path).headers["www-authenticate"].startswith("APIKey")
    expect_error(call(anonymous, path, "nxk_0123456789abcdef_" + "x" * 43), 401, "UNAUTHORIZED")
    expect_error(call(anonymous, path, served.key_all[:-2]), 401, "UNAUTHORIZED")
    assert "revoked" in expect_error(call(anonymous, path, served.key_revoked), 401, "UNAUTHORIZED")["message"]
    # two keys with different scopes
    assert call(anonymous, path, served.key_sp).status_code == 200
    expect_error(call(anonymous, path, served.key_vix), 403, "FORBIDDEN")
    assert call(anonymous, f"forecast/{VIX}", served.key_vix).status_code == 200
    expect_error(call(anonymous, f"forecast/{VIX}", served.key_sp), 403, "FORBIDDEN")
    # optional whitespace around a header value is no part of it (RFC 9110); anything else is a bad key
    assert call(anonymous, path, f"  {served.key_all}\t").status_code == 200
    expect_error(call(anonymous, path, served.key_all.replace("_", " _", 1)), 401, "UNAUTHORIZED")
    # the health check and the OpenAPI document need no key
    assert call(anonymous, "health").status_code == 200 and call(anonymous, "openapi.json").status_code == 200
    # an unknown asset is a 404 for any valid key; a key's scope only narrows known assets
    expect_error(call(anonymous, "signal/NOPE", served.key_sp), 404, "ASSET_NOT_FOUND")


@pytest.mark.parametrize("query", ["api_key={key}", "apikey={key}", "X-API-Key={key}", "token={key}",
                                   "as_of={key}", "key=anything"])
def test_a_key_in_the_query_string_is_refused_and_never_logged(anonymous, served, caplog, query):
    caplog.set_level(logging.DEBUG)
    response = call(anonymous, f"signal/{SP}?{query.format(key=served.key_all)}", served.key_all)
    expect_error(response, 400, "KEY_IN_QUERY")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    logged = server_log(caplog)
    assert served.key_all not in logged and served.key_all.split("_", 2)[-1] not in logged
    assert f"GET /api/v1/signal/{SP} 400" in logged  # the request was logged, without its query string
    expect_error(call(anonymous, f"health?{query.format(key=served.key_all)}"), 400, "KEY_IN_QUERY")


def test_a_key_in_the_path_is_masked_in_the_log(anonymous, served, caplog):
    caplog.set_level(logging.INFO)
    expect_error(call(anonymous, f"signal/{served.key_all}", served.key_all), 404, "ASSET_NOT_FOUND")
    assert served.key_all not in server_log(caplog) and "nxk_***" in server_log(caplog)


def test_rate_limit_answers_429_with_retry_after(served):
    key = served.keys.create("tight", None, "3/minute")
    with TestClient(served.app(), raise_server_exceptions=False) as test_client:
        statuses = [call(test_client, f"signal/{SP}", key).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = call(test_client, f"signal/{SP}", key)
        expect_error(limited, 429, "RATE_LIMITED")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert call(test_client, f"signal/{SP}", served.key_all).status_code == 200  # per key: others go on


HOSTILE_ASSETS = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "a%00b", "%00", "x" * 10_000, "<script>", "9001_SP500%2F..",
                  "%C3%28", "9001_SP500%20"]


@pytest.mark.parametrize("asset", HOSTILE_ASSETS)
def test_hostile_asset_names_are_clean_404s(client, asset):
    response = client.get(f"{API}/forecast/{asset}")
    assert response.status_code == 404, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS and len(body["message"]) < 200


@pytest.mark.parametrize("name, value", [
    ("as_of", "../../etc/passwd"), ("as_of", "2018-06-01\x00"), ("as_of", "x" * 10_000), ("as_of", "2018-13-01"),
    ("as_of", "2018-6-1"), ("as_of", "+2018-06-01"), ("start", "2018-06-01T00:00"), ("end", "yesterday"),
    ("limit", "0"), ("limit", "10001"), ("limit", "-1"), ("limit", "1e3"), ("offset", "x" * 10_000),
    ("format", "xml"), ("format", "../csv"), ("variant", "both"), ("variant", "\x00"),
])
def test_hostile_parameters_are_clean_400s(client, name, value):
    response = client.get(f"{API}/signals/{SP}", params={name: value})
    body = expect_error(response, 400, "BAD_PARAMETER")
    assert name in body["message"] and len(body["message"]) < 300


def test_an_unknown_parameter_is_refused_not_ignored(client):
    # a typo must not silently answer the latest date instead of the one asked for
    body = expect_error(client.get(f"{API}/signal/{SP}", params={"asof": "2018-06-01"}), 400, "BAD_PARAMETER")
    assert "'asof'" in body["message"] and "as_of" in body["message"]
    expect_error(client.get(f"{API}/status/{SP}", params={"limit": "5"}), 400, "BAD_PARAMETER")


def test_dates_outside_the_store_and_reversed_ranges(client):
    expect_error(client.get(f"{API}/forecast/{SP}", params={"as_of": "1999-01-01"}), 404, "DATE_NOT_MATERIALISED")
    expect_error(client.get(f"{API}/forecast/{SP}", params={"as_of": "2019-01-01"}), 404, "DATE_NOT_MATERIALISED")
    expect_error(client.get(f"{API}/signals/{SP}", params={"start": "2018-06-02", "end": "2018-06-01"}), 400,
                 "BAD_PARAMETER")
    expect_error(client.get(f"{API}/signals/{SP}", params=[("as_of", "2018-06-01"), ("as_of", "2018-06-02")]), 400,
                 "BAD_PARAMETER")


def test_every_answer_carries_the_security_headers(client, anonymous):
    for response in (client.get(f"{API}/signal/{SP}"), client.get(f"{API}/nothing"), anonymous.get(f"{API}/signal/{SP}"),
                     client.post(f"{API}/signal/{SP}"), anonymous.get(f"{API}/health")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY" and response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "private, no-cache"
    expect_error(client.post(f"{API}/signal/{SP}"), 405, "METHOD_NOT_ALLOWED")
    expect_error(client.get(f"{API}/nothing"), 404, "NOT_FOUND")


def test_an_unexpected_failure_is_a_500_in_the_error_shape(served, monkeypatch, caplog):
    from nexus_assets.api import queries

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire /secret/path")

    with TestClient(served.app(), raise_server_exceptions=False) as test_client:
        monkeypatch.setattr(queries.Store, "read", broken)
        response = call(test_client, f"signal/{SP}", served.key_all)
    body = expect_error(response, 500, "INTERNAL_ERROR")
    assert "fire" not in response.text and "RuntimeError" in caplog.text
    assert response.headers["x-content-type-options"] == "nosniff" and body["message"]
