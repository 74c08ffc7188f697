"""Stage 8, serve: an HTTP service that classifies articles as they are published (FastAPI on uvicorn).

It speaks MLflow's scoring protocol: `POST /invocations` with `{"dataframe_records": [{"text", "title",
"targets", "claims"}]}` (or `dataframe_split`) answers `{"predictions": [{"label", "score", "scores",
"stance", "claims"}]}`; `GET /health` and `GET /ping` say it is up. The models are loaded once.
Requests that arrive while the model is busy are labelled together in one call (no waiting timer:
a batch is whatever queued up meanwhile). A malformed or oversized request gets a 4xx and a one-line
message in MLflow's error shape `{"error_code", "message"}`.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pipeline.core.errors import PipelineError
from pipeline.core.io import normalise_text
from pipeline.models.predictor import Predictor
from pipeline.stages.predict import score_articles, score_pairs
from pipeline.text.articles import Article, model_input

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 5001
    max_body_bytes: int = 2_000_000  # about 200 long articles
    max_records: int = 256  # records in one request
    max_batch_records: int = 64  # records labelled in one model call, across requests


@dataclass
class Models:
    topic: Predictor
    uris: dict[str, str]
    target: Predictor | None = None
    claim: Predictor | None = None


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_records(body: bytes) -> list[dict[str, Any]]:
    """The records of a scoring request, checked; BadRequest says what is wrong, in one line."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(400, f"malformed JSON: {err}") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, "the body must be a JSON object with dataframe_records or dataframe_split")
    if "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list):
            raise BadRequest(400, "dataframe_records must be a list of objects")
    elif "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if (
            not isinstance(split, dict)
            or not isinstance(split.get("columns"), list)
            or not isinstance(split.get("data"), list)
        ):
            raise BadRequest(400, "dataframe_split must be an object with a columns list and a data list")
        if any(not isinstance(row, list) or len(row) != len(split["columns"]) for row in split["data"]):
            raise BadRequest(400, "every dataframe_split row must be a list as long as columns")
        records = [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]
    else:
        raise BadRequest(
            400, f"no dataframe_records or dataframe_split field (got {', '.join(map(str, payload)) or 'none'})"
        )
    if not records:
        raise BadRequest(400, "no records: send at least one")
    return [check_record(i, r) for i, r in enumerate(records)]


def check_record(i: int, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise BadRequest(400, f"record {i} is not an object")
    text = record.get("text")
    if "text" not in record:
        raise BadRequest(400, f"record {i} has no field 'text'")
    if not isinstance(text, str):
        raise BadRequest(400, f"record {i}: 'text' must be a string, not {type(text).__name__}")
    if not normalise_text(text):
        raise BadRequest(400, f"record {i}: 'text' is empty")
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise BadRequest(400, f"record {i}: 'title' must be a string")
    for field in ("targets", "claims"):
        names = record.get(field)
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names)
        ):
            raise BadRequest(400, f"record {i}: '{field}' must be a list of non-empty strings")
    return record


