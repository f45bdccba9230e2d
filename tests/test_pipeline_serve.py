"""`eidetic serve` as a real uvicorn process on loopback: query, episodes, forget, events,
webhooks, sources, auth, limits, SIGTERM."""

from __future__ import annotations

import base64
import dataclasses
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from memory.episodes import summarize
from memory.maintenance import LOCK_NAME
from memory.store import EpisodeStore
from memory.types import Episode, ObjectRecord, SoundRecord


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_episode(
    label: str, t0: float, source: str = "/media/demo.mp4", descriptor: np.ndarray | None = None
) -> Episode:
    """One episode; with a ``descriptor`` its object is re-identified across episodes (an
    identity, memory/objects.py), without one it is a track with a label only."""
    sounds = (SoundRecord(label, 0.9, t0, t0 + 1.0),)
    objects = (ObjectRecord(1, "object", t0 - 0.5, t0 + 1.5, 3, (5.0, 6.0, 30.0, 35.0),
                            descriptor=descriptor),)  # fmt: skip
    return Episode(source=source, t_start=t0 - 1, t_end=t0 + 2, labels=(label,),
                   summary=summarize((label,), sounds, objects), sounds=sounds, objects=objects,
                   keyframe_times=(t0,))  # fmt: skip


def build_store(root: Path) -> Path:
    from models import registry

    embedder = registry.create(registry.EMBEDDERS, "classical")
    with EpisodeStore(root) as st:
        for label, t0 in [("door_wood_knock", 4.0), ("glass_breaking", 11.0)]:
            img = np.zeros((40, 60, 3), np.uint8)
            img[:, : 30 if t0 < 5 else 50] = (200, 30, 30) if t0 < 5 else (30, 30, 200)
            ep = dataclasses.replace(make_episode(label, t0), visual=embedder.embed_images([img])[0])
            st.add(ep, [img])
    return root


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("serve") / "store")


