"""`eidetic serve` as a real uvicorn process on loopback: query, episodes, keyframes, auth."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from memory.episodes import summarize
from memory.store import EpisodeStore
from memory.types import Episode, SoundRecord


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve") / "store"
    with EpisodeStore(root) as st:
        for label, t0 in [("door_wood_knock", 4.0), ("glass_breaking", 11.0)]:
            sounds = (SoundRecord(label, 0.9, t0, t0 + 1.0),)
            ep = Episode(source="/media/demo.mp4", t_start=t0 - 1, t_end=t0 + 2, labels=(label,),
                         summary=summarize((label,), sounds, ()), sounds=sounds, keyframe_times=(t0,))
            st.add(ep, [np.full((40, 60, 3), 50 if t0 < 5 else 200, np.uint8)])
    return root


def start(store_dir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--store", str(store_dir), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):  # bounded: at most ~20 s
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not come up")


@pytest.fixture(scope="module")
def server(store_dir):
    proc, base = start(store_dir)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def test_query_over_http_matches_cli_shape(server):
    r = httpx.post(server + "/v1/query", json={"text": "when did the glass break?"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["answered"] is True and "0:10.0" in doc["answer"]
    (ev,) = doc["evidence"]
    assert ev["labels"] == ["glass_breaking"]
    kf = httpx.get(server + ev["keyframes"][0])
    assert kf.status_code == 200 and kf.headers["content-type"] == "image/jpeg" and kf.content[:2] == b"\xff\xd8"


def test_nothing_matches_is_not_answered(server):
    doc = httpx.post(server + "/v1/query", json={"text": "when did the helicopter land"}).json()
    assert doc["answered"] is False and doc["evidence"] == []


def test_bad_requests(server):
    assert httpx.post(server + "/v1/query", json={"text": ""}).status_code == 422
    assert httpx.post(server + "/v1/query", json={"txt": "x"}).status_code == 422
    assert httpx.post(server + "/v1/query", content=b"x" * 100_000, headers={"content-type": "application/json"}).status_code == 413
    assert httpx.get(server + "/v1/episodes/999").status_code == 404
    assert httpx.get(server + "/v1/episodes/1/keyframes/7.jpg").status_code == 404
    assert httpx.get(server + "/v1/episodes/1/keyframes/..%2F..%2Feidetic.db.jpg").status_code == 404


def test_episodes_metrics_page(server):
    eps = httpx.get(server + "/v1/episodes").json()["episodes"]
    assert [e["labels"] for e in eps] == [["glass_breaking"], ["door_wood_knock"]]
    metrics = httpx.get(server + "/metrics").text
    assert "eidetic_queries_total" in metrics and "eidetic_store_episodes 2.0" in metrics
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "<form" in page.text
    assert httpx.get(server + "/openapi.json").json()["info"]["title"] == "Eidetic"


def test_token_required_when_configured(store_dir):
    proc, base = start(store_dir, env={"EIDETIC_API_TOKEN": "s3cret"})
    try:
        assert httpx.get(base + "/healthz").status_code == 200
        assert httpx.post(base + "/v1/query", json={"text": "what happened"}).status_code == 401
        ok = httpx.post(base + "/v1/query", json={"text": "what happened"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["answered"] is True
        assert httpx.get(base + "/v1/episodes", headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_refuses_public_bind_without_token(store_dir):
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--store", str(store_dir), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "EIDETIC_API_TOKEN"},
    )
    assert r.returncode == 2 and "without an API token" in r.stderr