def label_records(models: Models, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `pipeline predict --json` says of each record: topic, then the stance toward its targets and claims."""
    articles = [
        Article(f"record {i}", normalise_text(r["text"]), {"title": r["title"]} if r.get("title") else {})
        for i, r in enumerate(records)
    ]
    out = score_articles(models.topic, articles)
    for field, key, model in (("targets", "stance", models.target), ("claims", "claims", models.claim)):
        asked = [i for i, r in enumerate(records) if r.get(field)]
        if not asked:
            continue
        if model is None:
            raise BadRequest(
                422, f"this server has no {'target' if field == 'targets' else 'claim'}-stance model for '{field}'"
            )
        texts = [model_input(articles[i], model.card.text_columns, None)[0] for i in asked]
        names = [[n.strip() for n in records[i][field]] for i in asked]
        pair_field = "target" if field == "targets" else "claim"
        for i, per_name, these in zip(asked, score_pairs(model, texts, names), names, strict=True):
            out[i][key] = [{pair_field: n, **s} for n, s in zip(these, per_name, strict=True)]
    return out


class Batcher:
    """Labels the records of concurrent requests together: one model call for whatever queued up."""

    def __init__(self, models: Models, max_records: int) -> None:
        self.models = models
        self.max_records = max_records
        self.queue: asyncio.Queue[tuple[list[dict[str, Any]], asyncio.Future[Any]]] = asyncio.Queue()

    async def label(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((records, done))
        return await done

    async def run(self) -> None:
        waiting = None  # a request that did not fit in the last batch
        while True:
            jobs = [waiting or await self.queue.get()]
            waiting, rows = None, len(jobs[0][0])
            while not self.queue.empty():
                job = self.queue.get_nowait()
                if rows + len(job[0]) > self.max_records:
                    waiting = job
                    break
                jobs.append(job)
                rows += len(job[0])
            await self.answer(jobs)

    async def answer(self, jobs: list[tuple[list[dict[str, Any]], asyncio.Future[Any]]]) -> None:
        try:
            labelled = await asyncio.to_thread(label_records, self.models, [r for records, _ in jobs for r in records])
        except Exception as err:
            if len(jobs) > 1:  # label each request alone: one request's fault stays its own
                for job in jobs:
                    await self.answer([job])
            elif not jobs[0][1].done():
                jobs[0][1].set_exception(err)
            return
        start = 0
        for records, done in jobs:
            if not done.done():  # its client may have gone
                done.set_result(labelled[start : start + len(records)])
            start += len(records)


def create_app(models: Models, settings: ServeSettings) -> Any:
    batcher = Batcher(models, settings.max_batch_records)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="pipeline", lifespan=lifespan, docs_url=None, redoc_url=None)

    def error(status: int, message: str) -> JSONResponse:
        code = {413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "UNPROCESSABLE"}.get(
            status, "BAD_REQUEST"
        )
        return JSONResponse({"error_code": code, "message": message}, status_code=status)

    @app.get("/health")
    @app.get("/ping")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": models.uris}

    @app.post("/invocations")
    async def invocations(request: Request) -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/json":
            return error(415, f"content type {kind or 'none'}: send application/json")
        try:
            body = await read_body(request, settings.max_body_bytes)
            records = parse_records(body)
            if len(records) > settings.max_records:
                raise BadRequest(413, f"{len(records)} records: at most {settings.max_records} in one request")
            return {"predictions": await batcher.label(records)}
        except BadRequest as err:
            return error(err.status, str(err))

    return app


async def read_body(request: Any, limit: int) -> bytes:
    """The body, refused with a 413 as soon as it is over `limit` bytes (whatever Content-Length says)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"body of {declared} bytes: at most {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"body over {limit} bytes")
    return bytes(body)


def serve(models: Models, settings: ServeSettings) -> None:
    import socket

    import uvicorn

    try:  # uvicorn would log a taken port and exit; say it in one line instead
        with socket.create_server((settings.host, settings.port)):
            pass
    except OSError as err:
        raise PipelineError(f"cannot listen on {settings.host}:{settings.port}: {err.strerror or err}") from None
    if settings.host not in LOOPBACK:
        print(f"note: listening on {settings.host}, not only this machine: put it behind your proxy", flush=True)
    print(f"serving {', '.join(models.uris.values())} on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(create_app(models, settings), host=settings.host, port=settings.port, log_level="warning")


def load_models(cfg: Any, model_ref: str | None, target_ref: str | None, claim_ref: str | None) -> Models:
    """The topic model, and the stance models where given or registered (a service without them
    answers requests that ask for stance with a 422)."""
    from pipeline.tracking.registry import load_registered

    runtime = cfg.runtime
    topic, uri = load_registered(
        model_ref, cfg.mlflow.registered_model, runtime.device, runtime.precision, runtime.threads
    )
    models = Models(topic, {cfg.task: uri})
    for ref, name, attr in ((target_ref, "target_stance", "target"), (claim_ref, "stance", "claim")):
        try:
            predictor, stance_uri = load_registered(ref, name, runtime.device, runtime.precision, runtime.threads)
        except PipelineError:
            if ref is not None:
                raise
            continue
        setattr(models, attr, predictor)
        models.uris[name] = stance_uri
    return models
