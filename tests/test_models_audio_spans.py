"""TYPICAL_SPAN_S (the typical length of a class, which sizes a trigger's first capture) is the
median active span of the class's *train* clips: recomputed here from the shared ESC-50 data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.soundscapes import MAX_EVENT_S, SAMPLE_RATE, active_span, load_clip
from models.audio.esc50 import DEFAULT_TRIGGERS, INTERACTION, TYPICAL_SPAN_S, read_meta, split
from tests.conftest import need


def test_typical_spans_are_the_median_active_span_of_the_train_clips(shared_data: Path) -> None:
    assert set(TYPICAL_SPAN_S) == set(DEFAULT_TRIGGERS) | set(INTERACTION)
    train = split(read_meta(need(shared_data / "esc50")))["train"]
    for label, typical in TYPICAL_SPAN_S.items():
        spans = []
        for clip in (c for c in train if c.category == label):
            a, b = active_span(load_clip(clip.path))
            spans.append(min((b - a) / SAMPLE_RATE, MAX_EVENT_S))
        assert spans, label
        median = float(np.median(spans))
        assert abs(median - typical) <= 0.005, (label, median, typical)  # table rounded to 0.01 s
