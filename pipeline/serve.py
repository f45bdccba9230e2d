"""HTTP API (FastAPI) and web page over a store: ``create_app(cfg)``, ``run_server(cfg)``.

Routes (OpenAPI docs at ``/docs``): ``/v1/query``, ``/v1/episodes`` (list, get, keyframes, clip,
forget), ``/v1/objects``, ``/v1/sources`` (live sources), ``/v1/ingest`` (jobs), ``/v1/events``
(server-sent events), ``/healthz``, ``/metrics`` and the web page at ``/``. With a token
configured every route but ``/healthz`` needs ``Authorization: Bearer TOKEN`` (or ``?token=``
for the page's images and event stream); without one the server only binds loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import socket
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from pipeline import __version__
from pipeline.config import ServiceConfig
from pipeline.errors import ConfigError, EideticError
from pipeline.serve_events import EventBus, StoreWatcher, Webhooks
from pipeline.serve_jobs import JobQueue
from pipeline.serve_metrics import Metrics
from pipeline.serve_sources import SourceRegistry

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # JSON bodies above this are refused (413), examples aside
MAX_EXAMPLE_BYTES = 12 * 1024 * 1024  # a query with a base64 example image or sound
WEB_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}


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


class Service:
    """What the routes share: the store (read-only), jobs, sources, events and metrics."""

    def __init__(self, cfg: ServiceConfig, config_path: str | None) -> None:
        from pipeline.api import Eidetic

        self.cfg = cfg
        self.eidetic = Eidetic(config=cfg)
        self.root = cfg.store.path.resolve()
        self.bus = EventBus()
        token = cfg.serve.token.get_secret_value() if cfg.serve.token else None
        self.token = token
        self.webhooks = Webhooks(cfg.serve.webhooks, types=cfg.serve.webhook_events,
                                 token=cfg.serve.webhook_token)  # fmt: skip
        self.bus.listen(self.webhooks)
        self.jobs = JobQueue(self.root, self.bus, config_path=config_path)
        self.sources = SourceRegistry(self.root, self.bus, config_path=config_path)
        self.jobs.live = self.sources  # jobs run in the live sources' process while it holds the writer
        self.sources.writer_busy = self.jobs.hand_over  # a camera added while a job's process runs
        self.watcher = StoreWatcher(lambda: self.eidetic.store, self.bus,
                                    triggers=cfg.trigger.classes, period_s=cfg.serve.poll_s)  # fmt: skip
        self.metrics = Metrics(self)
        self.stop = asyncio.Event()

    def start(self) -> None:
        self.webhooks.start()
        self.watcher.start()
        self.jobs.start()
        self.sources.start()
        self.metrics.start()

    def close(self) -> None:
        self.stop.set()
        self.metrics.stop()
        self.sources.stop()
        self.jobs.stop()
        self.watcher.stop()
        self.webhooks.stop()
        self.eidetic.close()


def create_app(cfg: ServiceConfig, *, config_path: str | None = None) -> FastAPI:
    """Build the FastAPI app over ``cfg.store.path`` (opened read-only, lazily)."""
    svc = Service(cfg, config_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.start()
        try:
            yield
        finally:
            svc.close()

    app = FastAPI(title="Eidetic", version=__version__, lifespan=lifespan,
                  description="Episodic memory of what machines saw and heard.")  # fmt: skip
    app.state.svc = svc
    _install_guards(app, svc)
    from pipeline.serve_routes import register

    register(app, svc, [Depends(_auth(svc))])

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return resources.files("pipeline").joinpath("web/index.html").read_text(encoding="utf-8")

    @app.get("/web/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in WEB_ASSETS:
            raise HTTPException(404, f"no asset {name!r}")
        body = resources.files("pipeline").joinpath(f"web/{name}").read_bytes()
        return Response(body, media_type=WEB_ASSETS[name])

    return app


def _auth(svc: Service):
    def auth(request: Request) -> None:
        if svc.token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), svc.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return auth


def _install_guards(app: FastAPI, svc: Service) -> None:
    """Body size limits, timing metrics and one error shape: ``{"error": message}``."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        limit = None if path == "/v1/ingest/upload" else (
            MAX_EXAMPLE_BYTES if path == "/v1/query" else MAX_BODY_BYTES)  # fmt: skip
        length = request.headers.get("content-length")
        if limit is not None and request.method in ("POST", "PUT", "PATCH"):
            if length is None:
                return JSONResponse({"error": "send a Content-Length (chunked bodies are refused)"},
                                    status_code=411)  # fmt: skip
            if not length.isdigit() or int(length) > limit:
                return JSONResponse({"error": f"request body over {limit} bytes"}, status_code=413)
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        svc.metrics.observe_http(getattr(route, "path", "other"), request.method,
                                 response.status_code, time.perf_counter() - t0)  # fmt: skip
        return response

    @app.exception_handler(EideticError)
    async def eidetic_error(request: Request, exc: EideticError):
        status = 400 if isinstance(exc, (ConfigError, ValueError)) else 500
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(parts), "detail": exc.errors()}, status_code=422)


def run_server(
    cfg: ServiceConfig, *, host: str | None = None, port: int | None = None,
    config_path: str | None = None,
) -> None:
    """Serve until SIGTERM/Ctrl-C (clean shutdown: jobs and sources are stopped, their state
    saved). Without a token, only a loopback address may be bound."""
    import uvicorn

    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    if cfg.serve.token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to bind {host} without an API token: set EIDETIC_API_TOKEN or serve.token, "
            "or bind 127.0.0.1"
        )
    root = Path(cfg.store.path)
    if not (root / "eidetic.db").exists():
        from memory.store import EpisodeStore

        logger.warning("no store at %s: creating an empty one", root)
        EpisodeStore(root).close()
    app = create_app(cfg, config_path=config_path)
    svc: Service = app.state.svc

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            svc.bus.close()  # end event streams so the graceful shutdown need not wait for them
            super().handle_exit(sig, frame)

    logger.warning("serving %s on http://%s:%d", root, host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=20)  # fmt: skip
    Server(config).run()
