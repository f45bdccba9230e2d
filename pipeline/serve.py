"""HTTP API (FastAPI) and web page over a store: ``create_app(cfg)``, ``run_server(cfg)``."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field

from pipeline import __version__
from pipeline.config import ServiceConfig
from pipeline.errors import ConfigError, EideticError

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # request bodies above this are refused (413)


class QueryRequest(BaseModel):
    """Body of ``POST /v1/query``; the same fields as ``eidetic query``."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=2000)
    source: str | None = Field(None, max_length=4096)
    since: str | None = Field(None, max_length=64)
    until: str | None = Field(None, max_length=64)
    k: int = Field(5, ge=1, le=100)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to loopback addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def create_app(cfg: ServiceConfig) -> FastAPI:
    """Build the FastAPI app over ``cfg.store.path`` (opened read-only, lazily)."""
    from pipeline.api import Eidetic

    eidetic = Eidetic(config=cfg)
    token = cfg.serve.token.get_secret_value() if cfg.serve.token else None
    registry = CollectorRegistry()
    queries = Counter("eidetic_queries_total", "Queries answered", ["answered"], registry=registry)
    latency = Histogram("eidetic_query_seconds", "Query latency", registry=registry)
    episodes = Gauge("eidetic_store_episodes", "Episodes in the store", registry=registry)

    def auth(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="Eidetic", version=__version__)
    guarded = [Depends(auth)]

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(EideticError)
    async def eidetic_error(request: Request, exc: EideticError):
        status = 400 if isinstance(exc, (ConfigError, ValueError)) else 422
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @app.post("/v1/query", dependencies=guarded)
    async def post_query(body: QueryRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        doc = eidetic.query_json(
            body.text, source=body.source, since=body.since, until=body.until, k=body.k,
            keyframe_url=lambda eid, n: f"/v1/episodes/{eid}/keyframes/{n}.jpg",
        )
        latency.observe(time.perf_counter() - t0)
        queries.labels(answered=str(doc["answered"]).lower()).inc()
        return doc

    @app.get("/v1/episodes", dependencies=guarded)
    async def list_episodes(source: str | None = None, limit: int = 50) -> dict[str, Any]:
        limit = max(1, min(limit, 500))
        items = eidetic.store.episodes(source=source, limit=limit, order="desc")
        return {"episodes": [_episode_json(e) for e in items]}

    @app.get("/v1/episodes/{episode_id}", dependencies=guarded)
    async def get_episode(episode_id: int) -> dict[str, Any]:
        return _episode_json(_get(eidetic, episode_id))

    @app.get("/v1/episodes/{episode_id}/keyframes/{n}.jpg", dependencies=guarded)
    async def get_keyframe(episode_id: int, n: int) -> FileResponse:
        episode = _get(eidetic, episode_id)
        if not 0 <= n < len(episode.keyframes):
            raise HTTPException(404, f"episode {episode_id} has no keyframe {n}")
        root = eidetic.store_path.resolve()
        path = (root / episode.keyframes[n]).resolve()
        if root not in path.parents or not path.is_file():
            raise HTTPException(404, "keyframe file missing")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> Response:
        try:
            episodes.set(eidetic.store.stats().get("episodes", 0))
        except EideticError:
            pass
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return resources.files("pipeline").joinpath("web/index.html").read_text(encoding="utf-8")

    return app


def _get(eidetic, episode_id: int):
    from memory.errors import EpisodeNotFound

    try:
        return eidetic.store.get(episode_id)
    except EpisodeNotFound:
        raise HTTPException(404, f"no episode {episode_id}") from None


def _episode_json(e) -> dict[str, Any]:
    return {
        "episode_id": e.episode_id, "source": e.source, "t_start": e.t_start, "t_end": e.t_end,
        "wall_start": e.wall_start, "labels": list(e.labels), "summary": e.summary,
        "keyframes": [f"/v1/episodes/{e.episode_id}/keyframes/{n}.jpg" for n in range(len(e.keyframes))],
    }


def run_server(cfg: ServiceConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM/Ctrl-C. Without a token, only a loopback address may be bound."""
    import uvicorn

    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    if cfg.serve.token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to bind {host} without an API token: set EIDETIC_API_TOKEN or serve.token, "
            "or bind 127.0.0.1"
        )
    if not (Path(cfg.store.path) / "eidetic.db").exists():
        raise ConfigError(f"no store at {cfg.store.path} (run `eidetic ingest` first or pass --store)")
    logger.warning("serving %s on http://%s:%d", cfg.store.path, host, port)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")
