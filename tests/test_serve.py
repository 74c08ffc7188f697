"""`pipeline serve`: the real uvicorn server on loopback, MLflow's scoring protocol, 4xx for bad requests."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.xdist_group("serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_once):
    """One server for the module, on the shared tiny topic model (no stance models: those requests get a 422)."""
    shared_home = trained_once[0]
    port = free_port()
    env = {
        **os.environ,
        "PIPELINE_HOME": str(shared_home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{shared_home / 'mlflow.db'}",
    }
    command = [sys.executable, "-m", "pipeline", "serve", "-c", str(shared_home / "config.yaml"), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
        assert process.poll() is None, process.communicate()[1][-2000:]
    yield port
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr[-3000:]


def request(port: int, method: str, path: str, body: bytes | str | None = None, content_type: str = "application/json"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": content_type} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, json.loads(data) if data else None


def invocations(port: int, records) -> tuple[int, dict]:
    return request(port, "POST", "/invocations", json.dumps({"dataframe_records": records}))


def test_the_service_labels_articles_as_predict_does(server):
    status, health = request(server, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["models"]["topic"].startswith("models:/topic/")
    status, body = invocations(
        server, [{"text": "match goal team player coach", "title": "Cup final"}, {"text": "shares profit market"}]
    )
    assert status == 200, body
    first, second = body["predictions"]
    assert (first["label"], second["label"]) == ("sport", "business")
    assert set(first["scores"]) == {"business", "sport", "tech"} and first["score"] == max(first["scores"].values())
    split = {"dataframe_split": {"columns": ["text"], "data": [["software computer internet phone users digital"]]}}
    status, body = request(server, "POST", "/invocations", json.dumps(split))
    assert status == 200 and body["predictions"][0]["label"] == "tech"


def test_concurrent_requests_all_succeed(server):
    texts = ["match goal team win", "shares profit market bank", "software computer internet phone users digital"] * 16
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda t: invocations(server, [{"text": t}]), texts))
    assert [status for status, _ in answers] == [200] * len(texts)
    assert [body["predictions"][0]["label"] for _, body in answers] == ["sport", "business", "tech"] * 16


MALFORMED = [
    ("not JSON", b"{not json", "application/json", 400, "malformed JSON"),
    ("a list, not an object", b"[1, 2]", "application/json", 400, "JSON object"),
    ("no records field", b'{"inputs": []}', "application/json", 400, "no dataframe_records"),
    ("records not a list", b'{"dataframe_records": {"text": "x"}}', "application/json", 400, "must be a list"),
    ("no records", b'{"dataframe_records": []}', "application/json", 400, "no records"),
    ("a record not an object", b'{"dataframe_records": ["text"]}', "application/json", 400, "not an object"),
    ("no text", b'{"dataframe_records": [{"title": "x"}]}', "application/json", 400, "no field 'text'"),
    ("text not a string", b'{"dataframe_records": [{"text": 42}]}', "application/json", 400, "must be a string"),
    ("empty text", b'{"dataframe_records": [{"text": "  "}]}', "application/json", 400, "'text' is empty"),
    (
        "bad targets",
        b'{"dataframe_records": [{"text": "a b", "targets": "Obama"}]}',
        "application/json",
        400,
        "'targets'",
    ),
    (
        "stance without a model",
        b'{"dataframe_records": [{"text": "a b", "claims": ["x"]}]}',
        "application/json",
        422,
        "no claim-stance",
    ),
    (
        "ragged dataframe_split",
        b'{"dataframe_split": {"columns": ["text"], "data": [["a", "b"]]}}',
        "application/json",
        400,
        "as long as columns",
    ),
    ("wrong content type", b"text=hello", "application/x-www-form-urlencoded", 415, "application/json"),
    (
        "oversized body",
        b'{"dataframe_records": [{"text": "' + b"word " * 500_000 + b'"}]}',
        "application/json",
        413,
        "at most",
    ),
    (
        "too many records",
        json.dumps({"dataframe_records": [{"text": "a"}] * 300}).encode(),
        "application/json",
        413,
        "at most 256",
    ),
]


@pytest.mark.parametrize(
    ("kind", "body", "content_type", "status", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_requests_get_a_4xx_with_a_message(server, kind, body, content_type, status, message):
    got, answer = request(server, "POST", "/invocations", body, content_type)
    assert got == status, answer
    assert message in answer["message"] and "\n" not in answer["message"], answer


def test_unknown_routes_and_methods_are_4xx_and_the_server_still_answers(server):
    assert request(server, "GET", "/nowhere")[0] == 404
    assert request(server, "GET", "/invocations")[0] == 405
    assert invocations(server, [{"text": "match goal team"}])[0] == 200
