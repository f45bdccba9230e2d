"""The `eidetic` command as a user runs it: exit codes, one-line errors, clean --json stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import need
from tests.media import write_video

REPO = Path(__file__).resolve().parents[1]


def eidetic(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **(env or {})}, timeout=300,
    )


def test_version():
    r = eidetic("--version")
    assert r.returncode == 0 and "0.1.0" in r.stdout


def test_not_a_video_exits_3_with_one_line(tmp_path):
    bad = tmp_path / "not-a-video.txt"
    bad.write_text("just text\n" * 20)
    r = eidetic("ingest", str(bad), "--store", str(tmp_path / "s"))
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not-a-video.txt" in lines[0] and "not a media file" in lines[0]
    assert "Traceback" not in r.stderr


def test_json_error_document_on_bad_media(tmp_path):
    r = eidetic("ingest", str(tmp_path / "missing.mp4"), "--json", "--store", str(tmp_path / "s"))
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    (src,) = doc["sources"]
    assert src["error"] == "no such file" and doc["episodes_total"] == 0
    assert not (tmp_path / "s").exists()  # nothing started, nothing written


def test_usage_error_exits_2_with_json(tmp_path):
    r = eidetic("query", "--bogus", "--json")
    assert r.returncode == 2 and "error" in json.loads(r.stdout)


def test_query_without_store_is_a_usage_error(tmp_path):
    r = eidetic("query", "what happened", "--store", str(tmp_path / "none"), "--json")
    assert r.returncode == 2 and "no store" in json.loads(r.stdout)["error"]


def test_config_check(tmp_path):
    good = eidetic("config", "check", str(REPO / "deploy" / "config.example.yaml"), "--json")
    assert good.returncode == 0 and json.loads(good.stdout)["ok"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  perception_fsp: 3\n")
    r = eidetic("config", "check", str(bad))
    assert r.returncode == 2 and "ingest.perception_fsp: unknown key" in r.stderr


def test_events_json_on_generated_video(tiny_video):
    r = eidetic("events", str(tiny_video), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"media", "duration_s", "events", "capture_windows"} <= set(doc) and doc["trigger"] == "audio"
    starts = sorted(e["t_start"] for e in doc["events"])  # every sound heard, triggering or not
    assert len(starts) == 2 and np.allclose(starts, [0.8, 2.0], atol=0.1)
    for e in doc["events"]:
        assert set(e) == {"t_start", "t_end", "label", "score", "trigger"} and 0 <= e["score"] <= 1
    for w in doc["capture_windows"]:
        assert 0 <= w["t_start"] < w["t_end"] <= doc["duration_s"] + 1e-6
    # the weight-free gate alone captures every sound
    r = eidetic("events", str(tiny_video), "--json", env={"EIDETIC__TRIGGER__DETECTOR": "energy"})
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and all(e["trigger"] and e["label"] == "sound" for e in doc["events"])
    assert len(doc["capture_windows"]) >= 1


def test_events_on_video_without_audio_use_the_visual_trigger(tmp_path):
    video = write_video(tmp_path / "mute.mp4", duration_s=4.0, audio=False)
    r = eidetic("events", str(video), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["trigger"] == "visual" and "visual-change" in r.stderr
    assert doc["events"] and all(e["label"] == "visual_change" for e in doc["events"])
    assert doc["events"][0]["t_start"] == 0.0  # what the camera sees at the start is captured
    assert doc["capture_windows"] and doc["capture_windows"][0]["t_start"] == 0.0


def test_events_on_audio_only_file_and_bad_media(tmp_path):
    audio = write_video(tmp_path / "clicks.m4a", duration_s=3.0, video=False, clicks_at=[1.0])
    r = eidetic("events", str(audio), "--json")
    assert r.returncode == 0, r.stderr
    assert [round(e["t_start"]) for e in json.loads(r.stdout)["events"]] == [1]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 4096)
    r = eidetic("events", str(bad), "--json")
    assert r.returncode == 3 and "error" in json.loads(r.stdout)


def test_track_writes_masks_in_input_mode(tmp_path, shared_data):
    seq = need(shared_data / "davis2016" / "JPEGImages" / "480p" / "blackswan")
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted(seq.iterdir())[:4]:
        (frames / f.name).write_bytes(f.read_bytes())
    first = shared_data / "davis2016" / "Annotations" / "480p" / "blackswan" / "00000.png"
    out = tmp_path / "out"
    r = eidetic("track", str(frames), "--first-mask", str(first), "--out", str(out), "--preset", "fast", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["frames"] == 4 and doc["objects"] == 1 and doc["keyframes_kept"] >= 1
    written = sorted(p.name for p in out.iterdir())
    assert written == ["00000.png", "00001.png", "00002.png", "00003.png"]
    for p in out.iterdir():
        img = Image.open(p)
        assert img.mode == "L" and set(np.unique(np.asarray(img))) <= {0, 255}
    last = np.asarray(Image.open(out / "00003.png")) > 0
    assert last.mean() > 0.02  # the swan is still there


def test_track_mask_size_mismatch(tmp_path, tiny_video):
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    r = eidetic("track", str(tiny_video), "--first-mask", str(mask), "--out", str(tmp_path / "o"))
    assert r.returncode == 3 and "m.png" in r.stderr and "10x10" in r.stderr