def start(store_dir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--store", str(store_dir), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "EIDETIC__SERVE__POLL_S": "0.2", **(env or {})},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):  # bounded: at most ~30 s
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not come up")


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM; returns 0 when the server shut down cleanly (uvicorn re-raises the signal after
    its graceful shutdown, so the exit status is -SIGTERM) without a traceback."""
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    return 0 if code in (0, -signal.SIGTERM) else code


@pytest.fixture(scope="module")
def server(store_dir):
    proc, base = start(store_dir)
    yield base
    assert stop(proc) == 0


def wait_for(fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := fn():
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {fn}")


def test_query_over_http_matches_cli_shape(server):
    r = httpx.post(server + "/v1/query", json={"text": "when did the glass break?"})
    assert r.status_code == 200
    doc = r.json()
    assert set(doc) == {"answered", "answer", "evidence"}
    assert doc["answered"] is True and "0:10.0" in doc["answer"]
    (ev,) = doc["evidence"]
    assert ev["labels"] == ["glass_breaking"] and ev["objects"][0]["bbox"] == [5.0, 6.0, 30.0, 35.0]
    kf = httpx.get(server + ev["keyframes"][0])
    assert kf.status_code == 200 and kf.headers["content-type"] == "image/jpeg" and kf.content[:2] == b"\xff\xd8"
    structured = {"query": {"intent": "count", "labels": ["door_wood_knock"]}}
    doc = httpx.post(server + "/v1/query", json=structured).json()
    assert doc["answered"] and "1 time" in doc["answer"]


def test_nothing_matches_is_not_answered(server):
    doc = httpx.post(server + "/v1/query", json={"text": "when did the helicopter land"}).json()
    assert doc["answered"] is False and doc["evidence"] == []


def test_bad_requests(server):
    def post(path, **kw):
        return httpx.post(server + path, **kw)

    assert post("/v1/query", json={"text": ""}).status_code == 422
    assert post("/v1/query", json={"txt": "x"}).status_code == 422
    assert post("/v1/query", json={}).status_code == 400
    r = post("/v1/query", json={"text": "what happened between 1 and"})
    assert r.status_code == 400 and "needs two times" in r.json()["error"]
    r = post("/v1/query", json={"text": "anything like this image?"})
    assert r.status_code == 400 and "attach an image" in r.json()["error"]
    r = post("/v1/query", json={"query": {"intent": "why"}})
    assert r.status_code == 400 and "intent must be one of" in r.json()["error"]
    assert post("/v1/query", json={"text": "x", "image": "not base64!"}).status_code == 400
    assert post("/v1/query", json={"text": "x", "k": 0}).status_code == 422
    big = {"content-type": "application/json"}
    assert post("/v1/sources", content=b"x" * 100_000, headers=big).status_code == 413
    assert post("/v1/query", content=b"x" * (13 << 20), headers=big).status_code == 413
    assert httpx.get(server + "/v1/episodes/999").status_code == 404
    assert httpx.get(server + "/v1/episodes/1/keyframes/7.jpg").status_code == 404
    assert httpx.get(server + "/v1/episodes/1/keyframes/..%2F..%2Feidetic.db.jpg").status_code == 404
    assert httpx.get(server + "/web/..%2Fserve.py").status_code == 404
    assert httpx.get(server + "/v1/episodes?since=yesterdayish").status_code == 400
    assert httpx.get(server + "/v1/episodes?limit=100000").status_code == 422
    assert httpx.get(server + "/v1/events?types=bogus").status_code == 400
    r = post("/v1/ingest", json={"sources": ["/no/such/file.mp4"]})
    assert r.status_code == 400 and "no such file" in r.json()["error"]
    assert post("/v1/ingest", json={"sources": ["rtsp://cam/x"]}).status_code == 400
    assert post("/v1/sources", json={"url": "/etc/passwd"}).status_code == 400
    assert httpx.get(server + "/healthz").json()["ok"] is True  # still serving


def test_episodes_objects_metrics_page(server):
    doc = httpx.get(server + "/v1/episodes").json()
    assert [e["labels"] for e in doc["episodes"]] == [["glass_breaking"], ["door_wood_knock"]]
    assert doc["total"] == 2
    one = httpx.get(server + "/v1/episodes?label=door_wood_knock&order=asc").json()
    assert [e["episode_id"] for e in one["episodes"]] == [1] and one["total"] == 1
    assert httpx.get(server + "/v1/episodes?q=glass").json()["total"] == 1
    assert httpx.get(server + "/v1/episodes?since=9").json()["total"] == 1
    ep = httpx.get(server + "/v1/episodes/2").json()
    assert ep["sounds"][0]["label"] == "glass_breaking" and ep["keyframe_times"] == [11.0]
    assert ep["objects"][0]["t_last"] == 12.5 and ep["clip"] is None
    objs = httpx.get(server + "/v1/objects").json()  # tracks without descriptors: no identities
    assert objs["objects"] == [] and objs["labels"] == [
        {"label": "object", "sightings": 2, "last_episode": 2}]
    timeline = httpx.get(server + "/v1/objects/object").json()["sightings"]
    assert [e["episode_id"] for e in timeline] == [2, 1]
    assert httpx.get(server + "/v1/objects/7").status_code == 404
    assert httpx.get(server + "/v1/episodes/2/clip").status_code == 404
    sources = httpx.get(server + "/v1/sources").json()
    assert sources["stored"] == [{"source": "/media/demo.mp4", "episodes": 2, "last_episode": 2}]
    metrics = wait_for(lambda: (m := httpx.get(server + "/metrics").text) and
                       "eidetic_store_episodes 2.0" in m and m)  # fmt: skip
    for name in ("eidetic_queries_total", "eidetic_query_seconds_bucket", "eidetic_store_bytes",
                 'eidetic_source_episodes{source="/media/demo.mp4"} 2.0', "eidetic_ingest_queue_depth",
                 "eidetic_http_request_seconds_bucket"):  # fmt: skip
        assert name in metrics, name
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "<form" in page.text
    assert httpx.get(server + "/web/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(server + "/openapi.json").json()["info"]["title"] == "Eidetic"


def test_object_identities_names_and_clips(tmp_path):
    """Identities re-identified by the store (memory/objects.py): listed, timeline, named with
    `eidetic objects name`, asked about by name; an episode's clip is served, and a stored path
    leading out of the store's clip folder is not."""
    from tests.media import write_video

    look = np.ones(16, np.float32) / 4.0
    root = tmp_path / "store"
    with EpisodeStore(root) as st:
        for label, t0 in [("door_wood_knock", 4.0), ("glass_breaking", 11.0)]:
            st.add(make_episode(label, t0, descriptor=look), [np.zeros((40, 60, 3), np.uint8)])
        clip = write_video(tmp_path / "cut.mp4", duration_s=1.0)
        size = clip.stat().st_size
        img = [np.zeros((40, 60, 3), np.uint8)]
        st.add(dataclasses.replace(make_episode("can_opening", 30.0), clip=str(clip)), img)
        st.add(make_episode("clapping", 40.0), img)
    with EpisodeStore(root) as st:  # a tampered row: the clip path leads out of the store
        st._conn.execute("UPDATE episodes SET clip = '../../../../etc/passwd' WHERE id = 4")
    proc, base = start(root)
    try:
        (obj,) = httpx.get(base + "/v1/objects").json()["objects"]
        assert (obj["label"], obj["sightings"], obj["name"]) == ("object", 2, None)
        assert obj["first_seen"]["episode_id"] == 1 and obj["last_seen"]["episode_id"] == 2
        doc = httpx.get(base + f"/v1/objects/{obj['object_id']}").json()
        assert doc["object"] == obj
        assert [(x["episode_id"], x["sighting"]["track_id"]) for x in doc["sightings"]] == [(2, 1), (1, 1)]
        assert httpx.get(base + "/v1/objects/99").status_code == 404
        r = subprocess.run([sys.executable, "-m", "pipeline", "objects", "name", str(obj["object_id"]),
                            "my mug", "--store", str(root)], capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = httpx.post(base + "/v1/query", json={"text": "where was my mug last seen?"}).json()
        assert doc["answered"] and [e["episode_id"] for e in doc["evidence"]] == [2]
        assert doc["answer"].startswith("my mug (object) was last seen 0:10.5–0:12.5")
        named = httpx.get(base + "/v1/objects/my%20mug").json()
        assert named["object"]["name"] == "my mug" and len(named["sightings"]) == 2
        ep = httpx.get(base + "/v1/episodes/3").json()
        assert ep["clip"] == "/v1/episodes/3/clip"
        got = httpx.get(base + ep["clip"])
        assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
        assert len(got.content) == size and got.content[4:8] == b"ftyp"
        assert httpx.get(base + "/v1/episodes/4/clip").status_code == 404  # never /etc/passwd
        assert httpx.get(base + "/v1/episodes/1/clip").status_code == 404  # no clip
    finally:
        assert stop(proc) == 0


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((self.headers.get("Authorization"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def read_events(base: str, out: list, ready: threading.Event, params: str = "") -> None:
    with httpx.stream("GET", base + "/v1/events" + params, timeout=60) as r:
        ready.set()
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))


def test_events_webhooks_forget_and_sigterm(tmp_path):
    """New episodes and trigger sounds written by another process reach the SSE stream and the
    webhook; DELETE forgets; SIGTERM ends the open stream and the server exits 0."""
    root = build_store(tmp_path / "store")
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    env = {"EIDETIC__SERVE__WEBHOOKS": json.dumps([url]), "EIDETIC__SERVE__WEBHOOK_TOKEN": "hooktok",
           "EIDETIC__SERVE__WEBHOOK_EVENTS": '["episode", "forgotten"]'}  # fmt: skip
    proc, base = start(root, env=env)
    try:
        events: list = []
        ready = threading.Event()
        reader = threading.Thread(target=read_events, args=(base, events, ready), daemon=True)
        reader.start()
        assert ready.wait(10)
        time.sleep(0.5)  # the watcher has seen the current rows
        with EpisodeStore(root) as st:
            st.add(make_episode("can_opening", 30.0), [np.zeros((20, 20, 3), np.uint8)])
            st.add_sounds("/media/demo.mp4", [SoundRecord("can_opening", 0.8, 30.0, 30.5),
                                              SoundRecord("dog", 0.7, 31.0, 31.5)])  # fmt: skip
        got = wait_for(lambda: {e for e, _ in events} >= {"episode", "trigger", "sound"} and events)
        ep = next(d for e, d in got if e == "episode")
        assert ep["episode_id"] == 3 and ep["labels"] == ["can_opening"]
        assert next(d for e, d in got if e == "trigger")["label"] == "can_opening"
        assert next(d for e, d in got if e == "sound")["label"] == "dog"
        r = httpx.delete(base + "/v1/episodes/3")
        assert r.status_code == 200 and r.json() == {"forgotten": 3}
        assert httpx.get(base + "/v1/episodes/3").status_code == 404
        assert httpx.delete(base + "/v1/episodes/3").status_code == 404
        assert not (root / "keyframes" / "3").exists()
        # the episode is no longer cited, and the sounds logged on its source during its span
        # are forgotten with it: the can is not answered from the audio event log either
        doc = httpx.post(base + "/v1/query", json={"text": "when was the can opened"}).json()
        assert doc["evidence"] == [] and not doc["answered"], doc
        wait_for(lambda: any(e == "forgotten" for e, _ in events))
        hooks = wait_for(lambda: len(Hook.received) >= 2 and Hook.received)
        assert [d["type"] for _, d in hooks] == ["episode", "forgotten"]
        assert all(auth == "Bearer hooktok" for auth, _ in hooks)
        with EpisodeStore(root):  # an ingest holds the writer: forget answers 409, nothing lost
            r = httpx.delete(base + "/v1/episodes/1")
            assert r.status_code == 409 and "already open for writing" in r.json()["error"]
    finally:
        t0 = time.monotonic()
        code = stop(proc)
        hook.shutdown()
    assert code == 0 and time.monotonic() - t0 < 15  # the open event stream did not hold it up
    reader.join(timeout=5)
    assert not reader.is_alive()


def test_live_sources_persist_and_report_status(tmp_path):
    root = build_store(tmp_path / "store")
    proc, base = start(root)
    try:
        writer = EpisodeStore(root)  # another process's ingest holds the writer: the source waits
        r = httpx.post(base + "/v1/sources", json={"url": "rtsp://127.0.0.1:9/cam", "name": "door"})
        assert r.status_code == 201 and r.json()["name"] == "door"
        door = wait_for(lambda: (s := httpx.get(base + "/v1/sources").json()["live"][0])["state"] == "waiting"
                        and s, timeout=90)  # fmt: skip
        assert "open for writing elsewhere" in door["error"]
        writer.close()
        assert httpx.post(base + "/v1/sources", json={"url": "rtsp://x/y", "name": "door"}).status_code == 400
        assert httpx.post(base + "/v1/sources", json={"url": "rtsp://x/y", "name": "../x"}).status_code == 400
        httpx.post(base + "/v1/sources", json={"url": "v4l2:/dev/video0", "name": "webcam"})
        live = wait_for(lambda: (s := httpx.get(base + "/v1/sources").json()["live"]) and
                        {x["name"]: x for x in s}["door"]["state"] == "error" and s, timeout=60)  # fmt: skip
        by_name = {x["name"]: x for x in live}
        assert "rtsp://127.0.0.1:9/cam" in by_name["door"]["error"]
        assert by_name["webcam"]["state"] == "unsupported"
    finally:
        assert stop(proc) == 0
    proc, base = start(root)
    try:
        names = [s["name"] for s in httpx.get(base + "/v1/sources").json()["live"]]
        assert names == ["door", "webcam"]  # persisted across the restart
        assert httpx.delete(base + "/v1/sources/door").json()["state"] == "removed"
        assert httpx.delete(base + "/v1/sources/door").status_code == 404
        assert [s["name"] for s in httpx.get(base + "/v1/sources").json()["live"]] == ["webcam"]
    finally:
        assert stop(proc) == 0
    assert json.loads((root / "sources.json").read_text())[0]["name"] == "webcam"


@pytest.mark.slow
def test_two_live_sources_write_through_one_writer(tmp_path):
    """Two cameras at once (real ffmpeg TCP servers on loopback): both run in the server's one
    live process and store their episodes through its one writer; removing one leaves the
    other running; SIGTERM stores what they hold and exits cleanly."""
    from tests.media import write_video
    from tests.test_pipeline_live import _free_port, serve

    media = {name: write_video(tmp_path / f"{name}.mp4", duration_s=45.0, clicks_at=at, gop=12)
             for name, at in (("door", [3.0, 12.0]), ("desk", [5.0, 14.0]))}  # fmt: skip
    ports = {name: _free_port() for name in media}
    servers = {name: serve(media[name], ports[name]) for name in media}
    root = build_store(tmp_path / "store")
    proc, base = start(root)
    urls = {name: f"tcp://127.0.0.1:{ports[name]}" for name in media}
    try:
        for name, url in urls.items():
            assert httpx.post(base + "/v1/sources", json={"url": url, "name": name}).status_code == 201

        def both_stored():
            doc = httpx.get(base + "/v1/sources").json()
            states = {s["name"]: s for s in doc["live"]}
            assert all(s["state"] in ("starting", "running") for s in states.values()), states
            stored = {r["source"]: r["episodes"] for r in doc["stored"]}
            return all(stored.get(url, 0) >= 1 for url in urls.values()) and states

        states = wait_for(both_stored, timeout=150)
        assert {s["state"] for s in states.values()} == {"running"}
        assert states["door"]["pid"] == states["desk"]["pid"]  # one process, one writer
        assert httpx.delete(base + "/v1/sources/desk").json()["state"] == "removed"
        time.sleep(3.0)
        live = httpx.get(base + "/v1/sources").json()["live"]
        assert [(s["name"], s["state"]) for s in live] == [("door", "running")]
        r = httpx.post(base + "/v1/query", json={"text": "what happened?", "k": 20}).json()
        assert {e["source"] for e in r["evidence"]} >= set(urls.values())
    finally:
        code = stop(proc)
        for server in servers.values():
            server.kill()
            server.wait()
    assert code == 0
    with EpisodeStore(root) as st:  # the writer was released; nothing acknowledged was lost
        assert {ep.source for ep in st.episodes(limit=100)} >= set(urls.values())


@pytest.mark.slow
def test_ingest_jobs_run_while_a_camera_runs(tmp_path, tiny_video):
    """With a camera running (a real ffmpeg TCP server on loopback), files submitted over HTTP are
    ingested in the live process through its one writer while the camera keeps storing: a good
    file completes, a bad upload fails alone, a running job reports progress and can be
    cancelled, and a job in flight when the live process dies ends failed with the reason. The
    store is sound afterwards."""
    from tests.media import write_video
    from tests.test_pipeline_live import _free_port, serve

    cam = write_video(tmp_path / "door.mp4", duration_s=150.0, clicks_at=[3.0 + 6 * k for k in range(24)], gop=12)
    long_file = write_video(tmp_path / "long.mp4", duration_s=40.0, clicks_at=[2.0 + 4 * k for k in range(9)])
    port = _free_port()
    camera = serve(cam, port)
    url = f"tcp://127.0.0.1:{port}"
    root = build_store(tmp_path / "store")
    proc, base = start(root)

    def live() -> dict:
        doc = httpx.get(base + "/v1/sources").json()
        return {"state": doc["live"][0]["state"], "pid": doc["live"][0]["pid"],
                "stored": {r["source"]: r["episodes"] for r in doc["stored"]}.get(url, 0)}  # fmt: skip

    def job(job_id: str) -> dict:
        return httpx.get(f"{base}/v1/ingest/{job_id}").json()

    def finished(job_id: str):
        doc = job(job_id)
        return doc if doc["state"] not in ("queued", "running") else None

    try:
        assert httpx.post(base + "/v1/sources", json={"url": url, "name": "door"}).status_code == 201
        before = wait_for(lambda: (s := live())["state"] == "running" and s["stored"] >= 1 and s, timeout=150)

        good = httpx.post(base + "/v1/ingest", json={"sources": [str(tiny_video)]}).json()["job_id"]
        bad = httpx.put(base + "/v1/ingest/upload?filename=bad.mp4", content=b"not media").json()["job_id"]
        doc = wait_for(lambda: finished(good), timeout=240)
        assert doc["state"] == "done" and doc["runner"] == "live", doc  # did not wait for the camera
        assert doc["report"]["episodes_total"] >= 1 and not doc["report"]["sources"][0]["error"]
        doc = wait_for(lambda: finished(bad), timeout=120)
        assert doc["state"] == "done" and doc["runner"] == "live" and doc["report"]["sources"][0]["error"], doc
        stored = {r["source"]: r["episodes"] for r in httpx.get(base + "/v1/sources").json()["stored"]}
        assert stored.get(str(tiny_video.resolve()), 0) == job(good)["report"]["episodes_total"]
        now = wait_for(lambda: (s := live())["stored"] > before["stored"] and s, timeout=60)
        assert now["state"] == "running" and now["pid"] == before["pid"]  # the camera went on, same process

        cancelled = httpx.post(base + "/v1/ingest", json={"sources": [str(long_file)]}).json()["job_id"]
        doc = wait_for(lambda: "source" in ((d := job(cancelled))["progress"] or {}) and d, timeout=120)
        assert doc["state"] == "running" and doc["progress"]["source"] == str(long_file), doc
        assert httpx.delete(f"{base}/v1/ingest/{cancelled}").status_code == 200
        doc = wait_for(lambda: finished(cancelled), timeout=120)
        assert doc["state"] == "cancelled", doc
        assert live()["state"] == "running"

        lost = httpx.post(base + "/v1/ingest", json={"sources": [str(long_file)]}).json()["job_id"]
        wait_for(lambda: job(lost)["state"] == "running", timeout=60)
        writer = int((root / LOCK_NAME).read_text().split()[0])  # the live process's MemoryActor
        old_pid = live()["pid"]
        os.kill(old_pid, signal.SIGKILL)  # the live process dies with the job in flight
        doc = wait_for(lambda: finished(lost), timeout=60)
        assert doc["state"] == "failed" and "live process" in doc["error"], doc
        # its orphaned writer (a Ray worker, which notices only later that its node died) is gone,
        # and the restarted live process takes the camera back (its one-client server restarted)
        wait_for(lambda: not Path(f"/proc/{writer}/cmdline").exists()
                 or b"MemoryActor" not in Path(f"/proc/{writer}/cmdline").read_bytes(), timeout=15)  # fmt: skip
        camera.kill()
        camera.wait()
        camera = serve(cam, port)
        back = wait_for(lambda: (s := live())["state"] == "running" and s["pid"] != old_pid and s, timeout=90)
        assert back["pid"] is not None
    finally:
        code = stop(proc)
        camera.kill()
        camera.wait()
    assert code == 0
    check = subprocess.run([sys.executable, "-m", "pipeline", "store", "check", "--store", str(root), "--json"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout + check.stderr
    with EpisodeStore(root) as st:  # the writer was released; the camera's and the file's episodes are kept
        assert {ep.source for ep in st.episodes(limit=1000)} >= {url, str(tiny_video.resolve())}


@pytest.mark.slow
def test_ingest_jobs_end_to_end(tmp_path, tiny_video):
    """Submit a real video (through the real pipeline) and a bad upload; poll to completion."""
    root = tmp_path / "empty-store"  # the server creates it
    proc, base = start(root)
    try:
        events: list = []
        ready = threading.Event()
        threading.Thread(target=read_events, args=(base, events, ready, "?types=episode,job"),
                         daemon=True).start()  # fmt: skip
        assert ready.wait(10)
        r = httpx.put(base + "/v1/ingest/upload?filename=../../evil name.mp4", content=b"not media")
        assert r.status_code == 202
        bad = r.json()["job_id"]
        assert Path(r.json()["sources"][0]).parent == (root / "uploads").resolve()
        assert Path(r.json()["sources"][0]).name.endswith("-evil_name.mp4")
        good = httpx.post(base + "/v1/ingest", json={"sources": [str(tiny_video)]}).json()["job_id"]
        assert httpx.put(base + "/v1/ingest/upload?filename=x.mp4", content=b"").status_code == 400

        def finished(job_id: str):
            doc = httpx.get(f"{base}/v1/ingest/{job_id}").json()
            return doc if doc["state"] not in ("queued", "running") else None

        doc = wait_for(lambda: finished(bad), timeout=120)
        assert doc["state"] == "done" and doc["report"]["sources"][0]["error"]
        doc = wait_for(lambda: finished(good), timeout=240)
        assert doc["state"] == "done" and doc["report"]["episodes_total"] >= 1, doc
        eps = httpx.get(base + "/v1/episodes").json()
        assert eps["total"] == doc["report"]["episodes_total"]
        wait_for(lambda: any(e == "episode" for e, _ in events))
        assert {d["state"] for e, d in events if e == "job"} >= {"queued", "running", "done"}
        assert httpx.get(base + "/v1/ingest").json()["queued"] == 0
        assert 'eidetic_source_fps{source="' in httpx.get(base + "/metrics").text
    finally:
        assert stop(proc) == 0
    jobs = json.loads((root / "jobs.json").read_text())
    assert {j["job_id"]: j["state"] for j in jobs} == {bad: "done", good: "done"}


def test_token_required_when_configured(store_dir):
    proc, base = start(store_dir, env={"EIDETIC_API_TOKEN": "s3cret"})
    try:
        assert httpx.get(base + "/healthz").status_code == 200
        assert httpx.post(base + "/v1/query", json={"text": "what happened"}).status_code == 401
        ok = httpx.post(base + "/v1/query", json={"text": "what happened"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["answered"] is True
        assert httpx.get(base + "/v1/episodes", headers={"Authorization": "Bearer nope"}).status_code == 401
        for path in ("/metrics", "/v1/events", "/v1/sources", "/v1/objects", "/v1/ingest"):
            assert httpx.get(base + path).status_code == 401, path
        assert httpx.delete(base + "/v1/episodes/1").status_code == 401
        kf = httpx.get(base + "/v1/episodes/1/keyframes/0.jpg?token=s3cret")  # how the page loads images
        assert kf.status_code == 200
    finally:
        assert stop(proc) == 0


def test_refuses_public_bind_without_token(store_dir):
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--store", str(store_dir), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "EIDETIC_API_TOKEN"},
    )
    assert r.returncode == 2 and "without an API token" in r.stderr


def test_query_by_example_image(server, store_dir):
    from PIL import Image

    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :50] = (30, 30, 200)  # the glass episode's keyframe
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    body = {"text": "anything like this image?", "image": base64.b64encode(buf.getvalue()).decode()}
    doc = httpx.post(server + "/v1/query", json=body, timeout=60).json()
    assert doc["answered"] and doc["evidence"][0]["episode_id"] == 2
    assert doc["evidence"][0]["score"] > 0.9 and doc["answer"].startswith("Similar: glass_breaking")


@pytest.mark.slow
def test_camera_added_while_a_job_runs_alone_takes_the_job_over(tmp_path):
    """A file job running in a process of its own (no camera yet) does not make a camera added
    meanwhile wait for it: the job's process is stopped cleanly and the job resumes in the live
    process beside the camera (a real ffmpeg TCP server on loopback). Nothing is lost or stored
    twice: the file's sounds and episodes match a plain `eidetic ingest` of it."""
    from pipeline.serve_jobs import MOVED
    from tests.media import write_video
    from tests.test_pipeline_live import _free_port, serve

    cam = write_video(tmp_path / "door.mp4", duration_s=90.0, clicks_at=[3.0 + 6 * k for k in range(14)], gop=12)
    long_file = write_video(tmp_path / "long.mp4", duration_s=120.0, width=320, height=240,
                            clicks_at=[2.0 + 3 * k for k in range(39)])  # fmt: skip
    port = _free_port()
    camera = serve(cam, port)
    url = f"tcp://127.0.0.1:{port}"
    root = tmp_path / "store"
    proc, base = start(root)
    events: list = []
    ready = threading.Event()
    threading.Thread(target=read_events, args=(base, events, ready, "?types=job"), daemon=True).start()

    def job(job_id: str) -> dict:
        return httpx.get(f"{base}/v1/ingest/{job_id}").json()

    def stored() -> int:
        doc = httpx.get(base + "/v1/sources").json()
        return {r["source"]: r["episodes"] for r in doc["stored"]}.get(str(long_file.resolve()), 0)

    try:
        assert ready.wait(10)
        job_id = httpx.post(base + "/v1/ingest", json={"sources": [str(long_file)]}).json()["job_id"]
        wait_for(lambda: (d := job(job_id))["state"] == "running" and d["runner"] == "process", timeout=60)
        wait_for(lambda: stored() >= 1, timeout=120)  # the job's own process has stored some of the file
        assert httpx.post(base + "/v1/sources", json={"url": url, "name": "door"}).status_code == 201
        wait_for(lambda: httpx.get(base + "/v1/sources").json()["live"][0]["state"] == "running", timeout=120)
        doc = wait_for(lambda: (d := job(job_id))["state"] not in ("queued", "running") and d, timeout=300)
        assert doc["state"] == "done" and doc["runner"] == "live", doc
        seen = [(d["state"], d["runner"], d["waiting"]) for e, d in events if e == "job"]
        assert ("running", "process", None) in seen and ("queued", "process", MOVED) in seen, seen
        assert seen.index(("queued", "process", MOVED)) < seen.index(("running", "live", None)), seen
    finally:
        code = stop(proc)
        camera.kill()
        camera.wait()
    assert code == 0
    ref = tmp_path / "ref"
    run = subprocess.run([sys.executable, "-m", "pipeline", "ingest", str(long_file), "--store", str(ref), "--json"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr

    def memory(store: Path) -> tuple[list, list]:
        with EpisodeStore(store) as st:
            eps = [ep for ep in st.episodes(limit=1000) if ep.source == str(long_file.resolve())]
        onsets = sorted(round(s.t_start, 2) for ep in eps for s in ep.sounds)
        return onsets, sorted((round(ep.t_start, 1), round(ep.t_end, 1)) for ep in eps)

    got, want = memory(root), memory(ref)
    assert got[0] == want[0]  # every sound of the file, once
    assert got[1] == want[1], (got[1], want[1])
