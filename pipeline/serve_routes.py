"""The ``/v1`` routes of the HTTP service (see :mod:`pipeline.serve`)."""

from __future__ import annotations

import base64
import binascii
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import ConfigError
from pipeline.serve_events import sse_stream

if TYPE_CHECKING:
    from memory.types import Episode, ObjectIdentity, Sighting
    from pipeline.serve import Service

UPLOAD_CHUNK = 1 << 20
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
EVENT_TYPES = {"episode", "trigger", "sound", "forgotten", "job", "source"}


class QueryRequest(BaseModel):
    """Body of ``POST /v1/query``; the same fields as ``eidetic query``."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, min_length=1, max_length=2000)
    query: dict[str, Any] | None = Field(None, description="A structured query (see README).")
    source: str | None = Field(None, max_length=4096)
    since: str | None = Field(None, max_length=64)
    until: str | None = Field(None, max_length=64)
    k: int = Field(5, ge=1, le=100)
    image: str | None = Field(None, description="An example image, base64 (JPEG/PNG).")
    audio: str | None = Field(None, description="An example sound, base64 (any audio file).")


class SourceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(..., min_length=3, max_length=4096)
    name: str | None = Field(None, max_length=64)


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[str] = Field(..., min_length=1, max_length=1000)


def keyframe_url(episode_id: int, n: int) -> str:
    return f"/v1/episodes/{episode_id}/keyframes/{n}.jpg"


def episode_json(ep: Episode) -> dict[str, Any]:
    """An episode over HTTP: span, source, labels, summary, sounds, objects, keyframe URLs and
    the URL of its clip (the captured media, when the store keeps one) or why it has none."""
    return {
        "episode_id": ep.episode_id, "source": ep.source, "t_start": ep.t_start,
        "t_end": ep.t_end, "wall_start": ep.wall_start, "labels": list(ep.labels),
        "summary": ep.summary,
        "sounds": [{"label": s.label, "score": s.score, "t_start": s.t_start, "t_end": s.t_end}
                   for s in ep.sounds],
        "objects": [{"track_id": o.track_id, "label": o.label, "t_first": o.t_first,
                     "t_last": o.t_last, "n_frames": o.n_frames, "bbox": list(o.bbox)}
                    for o in ep.objects],
        "keyframes": [keyframe_url(int(ep.episode_id or 0), n) for n in range(len(ep.keyframes))],
        "keyframe_times": list(ep.keyframe_times),
        "clip": f"/v1/episodes/{ep.episode_id}/clip" if ep.clip else None,
        "clip_note": ep.clip_note,  # why there is no clip (e.g. the clip budget dropped it)
    }  # fmt: skip


def sighting_json(x: Sighting | None) -> dict[str, Any] | None:
    """A sighting of an object identity (the shape of `eidetic objects show --json`)."""
    if x is None:
        return None
    return {"episode_id": x.episode_id, "track_id": x.track_id, "source": x.source,
            "t_first": x.t_first, "t_last": x.t_last, "wall_first": x.wall_first,
            "similarity": round(x.similarity, 4)}  # fmt: skip


def object_json(o: ObjectIdentity) -> dict[str, Any]:
    """An object identity (the shape of `eidetic objects list --json`)."""
    return {"object_id": o.object_id, "name": o.name, "label": o.label, "sightings": o.n_sightings,
            "sources": list(o.sources), "first_seen": sighting_json(o.first_seen),
            "last_seen": sighting_json(o.last_seen)}  # fmt: skip


CLIP_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska"}


def _time(value: str | None, name: str) -> tuple[float | None, float | None]:
    from pipeline.api import parse_time

    try:
        return parse_time(value)
    except ConfigError as e:
        raise HTTPException(400, f"{name}: {e}") from None


def register(app: FastAPI, svc: Service, guarded: list) -> None:
    """Add every ``/v1`` route to ``app``."""
    _query_routes(app, svc, guarded)
    _episode_routes(app, svc, guarded)
    _work_routes(app, svc, guarded)


def _query_routes(app: FastAPI, svc: Service, guarded: list) -> None:
    @app.post("/v1/query", dependencies=guarded, tags=["query"])
    def post_query(body: QueryRequest) -> dict[str, Any]:
        """Answer a question (text, structured ``query``, example ``image``/``audio``).

        Returns the ``eidetic query --json`` shape with keyframe URLs."""
        if not (body.text or body.query or body.image or body.audio):
            raise HTTPException(400, "a query needs text, query (structured), image or audio")
        t0 = time.perf_counter()
        visual = _embed_example(svc, body.image, "image") if body.image else None
        audio = _embed_example(svc, body.audio, "audio") if body.audio else None
        answer = svc.eidetic.query(body.text, source=body.source, since=body.since,
                                   until=body.until, k=body.k, structured=body.query,
                                   visual=visual, audio_vector=audio)  # fmt: skip
        from memory.query import answer_to_json

        doc = answer_to_json(answer, keyframe_url=keyframe_url)
        svc.metrics.query_seconds.observe(time.perf_counter() - t0)
        svc.metrics.queries.labels(answered=str(doc["answered"]).lower()).inc()
        return doc


def _embed_example(svc: Service, data: str, kind: Literal["image", "audio"]):
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{kind}: not valid base64") from None
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(raw)
        f.flush()
        if kind == "image":
            return svc.eidetic._embed_image(Path(f.name))
        return svc.eidetic._embed_audio(f.name)


def _episode_routes(app: FastAPI, svc: Service, guarded: list) -> None:
    from memory.errors import EpisodeNotFound, StoreLocked
    from memory.retrieval import Where, count, refs

    def get(episode_id: int) -> Episode:
        try:
            return svc.eidetic.store.get(episode_id, vectors=False)
        except EpisodeNotFound:
            raise HTTPException(404, f"no episode {episode_id}") from None

    @app.get("/v1/episodes", dependencies=guarded, tags=["episodes"])
    def list_episodes(
        source: str | None = Query(None, max_length=4096),
        label: list[str] = Query([], max_length=50),
        since: str | None = Query(None, max_length=64),
        until: str | None = Query(None, max_length=64),
        q: str | None = Query(None, max_length=500, description="Words to match"),
        order: Literal["asc", "desc"] = "desc",
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=10**7),
    ) -> dict[str, Any]:
        """Episodes by time (newest first by default), with filters."""
        from memory.questions import keywords

        t_since, w_since = _time(since, "since")
        t_until, w_until = _time(until, "until")
        where = Where().filters(source=source, since=t_since, until=t_until, wall_since=w_since,
                                wall_until=w_until, labels=label or None)  # fmt: skip
        if q:
            where.words(keywords(q))
        store = svc.eidetic.store
        found = refs(store, where, order=order, limit=limit, offset=offset)
        eps = store.get_many([r.episode_id for r in found])
        return {"episodes": [episode_json(e) for e in eps], "total": count(store, where),
                "offset": offset, "limit": limit}  # fmt: skip

    @app.get("/v1/episodes/{episode_id}", dependencies=guarded, tags=["episodes"])
    def get_episode(episode_id: int) -> dict[str, Any]:
        return episode_json(get(episode_id))

    @app.delete("/v1/episodes/{episode_id}", dependencies=guarded, tags=["episodes"])
    def forget(episode_id: int) -> dict[str, Any]:
        """Forget an episode: its row, vectors, sounds and files (409 while an ingest writes)."""
        from memory.store import EpisodeStore

        get(episode_id)
        try:
            with EpisodeStore(svc.root) as writer:
                writer.forget(episode_id)
        except EpisodeNotFound:
            raise HTTPException(404, f"no episode {episode_id}") from None
        except StoreLocked as e:
            raise HTTPException(409, f"{e}; retry when the ingest has finished",
                                headers={"Retry-After": "5"}) from None  # fmt: skip
        svc.bus.publish("forgotten", episode_id=episode_id)
        return {"forgotten": episode_id}

    @app.get("/v1/episodes/{episode_id}/keyframes/{n}.jpg", dependencies=guarded, tags=["episodes"])
    def get_keyframe(episode_id: int, n: int) -> FileResponse:
        episode = get(episode_id)
        if not 0 <= n < len(episode.keyframes):
            raise HTTPException(404, f"episode {episode_id} has no keyframe {n}")
        return _file(svc.root, episode.keyframes[n], "image/jpeg")

    @app.get("/v1/episodes/{episode_id}/clip", dependencies=guarded, tags=["episodes"])
    def get_clip(episode_id: int) -> FileResponse:
        """The episode's media: its captured window remuxed (video + audio, no re-encode)."""
        from memory.blobs import CLIP_DIR

        rel = get(episode_id).clip
        if not rel:
            raise HTTPException(404, f"episode {episode_id} has no clip")
        media_type = CLIP_TYPES.get(Path(rel).suffix.lower(), "application/octet-stream")
        return _file(svc.root, rel, media_type, under=CLIP_DIR)

    _object_routes(app, svc, guarded, get)


