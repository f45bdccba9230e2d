"""Optional LLM phrasing of answers over an OpenAI-compatible ``/chat/completions`` endpoint.

The rule-based answer (:mod:`memory.query`) is always computed first. When ``llm.base_url`` is
configured, the model is shown the question, the rule answer and the retrieved evidence only,
and asked to phrase an answer from them. Its reply is kept only if it is grounded: every episode
it cites and every time it states must come from the evidence. On a timeout, an error or an
ungrounded reply the rule answer is returned unchanged. An unanswered question is never sent:
there is nothing to phrase, and nothing may be made up.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from memory.episodes import format_time

if TYPE_CHECKING:
    from memory.types import Answer, Episode
    from pipeline.config import LLMConfig

logger = logging.getLogger(__name__)

MAX_REPLY_CHARS = 2000
SYSTEM_PROMPT = (
    "You answer questions about an episodic memory of what cameras and microphones saw and "
    "heard. Use ONLY the evidence given. Cite every episode you mention as [episode N]. Copy "
    "times exactly as written in the evidence (e.g. 0:04.2 or 2026-11-26 14:05:10 UTC); never "
    "compute new times. If the evidence does not answer the question, say so. One or two "
    "sentences."
)
_TIME = re.compile(r"\b\d+:\d{2}(?::\d{2})?(?:\.\d)?\b")
_EPISODE = re.compile(r"\bepisode\s*#?(\d+)", re.IGNORECASE)


def _utc(t: float) -> str:
    return f"{datetime.fromtimestamp(t, tz=timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def evidence_lines(answer: Answer, limit: int) -> list[str]:
    """One line per evidence item: episode id (or a sound heard but not captured), source, span,
    wall time, labels, sounds, objects."""
    lines = []
    for hit in answer.evidence[:limit]:
        ep = hit.episode
        sounds = ", ".join(f"{s.label} at {format_time(s.t_start)}" for s in ep.sounds) or "none"
        objects = ", ".join(f"{o.label or 'object'}#{o.track_id} {format_time(o.t_first)}–"
                            f"{format_time(o.t_last)}" for o in ep.objects) or "none"  # fmt: skip
        wall = f"; wall time {_utc(ep.wall_start)}" if ep.wall_start is not None else ""
        tag = f"[episode {ep.episode_id}]" if ep.episode_id is not None else "[heard, not captured]"
        lines.append(
            f"{tag} source {ep.source}; {format_time(ep.t_start)}–"
            f"{format_time(ep.t_end)}{wall}; labels {', '.join(ep.labels) or 'none'}; "
            f"sounds {sounds}; objects {objects}"
        )
    return lines


def _allowed_times(eps: list[Episode]) -> set[str]:
    times: set[str] = set()
    for ep in eps:
        ts = [ep.t_start, ep.t_end, *(s.t_start for s in ep.sounds), *(s.t_end for s in ep.sounds),
              *(t for o in ep.objects for t in (o.t_first, o.t_last))]  # fmt: skip
        times |= {format_time(t) for t in ts}
        if ep.wall_start is not None:
            wall = _utc(ep.wall_start)
            times |= {wall[11:19], wall[11:16]}
    return times


def grounded(text: str, answer: Answer, limit: int) -> bool:
    """Does ``text`` cite only evidence episodes and state only times read from them?"""
    eps = [h.episode for h in answer.evidence[:limit]]
    ids = {int(ep.episode_id) for ep in eps if ep.episode_id is not None}  # not sound-only items
    if any(int(i) not in ids for i in _EPISODE.findall(text)):
        return False
    allowed = _allowed_times(eps)
    return all(t in allowed or t + ".0" in allowed for t in _TIME.findall(text))


class LLMPhraser:
    """Phrases answers with an OpenAI-compatible endpoint; falls back to the rule answer.

    ``outcomes`` counts ok / timeout / error / ungrounded / skipped (exported as metrics).
    """

    def __init__(self, cfg: LLMConfig, *, environ: Mapping[str, str] | None = None) -> None:
        self.cfg = cfg
        env = os.environ if environ is None else environ
        self.api_key = env.get(cfg.api_key_env) or None
        self.outcomes: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.base_url)

    def phrase(self, question: str | None, answer: Answer) -> Answer:
        """The LLM's grounded phrasing of ``answer`` (same evidence), or ``answer`` itself."""
        if not self.enabled or not answer.answered or not answer.evidence:
            self.outcomes["skipped"] += 1
            return answer
        outcome, text = self._ask(question or "(a search by example)", answer)
        self.outcomes[outcome] += 1
        if outcome != "ok" or text is None:
            return answer
        return replace(answer, answer=text)

    def _ask(self, question: str, answer: Answer) -> tuple[str, str | None]:
        limit = self.cfg.max_evidence
        user = (f"Question: {question}\nRule-based answer: {answer.answer}\nEvidence:\n"
                + "\n".join(evidence_lines(answer, limit)))  # fmt: skip
        body = {"model": self.cfg.model, "temperature": self.cfg.temperature, "max_tokens": 300,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                             {"role": "user", "content": user}]}  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = str(self.cfg.base_url).rstrip("/") + "/chat/completions"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as r:  # noqa: S310
                reply = json.loads(r.read(1 << 20))
            text = str(reply["choices"][0]["message"]["content"]).strip()
        except TimeoutError:
            logger.warning("LLM at %s timed out after %.1f s: rule answer used", url, self.cfg.timeout_s)
            return "timeout", None
        except urllib.error.URLError as e:
            kind = "timeout" if isinstance(e.reason, TimeoutError) else "error"
            logger.warning("LLM at %s failed (%s): rule answer used", url, e.reason)
            return kind, None
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            logger.warning("LLM at %s gave no usable reply (%s): rule answer used", url, e)
            return "error", None
        if not text or len(text) > MAX_REPLY_CHARS or not grounded(text, answer, limit):
            logger.warning("LLM reply not grounded in the evidence: rule answer used: %r", text[:200])
            return "ungrounded", None
        return "ok", text
