"""End to end on real Ray actors: ingest real videos, query from a new process, restart-safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def eidetic(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "EIDETIC__RAY__NUM_CPUS": "2"},
    )


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> tuple[Path, dict]:
    """The bundled demo sample ingested once through the actors (a fresh Ray in a subprocess)."""
    store = tmp_path_factory.mktemp("demo") / "store"
    r = eidetic("ingest", str(REPO / "pipeline" / "assets" / "demo.mp4"), "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return store, json.loads(r.stdout)  # stdout is exactly one JSON document: no Ray output


def test_ingest_report_shape(demo_store):
    _, doc = demo_store
    (src,) = doc["sources"]
    assert set(src) == {"source", "duration_s", "frames_decoded", "frames_processed", "triggers", "episodes", "wall_s", "error", "warnings", "gaps"}
    assert src["warnings"] == [] and src["gaps"] == []  # a sound file, not a live stream
    assert src["error"] is None and src["episodes"] >= 1 and doc["episodes_total"] == src["episodes"]
    assert 0 < src["frames_processed"] <= src["frames_decoded"] < 24 * 12  # not every frame decoded


def test_demo_sounds_are_found_from_a_new_process(demo_store):
    store, _ = demo_store
    truth = json.loads((REPO / "pipeline" / "assets" / "demo.json").read_text())["events"]
    r = eidetic("query", "when did something happen?", "--store", str(store), "--json", "-k", "10")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["answered"] is True
    spans = [(e["t_start"], e["t_end"]) for e in doc["evidence"]]
    for ev in truth:  # every mixed-in sound lies in some cited episode
        assert any(a - 0.5 <= ev["t_start"] <= b for a, b in spans), (ev, spans)
    for e in doc["evidence"]:
        assert set(e) >= {"episode_id", "source", "t_start", "t_end", "wall_start", "labels", "objects", "keyframes", "score"}
        assert all(Path(k).is_file() for k in e["keyframes"])


def test_demo_sounds_are_named(demo_store):
    store, _ = demo_store
    truth = json.loads((REPO / "pipeline" / "assets" / "demo.json").read_text())["events"]
    glass = next(e for e in truth if e["label"] == "glass_breaking")
    r = eidetic("query", "when did the glass break?", "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["answered"] and "glass_breaking" in doc["evidence"][0]["labels"]
    top = doc["evidence"][0]
    assert top["t_start"] - 0.5 <= glass["t_start"] <= top["t_end"], (glass, top)


def test_store_is_sound_after_restart(demo_store):
    store, _ = demo_store
    r = eidetic("store", "check", "--store", str(store), "--json")
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["episodes"] >= 1 and doc["vectors"] >= doc["episodes"]


def test_real_video_and_bad_input_in_one_batch(tmp_path, shared_data):
    video = need(shared_data / "videos" / "sintel.mp4")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 4096)
    store = tmp_path / "store"
    r = eidetic("ingest", str(video), str(bad), "--store", str(store), "--json")
    assert r.returncode == 3, r.stderr[-2000:]  # bad input reported after the good one finished
    doc = json.loads(r.stdout)
    good, broken = doc["sources"]
    assert good["error"] is None and good["episodes"] >= 1 and abs(good["duration_s"] - 52.17) < 0.1
    assert broken["error"] and broken["episodes"] == 0
    q = eidetic("query", "what happened", "--store", str(store), "--json")
    assert q.returncode == 0 and json.loads(q.stdout)["answered"] is True


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the in-process tests of this module (Ray testing tips)."""
    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_reasoner_actor_answers(demo_store, ray_session):
    from memory.types import Query
    from pipeline.actors.reasoner_actor import ReasonerActor

    store, _ = demo_store
    actor = ReasonerActor.remote(str(store))
    answer = ray_session.get(actor.answer.remote(Query(text="what happened", k=3)))
    assert answer.answered and 1 <= len(answer.evidence) <= 3
    nothing = ray_session.get(actor.answer.remote(Query(text="when did the helicopter land", k=3)))
    assert not nothing.answered and nothing.evidence == ()


def test_python_api_ingest_then_query(tmp_path, ray_session):
    from pipeline import Eidetic
    from pipeline.config import load_config
    from tests.media import write_video

    video = write_video(tmp_path / "clip.mp4", duration_s=6.0, clicks_at=[1.0, 4.5])  # > refractory_s apart
    # noise bursts are no interaction sound: the weight-free gate, which captures every sound
    app = Eidetic(tmp_path / "store", config=load_config(trigger={"detector": "energy"}))
    report = app.ingest(str(video))
    (src,) = report["sources"]
    assert src["error"] is None and src["episodes"] == 2 and src["triggers"] == 2
    assert ray_session.is_initialized()  # the API reused the running Ray and left it running
    answer = app.query("when was there a sound?")
    assert answer.answered and len(answer.evidence) == 2
    starts = sorted(h.episode.t_start for h in answer.evidence)
    assert starts[0] <= 1.0 <= starts[1] <= 4.5  # each burst lies in an episode
    first = min(answer.evidence, key=lambda h: h.episode.t_start).episode
    assert first.t_start <= 1.0 <= first.t_end and first.objects  # the moving squares were tracked
    assert app.store.check()["ok"]
    app.close()


def test_video_without_audio_builds_memory_from_visual_changes(tmp_path, ray_session):
    from pipeline import Eidetic
    from tests.media import write_video

    video = write_video(tmp_path / "mute.mp4", duration_s=4.0, audio=False)
    app = Eidetic(tmp_path / "store")
    (src,) = app.ingest(str(video))["sources"]
    assert src["error"] is None and src["triggers"] >= 1 and src["episodes"] >= 1
    episodes = app.store.episodes()
    assert episodes and episodes[0].t_start == 0.0 and "visual_change" in episodes[0].labels
    app.close()


STOP_SCRIPT = """
import json, ray
from pipeline.config import load_config
from pipeline.graph import start_ray, stop_ray
start_ray(load_config(environ={}))
node = ray._private.worker._global_node
head = [i.process.pid for v in node.all_processes.values() for i in v]
kids = [int(p.parent.name) for p in __import__('pathlib').Path('/proc').glob('[0-9]*/stat')
        if int(p.read_text().rsplit(')', 1)[1].split()[1]) in head]
stop_ray()
print(json.dumps(head + kids))
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_stop_ray_leaves_no_ray_process_behind():
    """Head processes, their agents and idle workers are gone soon after stop_ray returns (the
    agents used to linger a minute or two after their raylet)."""
    import time

    r = subprocess.run([sys.executable, "-c", STOP_SCRIPT], capture_output=True, text=True,
                       timeout=180, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    pids = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(pids) >= 5  # gcs, raylet, dashboard, monitor, log monitor (+ agents, workers)

    def alive() -> list[int]:
        return [p for p in pids if Path(f"/proc/{p}").exists()
                and " Z " not in Path(f"/proc/{p}/stat").read_text()]  # fmt: skip

    deadline = time.monotonic() + 10.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive() == []