def _object_routes(app: FastAPI, svc: Service, guarded: list, get) -> None:
    from memory.errors import ParameterError
    from memory.retrieval import has_identities, object_ids_named, object_labels

    @app.get("/v1/objects", dependencies=guarded, tags=["objects"])
    def objects(
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10**6),
        named: bool | None = Query(None, description="Only named (true) or unnamed (false)"),
    ) -> dict[str, Any]:
        """Object identities (re-identified across episodes), most recently seen first.

        A store whose tracks carry no descriptors keeps no identities: ``objects`` is then
        empty and ``labels`` lists the object labels seen (``{"label", "sightings",
        "last_episode"}``), each with a timeline at ``/v1/objects/{label}``."""
        store = svc.eidetic.store
        found = store.objects(named=named, limit=offset + limit)[offset:]
        doc: dict[str, Any] = {"objects": [object_json(o) for o in found]}
        if not has_identities(store):
            doc["labels"] = object_labels(store, limit=limit, offset=offset)
        return doc

    @app.get("/v1/objects/{ref}", dependencies=guarded, tags=["objects"])
    def object_timeline(ref: str, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """Where and when one object was seen, newest first: ``ref`` is an object id, an object's
        name, or (stores without identities) an object label. Each sighting is the episode
        (``/v1/episodes/{id}`` shape) plus ``sighting`` (its track, times, similarity)."""
        store = svc.eidetic.store
        ids = [int(ref)] if ref.isdigit() else object_ids_named(store, ref)
        if ids:
            try:
                identity, seen = store.object(ids[0]), store.object_timeline(ids[0])
            except ParameterError:
                raise HTTPException(404, f"no object {ref!r} in memory") from None
            seen = seen[::-1][:limit]
            eps = {e.episode_id: e for e in store.get_many([x.episode_id for x in seen])}
            return {"object": object_json(identity),
                    "sightings": [{**episode_json(eps[x.episode_id]), "sighting": sighting_json(x)}
                                  for x in seen if x.episode_id in eps]}  # fmt: skip
        from memory.retrieval import Where, refs

        where = Where().add("EXISTS (SELECT 1 FROM json_each(e.objects) o WHERE "
                            "json_extract(o.value, '$.label') = ?)", ref)  # fmt: skip
        eps = store.get_many([r.episode_id for r in refs(store, where, order="desc", limit=limit)])
        if not eps:
            raise HTTPException(404, f"no object {ref!r} in memory")
        return {"object": {"label": ref}, "sightings": [episode_json(e) for e in eps]}


def _file(root: Path, rel: str, media_type: str, *, under: str | None = None) -> FileResponse:
    """A file under ``root`` (and its folder ``under``): never outside it, whatever the stored
    path says (no path traversal, no symbolic link out of the store)."""
    base = root.resolve() / under if under else root.resolve()
    path = (root / rel).resolve()
    if base not in path.parents or not path.is_file():
        raise HTTPException(404, "file missing")
    return FileResponse(path, media_type=media_type)


def _work_routes(app: FastAPI, svc: Service, guarded: list) -> None:
    @app.get("/v1/sources", dependencies=guarded, tags=["sources"])
    def list_sources() -> dict[str, Any]:
        """Live sources added over the API (with status) and every source in the store."""
        store = svc.eidetic.store
        with store._lock:
            rows = store._conn.execute("SELECT source, COUNT(*), MAX(id) FROM episodes "
                                       "GROUP BY source").fetchall()  # fmt: skip
        return {"live": [svc.sources.status(s) for s in svc.sources.sources.values()],
                "stored": [{"source": r[0], "episodes": int(r[1]), "last_episode": int(r[2])}
                           for r in rows]}  # fmt: skip

    @app.post("/v1/sources", dependencies=guarded, tags=["sources"], status_code=201)
    def add_source(body: SourceRequest) -> dict[str, Any]:
        return svc.sources.status(svc.sources.add(body.url, body.name))

    @app.delete("/v1/sources/{name}", dependencies=guarded, tags=["sources"])
    def remove_source(name: str) -> dict[str, Any]:
        if name not in svc.sources.sources:
            raise HTTPException(404, f"no live source {name!r}")
        return svc.sources.status(svc.sources.remove(name))

    @app.post("/v1/ingest", dependencies=guarded, tags=["ingest"], status_code=202)
    def submit(body: IngestRequest) -> dict[str, Any]:
        """Ingest files (paths on the server) as a job; poll ``/v1/ingest/{job_id}``."""
        return _submit(svc, [_allowed(svc, s) for s in body.sources])

    @app.put("/v1/ingest/upload", dependencies=guarded, tags=["ingest"], status_code=202)
    async def upload(request: Request, filename: str = Query(..., min_length=1, max_length=255)):
        """Upload one media file (the request body) and ingest it as a job."""
        limit = svc.cfg.serve.max_upload_mb * 1024 * 1024
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise HTTPException(413, f"upload over {svc.cfg.serve.max_upload_mb} MB")
        name = SAFE_NAME.sub("_", Path(filename).name).strip("._") or "upload"
        dest = svc.root / "uploads" / f"{uuid.uuid4().hex[:8]}-{name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with open(dest, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    f.close()
                    dest.unlink(missing_ok=True)
                    raise HTTPException(413, f"upload over {svc.cfg.serve.max_upload_mb} MB")
                f.write(chunk)
        if size == 0:
            dest.unlink(missing_ok=True)
            raise HTTPException(400, "empty upload")
        return _submit(svc, [str(dest)])

    @app.get("/v1/ingest", dependencies=guarded, tags=["ingest"])
    def list_jobs() -> dict[str, Any]:
        return {"jobs": [vars(j) for j in svc.jobs.jobs.values()], "queued": svc.jobs.depth}

    @app.get("/v1/ingest/{job_id}", dependencies=guarded, tags=["ingest"])
    def get_job(job_id: str) -> dict[str, Any]:
        if job_id not in svc.jobs.jobs:
            raise HTTPException(404, f"no job {job_id!r}")
        return vars(svc.jobs.jobs[job_id])

    @app.delete("/v1/ingest/{job_id}", dependencies=guarded, tags=["ingest"])
    def cancel_job(job_id: str) -> dict[str, Any]:
        if job_id not in svc.jobs.jobs:
            raise HTTPException(404, f"no job {job_id!r}")
        return vars(svc.jobs.cancel(job_id))

    @app.get("/v1/events", dependencies=guarded, tags=["events"])
    async def events(types: str | None = Query(None, max_length=200)) -> StreamingResponse:
        """Server-sent events: ``episode``, ``trigger``, ``sound``, ``forgotten``, ``job``,
        ``source`` (``?types=episode,trigger`` to choose)."""
        wanted = None if not types else set(types.split(","))
        if wanted is not None and not wanted <= EVENT_TYPES:
            raise HTTPException(400, f"unknown event types {sorted(wanted - EVENT_TYPES)}; "
                                     f"known: {sorted(EVENT_TYPES)}")  # fmt: skip
        return StreamingResponse(sse_stream(svc.bus, wanted, svc.stop), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    @app.get("/metrics", dependencies=guarded, tags=["service"])
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _submit(svc: Service, sources: list[str]) -> dict[str, Any]:
    job = svc.jobs.submit(sources)
    return {**vars(job), "url": f"/v1/ingest/{job.job_id}"}


def _allowed(svc: Service, source: str) -> str:
    """A server-side path must exist and lie under ``serve.ingest_roots`` when configured."""
    from pipeline.ingest import is_url

    if is_url(source):
        raise HTTPException(400, f"{source!r} is a stream: add it with POST /v1/sources")
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise HTTPException(400, f"no such file or folder on the server: {source!r}")
    roots = [Path(r).resolve() for r in svc.cfg.serve.ingest_roots]
    if roots and not any(path == r or r in path.parents for r in roots):
        raise HTTPException(403, f"{source!r} is outside serve.ingest_roots")
    return str(path)
