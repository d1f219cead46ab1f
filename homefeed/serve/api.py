"""The HTTP API (FastAPI + uvicorn): typed requests and answers, errors that name the field, OpenAPI at /docs.

* ``POST /v1/feed`` (``?explain=true``): a ranked slate with positions, scores, propensities and a request id;
  ``explain`` adds every candidate's story: which source found it, which filter removed it, each head's
  probability, the policy's adjustment, where it landed and with what propensity, and each stage's time.
* ``POST /v1/events``: engagements, checked by the data contract, logged, and applied to the user's lists
  (a hide: never shown again).
* ``GET /healthz`` (the process answers), ``GET /readyz`` (a model and items are loaded; 503 otherwise),
  ``GET /metrics`` (Prometheus), ``POST /v1/admin/reload`` (bearer token from ``serve.admin_token_env``).

A valid request never gets a 5xx: a stage that fails degrades the answer (``degraded`` says how, ``fallback``
when the model could not rank).  An invalid one gets a 4xx whose ``error`` names the field; a body over
``serve.max_body_bytes`` is a 413.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from homefeed import config as config_mod
from homefeed.config import Settings
from homefeed.data.contracts import coerce, validate
from homefeed.errors import HomefeedError
from homefeed.feed import SERVED_FEATURES_TYPE, RequestBatch
from homefeed.schema import ACTIONS, ENGAGEMENTS
from homefeed.serve.middleware import BodyLimit
from homefeed.serve.pipeline import Served
from homefeed.serve.service import Service
from homefeed.serve.stages import SOURCE_NAMES

Action = Literal["closeup", "click", "save", "hide", "report"]
assert set(ACTIONS) == set(Action.__args__)  # type: ignore[attr-defined]


#: A number JSON can carry and a model can read: NaN and infinity are refused (422).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeedContext(Strict):
    country: str | None = Field(None, max_length=8, description="Market of the request (ISO code).")
    ts: dt.datetime | None = Field(
        None, description="Time of the request (default: now). For replaying logs or serving a simulated world."
    )
    features: dict[Annotated[str, Field(min_length=1, max_length=256)], FiniteFloat] | None = Field(
        None,
        max_length=4096,
        description=(
            "What the client knows of the moment, by name (e.g. user-item affinities): what impressions log as "
            "served_features, read by the declared context features and user x item crosses of homefeed.toml."
        ),
    )


class FeedRequest(Strict):
    user_id: int = Field(ge=0, description="Who the feed is for.")
    slate_size: int = Field(20, ge=1, description="Slots wanted (at most serve.max_slate_size).")
    surface: str = Field("home", min_length=1, max_length=64, description="Which surface (a [serve.surfaces] name).")
    context: FeedContext = FeedContext()


class FeedItem(BaseModel):
    item_id: int
    position: int
    score: float
    propensity: float = Field(description="P(this item in this slot | this request) under the serving policy.")
    explored: bool = Field(description="An exploration slot.")


class StageTime(BaseModel):
    stage: str
    kind: str
    fails: str
    ms: float
    error: str | None = None


class CandidateStory(BaseModel):
    item_id: int
    source: str
    removed_by: str | None = None
    heads: dict[str, float] | None = None
    model_score: float | None = None
    freshness_boost: float | None = None
    position: int | None = None
    propensity: float | None = None
    explored: bool = False


class Explanation(BaseModel):
    candidates: list[CandidateStory]
    stages: list[StageTime]


class FeedResponse(BaseModel):
    request_id: str
    user_id: int
    surface: str
    model_version: str
    items: list[FeedItem]
    degraded: list[str] = Field(description="Stages that failed or ran over budget, and why (empty: all well).")
    fallback: str | None = Field(None, description="'popularity' when the model could not rank this request.")
    explain: Explanation | None = None


class Event(Strict):
    request_id: str = Field(min_length=1, max_length=128)
    user_id: int = Field(ge=0)
    item_id: int = Field(ge=0)
    action: Action
    ts: dt.datetime | None = Field(None, description="When it happened (default: now).")
    dwell: float | None = Field(None, ge=0, description="Seconds (closeups and clicks).")


class EventsRequest(Strict):
    events: list[Event] = Field(min_length=1)


class EventsResponse(BaseModel):
    accepted: int
    logged: bool = Field(description="False when the log queue was full and these rows were shed.")
    lists_updated: bool = Field(description="False when the online store was down: hides apply once it is back.")


class ReloadResponse(BaseModel):
    model_version: str | None
    changed: bool
    error: str | None


JSON = "application/json"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def create_app(settings: Settings | None = None, service: Service | None = None) -> FastAPI:
    """The app for ``settings`` (default: the project file `homefeed.config.load` finds)."""
    settings = settings or config_mod.load(None)
    state: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = service or Service(settings)
        svc.start()
        state["svc"] = svc
        try:
            yield
        finally:
            svc.close()

    app = FastAPI(
        title="homefeed ranking service",
        version="1",
        lifespan=lifespan,
        description=__doc__,
    )
    limits = settings.serve

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        message = f"{_field(tuple(first.get('loc', ())))}: {first.get('msg')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        _svc(state).metrics.errors.labels("422").inc()
        return JSONResponse({"error": message, "detail": _plain(errors)}, status_code=422)

    @app.exception_handler(HomefeedError)
    async def refused(request: Request, exc: HomefeedError) -> JSONResponse:
        _svc(state).metrics.errors.labels(str(exc.http_status)).inc()
        return _error(exc.http_status, str(exc))

    @app.post("/v1/feed", response_model=FeedResponse)
    async def feed(body: FeedRequest, explain: Annotated[bool, Query()] = False) -> Any:
        svc = _svc(state)
        if body.slate_size > limits.max_slate_size:
            svc.metrics.errors.labels("422").inc()
            return _error(422, f"slate_size: {body.slate_size} is over the limit of {limits.max_slate_size}")
        if body.surface not in limits.surfaces:
            svc.metrics.errors.labels("422").inc()
            return _error(
                422, f"surface: unknown surface {body.surface!r}; expected one of {', '.join(limits.surfaces)}"
            )
        with svc.metrics.latency.labels(body.surface).time():
            ts = _micros(body.context.ts) if body.context.ts is not None else svc.now_us()
            request_id = uuid.uuid4().hex
            requests = RequestBatch(
                request_id=pa.array([request_id], pa.string()),
                user_id=np.array([body.user_id], np.int64),
                ts=np.array([ts], np.int64),
                slate_size=np.array([body.slate_size], np.int32),
                country=pa.array([body.context.country], pa.string()),
                surface=body.surface,
                context_features=_context_features(body.context.features),
            )
            served = svc.pipeline.serve(requests, explain=explain)
            outcome = "closed" if served.trace.closed else "fallback" if served.trace.fallback else "ok"
            if outcome == "ok" and served.trace.degraded:
                outcome = "degraded"
            svc.metrics.requests.labels(body.surface, outcome).inc()
            if served.trace.fallback:
                svc.metrics.fallbacks.labels(body.surface).inc()
            # serialized here, once: returning the model would have FastAPI validate it again (~0.3 ms)
            return Response(_answer(request_id, body, served, explain).model_dump_json(), media_type=JSON)

    @app.post("/v1/events", response_model=EventsResponse)
    async def events(body: EventsRequest) -> Any:
        svc = _svc(state)
        if len(body.events) > limits.max_events:
            svc.metrics.errors.labels("422").inc()
            return _error(422, f"events: {len(body.events)} events are over the limit of {limits.max_events}")
        now = dt.datetime.now(dt.UTC)
        raw = pa.Table.from_pylist(
            [
                {
                    "ts": e.ts if e.ts is not None else now,
                    "user_id": e.user_id,
                    "item_id": e.item_id,
                    "request_id": e.request_id,
                    "action": e.action,
                    "dwell": e.dwell,
                }
                for e in body.events
            ],
            schema=ENGAGEMENTS,
        )
        rows, reasons = coerce("engagements", raw)
        reasons = pa.compute.coalesce(reasons, validate("engagements", rows, now))
        bad = np.flatnonzero(pa.compute.is_valid(reasons).to_numpy(zero_copy_only=False))
        if len(bad):
            svc.metrics.errors.labels("422").inc()
            return _error(422, f"events[{bad[0]}]: {reasons[int(bad[0])].as_py()} ({len(bad)} event(s) refused)")
        logged = svc.writer.put("engagements", rows)
        updated = True
        try:
            svc.pipeline.record_engagements(rows)
        except HomefeedError:
            updated = False
        svc.metrics.events.inc(len(body.events))
        return EventsResponse(accepted=len(body.events), logged=logged, lists_updated=updated)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        ready, detail = _svc(state).readiness()
        return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        svc = _svc(state)
        svc._update_gauges()
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/admin/reload", response_model=ReloadResponse)
    async def reload(authorization: Annotated[str | None, Header()] = None) -> Any:
        svc = _svc(state)
        expected = os.environ.get(limits.admin_token_env)
        if not expected:
            return _error(403, f"admin endpoints are disabled: set ${limits.admin_token_env} to a token to enable them")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            svc.metrics.errors.labels("401").inc()
            return _error(401, "admin: missing or wrong bearer token")
        changed = svc.refresh(force=True)
        model = svc.models.current
        return ReloadResponse(model_version=model.version if model else None, changed=changed, error=svc.models.error)

    return app


def _svc(state: dict[str, Service]) -> Service:
    return state["svc"]


def _micros(ts: dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return int(ts.timestamp() * 1_000_000)


def _plain(errors: list[dict]) -> list[dict]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]


def _context_features(features: dict[str, float] | None) -> pa.Array | None:
    """A request's context features as the batch's one-row map column (None: the request sent none)."""
    if features is None:
        return None
    return pa.array([list(features.items())], SERVED_FEATURES_TYPE)


def _answer(request_id: str, body: FeedRequest, served: Served, explain: bool) -> FeedResponse:
    slates = served.slates
    items = [
        FeedItem(item_id=i, position=p, score=s, propensity=q, explored=bool(e))
        for i, p, s, q, e in zip(
            slates.item_id.tolist(),
            slates.position.tolist(),
            (slates.score if slates.score is not None else np.zeros(len(slates))).tolist(),
            slates.propensity.tolist(),
            (served.policy.explored if served.policy is not None else np.zeros(len(slates), bool)).tolist(),
            strict=True,
        )
    ]
    return FeedResponse(
        request_id=request_id,
        user_id=body.user_id,
        surface=body.surface,
        model_version=slates.model_version if isinstance(slates.model_version, str) else "mixed",
        items=items,
        degraded=served.trace.degraded,
        fallback=served.trace.fallback,
        explain=_explain(served) if explain else None,
    )


def _explain(served: Served) -> Explanation:
    cands = served.candidates
    placed: dict[int, tuple[int, float, bool]] = {}
    if served.policy is not None:
        p = served.policy
        for cand, pos, prop, exp in zip(
            p.candidate.tolist(), p.position.tolist(), p.propensity.tolist(), p.explored.tolist(), strict=True
        ):
            placed[cand] = (pos, prop, exp)
    heads = {k: v.tolist() for k, v in served.heads.items()}
    scores = served.score.tolist() if served.score is not None and served.heads else None
    boost = served.boost.tolist() if served.boost is not None else None
    items = served.item_id.tolist() if served.item_id is not None else [None] * len(cands)
    stories = []
    for i, source in enumerate(cands.source.tolist()):
        pos, prop, exp = placed.get(i, (None, None, False))
        stories.append(
            CandidateStory(
                item_id=items[i],
                source=SOURCE_NAMES[source],
                heads={h: v[i] for h, v in heads.items()} or None,
                model_score=scores[i] if scores else None,
                freshness_boost=boost[i] if boost else None,
                position=pos,
                propensity=prop,
                explored=exp,
            )
        )
    for removed in served.trace.removed:
        for item, source in zip(removed.item_id.tolist(), removed.candidates.source.tolist(), strict=True):
            stories.append(CandidateStory(item_id=item, source=SOURCE_NAMES[source], removed_by=removed.reason))
    stages = [
        StageTime(stage=r.stage.name, kind=r.stage.kind, fails=r.stage.fails, ms=round(r.ms, 3), error=r.error)
        for r in served.trace.runs
    ]
    return Explanation(candidates=stories, stages=stages)


def app_factory() -> FastAPI:
    """For ``uvicorn --factory``: the project file from ``$HOMEFEED_CONFIG`` (as ``homefeed serve`` sets it)."""
    return create_app()
