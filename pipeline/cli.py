"""The ``eidetic`` command (DESIGN.md §3): ingest, events, track, query, serve, store, config."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from models.errors import ParameterError
from pipeline import __version__
from pipeline.errors import (
    EXIT_BAD_MEDIA,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    EideticError,
)

logger = logging.getLogger("eidetic")
EXIT_INTERRUPTED = 130  # files left unfinished by Ctrl-C/SIGTERM (the journal resumes them)

json_opt = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
config_opt = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
store_opt = click.option("--store", "store_dir", type=click.Path(file_okay=False), help="Store directory (default ./eidetic-data).")


class Failure(Exception):
    """Carries an exit code and a one-line message out of a command."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _emit(doc: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    if as_json:
        click.echo(json.dumps(doc, default=str))
    else:
        human(doc)


def _run(ctx: click.Context, fn: Callable[[], Any]) -> Any:
    """Run ``fn``, turning known errors into a Failure with the right exit code."""
    try:
        return fn()
    except EideticError as e:
        raise Failure(e.exit_code, str(e)) from e
    except ParameterError as e:  # a bad value given by the user (name, threshold, ...)
        raise Failure(EXIT_USAGE, str(e)) from e
    except (ValueError, KeyError) as e:
        if ctx.obj.get("debug"):
            traceback.print_exc()
        raise Failure(EXIT_ERROR, f"{type(e).__name__}: {e}") from e


def _app(store_dir: str | None, config_path: str | None):
    from pipeline.api import Eidetic

    return Eidetic(store_dir, config=config_path)


