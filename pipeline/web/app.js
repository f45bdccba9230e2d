// Eidetic web page: ask, see the evidence, browse the timeline per source, open and forget
// episodes, follow objects, watch sources, live updates over server-sent events. No build step.
"use strict";

const TOKEN_KEY = "eidetic-token";
const $ = (id) => document.getElementById(id);
const token = () => localStorage.getItem(TOKEN_KEY) || "";
const withToken = (url) => token() ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token()) : url;

async function api(path, opts = {}) {
  opts.headers = Object.assign({"Content-Type": "application/json"}, opts.headers || {});
  if (token()) opts.headers["Authorization"] = "Bearer " + token();
  const r = await fetch(path, opts);
  if (r.status === 401) {
    const t = prompt("API token");
    if (t) { localStorage.setItem(TOKEN_KEY, t); return api(path, opts); }
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function fmt(t) {
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = (t % 60).toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}
const when = (e) => e.wall_start != null ? new Date(e.wall_start * 1000).toLocaleString() : `${fmt(e.t_start)}–${fmt(e.t_end)}`;
const shortSource = (s) => s.includes("://") ? s : s.split("/").pop();

// a keyframe with the objects' boxes drawn over it (XYXY pixels of the stored frame)
function thumb(url, objects) {
  const box = el("span", {class: "thumb"});
  const img = el("img", {src: withToken(url), alt: "keyframe", loading: "lazy"});
  box.append(img);
  img.addEventListener("load", () => {
    if (!objects || !objects.length) return;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
    svg.setAttribute("preserveAspectRatio", "none");
    for (const o of objects) {
      const [x1, y1, x2, y2] = o.bbox;
      const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      r.setAttribute("x", x1); r.setAttribute("y", y1); r.setAttribute("width", Math.max(1, x2 - x1)); r.setAttribute("height", Math.max(1, y2 - y1));
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = `${o.label || "object"} #${o.track_id}`;
      r.append(title); svg.append(r);
    }
    box.append(svg);
  });
  return box;
}

function chips(e) {
  const out = el("div");
  for (const l of e.labels || []) out.append(el("span", {class: "chip"}, l));
  for (const s of e.sounds || []) if (!(e.labels || []).includes(s.label)) out.append(el("span", {class: "chip sound"}, s.label));
  return out;
}

function card(e, score) {
  const c = el("div", {class: "ep", "data-episode": e.episode_id, onclick: () => openEpisode(e.episode_id)});
  if (e.keyframes && e.keyframes.length) c.append(thumb(e.keyframes[0], e.objects));
  c.append(el("div", {class: "meta"}, `#${e.episode_id} · ${when(e)}` + (score !== undefined ? ` · score ${score.toFixed(2)}` : "")));
  c.append(el("div", {class: "meta"}, shortSource(e.source)), chips(e));
  return c;
}

function heardCard(e) {
  return el("div", {class: "ep heard"}, el("div", {class: "meta"}, `heard · ${when(e)} · score ${e.score.toFixed(2)}`),
            el("div", {class: "meta"}, shortSource(e.source)), chips(e));
}

async function ask(ev) {
  ev.preventDefault();
  const out = $("answer"), evd = $("evidence");
  out.className = ""; out.textContent = "…"; evd.replaceChildren();
  try {
    const r = await api("/v1/query", {method: "POST", body: JSON.stringify({text: $("q").value})});
    out.className = r.answered ? "yes" : "no";
    out.textContent = r.answer;
    // a sound heard but not captured (episode_id null) has no episode to open
    r.evidence.forEach((e) => evd.append(e.episode_id != null ? card(e, e.score) : heardCard(e)));
  } catch (e) { out.className = "err"; out.textContent = e.message; }
}

const lanes = new Map();  // source -> {lane, cards, bar, episodes}

function lane(source) {
  if (lanes.has(source)) return lanes.get(source);
  const l = {episodes: [], cards: el("div", {class: "cards"}), bar: el("div", {class: "bar"})};
  l.lane = el("div", {class: "lane", "data-source": source}, el("h3", {}, shortSource(source)), l.bar, l.cards);
  $("timeline").append(l.lane);
  lanes.set(source, l);
  return l;
}

function drawBar(l) {
  const key = (e) => e.wall_start != null ? e.wall_start : e.t_start;
  const lo = Math.min(...l.episodes.map(key)), hi = Math.max(...l.episodes.map((e) => key(e) + e.t_end - e.t_start));
  l.bar.replaceChildren();
  for (const e of l.episodes) {
    const span = el("span", {title: `#${e.episode_id} ${(e.labels || []).join(", ")} ${when(e)}`, onclick: () => openEpisode(e.episode_id)});
    span.style.left = (100 * (key(e) - lo) / Math.max(hi - lo, 1e-9)) + "%";
    span.style.width = (100 * (e.t_end - e.t_start) / Math.max(hi - lo, 1e-9)) + "%";
    l.bar.append(span);
  }
}

function addToTimeline(e, front) {
  const l = lane(e.source);
  if (l.episodes.some((x) => x.episode_id === e.episode_id)) return;
  l.episodes.push(e);
  const c = card(e);
  if (front) l.cards.prepend(c); else l.cards.append(c);
  drawBar(l);
}

function removeFromPage(id) {
  document.querySelectorAll(`.ep[data-episode="${id}"]`).forEach((n) => n.remove());
  for (const l of lanes.values()) {
    l.episodes = l.episodes.filter((e) => e.episode_id !== id);
    if (l.episodes.length) drawBar(l); else l.bar.replaceChildren();
  }
}

async function loadTimeline() {
  try {
    const r = await api("/v1/episodes?limit=200");
    $("timeline-count").textContent = `(${r.total} episodes${r.total > r.episodes.length ? ", newest " + r.episodes.length + " shown" : ""})`;
    r.episodes.forEach((e) => addToTimeline(e, false));
    if (!r.episodes.length) $("timeline").append(el("p", {class: "meta", id: "empty"}, "No episodes yet: ingest a file or add a live source."));
  } catch (e) { $("timeline").append(el("p", {class: "err"}, e.message)); }
}

async function loadSources() {
  try {
    const r = await api("/v1/sources");
    const box = $("sources"); box.replaceChildren();
    for (const s of r.live) box.append(el("span", {class: "src " + s.state, title: s.error || s.url}, `${s.name}: ${s.state}`));
    for (const s of r.stored) if (!r.live.some((x) => x.url === s.source)) box.append(el("span", {class: "src", title: s.source}, `${shortSource(s.source)}: ${s.episodes}`));
  } catch (e) { $("sources").textContent = e.message; }
}

// object identities (re-identified across episodes; named with `eidetic objects name`), or the
// object labels seen when the store keeps no identities (tracks without descriptors)
async function loadObjects() {
  try {
    const r = await api("/v1/objects?limit=50");
    const box = $("objects"); box.replaceChildren();
    const labels = r.labels || [];
    if (!r.objects.length && !labels.length) box.append(el("p", {class: "meta"}, "No objects tracked yet."));
    for (const o of r.objects) {
      const name = `${o.name || "object " + o.object_id} (${o.label || "object"})`;
      const last = o.last_seen ? `, last seen in episode ${o.last_seen.episode_id}` : "";
      box.append(el("button", {"data-object": String(o.object_id), title: `${o.sightings} sightings${last}`,
                               onclick: () => showObject(String(o.object_id))}, `${name} · ${o.sightings}`));
    }
    for (const o of labels) box.append(el("button", {"data-object": o.label, onclick: () => showObject(o.label)}, `${o.label} · ${o.sightings}`));
  } catch (e) { $("objects").textContent = e.message; }
}

async function showObject(ref) {
  const box = $("object-timeline"); box.replaceChildren();
  try {
    const r = await api("/v1/objects/" + encodeURIComponent(ref));
    for (const e of r.sightings) {
      // an identity's sighting: draw only its own track's box
      const objects = e.sighting ? e.objects.filter((o) => o.track_id === e.sighting.track_id) : e.objects;
      box.append(card(Object.assign({}, e, {objects})));
    }
  } catch (e) { box.append(el("p", {class: "err"}, e.message)); }
}

let openId = null;

async function openEpisode(id) {
  const e = await api("/v1/episodes/" + id);
  openId = id;
  $("episode-title").textContent = `Episode ${e.episode_id}: ${(e.labels || []).join(", ") || "activity"}`;
  $("episode-meta").textContent = `${e.source} · ${fmt(e.t_start)}–${fmt(e.t_end)}` + (e.wall_start != null ? ` · ${new Date(e.wall_start * 1000).toLocaleString()}` : "");
  $("episode-keyframes").replaceChildren(...e.keyframes.map((k, i) => {
    const f = el("figure", {}, thumb(k, i === e.keyframes.length - 1 ? e.objects : []));
    if (e.keyframe_times[i] !== undefined) f.append(el("figcaption", {class: "meta"}, fmt(e.keyframe_times[i])));
    return f;
  }));
  const clip = $("episode-clip");
  clip.hidden = !e.clip; if (e.clip) clip.src = withToken(e.clip); else clip.removeAttribute("src");
  $("episode-sounds").replaceChildren(...e.sounds.map((s) => el("li", {}, `${s.label} ${fmt(s.t_start)}–${fmt(s.t_end)} (score ${s.score.toFixed(2)})`)));
  $("episode-objects").replaceChildren(...e.objects.map((o) => el("li", {}, `${o.label || "object"} #${o.track_id}: ${fmt(o.t_first)}–${fmt(o.t_last)}, ${o.n_frames} frames, box [${o.bbox.map(Math.round).join(", ")}]`)));
  $("episode-summary").textContent = e.summary;
  $("episode").hidden = false;
}

function closeEpisode() { $("episode").hidden = true; openId = null; }

async function forget() {
  if (openId === null || !confirm(`Forget episode ${openId}? Its keyframes and vectors are deleted.`)) return;
  const id = openId;
  try {
    await api("/v1/episodes/" + id, {method: "DELETE"});
    removeFromPage(id);
    closeEpisode();
  } catch (e) { alert(e.message); }
}

function listen() {
  const es = new EventSource(withToken("/v1/events?types=episode,forgotten,source,job"));
  es.addEventListener("episode", async (m) => {
    const e = await api("/v1/episodes/" + JSON.parse(m.data).episode_id);  // with keyframes and objects
    const empty = $("empty"); if (empty) empty.remove();
    addToTimeline(e, true);
  });
  es.addEventListener("forgotten", (m) => removeFromPage(JSON.parse(m.data).episode_id));
  es.addEventListener("source", loadSources);
  es.addEventListener("job", (m) => { if (JSON.parse(m.data).state === "done") { loadSources(); loadObjects(); } });
}

$("ask").addEventListener("submit", ask);
$("close").addEventListener("click", closeEpisode);
$("forget").addEventListener("click", forget);
$("episode").addEventListener("click", (ev) => { if (ev.target === $("episode")) closeEpisode(); });
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeEpisode(); });
loadSources(); loadTimeline(); loadObjects(); listen();
