"""`eidetic query` on a real store: malformed questions exit 2 with one line, structured queries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory.episodes import summarize
from memory.store import EpisodeStore
from memory.types import Episode, SoundRecord


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qcli") / "store"
    with EpisodeStore(root) as st:
        for label, t0 in [("door_wood_knock", 4.0), ("glass_breaking", 11.0), ("door_wood_knock", 20.0)]:
            sounds = (SoundRecord(label, 0.9, t0, t0 + 1.0),)
            st.add(Episode(source="/media/demo.mp4", t_start=t0 - 1, t_end=t0 + 2, labels=(label,),
                           summary=summarize((label,), sounds, ()), sounds=sounds),
                   [np.full((16, 16, 3), 90, np.uint8)])
    return root


def eidetic(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


def test_query_cli_errors_and_structured(store_dir: Path) -> None:
    for text, fragment in [("what happened between 1 and", "needs two times"),
                           ("what happened at 25:99", "below 60"),
                           ("anything like this image?", "attach an image")]:
        r = eidetic("query", text, "--store", str(store_dir), "--json")
        assert r.returncode == 2, r.stderr
        assert fragment in json.loads(r.stdout)["error"] and r.stderr.count("\n") == 1
    r = eidetic("query", "--structured", '{"intent": "count", "labels": ["door_wood_knock"]}',
                "--store", str(store_dir), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["answered"] and "2 times" in doc["answer"]
    assert [e["episode_id"] for e in doc["evidence"]] == [1, 3]
    assert all(Path(k).is_file() for e in doc["evidence"] for k in e["keyframes"])
    r = eidetic("query", "--structured", '{"intnet": 1}', "--store", str(store_dir), "--json")
    assert r.returncode == 2 and "unknown structured query keys" in json.loads(r.stdout)["error"]
    r = eidetic("query", "--structured", "[1", "--store", str(store_dir))
    assert r.returncode == 2 and "not valid JSON" in r.stderr