def _progress_hook():
    """tqdm bars on a terminal: one per source (its stage in the label) and one overall; None when
    stderr is not a terminal."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def hook(source: str, stage: str, done: float, total: float) -> None:
        if source not in bars:
            overall = source == ""
            bars[source] = tqdm(total=max(total, 0.1), unit="file" if overall else "s", file=sys.stderr,
                                leave=overall, position=0 if overall else len(bars) + 1)  # fmt: skip
        bar = bars[source]
        bar.set_description_str("all files" if source == "" else f"{Path(source).name} [{stage}]", refresh=False)
        bar.total = max(round(total, 1), 0.1)
        bar.n = round(min(done, total), 1) if total else round(done, 1)
        bar.refresh()
        if stage in ("done", "stopped") and source in bars:
            bars.pop(source).close()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return hook, close


class _Interrupts:
    """SIGINT/SIGTERM while ingesting: the first stops cleanly (captures are flushed, files stop
    after their current window, the journal keeps what is done); a second one aborts."""

    def __init__(self) -> None:
        import signal
        import threading

        self.stop = threading.Event()
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        click.echo("eidetic: stopping (flushing open captures; press Ctrl-C again to abort)", err=True)

    def restore(self) -> None:
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eidetic")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show progress logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Eidetic: an episodic memory of what your cameras and microphones saw and heard."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@store_opt
@config_opt
@click.option("--every-frame", is_flag=True, help="Decode and process every frame, not only capture windows.")
@click.option("--audio", "audio_source", help="A separate audio source paired with the (one) video SOURCE.")
@json_opt
@click.pass_context
def ingest(ctx, sources, store_dir, config_path, every_frame, audio_source, as_json) -> None:
    """Ingest media files, folders of them, streams (rtsp://, http(s)://, tcp://, udp://...) or
    devices (v4l2:, alsa:, pulse:) into the store.

    Files are done in parallel and resume where an interrupted run stopped; live sources run
    until Ctrl-C or SIGTERM (the first stops cleanly, a second aborts).
    """
    app = _run(ctx, lambda: _app(store_dir, config_path))
    if every_frame:
        app.config = app.config.model_copy(update={"ingest": app.config.ingest.model_copy(update={"every_frame": True})})
    if audio_source:
        from pipeline.config import SourceOptions

        if len(sources) != 1:
            raise Failure(EXIT_USAGE, "--audio pairs one audio source with exactly one video SOURCE")
        streams = {**app.config.sources.streams}
        entry = streams.get(sources[0])
        streams[sources[0]] = (entry.model_copy(update={"audio": audio_source}) if entry is not None
                               else SourceOptions(audio=audio_source))  # fmt: skip
        app.config = app.config.model_copy(update={"sources": app.config.sources.model_copy(update={"streams": streams})})
    hook, close = _progress_hook()
    interrupts = _Interrupts()
    try:
        doc = _run(ctx, lambda: app.ingest(list(sources), hook=hook, stop=interrupts.stop))
    finally:
        interrupts.restore()
        close()
    _emit(doc, as_json, _print_ingest)
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():  # the store is closed, Ray is stopped
        _QUICK_EXIT.add("ingest")  # main() may skip the interpreter's teardown
    for s in doc["sources"]:  # one line per problem on stderr, with or without --json
        for w in s.get("warnings") or ():
            click.echo(f"eidetic: warning: {s['source']}: {w}", err=True)
        if s["error"]:
            click.echo(f"eidetic: error: {s['source']}: {s['error']}", err=True)
    if any(s["error"] for s in doc["sources"]):
        sys.exit(EXIT_BAD_MEDIA)  # after the good inputs were ingested (DESIGN.md §3)
    if any(s.get("interrupted") for s in doc["sources"]):
        click.echo("eidetic: interrupted: run the same command again to resume", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _print_ingest(doc: dict[str, Any]) -> None:
    good = [s for s in doc["sources"] if not s["error"]]
    for s in good:
        click.echo(
            f"{s['source']}: {s['duration_s'] or 0:.1f} s, {s['triggers']} triggers, {s['episodes']} episodes, "
            f"{s['frames_processed']}/{s['frames_decoded']} frames processed/decoded, {s['wall_s']:.1f} s wall"
        )
    if good:
        click.echo(f"episodes stored: {doc['episodes_total']}")


@cli.command()
@click.argument("media")
@config_opt
@store_opt
@json_opt
@click.pass_context
def events(ctx, media, config_path, store_dir, as_json) -> None:
    """Detect sounds and trigger events in MEDIA (no capture, no store).

    Every sound heard is listed with its label and score; "trigger" marks those inside a capture
    window. Enrolled custom sounds are read from <store>/sounds. A video without audio falls
    back to the visual-change trigger (with a warning).
    """
    app = _run(ctx, lambda: _app(store_dir, config_path))
    bar = _progress_bar(f"events {Path(media).name}")
    try:
        doc = _run(ctx, lambda: app.events(media, progress=bar.update))
    finally:
        bar.close()
    if doc.get("warning"):
        click.echo(f"eidetic: warning: {doc['warning']}", err=True)

    def human(d: dict[str, Any]) -> None:
        n = sum(1 for e in d["events"] if e["trigger"])
        click.echo(f"{d['media']}: {d['duration_s']:.1f} s, {len(d['events'])} sounds, {n} triggering")
        for e in d["events"]:
            mark = "*" if e["trigger"] else " "
            click.echo(f"  {mark} {e['t_start']:8.2f} - {e['t_end']:8.2f}  {e['label']:<18} {e['score']:.2f}")
        for w in d["capture_windows"]:
            click.echo(f"  capture {w['t_start']:8.2f} - {w['t_end']:8.2f}  {', '.join(w['labels'])}")

    _emit(doc, as_json, human)


class _progress_bar:
    """A tqdm bar on stderr over media seconds (silent when stderr is not a terminal)."""

    def __init__(self, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, desc=desc, unit="s", file=sys.stderr, disable=not sys.stderr.isatty(),
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")

    def update(self, done: float, total: float) -> None:
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


@cli.group()
def sounds() -> None:
    """Custom trigger sounds enrolled from a few examples (few-shot)."""


@sounds.command("add")
@click.argument("name")
@click.argument("clips", nargs=-1, required=True)
@click.option("--threshold", type=float, help="Cosine similarity that triggers (default: set from the examples).")
@click.option("--replace", is_flag=True, help="Replace an enrolled sound of that name.")
@store_opt
@config_opt
@json_opt
@click.pass_context
def sounds_add(ctx, name, clips, threshold, replace, store_dir, config_path, as_json) -> None:
    """Enroll NAME from example CLIPS (any audio or video files; 3-10 examples work best)."""
    app = _run(ctx, lambda: _app(store_dir, config_path))
    doc = _run(ctx, lambda: app.sounds_add(name, list(clips), threshold=threshold, replace=replace))

    def human(d: dict[str, Any]) -> None:
        a = d["added"]
        click.echo(f"enrolled {a['name']} from {a['n_examples']} examples, threshold {a['threshold']:.3f} "
                   f"(in {d['sounds_dir']})")

    _emit(doc, as_json, human)


@sounds.command("list")
@store_opt
@config_opt
@click.option("--all", "show_all", is_flag=True, help="Also list the built-in classes that do not trigger.")
@json_opt
@click.pass_context
def sounds_list(ctx, store_dir, config_path, show_all, as_json) -> None:
    """List enrolled sounds and the built-in trigger classes with their thresholds."""
    app = _run(ctx, lambda: _app(store_dir, config_path))
    doc = _run(ctx, app.sounds_list)

    def human(d: dict[str, Any]) -> None:
        for r in d["sounds"]:
            if r["trigger"] or show_all:
                kind = f"custom, {r['examples']} examples" if r["custom"] else "built-in"
                state = "triggers" if r["trigger"] else "remembered only"
                click.echo(f"{r['name']:<20} {kind:<22} {state:<16} threshold {r['threshold']:.2f}")

    _emit(doc, as_json, human)


@sounds.command("remove")
@click.argument("name")
@store_opt
@config_opt
@json_opt
@click.pass_context
def sounds_remove(ctx, name, store_dir, config_path, as_json) -> None:
    """Forget the enrolled sound NAME."""
    app = _run(ctx, lambda: _app(store_dir, config_path))
    doc = _run(ctx, lambda: app.sounds_remove(name))
    _emit(doc, as_json, lambda d: click.echo(f"removed {d['removed']}"))


@cli.command()
@click.argument("frames")
@click.option("--first-mask", required=True, type=click.Path(dir_okay=False), help="First frame's mask PNG (0 = background).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder for mask PNGs.")
@click.option("--preset", type=click.Choice(["quality", "fast"]), default="quality", show_default=True)
@config_opt
@json_opt
@click.pass_context
def track(ctx, frames, first_mask, out_dir, preset, config_path, as_json) -> None:
    """Track the objects of FIRST_MASK through a frames folder or a video (DAVIS protocol)."""
    app = _run(ctx, lambda: _app(None, config_path))
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc="track", unit="frame", file=sys.stderr, leave=False)
    try:
        doc = _run(ctx, lambda: app.track(frames, first_mask, out_dir, preset=preset, hook=(lambda n: bar.update(1)) if bar else None))
    finally:
        if bar is not None:
            bar.close()
    _emit(doc, as_json, lambda d: click.echo(
        f"{d['frames']} frames, {d['objects']} objects, {d['fps']:.2f} fps, {d['keyframes_kept']} keyframes kept -> {out_dir}"
    ))


@cli.command()
@click.argument("text", required=False)
@click.option("--image", type=click.Path(dir_okay=False), help="Find episodes that look like this image.")
@click.option("--audio", type=click.Path(dir_okay=False), help="Find episodes that sound like this clip.")
@click.option("--source", help="Only this source (as ingested).")
@click.option("--since", help="ISO 8601 time or seconds of media time.")
@click.option("--until", help="ISO 8601 time or seconds of media time.")
@click.option("-k", "k", type=int, default=5, show_default=True, help="Evidence items at most.")
@click.option("--structured", help='A structured query as JSON instead of TEXT, e.g. \'{"intent": "count", "labels": ["dog"]}\'.')
@store_opt
@config_opt
@json_opt
@click.pass_context
def query(ctx, text, image, audio, source, since, until, k, structured, store_dir, config_path, as_json) -> None:
    """Ask the memory a question; prints the answer and its evidence.

    TEXT understands when/how many times/how long/what happened before or after X, between two
    times, "yesterday", "10 minutes ago", "at 14:05", "where was object 3 last seen", "anything
    like this image" (with --image) or "like episode 12".
    """
    app = _run(ctx, lambda: _app(store_dir, config_path))
    doc = _run(ctx, lambda: app.query_json(text, image=image, audio=audio, source=source, since=since,
                                           until=until, k=k, structured=_structured(structured)))
    _emit(doc, as_json, _print_answer)


def _structured(value: str | None) -> dict[str, Any] | None:
    """``--structured`` JSON → dict (a usage error when it is not a JSON object)."""
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except json.JSONDecodeError as e:
        raise Failure(EXIT_USAGE, f"--structured is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise Failure(EXIT_USAGE, "--structured must be a JSON object")
    return doc


def _print_answer(doc: dict[str, Any]) -> None:
    from memory.episodes import format_time

    click.echo(doc["answer"])
    for ev in doc["evidence"]:
        labels = ", ".join(ev["labels"]) or "-"
        click.echo(
            f"  episode {ev['episode_id']}: {format_time(ev['t_start'])}-{format_time(ev['t_end'])}  "
            f"[{labels}]  {Path(ev['source']).name}  score {ev['score']:.2f}"
        )
        for kf in ev["keyframes"][:2]:
            click.echo(f"    keyframe {kf}")


@cli.command()
@store_opt
@config_opt
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="TCP port (default 8765).")
@click.pass_context
def serve(ctx, store_dir, config_path, host, port) -> None:
    """Serve the HTTP API and the web page."""
    from pipeline.serve import run_server

    app = _run(ctx, lambda: _app(store_dir, config_path))
    _run(ctx, lambda: run_server(app.config, host=host, port=port, config_path=config_path))


@cli.group()
def store() -> None:
    """Inspect and maintain a store."""


def _with_store(ctx: click.Context, store_dir: str | None, fn: Callable[[Any], dict[str, Any]], *, readonly: bool) -> dict[str, Any]:
    from memory.errors import EpisodeNotFound
    from memory.errors import ParameterError as StoreParameterError
    from memory.store import EpisodeStore

    def work() -> dict[str, Any]:
        path = _app(store_dir, None).store_path
        if not (path / "eidetic.db").exists():
            raise ConfigError(f"no store at {path} (pass --store DIR)")
        with EpisodeStore(path, readonly=readonly) as st:
            try:
                return fn(st)
            except (StoreParameterError, EpisodeNotFound) as e:
                raise ConfigError(str(e)) from e

    return _run(ctx, work)


def _print_doc(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


@store.command("stats")
@store_opt
@json_opt
@click.pass_context
def store_stats(ctx, store_dir, as_json) -> None:
    """Counts, sizes and time span of the store."""
    _emit(_with_store(ctx, store_dir, lambda st: st.stats(), readonly=True), as_json, _print_doc)


@store.command("check")
@store_opt
@json_opt
@click.pass_context
def store_check(ctx, store_dir, as_json) -> None:
    """Verify SQLite integrity, FAISS/SQLite agreement and keyframe files (exit 0 only if sound)."""
    doc = _with_store(ctx, store_dir, lambda st: st.check(), readonly=True)
    _emit(doc, as_json, _print_doc)
    if not doc["ok"]:
        sys.exit(EXIT_ERROR)


@store.command("rebuild")
@store_opt
@json_opt
@click.pass_context
def store_rebuild(ctx, store_dir, as_json) -> None:
    """Rebuild the vector indexes from SQLite."""

    def work(st) -> dict[str, Any]:
        st.rebuild()
        return st.check()

    _emit(_with_store(ctx, store_dir, work, readonly=False), as_json, _print_doc)


@store.command("forget")
@click.argument("episode_id", type=int, required=False)
@click.option("--since", help="Forget episodes overlapping [since, until]: media seconds or ISO 8601.")
@click.option("--until", help="End of the range (media seconds or ISO 8601).")
@click.option("--source", help="Only this source (file path or URL).")
@click.option("--dry-run", is_flag=True, help="List what would be forgotten; change nothing.")
@store_opt
@json_opt
@click.pass_context
def store_forget(ctx, episode_id, since, until, source, dry_run, store_dir, as_json) -> None:
    """Remove one episode (EPISODE_ID), or every episode of a time range and/or source, with
    their vectors, files and logged sounds."""
    ranged = any(v is not None for v in (since, until, source))
    if (episode_id is None) == (not ranged):
        raise click.UsageError("give an EPISODE_ID, or --since/--until/--source (not both)")

    def work(st) -> dict[str, Any]:
        if episode_id is not None:
            if dry_run:
                st.get(episode_id, vectors=False)
            else:
                st.forget(episode_id)
            return {"forgotten": [episode_id], "dry_run": dry_run}
        from pipeline.api import _source_filter, parse_time

        t0, w0 = parse_time(since)
        t1, w1 = parse_time(until)
        done = st.forget_range(source=_source_filter(source), since=t0, until=t1, wall_since=w0,
                               wall_until=w1, dry_run=dry_run)  # fmt: skip
        return {"forgotten": done["episodes"], "sounds": done["sounds"], "dry_run": dry_run}

    def human(d: dict[str, Any]) -> None:
        verb = "would forget" if d["dry_run"] else "forgot"
        click.echo(f"{verb} {len(d['forgotten'])} episode(s): {d['forgotten'][:20]}")

    _emit(_with_store(ctx, store_dir, work, readonly=dry_run), as_json, human)


@store.command("prune")
@click.option("--max-gb", type=click.FloatRange(min=0, min_open=True), help="Size limit (overrides the config).")
@click.option("--max-age-days", type=click.FloatRange(min=0, min_open=True), help="Age limit (overrides the config).")
@click.option("--dry-run", is_flag=True, help="Report what would be forgotten; change nothing.")
@store_opt
@config_opt
@json_opt
@click.pass_context
def store_prune(ctx, max_gb, max_age_days, dry_run, store_dir, config_path, as_json) -> None:
    """Apply the retention policy (config section `retention`) now."""

    def work(st) -> dict[str, Any]:
        cfg = _app(store_dir, config_path).config.retention
        cfg = cfg.model_copy(update={k: v for k, v in (("max_gb", max_gb), ("max_age_days", max_age_days)) if v is not None})
        st.retention = cfg.policy()
        if not st.retention.active and st.retention.clip_bucket_bytes is None:
            raise ConfigError("no retention limits: set retention.max_gb / max_age_days / clip_mb_per_hour in the config, or pass --max-gb / --max-age-days")
        report = st.enforce_retention(dry_run=dry_run)
        by_size = report["clips_dropped"] if "clips_dropped" in report else len(report["clips"])  # dry run: planned
        return {"forgotten": report["forgotten"], "clips_dropped": report["clips_over_budget"],
                "clips_dropped_by_size": by_size,
                "by_age": report["age"], "by_size": report["size"],
                "bytes_before": report["bytes_before"], "bytes_after_estimate": report["bytes_after_estimate"],
                "dry_run": dry_run}  # fmt: skip

    _emit(_with_store(ctx, store_dir, work, readonly=False), as_json, _print_doc)


@store.command("export")
@click.argument("dest", type=click.Path(file_okay=False))
@store_opt
@json_opt
@click.pass_context
def store_export(ctx, dest, store_dir, as_json) -> None:
    """Copy a consistent snapshot of the store to DEST."""

    def work(st) -> dict[str, Any]:
        st.export(Path(dest))
        return {"exported": str(Path(dest).resolve())}

    _emit(_with_store(ctx, store_dir, work, readonly=True), as_json, _print_doc)


@cli.group()
def objects() -> None:
    """Persistent object identities: list them, name them."""


def _sighting_json(x) -> dict[str, Any] | None:
    if x is None:
        return None
    return {"episode_id": x.episode_id, "source": x.source, "t_first": x.t_first, "t_last": x.t_last,
            "wall_first": x.wall_first, "similarity": round(x.similarity, 4)}  # fmt: skip


def _object_json(o) -> dict[str, Any]:
    return {"object_id": o.object_id, "name": o.name, "label": o.label, "sightings": o.n_sightings,
            "sources": list(o.sources), "first_seen": _sighting_json(o.first_seen),
            "last_seen": _sighting_json(o.last_seen)}  # fmt: skip


def _print_objects(doc: dict[str, Any]) -> None:
    if not doc["objects"]:
        click.echo("no objects yet")
    for o in doc["objects"]:
        last = o["last_seen"]
        where = f"last seen in episode {last['episode_id']} on {last['source']} at {last['t_first']:.1f} s" if last else "not seen (its episodes were forgotten)"
        click.echo(f"{o['object_id']:>6}  {o['name'] or '-':<20} {o['label']:<10} {o['sightings']:>4} sightings, {where}")


@objects.command("list")
@click.option("--named", is_flag=True, help="Only objects with a name.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@store_opt
@json_opt
@click.pass_context
def objects_list(ctx, named, limit, store_dir, as_json) -> None:
    """Known objects, most recently seen first, with where they were first and last seen."""

    def work(st) -> dict[str, Any]:
        return {"objects": [_object_json(o) for o in st.objects(named=True if named else None, limit=limit)]}

    _emit(_with_store(ctx, store_dir, work, readonly=True), as_json, _print_objects)


@objects.command("show")
@click.argument("object_id", type=int)
@store_opt
@json_opt
@click.pass_context
def objects_show(ctx, object_id, store_dir, as_json) -> None:
    """The timeline of one object: every episode it was seen in."""

    def work(st) -> dict[str, Any]:
        import memory.errors

        try:
            timeline = st.object_timeline(object_id)
        except memory.errors.ParameterError as e:
            raise ConfigError(str(e)) from e
        return {"object_id": object_id, "sightings": [_sighting_json(x) for x in timeline]}

    _emit(_with_store(ctx, store_dir, work, readonly=True), as_json, _print_doc)


@objects.command("name")
@click.argument("object_id", type=int)
@click.argument("name", required=False)
@click.option("--clear", is_flag=True, help="Remove the object's name.")
@store_opt
@json_opt
@click.pass_context
def objects_name(ctx, object_id, name, clear, store_dir, as_json) -> None:
    """Give object OBJECT_ID a NAME (unique), e.g. `eidetic objects name 12 "my keys"`."""
    if not clear and not name:
        raise click.UsageError("give a NAME, or --clear")

    def work(st) -> dict[str, Any]:
        import memory.errors

        try:
            st.name_object(object_id, None if clear else name)
        except memory.errors.ParameterError as e:
            raise ConfigError(str(e)) from e
        return {"object_id": object_id, "name": None if clear else " ".join(name.split())}

    _emit(_with_store(ctx, store_dir, work, readonly=False), as_json, _print_doc)


@cli.group()
def config() -> None:
    """Validate configuration, or print an example."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@json_opt
@click.pass_context
def config_check(ctx, file, as_json) -> None:
    """Validate FILE (unknown keys and bad values are reported with their path)."""
    from pipeline.config import load_config

    cfg = _run(ctx, lambda: load_config(file))
    doc = {"ok": True, "file": file, "config": json.loads(cfg.model_dump_json())}
    _emit(doc, as_json, lambda d: click.echo(f"{file}: ok"))


@config.command("example")
def config_example() -> None:
    """Print a config file documenting every key with its default."""
    from pipeline.config import example_yaml

    click.echo(example_yaml(), nl=False)


_QUICK_EXIT: set[str] = set()  # commands that finished with nothing left to close (see main)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and maps every failure to an exit code and one line.

    As the process's entry point (``argv`` None), a command in :data:`_QUICK_EXIT` (an ingest
    whose MemoryActor closed the store and whose Ray is stopped) ends with ``os._exit`` once its
    output is flushed: the interpreter's own teardown of torch, Ray's core worker and the rest
    took 2-3 s after every ``eidetic ingest`` and wrote nothing."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    debug = "--debug" in args
    code, message = EXIT_OK, None
    try:
        cli.main(args=args, prog_name="eidetic", standalone_mode=False)
    except Failure as e:
        code, message = e.code, str(e)
        if debug:
            traceback.print_exc()
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        code, message = EXIT_USAGE, e.format_message()
    except click.exceptions.Abort:
        code, message = 130, "interrupted"
    except KeyboardInterrupt:
        code, message = 130, "interrupted"
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback with --debug
        code, message = EXIT_ERROR, f"{type(e).__name__}: {e}"
        if debug:
            traceback.print_exc()
    if message is not None:
        if as_json:
            click.echo(json.dumps({"error": message}))
        click.echo(f"eidetic: error: {message}", err=True)
    if argv is None and _QUICK_EXIT:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code if isinstance(code, int) else EXIT_ERROR)
    sys.exit(code)
