"""Trigger benchmark (DESIGN.md §4): TriggerPolicy on ESC-50 soundscapes, scored against the truth.

Run::

    python benchmarks/trigger_eval.py [--n 6] [--minutes 3] [--seed 0] [--config FILE]
        [--snr 0,5,10,20] [--chunk-s 0.24] [--out benchmarks/results/trigger_eval.json]

Builds ``--n`` soundscapes (:mod:`benchmarks.soundscapes`, held-out clips only), feeds each to
``TriggerPolicy.from_config("eval", cfg.trigger)`` in chunks of ``--chunk-s`` seconds, takes
``policy.windows(duration)`` and scores (tolerance ``TOL_S`` = 0.25 s wherever spans are matched):

- **recall**: a trigger event counts when the capture windows cover >= half of its truth span;
  also per SNR and per class.
- **capture fraction**: union of the windows / total duration.
- **false triggers / min**: accepted END triggers whose span overlaps no trigger truth span.
- **distractor rate**: fraction of distractor events overlapped by such a false trigger.
- **label accuracy** (of recalled events): the END label of the accepted trigger overlapping the
  truth span longest is the true class; **window label**: the label with the most window time
  over the truth span (``CaptureWindow.labels``) is the true class.
- **latency** (of recalled events): among the accepted triggers whose span (over all their
  messages) overlaps the event, the first START's emission time minus the truth start; UPDATE:
  that trigger's first UPDATE of label or score (its END if none; an UPDATE that only widens
  the capture extent, same label and score as the message before, does not count). Emission time = the fed chunk's end (the
  duration at flush). Negative values (a trigger already open) count as 0.
- **speed**: audio seconds / wall seconds of feed + flush only, one thread (env set below).
- **classifier**: if ``models.audio.cnn.AudioClassifier`` exists, 50-class clip accuracy on the
  test split and the ROC-AUC of trigger vs distractor clips (null otherwise).

Prints a table (stdout), writes JSON. ESC-50 is CC BY-NC 3.0: results are for non-commercial use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # one core, set before numpy/torch/numba start their thread pools
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_var] = "1"
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Iterable, Sequence  # noqa: E402
from dataclasses import asdict  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import git_state, write_json  # noqa: E402
from benchmarks.soundscapes import SAMPLE_RATE, Soundscape, TruthEvent  # noqa: E402
from pipeline.types import AudioChunk, CaptureWindow, TriggerEvent, TriggerState  # noqa: E402

logger = logging.getLogger("benchmarks.trigger_eval")

TOL_S = 0.25  # seconds of slack when matching a trigger's span to a truth span
MIN_COVER = 0.5  # an event is recalled when windows cover this fraction of its truth span
TARGETS: dict[str, tuple[str, float]] = {  # metric: (comparison, target)
    "recall": (">=", 0.90),
    "capture_fraction": ("<=", 0.35),
    "false_per_min": ("<=", 2.0),
    "distractor_rate": ("<=", 0.30),
    "speed_x_rt": (">=", 200.0),
    "start_latency_median_s": ("<=", 0.5),
    "update_latency_median_s": ("<=", 1.5),
}
START, UPDATE, END = TriggerState.START, TriggerState.UPDATE, TriggerState.END


class Emitted(NamedTuple):
    """A trigger message and the stream time (s) at which the policy emitted it."""

    t_emit: float
    event: TriggerEvent


# ------------------------------------------------------------------------------ pure scoring


def merge(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of ``(t_start, t_end)`` spans as sorted, disjoint spans."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def covered(a: float, b: float, union: Sequence[tuple[float, float]]) -> float:
    """Seconds of ``[a, b]`` inside the disjoint spans ``union``."""
    return sum(max(0.0, min(b, t) - max(a, s)) for s, t in union)


def overlaps(a0: float, a1: float, b0: float, b1: float, tol: float = 0.0) -> bool:
    """Whether ``[a0, a1]`` widened by ``tol`` on each side overlaps ``[b0, b1]``."""
    return a0 - tol < b1 and b0 < a1 + tol


def _trigger_spans(emitted: Sequence[Emitted]) -> dict[int, tuple[float, float]]:
    """Span of each accepted trigger over all its messages."""
    accepted = {e.trigger_id for _, e in emitted if e.state is END and e.accepted}
    spans: dict[int, tuple[float, float]] = {}
    for _, e in emitted:
        if e.trigger_id in accepted:
            s, t = spans.get(e.trigger_id, (e.t_start, e.t_end))
            spans[e.trigger_id] = (min(s, e.t_start), max(t, e.t_end))
    return spans


def _latencies(
    ev: TruthEvent, emitted: Sequence[Emitted], spans: dict[int, tuple[float, float]], tol: float
) -> tuple[float | None, float | None]:
    ids = {i for i, (s, t) in spans.items() if overlaps(s, t, ev.t_start, ev.t_end, tol)}
    starts = [(t, e.trigger_id) for t, e in emitted if e.state is START and e.trigger_id in ids]
    if not starts:
        return None, None
    t0, tid = min(starts)
    mine = [(t, e) for t, e in emitted if e.trigger_id == tid]
    labelled = [(t, e.state) for (t, e), (_, prev) in zip(mine[1:], mine)
                if e.state is not UPDATE or (e.label, e.score) != (prev.label, prev.score)]  # fmt: skip
    later = [(t, s) for t, s in labelled if t >= t0]
    upd = [t for t, s in later if s is UPDATE] or [t for t, s in later if s is END]
    t1 = min(upd) if upd else None
    return max(0.0, t0 - ev.t_start), None if t1 is None else max(0.0, t1 - ev.t_start)


def _window_label(ev: TruthEvent, windows: Sequence[CaptureWindow]) -> str | None:
    weight: dict[str, float] = defaultdict(float)
    for w in windows:
        for label in w.labels:
            weight[label] += covered(ev.t_start, ev.t_end, [(w.t_start, w.t_end)])
    weight = {k: v for k, v in weight.items() if v > 0}
    return max(weight, key=lambda k: weight[k]) if weight else None


def _score_event(
    ev: TruthEvent, union: list[tuple[float, float]], windows: Sequence[CaptureWindow],
    ends: list[TriggerEvent], emitted: Sequence[Emitted], spans: dict[int, tuple[float, float]],
    tol: float,
) -> dict[str, Any]:  # fmt: skip
    frac = covered(ev.t_start, ev.t_end, union) / max(ev.t_end - ev.t_start, 1e-9)
    recalled = frac >= MIN_COVER - 1e-9
    near = [e for e in ends if overlaps(e.t_start, e.t_end, ev.t_start, ev.t_end, tol)]
    best = max(near, key=lambda e: covered(ev.t_start, ev.t_end, [(e.t_start, e.t_end)]),
               default=None)  # fmt: skip
    label = best.label if best is not None else None
    wlabel = _window_label(ev, windows)
    lat = _latencies(ev, emitted, spans, tol) if recalled else (None, None)
    return {
        "t_start": ev.t_start, "t_end": ev.t_end, "label": ev.label, "snr_db": ev.snr_db,
        "clip": ev.clip, "covered": frac, "recalled": recalled,
        "predicted": label, "label_ok": recalled and label == ev.label,
        "window_label": wlabel, "window_label_ok": recalled and wlabel == ev.label,
        "start_latency_s": lat[0], "update_latency_s": lat[1],
    }  # fmt: skip


def score(
    truth: Sequence[TruthEvent],
    windows: Sequence[CaptureWindow],
    emitted: Sequence[Emitted | tuple[float, TriggerEvent]],
    *,
    duration_s: float,
    tol_s: float = TOL_S,
) -> dict[str, Any]:
    """Score one soundscape.

    Parameters
    ----------
    truth : Sequence[TruthEvent]
        Placed events (kind "trigger" or "distractor").
    windows : Sequence[CaptureWindow]
        The policy's capture windows.
    emitted : Sequence[Emitted]
        Every trigger message with its emission time (s), in emission order.
    duration_s : float
        Soundscape length (s).
    tol_s : float
        Slack (s) when matching trigger spans to truth spans.

    Returns
    -------
    dict
        The metrics of :func:`summarise` plus ``"raw"``: the counts and per-event outcomes that
        :func:`pool` sums over soundscapes.
    """
    emitted = [Emitted(*m) for m in emitted]
    union = merge((w.t_start, w.t_end) for w in windows)
    ends = [e for _, e in emitted if e.state is END and e.accepted]
    trig = [t for t in truth if t.kind == "trigger"]
    dist = [t for t in truth if t.kind == "distractor"]
    false = [
        e for e in ends
        if not any(overlaps(e.t_start, e.t_end, t.t_start, t.t_end, tol_s) for t in trig)
    ]  # fmt: skip
    spans = _trigger_spans(emitted)
    raw = {
        "duration_s": float(duration_s),
        "captured_s": covered(0.0, duration_s, union),
        "n_accepted": len(ends),
        "n_rejected": sum(1 for _, e in emitted if e.state is END and not e.accepted),
        "n_false": len(false),
        "n_false_distractor": sum(
            any(overlaps(e.t_start, e.t_end, d.t_start, d.t_end, tol_s) for d in dist)
            for e in false
        ),
        "events": [_score_event(t, union, windows, ends, emitted, spans, tol_s) for t in trig],
        "distractors": [
            {"t_start": d.t_start, "t_end": d.t_end, "label": d.label, "snr_db": d.snr_db,
             "triggered": any(overlaps(e.t_start, e.t_end, d.t_start, d.t_end, tol_s)
                              for e in false)}
            for d in dist
        ],
    }  # fmt: skip
    return {**summarise([raw]), "raw": raw}


def _mean(xs: Sequence[bool | float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def _stat(xs: Sequence[float | None], q: float) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.percentile(vals, q)) if vals else None


def _event_metrics(ev: list[dict], dist: list[dict]) -> dict[str, Any]:
    rec = [e for e in ev if e["recalled"]]
    start = [e["start_latency_s"] for e in rec]
    upd = [e["update_latency_s"] for e in rec]
    return {
        "n_events": len(ev), "recall": _mean([e["recalled"] for e in ev]),
        "label_accuracy": _mean([e["label_ok"] for e in rec]),
        "window_label_accuracy": _mean([e["window_label_ok"] for e in rec]),
        "n_distractors": len(dist), "distractor_rate": _mean([d["triggered"] for d in dist]),
        "start_latency_median_s": _stat(start, 50), "start_latency_p90_s": _stat(start, 90),
        "update_latency_median_s": _stat(upd, 50), "update_latency_p90_s": _stat(upd, 90),
    }  # fmt: skip


def _group(items: list[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for x in items:
        out[f"{x[key]:g}" if isinstance(x[key], float) else str(x[key])].append(x)
    return out


def summarise(raws: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics over one or more soundscapes' raw outcomes (events pooled, not averaged)."""
    ev = [e for r in raws for e in r["events"]]
    dist = [d for r in raws for d in r["distractors"]]
    duration = sum(r["duration_s"] for r in raws)
    minutes = duration / 60
    out: dict[str, Any] = {
        "duration_s": duration,
        "capture_fraction": sum(r["captured_s"] for r in raws) / duration if duration else None,
        "n_accepted": sum(r["n_accepted"] for r in raws),
        "n_rejected": sum(r["n_rejected"] for r in raws),
        "n_false": sum(r["n_false"] for r in raws),
        "false_per_min": sum(r["n_false"] for r in raws) / minutes if minutes else None,
        "false_distractor_per_min": (
            sum(r["n_false_distractor"] for r in raws) / minutes if minutes else None
        ),
        **_event_metrics(ev, dist),
    }
    if raws and all("wall_s" in r for r in raws):
        wall = sum(r["wall_s"] for r in raws)
        out["wall_s"] = wall
        out["speed_x_rt"] = duration / wall if wall > 0 else None
    if raws and all("cpu_s" in r for r in raws):
        cpu = sum(r["cpu_s"] for r in raws)
        out["cpu_s"] = cpu
        out["speed_cpu_x_rt"] = duration / cpu if cpu > 0 else None
    snrs = _group(ev, "snr_db"), _group(dist, "snr_db")
    out["per_snr"] = {
        k: _event_metrics(snrs[0].get(k, []), snrs[1].get(k, []))
        for k in sorted(set(snrs[0]) | set(snrs[1]), key=float)
    }
    out["per_class"] = {
        k: {"n": len(v), "recall": _mean([e["recalled"] for e in v]),
            "label_accuracy": _mean([e["label_ok"] for e in v if e["recalled"]])}
        for k, v in sorted(_group(ev, "label").items())
    }  # fmt: skip
    return out


