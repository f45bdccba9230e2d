"""TriggerPolicy: a detector's audio events become START/UPDATE/END triggers and capture windows."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.audio.base import AudioEvent, AudioEventDetector
from models.audio.esc50 import DEFAULT_TRIGGERS, TYPICAL_SPAN_S
from pipeline.errors import ConfigError
from pipeline.ingest import merge_spans
from pipeline.types import AudioChunk, CaptureWindow, TriggerEvent, TriggerState

if TYPE_CHECKING:
    from pipeline.config import TriggerConfig

logger = logging.getLogger(__name__)

EPS_S = 1e-6  # seconds: spans closer than this touch


def _check_tunables(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"trigger {name} must be a finite number >= 0, got {value!r}")
    if values.get("max_window_s", 1.0) <= 0:
        raise ConfigError(f"trigger max_window_s must be > 0, got {values['max_window_s']!r}")


def _split(
    start: float, end: float, members: list[tuple[float, float, TriggerEvent]], *,
    stream_id: str, max_window_s: float,
) -> list[CaptureWindow]:  # fmt: skip
    """``[start, end]`` cut into equal windows of at most ``max_window_s``, each naming the
    triggers whose padded span ``members[i][:2]`` overlaps it."""
    n = max(1, math.ceil((end - start) / max_window_s - 1e-9))
    step = (end - start) / n
    out = []
    for i in range(n):
        a = start + i * step
        b = end if i == n - 1 else start + (i + 1) * step
        inside = [e for s, t, e in members if n == 1 or (s < b - EPS_S and t > a + EPS_S)]
        labels = tuple(dict.fromkeys(e.label for e in inside))
        ids = tuple(dict.fromkeys(e.trigger_id for e in inside))
        out.append(CaptureWindow(stream_id, a, b, labels=labels, trigger_ids=ids))
    return out


def capture_windows(
    events: Iterable[TriggerEvent],
    *,
    stream_id: str,
    pre_roll_s: float,
    post_roll_s: float,
    max_window_s: float,
    duration_s: float | None = None,
) -> list[CaptureWindow]:
    """Capture windows of the accepted triggers.

    Parameters
    ----------
    events : Iterable[TriggerEvent]
        Trigger events; only accepted ``END`` events count: each of its ``spans`` is captured
        (``[t_start, t_end]`` if it has none).
    stream_id : str
        Stream the windows belong to.
    pre_roll_s, post_roll_s : float
        Seconds captured before each sound's start and after its end.
    max_window_s : float
        Longer merged windows are cut into equal parts no longer than this (s).
    duration_s : float or None
        Media length (s); windows are clipped to ``[0, duration_s]`` (to ``[0, inf)`` if None).

    Returns
    -------
    list[CaptureWindow]
        Sorted by time, non-overlapping: overlapping or touching padded spans merged; labels and
        trigger_ids in order of first appearance.
    """
    _check_tunables(pre_roll_s=pre_roll_s, post_roll_s=post_roll_s, max_window_s=max_window_s)
    hi = math.inf if duration_s is None else float(duration_s)
    spans = []
    for e in events:
        if e.state is not TriggerState.END or not e.accepted:
            continue
        for a, b in e.spans or ((e.t_start, e.t_end),):
            s, t = max(0.0, a - pre_roll_s), min(hi, b + post_roll_s)
            if t > s + EPS_S:
                spans.append((s, t, e))
    spans.sort(key=lambda x: (x[0], x[1]))
    groups: list[list[tuple[float, float, TriggerEvent]]] = []
    for span in spans:
        if groups and span[0] <= max(t for _, t, _ in groups[-1]) + EPS_S:
            groups[-1].append(span)
        else:
            groups.append([span])
    out: list[CaptureWindow] = []
    for g in groups:
        start, end = g[0][0], max(t for _, t, _ in g)
        out += _split(start, end, g, stream_id=stream_id, max_window_s=max_window_s)
    return out


def _same(spans: tuple[tuple[float, float], ...], other: tuple[tuple[float, float], ...]) -> bool:
    """Whether two lists of spans are the same (within EPS_S)."""
    return len(spans) == len(other) and all(
        abs(a - c) <= EPS_S and (b == d or abs(b - d) <= EPS_S) for (a, b), (c, d) in zip(spans, other)
    )


PATCH_FRAMES = 96  # frames per classifier patch (0.96 s)
PATCH_HOP = 48  # frames between the starts of two patches (0.48 s): every patch is classified
UPDATE_MIN_DELTA = 0.1  # an UPDATE is sent when the score moves at least this much
LABEL_MIN = 0.3  # a sound that does not trigger keeps its class label only if this probable
RING_FRAMES = 400  # log-mel frames kept for classification (4 s)
SCAN_BATCH = 2  # patches classified together while no gate sound waits for them (speed; latency)
SCAN_GAP = 1  # a scan-found sound ends after this many patches without trigger evidence
BG_MIN_PATCHES = 4  # the classifier's running background is used once this many patches are known
EVIDENCE_TAIL_S = 0.72  # a kept sound is captured at least this far into its last evidence patch


class _MelRing:
    """The latest log-mel frames of the current segment, indexed by frame number in it."""

    def __init__(self) -> None:
        self.mel = np.zeros((0, 64), dtype=np.float32)
        self.t = np.zeros(0)
        self.first = 0  # segment frame number of mel[0]

    @property
    def end(self) -> int:
        """Segment frame number just past the newest frame."""
        return self.first + self.t.size

    def push(self, mel, t, new_segment: bool) -> None:
        if new_segment:
            self.mel, self.t, self.first = mel.copy(), t.copy(), 0
            return
        self.mel = np.concatenate([self.mel, mel])
        self.t = np.concatenate([self.t, t])
        drop = self.t.size - RING_FRAMES
        if drop > 0:
            self.mel, self.t, self.first = self.mel[drop:], self.t[drop:], self.first + drop

    def patch(self, i0: int, *, final: bool = False):
        """``(float32[96, 64], start_s)`` of frames ``[i0, i0 + 96)``; None if not all here
        (with ``final``: the frames there are, padded with silence; None if none)."""
        a = i0 - self.first
        if a < 0 or a >= self.t.size:
            return None
        part = self.mel[a : a + PATCH_FRAMES]
        if part.shape[0] < PATCH_FRAMES:
            if not final:
                return None
            # repeat the last frame: padding with silence would look like a sound stopping
            part = np.pad(part, ((0, PATCH_FRAMES - part.shape[0]), (0, 0)), mode="edge")
        return part, float(self.t[a])


@dataclass(slots=True)
class _Patch:
    """One classified patch: span, label, score, whether it is trigger evidence, embedding."""

    t0: float
    t1: float
    label: str
    score: float
    accepted: bool
    strength: float  # evidence relative to its threshold (>= 1: triggers)
    embedding: object


@dataclass(slots=True, eq=False)
class _Sound:
    """A sound: heard by the gate (``gate=True``) or found by the classifier's scan."""

    onset: float
    gate_score: float
    gate: bool = True
    end: float | None = None  # set when the gate closes it (scan sounds: their last patch)
    gate_event: AudioEvent | None = None
    best: _Patch | None = None
    n_patches: int = 0
    emb: object = None  # float64[d] sum of patch embeddings
    label: str = "sound"
    score: float = 0.0
    accepted: bool = False
    final: bool = False
    misses: int = 0  # scan sounds: patches without evidence since the last with
    ev_last: float | None = None  # start (s) of its last patch of trigger evidence


