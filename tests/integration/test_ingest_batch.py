"""Batch ingest on real Ray actors: a folder fans out (one bad file reported, the rest stored), long
files are sharded, SIGTERM stops cleanly and the next run resumes from the journal without redoing
or duplicating anything; a live TCP stream is ingested until SIGTERM, its capture stored."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.journal import JOURNAL_NAME
from tests.media import write_video

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]
ENV = {**os.environ, "EIDETIC__RAY__NUM_CPUS": "2", "EIDETIC__TRIGGER__DETECTOR": "energy"}


def eidetic(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          timeout=timeout, env={**ENV, **(env or {})})  # fmt: skip


def _episodes(store: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(store / "eidetic.db") as db:
        try:
            return sorted(db.execute("SELECT source, t_start FROM episodes").fetchall())
        except sqlite3.OperationalError:  # the store is being created
            return []


def _shards_done(journal: Path) -> int:
    if not journal.exists():
        return 0
    with sqlite3.connect(journal) as db:
        try:
            return db.execute("SELECT count(*) FROM entries WHERE kind='shard'").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0


def test_folder_fans_out_and_reports_the_bad_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        write_video(folder / f"clip{i}.mp4", duration_s=4.0, clicks_at=[1.0 + i * 0.5])
    (folder / "broken.mp4").write_bytes(b"\x00" * 4096)
    store = tmp_path / "store"
    r = eidetic("ingest", str(folder), "--store", str(store), "--json")
    assert r.returncode == 3, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    by_name = {Path(s["source"]).name: s for s in doc["sources"]}
    assert by_name["broken.mp4"]["error"] and "broken.mp4" in r.stderr
    for i in range(3):
        assert by_name[f"clip{i}.mp4"]["error"] is None and by_name[f"clip{i}.mp4"]["episodes"] == 1
    assert len(_episodes(store)) == 3
    again = eidetic("ingest", str(folder), "--store", str(store), "--json")  # all done: nothing redone
    assert again.returncode == 3
    assert all(s.get("resumed") for s in json.loads(again.stdout)["sources"] if s["error"] is None)
    assert len(_episodes(store)) == 3


def test_sigterm_stops_cleanly_and_the_next_run_resumes(tmp_path):
    clicks = [2.0 + 6.0 * k for k in range(10)]  # one sound every 6 s over 60 s
    video = write_video(tmp_path / "long.mp4", duration_s=60.0, clicks_at=clicks)
    store = tmp_path / "store"
    env = {**ENV, "EIDETIC__INGEST__SHARD_S": "12", "EIDETIC__INGEST__PERCEPTION_FPS": "6"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ingest", str(video), "--store", str(store), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    journal = store / JOURNAL_NAME
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # until the first shard is stored
        if _shards_done(journal):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    first = json.loads(out)
    (src,) = first["sources"]
    assert proc.returncode in (0, 130), err[-2000:]
    assert "Traceback" not in err
    stored = _episodes(store)
    if proc.returncode == 130:  # stopped before the end: resumable
        assert src["interrupted"] and 1 <= len(stored) < len(clicks)
    r = eidetic("ingest", str(video), "--store", str(store), "--json", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    final = _episodes(store)
    assert len(final) == len(clicks) and len({t for _, t in final}) == len(clicks)  # none twice
    for click in clicks:
        assert any(t <= click <= t + 3.0 for _, t in final)
    assert stored == [e for e in final if e in stored]  # what the first run stored was kept


def test_live_stream_until_sigterm(tmp_path):
    from tests.test_pipeline_live import _free_port, serve

    media = write_video(tmp_path / "cam.mp4", duration_s=60.0, clicks_at=[2.0], gop=12)
    port = _free_port()
    server = serve(media, port)
    store = tmp_path / "store"
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ingest", url, "--store", str(store), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # the click's episode stored
            if (store / "eidetic.db").exists() and _episodes(store):
                break
            time.sleep(0.2)
        time.sleep(8.0)  # quiet stream: demuxed, not decoded
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 0, err[-2000:]
    (src,) = json.loads(out)["sources"]
    assert src["error"] is None and src["status"] == "stopped" and src["episodes"] >= 1
    assert src["frames_processed"] > 0 and src["frames_decoded"] < src["duration_s"] * 12 / 2
    assert _episodes(store)[0][0] == url


def test_video_paired_with_a_separate_audio_file(tmp_path):
    video = write_video(tmp_path / "mute.mp4", duration_s=8.0, audio=False)
    sound = write_video(tmp_path / "mic.m4a", duration_s=8.0, clicks_at=[2.0, 6.0], video=False)
    store = tmp_path / "store"
    r = eidetic("ingest", str(video), "--audio", str(sound), "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    (src,) = json.loads(r.stdout)["sources"]
    assert src["error"] is None and src["episodes"] == 2 and src["triggers"] == 2
    assert "visual" not in " ".join(src["warnings"])  # the paired audio triggered, not the fallback
    starts = [t for _, t in _episodes(store)]
    assert starts[0] <= 2.0 <= starts[0] + 3 and starts[1] <= 6.0 <= starts[1] + 3
    bad = eidetic("ingest", str(video), "--audio", str(video), "--store", str(store), "--json")
    assert bad.returncode == 3 and "has no audio stream to pair" in json.loads(bad.stdout)["sources"][0]["error"]


def test_audio_scanned_while_ray_starts_gives_the_same_memory(tmp_path):
    """The driver scans the first file's audio shards while Ray starts (``eidetic ingest``); a
    run on an already running Ray leaves them to Ray tasks. Both store the same episodes and
    sounds, and journal the same audio results."""
    clicks = [1.5 + 4.0 * k for k in range(8)]  # 32 s, shards of 10 s: sounds on both sides of cuts
    video = write_video(tmp_path / "long.mp4", duration_s=32.0, clicks_at=clicks)
    env = {**ENV, "EIDETIC__INGEST__SHARD_S": "10"}
    here = tmp_path / "driver"
    r = eidetic("-v", "ingest", str(video), "--store", str(here), "--json", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "audio shards [0, 1, 2] scanned in this process while Ray starts" in r.stderr
    tasks = tmp_path / "tasks"
    script = ("import ray, sys; from pipeline.config import load_config; from pipeline.graph import run_ingest; "
              "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False); "
              "cfg = load_config(environ=__import__('os').environ); "
              "cfg = cfg.model_copy(update={'store': cfg.store.model_copy(update={'path': __import__('pathlib').Path(sys.argv[2])})}); "
              "doc = run_ingest([sys.argv[1]], cfg); assert doc['sources'][0]['error'] is None, doc")  # fmt: skip
    t = subprocess.run([sys.executable, "-c", script, str(video), str(tasks)], capture_output=True, text=True,
                       timeout=600, env=env)  # fmt: skip
    assert t.returncode == 0, t.stderr[-2000:]

    def memory(store: Path) -> tuple[list, list, list]:
        with sqlite3.connect(store / "eidetic.db") as db:
            episodes = db.execute("SELECT t_start, t_end, labels, sounds, keyframe_times FROM episodes ORDER BY t_start").fetchall()
            sounds = db.execute("SELECT label, score, t_start, t_end FROM sounds ORDER BY t_start").fetchall()
        with sqlite3.connect(store / JOURNAL_NAME) as db:
            audio = db.execute("SELECT shard, payload FROM entries WHERE kind='audio' ORDER BY shard").fetchall()
        return episodes, sounds, audio

    a, b = memory(here), memory(tasks)
    assert len(a[0]) == len(clicks) and len(a[2]) == 3
    assert a == b
