"""Property tests of the whole API from its own OpenAPI document (schemathesis): every route,
with generated parameters, answers without a 5xx, with a documented status, content type, headers
and a body that matches its schema; requests without the key are refused as documented."""

import hypothesis
import pytest
import schemathesis

pytestmark = pytest.mark.slow  # integration: a materialised catalog

schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def api_schema(served):
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", served.app())


@schema.parametrize()
@hypothesis.settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_every_route_keeps_its_document(case, served):
    case.call_and_validate(headers={"X-API-Key": served.key_all})


def test_the_document_describes_every_route_parameter_and_error(served):
    from fastapi.testclient import TestClient

    document = TestClient(served.app()).get("/api/v1/openapi.json").json()
    expected = {"health", "assets", "forecast", "signals", "signal", "horizons", "forecast-fan", "heatmap", "metrics",
                "trades", "equity", "leaderboard", "ensemble-config", "status", "models", "predict", "ml-accuracy",
                "ml-calibration"}
    routes = {path.split("/")[3] for path in document["paths"]}
    assert routes == expected
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "created with `nexus-assets keys create`; never in the query string"}
    for path, item in document["paths"].items():
        operation = item["get"]
        statuses = set(operation["responses"])
        assert "422" not in statuses and {"200", "400", "500"} <= statuses, path
        if not path.endswith("/health"):
            assert {"304", "401", "429"} <= statuses and operation["security"] == [{"ApiKey": []}], path
            assert "Retry-After" in operation["responses"]["429"]["headers"]
        if "{asset}" in path:
            assert {"403", "404"} <= statuses
            names = {p["name"] for p in operation["parameters"]}
            assert {"asset", "date" if "/predict/" in path else "as_of"} <= names, path
        for parameter in operation["parameters"]:
            assert parameter.get("description"), (path, parameter)