@dataclass(slots=True)
class _Trigger:
    """The open trigger: its id, best label and score so far, its sounds, and its span."""

    trigger_id: int
    label: str
    score: float
    t_start: float
    t_end: float
    sounds: list
    last_label: str = "sound"
    last_score: float = 0.0
    sent_extent: tuple = ()  # the capture extent its last START/UPDATE carried


class TriggerPolicy:
    """Pure (thread-free) policy turning one stream's audio into triggers (DESIGN.md §2.2).

    The gate (:class:`models.audio.energy.EnergyDetector`) hears a sound: the policy sends
    ``START`` at once (label ``"sound"``). The classifier labels every 0.96 s log-mel patch of
    the stream (0.48 s hop, the gate's own log-mel): patches overlapping a gate sound label it
    (its best patch decides), each better label or score being an ``UPDATE``; a patch that is
    trigger evidence where the gate heard nothing (a quiet sound in a loud room, a long sound
    absorbed into the gate's background) starts a sound of its own, which lasts while the next
    patches are evidence too. Sounds starting less than ``refractory_s`` after the open trigger's
    last sound join it (no new START). The trigger ends ``refractory_s`` after its last sound
    (``END``); it is **accepted** when one of its sounds is

    - a custom (enrolled) sound at or over its threshold, or
    - labelled with a trigger class whose probability reaches that class's threshold, or
    - scored as a domestic interaction with probability ≥ ``interaction_threshold``,

    and the capture budget allows some of it (accepted capture time over the last
    ``rate_window_s`` stays under ``max_capture_fraction`` of it: a trigger that does not fit
    whole is cut short). Otherwise END has ``accepted=False`` and its window is dropped.
    Hysteresis: once a trigger is accepted, its other sounds extend its span if their evidence
    reaches ``1 - hysteresis`` of their threshold (a fading series of knocks or steps is captured
    whole). Each kept sound is captured from its onset to its end or, if later,
    ``evidence_tail_s`` into its last patch of trigger evidence (with ``sustain`` < 1, the
    patches right after evidence that reach ``sustain`` of their threshold continue it), at least
    ``min_capture_s`` if it triggered, at most ``max_capture_s``, plus the rolls. Every sound
    heard is kept in :attr:`events` with its label and the span the gate (or the scan) heard,
    whether it triggered or not.

    Without a classifier (``detector: energy``) every gate sound is accepted as ``"sound"``.

    Parameters
    ----------
    stream_id : str
        Stream whose chunks are fed.
    detector : AudioEventDetector
        Streaming gate; if it offers ``open_onset`` and ``frame_sink`` (the energy gate does),
        START comes as soon as a sound begins and the classifier reuses its log-mel.
    classifier : object or None
        :class:`models.audio.cnn.AudioClassifier`-like (``classes``, ``predict(patches)``).
    custom_sounds : sequence of CustomSound
        Enrolled sounds (:mod:`models.audio.sounds`); they trigger like classes.
    classes : sequence of str
        Trigger classes (ESC-50 names or enrolled sound names).
    threshold : float
        Default per-class probability threshold.
    class_thresholds : dict
        Per-class overrides (for an enrolled sound: its cosine threshold).
    interaction_threshold : float
        Probability of "domestic interaction" that triggers whatever the label (> 1 disables).
    hysteresis : float
        Sounds joining an accepted trigger extend it if their evidence (probability over its
        threshold) reaches ``1 - hysteresis``.
    refractory_s : float
        Sounds closer than this (s) to the open trigger's last sound join it.
    max_capture_fraction, rate_window_s : float
        Capture-rate limit.
    pre_roll_s, post_roll_s, max_window_s : float
        Capture window padding and longest window (s).
    max_capture_s : float or None
        Seconds of each accepted sound captured from its start (None: all of it): a long sound
        needs its start seen, not all of it.
    class_background_s : float
        Length (s) of the classifier's running background (0: none). A patch's trigger-class
        probabilities and interaction score count as evidence only by how much they exceed their
        median over the patches of the last ``class_background_s`` seconds: ``(p - m) / (1 - m)``
        (a room whose rain reads as "pouring water" all along does not trigger, a pour does).
    sustain : float
        Once a sound has a patch of trigger evidence, each following patch (one hop later)
        whose evidence reaches this fraction of its threshold extends the sound's capture, and
        the trigger stays open for the next patch (1: only evidence extends; a flush fading into
        the rain is quieter than a trigger but louder than the room).
    evidence_tail_s : float
        A kept sound is captured at least this far (s) into its last patch of evidence.
    min_capture_s : float
        Each sound that triggers is captured at least this long (s) from its onset.
    cap_runs : bool
        Kept sounds of one trigger whose padded windows touch form a run captured at most
        ``max_capture_s`` from its start (a sound the gate hears in pieces costs no more than
        one heard whole).
    first_capture_s : float
        The first kept sound of an accepted trigger is captured at least this long (s) from its
        onset (still at most ``max_capture_s``): at low SNR the gate hears a fragment of a long
        flush, creak or walk, and the benchmark counts an event once half of it is captured (with a classifier only: the weight-free gate alone captures a
        sound as it heard it).
    first_capture_fraction : float
        For a class with a typical length (:data:`~models.audio.esc50.TYPICAL_SPAN_S`),
        ``first_capture_s`` is at most this fraction of it (a knock needs less than a flush).
    """

    def __init__(
        self,
        stream_id: str,
        detector: AudioEventDetector,
        *,
        classifier=None,
        custom_sounds=(),
        classes: Iterable[str] = DEFAULT_TRIGGERS,
        threshold: float = 0.5,
        class_thresholds: dict[str, float] | None = None,
        interaction_threshold: float = 0.5,
        hysteresis: float = 0.5,
        refractory_s: float = 1.0,
        max_capture_fraction: float = 1.0,
        rate_window_s: float = 60.0,
        pre_roll_s: float = 1.0,
        post_roll_s: float = 1.0,
        max_window_s: float = 20.0,
        max_capture_s: float | None = None,
        class_background_s: float = 0.0,
        sustain: float = 1.0,
        evidence_tail_s: float = EVIDENCE_TAIL_S,
        min_capture_s: float = 0.0,
        cap_runs: bool = False,
        first_capture_s: float = 0.0,
        first_capture_fraction: float = 0.55,
    ) -> None:
        _check_tunables(
            pre_roll_s=pre_roll_s, post_roll_s=post_roll_s, max_window_s=max_window_s,
            refractory_s=refractory_s, threshold=threshold, hysteresis=hysteresis,
            interaction_threshold=interaction_threshold, rate_window_s=rate_window_s,
            max_capture_fraction=max_capture_fraction, class_background_s=class_background_s,
            sustain=sustain, evidence_tail_s=evidence_tail_s, min_capture_s=min_capture_s,
            first_capture_s=first_capture_s, first_capture_fraction=first_capture_fraction,
        )  # fmt: skip
        if rate_window_s <= 0 or max_capture_fraction <= 0:
            raise ConfigError("trigger rate_window_s and max_capture_fraction must be > 0")
        self.stream_id = stream_id
        self.detector = detector
        self.classifier = classifier
        self.custom_sounds = list(custom_sounds)
        self.pre_roll_s = float(pre_roll_s)
        self.post_roll_s = float(post_roll_s)
        self.max_window_s = float(max_window_s)
        self.max_capture_s = None if max_capture_s is None else float(max_capture_s)
        self.refractory_s = float(refractory_s)
        self.threshold = float(threshold)
        self.interaction_threshold = float(interaction_threshold)
        self.hysteresis = float(hysteresis)
        self.sustain = float(sustain)
        self.min_capture_s = float(min_capture_s)
        self.cap_runs = bool(cap_runs)
        self.first_capture_s = float(first_capture_s)
        self.first_capture_fraction = float(first_capture_fraction)
        self.evidence_tail_s = float(evidence_tail_s)
        self.max_capture_fraction = float(max_capture_fraction)
        self.rate_window_s = float(rate_window_s)
        custom = {s.name: s for s in self.custom_sounds}
        known = set(getattr(classifier, "classes", ())) | set(custom)
        self.classes = tuple(dict.fromkeys([*classes, *custom]))
        if classifier is not None:
            unknown = [c for c in self.classes if c not in known]
            if unknown:
                raise ConfigError(
                    f"unknown trigger classes {unknown}: use ESC-50 class names or enroll "
                    "them with 'eidetic sounds add'"
                )
        thresholds = dict(class_thresholds or {})
        for name, value in thresholds.items():
            _check_tunables(**{f"class_thresholds.{name}": value})
        self._thr = {c: thresholds.get(c, custom[c].threshold if c in custom else self.threshold)
                     for c in self.classes}  # fmt: skip
        self._custom = [s for s in self.custom_sounds if s.name in self._thr]
        index = {c: i for i, c in enumerate(getattr(classifier, "classes", ()))}
        self._trigger_idx = [(c, index[c]) for c in self.classes if c in index]
        self._cols = np.array([i for _, i in self._trigger_idx], dtype=np.int64)
        self._bg_rows = max(0, round(class_background_s / (PATCH_HOP * 0.01)))
        # the last _bg_rows patches' [trigger-class probabilities..., interaction score]
        self._bg: list[np.ndarray] = []
        self._ring = _MelRing() if classifier is not None else None
        self._next_patch = 0  # segment frame number where the next patch starts
        self._last_t0 = -math.inf  # start (s) of the latest classified patch
        self._queue: list = []  # patches cut but not classified yet: (float32[96, 64], start_s)
        self._streaming = hasattr(detector, "open_onset")
        if self._ring is not None:
            if not hasattr(detector, "frame_sink"):
                raise ConfigError("the classifier needs a gate that shares its log-mel (energy)")
            detector.frame_sink = self._on_frames
        self._sounds: list[_Sound] = []  # heard, not yet final
        self._events: list[AudioEvent] = []
        self._ended: list[TriggerEvent] = []
        self._capture: list[TriggerEvent] = []  # accepted ENDs, one per captured sound span
        self._open: _Trigger | None = None
        self._next_id = 0
        self._captured: list[tuple[float, float]] = []  # accepted padded spans (rate limit)
        self._pending_out: list[TriggerEvent] = []

    @classmethod
    def from_config(
        cls, stream_id: str, cfg: TriggerConfig, *, classifier=None, custom_sounds=None,
        store_path=None,
    ) -> TriggerPolicy:
        """Build the configured gate, classifier (``cfg.detector``) and policy.

        ``classifier`` / ``custom_sounds`` may be passed in to share one loaded model; by default
        the ``cnn`` detector loads ``cfg.weights`` (the shipped weights if empty) and the sounds
        enrolled in ``cfg.sounds_dir`` (default ``<store_path>/sounds``).
        """
        from models.audio.energy import EnergyDetector

        gate = EnergyDetector(
            k_mad=cfg.k_mad, min_rise_db=cfg.min_rise_db, floor_dbfs=cfg.floor_dbfs,
            background_s=cfg.background_s, min_event_s=cfg.min_event_s,
            merge_gap_s=cfg.merge_gap_s,
        )  # fmt: skip
        if cfg.detector == "cnn":
            if classifier is None:
                classifier = load_classifier(cfg)
            if custom_sounds is None:
                custom_sounds = load_custom_sounds(cfg, store_path)
        else:
            classifier, custom_sounds = None, ()
        return cls(
            stream_id, gate, classifier=classifier, custom_sounds=custom_sounds or (),
            classes=cfg.classes, threshold=cfg.threshold,
            class_thresholds=dict(cfg.class_thresholds),
            interaction_threshold=cfg.interaction_threshold, hysteresis=cfg.hysteresis,
            refractory_s=cfg.refractory_s, max_capture_fraction=cfg.max_capture_fraction,
            rate_window_s=cfg.rate_window_s,
            pre_roll_s=cfg.pre_roll_s, post_roll_s=cfg.post_roll_s, max_window_s=cfg.max_window_s,
            max_capture_s=cfg.max_capture_s, class_background_s=cfg.class_background_s,
            sustain=cfg.sustain, evidence_tail_s=cfg.evidence_tail_s,
            min_capture_s=cfg.min_capture_s,
            cap_runs=cfg.cap_runs, first_capture_s=cfg.first_capture_s,
            first_capture_fraction=cfg.first_capture_fraction,
        )  # fmt: skip

    @property
    def events(self) -> list[AudioEvent]:
        """Every sound heard so far, triggering or not, labelled (a copy, in time order)."""
        return list(self._events)

    @property
    def triggers(self) -> list[TriggerEvent]:
        """The END message of every trigger ended so far (accepted or not)."""
        return list(self._ended)

    def feed(self, chunk: AudioChunk) -> list[TriggerEvent]:
        """Feed the next contiguous chunk of this stream; return the trigger changes it caused."""
        if chunk.sample_rate != self.detector.sample_rate:
            raise ValueError(
                f"chunk sample_rate {chunk.sample_rate!r} != detector's "
                f"{self.detector.sample_rate!r}; resample at ingest"
            )
        if chunk.stream_id != self.stream_id:
            raise ValueError(
                f"chunk of stream {chunk.stream_id!r} fed to the policy of {self.stream_id!r}"
            )
        found = self.detector.feed(chunk.samples, chunk.t_start)
        return self._step(found, now=chunk.t_end, final=False)

    def flush(self) -> list[TriggerEvent]:
        """End of stream: close the last sound, classify what is left, end the open trigger."""
        return self._step(self.detector.flush(), now=math.inf, final=True)

    def windows(self, duration_s: float | None = None) -> list[CaptureWindow]:
        """Capture windows of the accepted triggers so far (see :func:`capture_windows`)."""
        return capture_windows(
            self._capture, stream_id=self.stream_id, pre_roll_s=self.pre_roll_s,
            post_roll_s=self.post_roll_s, max_window_s=self.max_window_s, duration_s=duration_s,
        )  # fmt: skip

    # ------------------------------------------------------------------ sounds

    def _on_frames(self, mel, t, new_segment: bool) -> None:
        if new_segment:
            if self._ring.t.size:  # a gap: classify what is left of the old segment
                self._pending_out += self._scan(final=True, now=float(self._ring.t[-1]))
            self._next_patch = 0
        self._ring.push(mel, t, new_segment)

    def _sound(self, onset: float, score: float, *, gate: bool = True) -> tuple[_Sound, list[TriggerEvent]]:
        """The known gate sound starting at ``onset``, or a new sound (maybe starting a trigger)."""
        if gate:
            for s in self._sounds:
                if s.gate and abs(s.onset - onset) < 1e-6:
                    return s, []
        s = _Sound(onset, score, gate=gate)
        self._sounds.append(s)
        out: list[TriggerEvent] = []
        o = self._open
        if o is not None and onset - o.t_end >= self.refractory_s and not self._busy(o):
            out += self._end()
            o = None
        if o is None:
            self._open = _Trigger(self._next_id, "sound", score, onset, onset, [s], "sound", score)
            self._next_id += 1
            out.append(self._message(TriggerState.START, onset))
        else:
            o.sounds.append(s)
        return s, out

    def _drop_vanished(self, onset: float | None) -> None:
        """Forget open gate sounds the gate dropped (shorter than its min_event_s)."""
        for s in [s for s in self._sounds if s.gate and s.end is None]:
            if onset is None or abs(s.onset - onset) >= 1e-6:
                self._sounds.remove(s)
                if self._open is not None and s in self._open.sounds:
                    self._open.sounds.remove(s)

    def _busy(self, o: _Trigger, *, final: bool = False) -> bool:
        """Whether ``o`` must stay open: a sound of it is not final, or (``sustain`` < 1, not at
        the end of the stream) the latest patch continued a sound's evidence and the next one
        may too (while that sound is within ``max_capture_s`` of its start)."""
        if any(not s.final for s in o.sounds):
            return True
        return not final and any(self._may_sustain(s) for s in o.sounds)

    def _may_sustain(self, s: _Sound) -> bool:
        """``sustain`` < 1, the latest patch continued ``s``'s evidence and the next one may too
        (``s`` still within ``max_capture_s`` of its onset)."""
        cap = math.inf if self.max_capture_s is None else self.max_capture_s
        return (self.sustain < 1.0 and s.ev_last is not None
                and s.ev_last >= self._last_t0 - EPS_S and s.ev_last < s.onset + cap)  # fmt: skip

    def _step(self, found: list[AudioEvent], *, now: float, final: bool) -> list[TriggerEvent]:
        out, self._pending_out = self._pending_out, []
        for ev in sorted(found, key=lambda e: e.t_start):
            s, msgs = self._sound(ev.t_start, ev.score)
            out += msgs
            s.end, s.gate_event = ev.t_end, ev
            if self._open is not None and s in self._open.sounds:
                self._open.t_end = max(self._open.t_end, ev.t_end)
        onset = getattr(self.detector, "open_onset", None) if not final else None
        self._drop_vanished(onset)
        if onset is not None:
            _, msgs = self._sound(onset, 0.0)
            out += msgs
        if self._ring is None:
            out += self._gate_only(now)
        else:
            out += self._scan(final=final, now=now)
        o = self._open
        if o is not None and not self._busy(o, final=final) and (
            final or now >= o.t_end + self.refractory_s - EPS_S
        ):
            out += self._end()
        return self._with_extent(out, now)

    def _with_extent(self, out: list[TriggerEvent], now: float) -> list[TriggerEvent]:
        """The open trigger's START/UPDATE messages in ``out`` carry its capture extent (see
        :meth:`_extent`); if none was sent and the extent changed since the last one carried
        (a sound joined, went on or ended), an UPDATE with the same label and score says so (a
        live source decodes video for just that)."""
        o = self._open
        if o is None:
            return out
        extent = self._extent(o)
        mine = [i for i, m in enumerate(out) if m.trigger_id == o.trigger_id and m.state is not TriggerState.END]
        for i in mine:
            out[i] = dataclasses.replace(out[i], spans=extent)
        if not mine and not _same(extent, o.sent_extent):
            t = now if math.isfinite(now) else o.t_end
            out.append(TriggerEvent(
                o.trigger_id, self.stream_id, TriggerState.UPDATE, o.last_label, o.last_score, t,
                o.t_start, o.t_end, spans=extent,
            ))  # fmt: skip
        o.sent_extent = extent
        return out

    def _extent(self, o: _Trigger) -> tuple[tuple[float, float], ...]:
        """The most the open trigger ``o`` may still capture, one span per sound (before the
        rolls): a sound still going on may reach ``max_capture_s`` from its onset; a finished
        one is known (:meth:`_span`, counted as its trigger's first kept sound unless a kept
        sound before it is certain), unless too weak to be kept. A superset of the spans its END
        will carry, as long as no new sound joins."""
        cap = math.inf if self.max_capture_s is None else self.max_capture_s
        floor = 1.0 - self.hysteresis
        out, first_known = [], False
        for s in sorted(o.sounds, key=lambda x: x.onset):
            if not s.final or self._may_sustain(s):  # still going on, or the next patch may sustain it
                out.append((s.onset, s.onset + cap))
                continue
            if not (s.accepted or (s.best is not None and s.best.strength >= floor)):
                continue
            out.append(self._capped(*self._span(s, first=not first_known)))
            first_known = first_known or s.accepted
        return tuple(out)

    def _gate_only(self, now: float) -> list[TriggerEvent]:
        """Without a classifier every gate sound is final, accepted, as the gate labelled it."""
        for s in [s for s in self._sounds if s.gate_event is not None]:
            ev = s.gate_event
            s.label, s.score, s.accepted, s.n_patches = ev.label, ev.score, True, 1
            self._finish(s)
        return self._after_sounds(now)

    def _scan(self, *, final: bool, now: float) -> list[TriggerEvent]:
        """Classify every new patch of the grid; give each to the sounds it overlaps, or let it
        start a sound of its own if it is trigger evidence the gate did not hear."""
        ring = self._ring
        queue = self._queue
        while (got := ring.patch(self._next_patch)) is not None:
            queue.append(got)
            self._next_patch += PATCH_HOP
        uncovered = self._next_patch == 0 or ring.end > self._next_patch + PATCH_HOP
        if final and ring.end > self._next_patch and uncovered:  # the stream's tail, padded
            got = ring.patch(self._next_patch, final=True)
            if got is not None:
                queue.append(got)
            self._next_patch = ring.end
        out: list[TriggerEvent] = []
        waiting = any(s.gate and not s.final for s in self._sounds)
        if queue and (final or waiting or len(queue) >= SCAN_BATCH):
            pred = self.classifier.predict(np.stack([q[0] for q in queue]))
            for i, (_, t0) in enumerate(queue):
                patch = self._judge(t0, pred.probs[i], float(pred.interaction[i]), pred.embedding[i])
                self._last_t0 = t0
                out += self._assign(patch)
            queue.clear()
        # start time of the first patch not classified yet
        if queue:
            done_until = queue[0][1]
        elif ring.t.size:
            done_until = float(ring.t[0]) + (self._next_patch - ring.first) * 0.01
        else:
            done_until = now
        for s in list(self._sounds):
            if s.final:
                continue
            if s.gate:
                # every patch starting before the sound's end has been classified
                if s.end is not None and (final or done_until >= s.end):
                    self._finish(s)
            elif final or s.misses >= SCAN_GAP:
                self._finish(s)
        return out + self._after_sounds(now)

    def _assign(self, p: _Patch) -> list[TriggerEvent]:
        """Give patch ``p`` to the gate sounds it overlaps, else to the scan."""
        out: list[TriggerEvent] = []
        hit = False
        for s in self._sounds:
            if s.final or not s.gate:
                continue
            end = s.end if s.end is not None else math.inf
            if p.t0 < end and s.onset < p.t1:
                self._add(s, p)
                hit = True
        scans = [s for s in self._sounds if not s.gate and not s.final]
        if hit or not p.accepted:
            for s in scans:
                s.misses += 1
            if not hit:
                self._sustain(p)
            return out
        if scans:
            s = scans[-1]
            s.misses = 0
            s.end = p.t1
            if self._open is not None and s in self._open.sounds:
                self._open.t_end = max(self._open.t_end, p.t1)
        else:
            s, msgs = self._sound(p.t0, p.score, gate=False)
            s.end = p.t1
            self._open.t_end = max(self._open.t_end, p.t1)
            out += msgs
        self._add(s, p)
        return out

    def _sustains(self, s: _Sound, p: _Patch) -> bool:
        """Whether ``p`` continues the trigger evidence of ``s``: it follows the last patch of
        that evidence within one hop and reaches ``sustain`` of its threshold."""
        return (
            s.ev_last is not None and p.strength >= self.sustain
            and p.t0 - s.ev_last <= PATCH_HOP * 0.01 + EPS_S
        )  # fmt: skip

    def _sustain(self, p: _Patch) -> None:
        """A patch heard by no sound that continues the evidence of one of the open trigger's
        sounds (see :meth:`_sustains`) extends that sound's capture (a fading flush, steps going
        on under the rain: quieter than a trigger, louder than the room)."""
        o = self._open
        if o is None or p.accepted:
            return
        for s in reversed(o.sounds):
            if self._sustains(s, p):
                s.ev_last = p.t0
                o.t_end = max(o.t_end, p.t0 + self.evidence_tail_s)
                return

    def _add(self, s: _Sound, p: _Patch) -> None:
        s.emb = np.array(p.embedding, dtype=np.float64) if s.emb is None else s.emb + p.embedding
        s.n_patches += 1
        if p.accepted or self._sustains(s, p):
            s.ev_last = p.t0 if s.ev_last is None else max(s.ev_last, p.t0)
        if s.best is None or (p.accepted, p.strength) > (s.best.accepted, s.best.strength):
            s.best = p
            s.label, s.score, s.accepted = p.label, p.score, p.accepted

    def _judge(self, t0: float, probs, inter: float, emb) -> _Patch:
        """Label, score and trigger evidence of one patch."""
        t1 = t0 + PATCH_FRAMES * 0.01
        e32 = np.asarray(emb, dtype=np.float32)
        best = None
        for c in self._custom:
            sim = c.similarity(e32)
            if sim >= self._thr[c.name] and (best is None or sim > best[1]):
                best = (c.name, sim)
        if best is not None:
            return _Patch(t0, t1, best[0], best[1], True, 2.0 + best[1], emb)
        strength, label, p = 0.0, "sound", 0.0
        excess = self._excess(np.append(np.asarray(probs, dtype=np.float64)[self._cols], inter))
        for j, (c, i) in enumerate(self._trigger_idx):
            r = float(excess[j]) / self._thr[c]
            if r > strength:
                strength, label, p = r, c, float(probs[i])
        top = int(np.argmax(probs))
        top_label, top_p = self.classifier.classes[top], float(probs[top])
        if strength >= 1.0:
            return _Patch(t0, t1, label, p, True, strength, emb)
        ri = float(excess[-1]) / max(self.interaction_threshold, 1e-9)
        if ri >= 1.0:
            name = top_label if top_label in self._thr else "interaction"
            return _Patch(t0, t1, name, inter, True, ri, emb)
        name = top_label if top_p >= LABEL_MIN else "sound"
        return _Patch(t0, t1, name, top_p, False, max(strength, ri), emb)

    def _excess(self, row: np.ndarray) -> np.ndarray:
        """``row`` (trigger-class probabilities and interaction score of the next patch) over the
        running background of the patches before it, rescaled to [0, 1]; ``row`` itself when no
        background is kept or fewer than BG_MIN_PATCHES patches are known."""
        hist = self._bg
        out = row
        if len(hist) >= BG_MIN_PATCHES:
            m = np.median(np.stack(hist), axis=0)
            out = np.clip((row - m) / np.maximum(1.0 - m, 1e-6), 0.0, 1.0)
        if self._bg_rows:
            hist.append(row)
            if len(hist) > self._bg_rows:
                del hist[0]
        return out

    def _finish(self, s: _Sound) -> None:
        s.final = True
        self._sounds.remove(s)
        emb = s.gate_event.embedding if s.gate_event is not None else None
        if s.emb is not None:
            emb = (s.emb / max(float(np.linalg.norm(s.emb)), 1e-12)).astype(np.float32)
        end = s.end if s.end is not None else s.onset
        if not s.gate and self._ring is not None and self._ring.t.size:
            end = min(end, float(self._ring.t[-1]) + 0.025)  # a padded last patch
            s.end = end
        self._events.append(AudioEvent(s.label, float(s.score), s.onset, end, embedding=emb))

    def _after_sounds(self, now: float) -> list[TriggerEvent]:
        """UPDATE the open trigger when its best label or score moved."""
        o = self._open
        if o is None:
            return []
        judged = [s for s in o.sounds if s.n_patches > 0]
        if not judged:
            return []
        best = max(judged, key=lambda s: (s.accepted, s.score))
        o.label, o.score = best.label, best.score
        if best.label == o.last_label and abs(best.score - o.last_score) < UPDATE_MIN_DELTA:
            return []
        o.last_label, o.last_score = best.label, best.score
        return [self._message(TriggerState.UPDATE, now if math.isfinite(now) else o.t_end)]

    # ------------------------------------------------------------------ triggers

    def _message(self, state: TriggerState, t: float, *, accepted: bool = True) -> TriggerEvent:
        o = self._open
        assert o is not None
        return TriggerEvent(
            o.trigger_id, self.stream_id, state, o.label, o.score, t, o.t_start, o.t_end,
            accepted=accepted,
        )  # fmt: skip

    def _end(self) -> list[TriggerEvent]:
        o = self._open
        assert o is not None
        sounds = [s for s in o.sounds if s.final]
        keep = [s for s in sounds if s.accepted]
        if keep:
            best = max(keep, key=lambda s: s.score)
            floor = 1.0 - self.hysteresis
            keep = [s for s in sounds if s.accepted or (s.best is not None and s.best.strength >= floor)]
            o.label, o.score = best.label, best.score
            o.t_start = min(s.onset for s in keep)
            o.t_end = max(s.end if s.end is not None else s.onset for s in keep)
        first = min(keep, key=lambda s: s.onset) if keep else None
        spans = [self._span(s, first=s is first) for s in keep]
        spans = self._within_budget(o, self._cap_runs([self._capped(*sp) for sp in spans]))
        ok = any(sp is not None for sp in spans)
        end = self._message(TriggerState.END, o.t_end, accepted=ok)
        if ok:  # what its capture windows are built from, here and by a live source
            end = dataclasses.replace(end, spans=tuple(sorted(sp for sp in spans if sp is not None)))
        logger.debug(
            "stream %s trigger %d: %s %.3f-%.3f s (score %.2f) %s",
            self.stream_id, end.trigger_id, end.label, end.t_start, end.t_end, end.score,
            "accepted" if ok else "rejected",
        )  # fmt: skip
        self._ended.append(end)
        if ok:  # each kept sound is captured from its start (at most max_capture_s of it)
            self._capture += [
                dataclasses.replace(end, label=k.label, score=k.score, t_start=sp[0], t_end=sp[1], spans=(sp,))
                for k, sp in zip(keep, spans) if sp is not None
            ]  # fmt: skip
        self._open = None
        return [end]

    def _span(self, s: _Sound, *, first: bool = False) -> tuple[float, float]:
        """The span of ``s`` to capture (before the ``max_capture_s`` cap): from its onset to its
        end or, if later, EVIDENCE_TAIL_S into its last patch of trigger evidence. The gate ends
        a sound when its level falls back to the background (at low SNR, soon after the loudest
        part); a patch that is still evidence says the sound goes on."""
        a, b = s.onset, s.end if s.end is not None else s.onset
        if s.ev_last is not None:
            b = max(b, s.ev_last + self.evidence_tail_s)
        if s.accepted:
            b = max(b, a + self.min_capture_s)
        if first:  # the trigger's first kept sound: long sounds need about half of them seen
            b = max(b, a + self._first_capture(s.label))
        return a, b

    def _first_capture(self, label: str) -> float:
        """Seconds the first kept sound of a trigger labelled ``label`` is captured at least:
        ``first_capture_s``, or less for a class whose sounds are usually short
        (``first_capture_fraction`` of its :data:`~models.audio.esc50.TYPICAL_SPAN_S`). Without
        a classifier (``detector: energy``) nothing says a sound goes on past what the gate heard:
        its span is captured as heard (0)."""
        if self.classifier is None:
            return 0.0
        typical = TYPICAL_SPAN_S.get(label)
        if typical is None:
            return self.first_capture_s
        return min(self.first_capture_s, self.first_capture_fraction * typical)

    def _capped(self, t0: float, t1: float) -> tuple[float, float]:
        return t0, t1 if self.max_capture_s is None else min(t1, t0 + self.max_capture_s)

    def _cap_runs(self, spans: list[tuple[float, float]]) -> list[tuple[float, float] | None]:
        """With ``cap_runs``: spans whose padded windows would touch form a run, and a run is
        captured at most ``max_capture_s`` from its start (one sound the gate heard in pieces
        costs no more than one heard whole); spans starting after that are dropped (None)."""
        if not self.cap_runs or self.max_capture_s is None:
            return list(spans)
        out: list[tuple[float, float] | None] = [None] * len(spans)
        gap = self.pre_roll_s + self.post_roll_s
        run_start, run_end = -math.inf, -math.inf
        for i in sorted(range(len(spans)), key=lambda j: spans[j]):
            a, b = spans[i]
            if a > run_end + gap + EPS_S:
                run_start, run_end = a, b
            limit = run_start + self.max_capture_s
            if a < limit - EPS_S:
                out[i] = (a, min(b, limit))
            run_end = max(run_end, min(b, limit))
        return out

    def _excess_capture(self, padded: list[tuple[float, float]]) -> float:
        """Seconds by which recording ``padded`` would exceed the capture-rate limit over the
        ``rate_window_s`` ending where it ends (0: it fits, or adds nothing new)."""
        lo = max(b for _, b in padded) - self.rate_window_s
        used = sum(b - max(a, lo) for a, b in merge_spans(self._captured) if b > lo)
        total = sum(b - max(a, lo) for a, b in merge_spans([*self._captured, *padded]) if b > lo)
        if total <= used + EPS_S:
            return 0.0
        return max(0.0, total - self.max_capture_fraction * self.rate_window_s)

    def _within_budget(
        self, o: _Trigger, spans: list[tuple[float, float] | None]
    ) -> list[tuple[float, float] | None]:
        """Record the trigger's spans as far as the capture-rate limit allows: in time order,
        each whole if it fits, else cut short to what fits (None: nothing of it fits)."""
        out: list[tuple[float, float] | None] = [None] * len(spans)
        if not any(sp is not None for sp in spans):
            return out
        lo = max(sp[1] for sp in spans if sp is not None) + self.post_roll_s - self.rate_window_s
        self._captured = [(a, b) for a, b in self._captured if b > lo]
        cut = False
        for i in sorted((j for j in range(len(spans)) if spans[j] is not None), key=lambda j: spans[j]):
            a, b = spans[i]
            for _ in range(4):  # cutting moves the rate window: re-check a few times
                over = self._excess_capture([(a - self.pre_roll_s, b + self.post_roll_s)])
                if over <= EPS_S:
                    break
                b, cut = b - over, True
            if b > a + EPS_S and over <= EPS_S:
                out[i] = (a, b)
                self._captured.append((a - self.pre_roll_s, b + self.post_roll_s))
        if cut:
            logger.warning(
                "stream %s: trigger %d (%s at %.1f s) %s: capture rate over %.0f%% of %.0f s",
                self.stream_id, o.trigger_id, o.label, o.t_start,
                "cut short" if any(out) else "dropped",
                100 * self.max_capture_fraction, self.rate_window_s,
            )  # fmt: skip
        return out


def load_classifier(cfg: TriggerConfig):
    """The audio classifier of ``cfg`` (``cfg.weights`` or the shipped weights)."""
    from models.audio.cnn import AudioClassifier

    return AudioClassifier(cfg.weights)


def sounds_dir(cfg: TriggerConfig, store_path=None):
    """Directory of the enrolled sounds: ``cfg.sounds_dir``, else ``<store>/sounds``."""
    from pathlib import Path

    if cfg.sounds_dir is not None:
        return Path(cfg.sounds_dir)
    return Path(store_path if store_path is not None else "./eidetic-data") / "sounds"


def load_custom_sounds(cfg: TriggerConfig, store_path=None) -> list:
    """The sounds enrolled in :func:`sounds_dir`."""
    from models.audio.esc50 import CLASSES
    from models.audio.sounds import SoundLibrary

    return SoundLibrary(sounds_dir(cfg, store_path), builtin=CLASSES).load()
