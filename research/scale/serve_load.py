"""Issue 25's service figures: a bounded load test on loopback, then every kind of malformed request.

Starts `pipeline serve` (or, with --mlflow, MLflow's own scoring server over the same registered
pyfunc model), sends REQUESTS requests of one BBC test article each from CLIENTS concurrent
clients, and prints requests/s, p50/p99 latency and the errors.
    .venv/bin/python research/scale/serve_load.py [--mlflow] [--model models:/topic@champion]
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, bytes, float]:
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data, time.perf_counter() - start


def wait_up(port: int, process: subprocess.Popen) -> None:
    for _ in range(600):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
        if process.poll() is not None:
            sys.exit(f"server exited: {process.communicate()[1][-2000:]}")
    sys.exit("server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mlflow", action="store_true", help="MLflow's scoring server instead of pipeline serve")
    parser.add_argument("--model", default="models:/topic@champion")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "MLFLOW_DISABLE_TELEMETRY": "true"}
    if args.mlflow:
        command = [
            ".venv/bin/mlflow",
            "models",
            "serve",
            "-m",
            args.model,
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ]
    else:
        command = [".venv/bin/pipeline", "serve", "--model", args.model, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_up(port, process)
        test = pd.read_csv("../shared/data/bbc_news.csv.gz").query("split == 'test'")
        articles = [{"text": r.text, "title": r.title} for r in test.itertuples()]
        bodies = [
            json.dumps({"dataframe_records": [articles[i % len(articles)]]}).encode() for i in range(args.requests)
        ]
        post(port, bodies[0])  # warm
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda b: post(port, b), bodies))
        wall = time.perf_counter() - start
        latencies = sorted(r[2] for r in results)
        errors = sum(r[0] != 200 for r in results)
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        name = "mlflow models serve" if args.mlflow else "pipeline serve"
        print(
            f"{name}: {args.requests} requests, {args.clients} clients: {args.requests / wall:.1f} requests/s, "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, errors {errors}"
        )
        if not args.mlflow:
            malformed = [
                (b"{not json", "application/json"),
                (b"[1]", "application/json"),
                (b'{"inputs": []}', "application/json"),
                (b'{"dataframe_records": {}}', "application/json"),
                (b'{"dataframe_records": []}', "application/json"),
                (b'{"dataframe_records": [1]}', "application/json"),
                (b'{"dataframe_records": [{"title": "x"}]}', "application/json"),
                (b'{"dataframe_records": [{"text": 1}]}', "application/json"),
                (b'{"dataframe_records": [{"text": " "}]}', "application/json"),
                (b"text=x", "text/plain"),
                (b'{"dataframe_records": [{"text": "' + b"w " * 1_500_000 + b'"}]}', "application/json"),
            ]
            for body, kind in malformed:
                status, data, _ = post(port, body, kind)
                print(f"  {status} {json.loads(data)['message'][:90]}")
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