def pool(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled metrics of several :func:`score` results."""
    return summarise([s["raw"] for s in scores])


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """Probability that a positive outscores a negative (ties count half); None if one is empty."""
    p, n = np.asarray(pos, dtype=float)[:, None], np.asarray(neg, dtype=float)[None, :]
    if not p.size or not n.size:
        return None
    return float(np.mean((p > n) + 0.5 * (p == n)))


def passes(metric: str, value: float | None) -> bool | None:
    """Whether ``value`` meets the target of ``metric`` (None without a target or a value)."""
    if metric not in TARGETS or value is None:
        return None
    op, target = TARGETS[metric]
    return value >= target if op == ">=" else value <= target


# ------------------------------------------------------------------------------ running


def run_policy(
    trigger_cfg: Any, samples: np.ndarray, *, chunk_s: float = 0.24
) -> tuple[list[Emitted], list[CaptureWindow], float, float]:
    """Feed ``samples`` (16 kHz) to a fresh policy in chunks; return the emitted messages, the
    capture windows, and the wall and process-CPU seconds of feed + flush (construction is not
    timed; CPU time is less sensitive to other load on a shared machine)."""
    from pipeline.triggers import TriggerPolicy

    policy = TriggerPolicy.from_config("eval", trigger_cfg)
    n = max(1, int(round(chunk_s * SAMPLE_RATE)))
    chunks = [
        AudioChunk("eval", i / SAMPLE_RATE, SAMPLE_RATE, samples[i : i + n])
        for i in range(0, len(samples), n)
    ]
    duration = len(samples) / SAMPLE_RATE
    emitted: list[Emitted] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for c in chunks:
        emitted += [Emitted(c.t_end, e) for e in policy.feed(c)]
    emitted += [Emitted(duration, e) for e in policy.flush()]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return emitted, policy.windows(duration), wall, cpu


def classifier_metrics(clips: Sequence[Any], weights: Any = None) -> dict[str, Any]:
    """Clip accuracy (50 classes) and ROC-AUC of the interaction score, trigger-class clips vs
    distractor clips, of ``models.audio.cnn.AudioClassifier(weights).predict_clip`` (a
    ``Prediction``: ``probs [1, 50]``, ``interaction [1]``; ``weights`` None: the shipped ones,
    as ``trigger.weights``); ``{"available": False, "error": ...}`` if it fails."""
    from benchmarks.soundscapes import load_clip
    from models.audio.esc50 import CLASSES, DEFAULT_TRIGGERS, DISTRACTORS, INTERACTION

    try:  # the classifier may be missing or untrained: report it, do not end the run
        from models.audio.cnn import AudioClassifier

        clf = AudioClassifier(weights) if weights is not None else AudioClassifier()
        preds = [clf.predict_clip(load_clip(c.path)) for c in clips]
        probs = np.stack([np.asarray(p.probs, dtype=float).reshape(-1) for p in preds])
        inter = np.array([float(np.mean(p.interaction)) for p in preds])
    except Exception as e:  # noqa: BLE001
        logger.warning("classifier not evaluated: %s", e)
        return {"available": False, "error": f"{type(e).__name__}: {e}"}
    classes = list(getattr(clf, "classes", CLASSES))
    cat = [c.category for c in clips]

    def auc(positives: Sequence[str]) -> float | None:
        return roc_auc([x for x, c in zip(inter, cat) if c in positives],
                       [x for x, c in zip(inter, cat) if c in DISTRACTORS])  # fmt: skip

    return {
        "available": True, "n_clips": len(clips),
        "accuracy": float(np.mean([classes[i] == c for i, c in zip(probs.argmax(axis=1), cat)])),
        "interaction_auc": auc(DEFAULT_TRIGGERS),  # positives: the default trigger classes
        "interaction_auc_interaction_classes": auc(INTERACTION),  # positives: INTERACTION
    }  # fmt: skip


def _fmt(x: float | None, spec: str = ".2f", metric: str | None = None) -> str:
    ok = passes(metric, x) if metric else None
    return "-" if x is None else f"{x:{spec}}" + ("" if ok is None else " ✓" if ok else " ✗")


def format_table(pooled: dict[str, Any], classifier: dict[str, Any], header: str) -> str:
    """The printed report: overall and per-SNR rows, stream-level metrics, per-class recall."""
    lines = [header, f"{'':12}{'n':>4}{'recall':>9}{'label':>7}{'win.lbl':>8}{'distr.':>9}"
             f"{'START med / p90 s':>20}{'UPDATE med / p90 s':>20}"]  # fmt: skip
    rows = [("overall", pooled)] + [(f"SNR {k} dB", v) for k, v in pooled["per_snr"].items()]
    for name, m in rows:
        lat = [f"{_fmt(m[f'{k}_median_s'], '.2f', f'{k}_median_s'):>12} / "
               f"{_fmt(m[f'{k}_p90_s']):<5}" for k in ("start_latency", "update_latency")]  # fmt: skip
        lines.append(
            f"{name:12}{m['n_events']:>4}{_fmt(m['recall'], '.2f', 'recall'):>9}"
            f"{_fmt(m['label_accuracy']):>7}{_fmt(m['window_label_accuracy']):>8}"
            f"{_fmt(m['distractor_rate'], '.2f', 'distractor_rate'):>9}{lat[0]}{lat[1]}"
        )
    c = classifier
    la = pooled.get("load_avg_1min")
    load = "n/a" if not la else " -> ".join(f"{x:.1f}" for x in la)
    lines += [
        f"capture fraction    {_fmt(pooled['capture_fraction'], '.3f', 'capture_fraction')}"
        f"  (target <= {TARGETS['capture_fraction'][1]:g})",
        f"false triggers/min  {_fmt(pooled['false_per_min'], '.2f', 'false_per_min')}"
        f"  (target <= {TARGETS['false_per_min'][1]:g}; by distractors "
        f"{_fmt(pooled['false_distractor_per_min'])}/min; triggers accepted "
        f"{pooled['n_accepted']}, rejected {pooled['n_rejected']})",
        f"speed               {_fmt(pooled.get('speed_x_rt'), '.0f', 'speed_x_rt')} x real time"
        f"  (target >= {TARGETS['speed_x_rt'][1]:g}, 1 thread, wall clock; by process CPU time "
        f"{_fmt(pooled.get('speed_cpu_x_rt'), '.0f')} x; load average {load})",
        "classifier          " + (
            f"accuracy {c['accuracy']:.3f} on {c['n_clips']} test clips, trigger-vs-distractor "
            f"AUC {_fmt(c['interaction_auc'], '.3f')} (interaction score)"
            if c.get("available") else f"n/a ({c.get('error')})"),
        "recall (label accuracy) per class, n:",
    ]  # fmt: skip
    per = [f"  {k:17}{_fmt(v['recall']):>5}{'(' + _fmt(v['label_accuracy']) + ')':>7}{v['n']:>3}"
           for k, v in pooled["per_class"].items()]  # fmt: skip
    lines += ["".join(per[i : i + 3]) for i in range(0, len(per), 3)]
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=6, help="soundscapes (default 6)")
    p.add_argument("--minutes", type=float, default=3.0, help="length of each (default 3)")
    p.add_argument("--seed", type=int, default=0, help="soundscape i is built with seed (SEED, i)")
    p.add_argument("--config", type=Path, default=None, help="service config YAML (trigger: ...)")
    p.add_argument("--snr", default="0,5,10,20", help="event SNRs in dB, comma-separated")
    p.add_argument("--chunk-s", type=float, default=0.24, help="seconds per fed AudioChunk")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/trigger_eval.json")
    p.add_argument("--no-classifier", action="store_true", help="skip the classifier accuracy")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="clips to build soundscapes from: 'test' (held out: the score) or 'val' "
                   "(for tuning thresholds, so no recording is both tuned on and scored)")
    args = p.parse_args(argv)
    try:
        args.snr = [float(x) for x in args.snr.split(",") if x.strip()]
    except ValueError:
        p.error(f"--snr must be comma-separated numbers in dB, got {args.snr!r}")
    if args.n < 1 or args.minutes <= 0 or args.chunk_s <= 0 or not args.snr:
        p.error("--n, --minutes and --chunk-s must be positive and --snr non-empty")
    return args


def _as_dict(obj: Any) -> dict[str, Any]:
    return {k: v.value if isinstance(v, TriggerState) else list(v) if isinstance(v, tuple) else v
            for k, v in asdict(obj).items()}  # fmt: skip


def evaluate(sc: Soundscape, trigger_cfg: Any, *, chunk_s: float) -> dict[str, Any]:
    """Run the policy on one soundscape; its truth, windows, triggers and metrics as a dict."""
    emitted, windows, wall, cpu = run_policy(trigger_cfg, sc.samples, chunk_s=chunk_s)
    metrics = score(sc.events, windows, emitted, duration_s=sc.duration)
    metrics["raw"]["wall_s"], metrics["raw"]["cpu_s"] = wall, cpu
    metrics["wall_s"], metrics["speed_x_rt"] = wall, sc.duration / wall if wall > 0 else None
    metrics["cpu_s"], metrics["speed_cpu_x_rt"] = cpu, sc.duration / cpu if cpu > 0 else None
    return {
        "seed": list(sc.seed), "duration_s": sc.duration, "gain_db": sc.gain_db,
        "background": [_as_dict(b) for b in sc.background],
        "truth": [_as_dict(e) for e in sc.events],
        "windows": [[w.t_start, w.t_end, list(w.labels)] for w in windows],
        "triggers": [{"t_emit": t, **_as_dict(e)} for t, e in emitted],
        "metrics": metrics,
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit code (2: bad config, 1: the policy cannot be built)."""
    from tqdm import tqdm

    from benchmarks.soundscapes import build_soundscape, held_out_clips
    from models.audio.esc50 import read_meta, split
    from models.audio.features import warm_up
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config).trigger
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    warm_up()
    try:  # also warms the policy (imports, JIT) before anything is timed
        run_policy(cfg, np.zeros(SAMPLE_RATE, dtype=np.float32), chunk_s=args.chunk_s)
    except Exception as e:  # noqa: BLE001 - any backend failure ends the run with its message
        print(f"error: cannot run TriggerPolicy.from_config: {type(e).__name__}: {e}",
              file=sys.stderr)  # fmt: skip
        return 1
    clips = held_out_clips() if args.split == "test" else split(read_meta())[args.split]
    results = []
    load0 = os.getloadavg()[0]
    for i in tqdm(range(args.n), desc="soundscapes", file=sys.stderr):
        sc = build_soundscape(clips, minutes=args.minutes, seed=(args.seed, i), snr_db=args.snr)
        results.append(evaluate(sc, cfg, chunk_s=args.chunk_s))
    pooled = pool([r["metrics"] for r in results])
    pooled["load_avg_1min"] = [load0, os.getloadavg()[0]]  # machine load at start and end
    classifier = ({"available": False, "error": "skipped (--no-classifier)"}
                  if args.no_classifier else classifier_metrics(clips, cfg.weights))  # fmt: skip
    print(format_table(pooled, classifier, (
        f"Trigger benchmark: {args.n} soundscapes x {args.minutes:g} min, seed {args.seed}, "
        f"SNR {','.join(f'{x:g}' for x in args.snr)} dB, chunk {args.chunk_s:g} s, "
        f"detector {cfg.detector!r}")))  # fmt: skip
    doc = {
        "command": " ".join(["python", *sys.argv]), "git": git_state(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "config": cfg.model_dump(mode="json"), "targets": TARGETS, "tol_s": TOL_S,
        "pooled": pooled, "classifier": classifier, "soundscapes": results,
    }  # fmt: skip
    write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
