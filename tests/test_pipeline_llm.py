"""LLM phrasing against a real OpenAI-compatible HTTP server on 127.0.0.1 started by the test:
grounded replies are used, timeouts / errors / made-up times fall back to the rule answer."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from memory.episodes import summarize
from memory.store import EpisodeStore
from memory.types import Episode, SoundRecord
from pipeline.api import Eidetic
from pipeline.config import load_config

REPLIES = {  # the fake model's reply per mode
    "good": "The glass broke at 0:10.2 [episode 2].",
    "made_up_time": "The glass broke at 0:07.5 [episode 2].",
    "made_up_episode": "The glass broke in [episode 9].",
}


class FakeOpenAI(http.server.BaseHTTPRequestHandler):
    mode = "good"
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append((self.path, self.headers.get("Authorization"), body))
        if FakeOpenAI.mode == "slow":
            time.sleep(2.0)
        if FakeOpenAI.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        reply = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                      "content": REPLIES.get(FakeOpenAI.mode, "")}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client gave up (timeout)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("llm") / "store"
    with EpisodeStore(root) as st:
        for label, t0 in [("door_wood_knock", 4.0), ("glass_breaking", 10.0)]:
            sounds = (SoundRecord(label, 0.9, t0 + 0.2, t0 + 0.7),)
            st.add(Episode(source="cam1", t_start=t0, t_end=t0 + 2, labels=(label,),
                           summary=summarize((label,), sounds, ()), sounds=sounds),
                   [np.zeros((8, 8, 3), np.uint8)])  # fmt: skip
    return root


def app(store_dir: Path, endpoint: str, timeout_s: float = 1.0) -> Eidetic:
    cfg = load_config(environ={"EIDETIC_LLM_API_KEY": "k3y"}, store={"path": str(store_dir)},
                      llm={"base_url": endpoint, "model": "tiny", "timeout_s": timeout_s})  # fmt: skip
    eidetic = Eidetic(config=cfg)
    eidetic.llm.api_key = "k3y"  # load_config(environ=...) does not reach os.environ
    return eidetic


def test_grounded_reply_is_used(store_dir, endpoint):
    FakeOpenAI.mode, FakeOpenAI.requests = "good", []
    eidetic = app(store_dir, endpoint)
    a = eidetic.query("when did the glass break?")
    assert a.answered and a.answer == REPLIES["good"]
    assert [h.episode.episode_id for h in a.evidence] == [2]  # the evidence is the rule answer's
    (path, auth, body), = FakeOpenAI.requests
    assert path == "/v1/chat/completions" and auth == "Bearer k3y" and body["model"] == "tiny"
    user = body["messages"][-1]["content"]
    assert "when did the glass break?" in user and "[episode 2] source cam1; 0:10.0–0:12.0" in user
    assert "door_wood_knock" not in user  # only the retrieved evidence is shown
    assert eidetic.llm.outcomes["ok"] == 1


@pytest.mark.parametrize("mode", ["slow", "error", "made_up_time", "made_up_episode", "empty"])
def test_falls_back_to_the_rule_answer(store_dir, endpoint, mode):
    FakeOpenAI.mode = mode
    eidetic = app(store_dir, endpoint, timeout_s=0.5)
    rule = Eidetic(config=load_config(store={"path": str(store_dir)})).query("when did the glass break?")
    t0 = time.perf_counter()
    a = eidetic.query("when did the glass break?")
    assert a == rule  # same sentence and evidence
    assert time.perf_counter() - t0 < 1.8  # the timeout held (the fake sleeps 2 s)
    expected = {"slow": "timeout", "error": "error", "empty": "ungrounded"}.get(mode, "ungrounded")
    assert eidetic.llm.outcomes == {expected: 1}


def test_unanswered_questions_never_reach_the_llm(store_dir, endpoint):
    FakeOpenAI.mode, FakeOpenAI.requests = "good", []
    a = app(store_dir, endpoint).query("when did the helicopter land?")
    assert a.answered is False and a.evidence == () and FakeOpenAI.requests == []


def test_unreachable_endpoint_falls_back(store_dir):
    eidetic = app(store_dir, "http://127.0.0.1:9/v1")
    assert eidetic.query("when did the glass break?").answer.startswith("glass_breaking at 0:10.2")
    assert eidetic.llm.outcomes == {"error": 1}


def test_sound_only_evidence_cannot_be_cited_as_an_episode():
    from memory.types import Answer, EpisodeHit
    from pipeline.llm import evidence_lines, grounded

    heard = Episode(source="/m/a.mp4", t_start=30.0, t_end=30.6, labels=("dog",), summary="heard dog",
                    sounds=(SoundRecord("dog", 0.8, 30.0, 30.6),))  # fmt: skip
    answer = Answer(True, "dog at 0:30.0 (heard on a.mp4, not captured).", (EpisodeHit(heard, 0.8),))
    assert evidence_lines(answer, 5)[0].startswith("[heard, not captured] source /m/a.mp4; 0:30.0")
    assert grounded("The dog barked at 0:30.0.", answer, 5)
    assert not grounded("The dog barked at 0:30.0 [episode 0].", answer, 5)
