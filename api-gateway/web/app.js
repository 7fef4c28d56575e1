// Spawner's dashboard: the live session list, fed by the /events stream
// and a slow poll for activity figures, a form to start sessions and a
// chart of live sessions. Plain browser JavaScript, no build step.
import { LiveChart } from "./chart.js";

const TOKEN_KEY = "spawner.apiToken";
const POLL_MS = 5000;
const MAX_EVENTS = 60;

const $ = (id) => document.getElementById(id);
const chart = new LiveChart($("chart"));
const state = {
  sessions: [],
  pending: new Map(), // local rows for POST /init calls in flight
  ending: new Set(),
  replayed: [], // events received before the stream went live
  live: false,
  backfilled: false,
};

// ---- API -------------------------------------------------------------

function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}), cache: "no-store" };
  if (body) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch { /* not JSON */ }
  if (resp.status === 401 || resp.status === 403) setUnauthorized();
  if (!resp.ok) {
    const msg = data && data.error ? data.error.message : resp.status + " " + resp.statusText;
    throw new Error(msg);
  }
  return data;
}

function setUnauthorized() {
  setConn("unauthorized", "Token needed");
  showBanner("The API refused this browser's token. Set one with “API token”.");
}

function showBanner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

// ---- Session list ----------------------------------------------------

let refreshTimer = null;
function scheduleRefresh(delay) {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, delay);
}

async function refresh() {
  try {
    // ?pool=eu-1 (or * for every pool) in the dashboard's own address
    // picks the pool it lists, as it does for GET /sessions.
    const pool = new URLSearchParams(location.search).get("pool");
    const data = await api("GET", "/sessions" + (pool ? "?pool=" + encodeURIComponent(pool) : ""));
    state.sessions = (data && data.sessions) || [];
    for (const id of state.ending) {
      if (!state.sessions.some((s) => s.session_id === id)) state.ending.delete(id);
    }
    showBanner("");
    chart.sample(state.sessions.length);
    render();
    if (state.live && !state.backfilled) {
      state.backfilled = true;
      chart.backfill(state.sessions.length, state.replayed);
      state.replayed = [];
    }
  } catch (e) {
    if (!$("banner").textContent) showBanner("Could not load sessions: " + e.message);
  }
}

function short(id) { return id.slice(0, 10) + "…"; }

function human(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function badge(status) { return el("span", "badge " + status, status); }

function sessionRow(s) {
  const tr = el("tr");
  tr.dataset.id = s.session_id;
  tr.dataset.status = s.status;
  if (state.ending.has(s.session_id)) tr.className = "ending";

  const idCell = el("td");
  const sid = el("span", "sid", short(s.session_id));
  sid.title = s.session_id;
  idCell.append(sid);
  if (s.app) idCell.append(el("span", "app", s.app));
  if (s.pool) idCell.append(el("span", "pool", s.pool));
  if (s.key) idCell.append(el("span", "key", s.key));

  const age = el("td", "num age");
  age.dataset.since = s.created_at;
  const idle = el("td", "num idle");
  if (s.active_connections > 0) {
    idle.append(el("span", "active", "active"));
  } else if (s.last_activity) {
    idle.dataset.since = s.last_activity;
  } else {
    idle.textContent = "–";
  }
  const conns = el("td", "num conns", s.active_connections == null ? "–" : String(s.active_connections));

  const urlCell = el("td");
  if (s.status === "ready" && s.url) {
    // Another pool's session lives behind its own pool's gateway.
    const u = new URL(s.url, location.href);
    const a = el("a", "", u.origin === location.origin ? u.pathname : u.href);
    a.href = s.url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    urlCell.append(a);
  } else {
    urlCell.textContent = "–";
  }

  const act = el("td", "num");
  const btn = el("button", "end", state.ending.has(s.session_id) ? "Ending…" : "End");
  btn.type = "button";
  btn.dataset.id = s.session_id;
  btn.disabled = state.ending.has(s.session_id) || s.status === "stopping";
  act.append(btn);

  const status = el("td");
  status.append(badge(s.status));
  tr.append(idCell, status, age, idle, conns, urlCell, act);
  return tr;
}

function pendingRow(p) {
  const tr = el("tr", "pending");
  tr.dataset.pending = p.n;
  const idCell = el("td");
  idCell.append(el("span", "sid", "new session"));
  if (p.key) idCell.append(el("span", "key", p.key));
  const status = el("td");
  status.append(badge("requested"));
  const age = el("td", "num age");
  age.dataset.since = p.at;
  tr.append(idCell, status, age, el("td", "num", "–"), el("td", "num", "–"), el("td", "", "starting…"), el("td"));
  return tr;
}

function render() {
  const rows = $("rows");
  const frag = document.createDocumentFragment();
  for (const s of state.sessions) frag.append(sessionRow(s));
  for (const p of state.pending.values()) frag.append(pendingRow(p));
  rows.replaceChildren(frag);
  tick();

  const n = state.sessions.length;
  $("empty").hidden = n > 0 || state.pending.size > 0;
  $("count").textContent = n === 1 ? "1 live" : n + " live";
  $("stat-live").textContent = n;
  $("stat-ready").textContent = state.sessions.filter((s) => s.status === "ready").length;
  $("stat-creating").textContent = state.sessions.filter((s) => s.status === "creating").length + state.pending.size;
  $("stat-conns").textContent = state.sessions.reduce((a, s) => a + (s.active_connections || 0), 0);
  chart.draw();
}

// tick updates the ages every second without rebuilding the table.
function tick() {
  const now = Date.now();
  for (const td of document.querySelectorAll("td[data-since]")) {
    td.textContent = human(now - Date.parse(td.dataset.since));
  }
}

// ---- Actions ---------------------------------------------------------

let pendingN = 0;
$("new-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("new-key").value.trim();
  const idle = Number($("new-idle").value);
  const app = $("new-app").value;
  const body = {};
  if (app) body.app = app;
  if (key) body.key = key;
  if (idle > 0) body.idle_timeout_seconds = idle;
  const n = ++pendingN;
  state.pending.set(n, { n, key, at: new Date().toISOString() });
  const btn = $("new-btn");
  btn.disabled = true;
  btn.textContent = "Starting…";
  result("", "");
  render();
  try {
    const rep = await api("POST", "/init", body);
    const verb = rep.created ? "Started" : "Reused";
    // With session tokens on, the link must carry the token; the proxy
    // moves it into a cookie at once.
    const url = rep.token ? rep.url + "?spawner_token=" + encodeURIComponent(rep.token) : rep.url;
    result("ok", verb + " " + short(rep.session_id) + " ", url);
    $("new-key").value = "";
  } catch (e) {
    result("bad", "Could not start a session: " + e.message);
  } finally {
    state.pending.delete(n);
    btn.disabled = false;
    btn.textContent = "Start session";
    await refresh();
  }
});

function result(kind, text, url) {
  const p = $("new-result");
  p.className = "result " + kind;
  p.replaceChildren(text);
  if (url) {
    const a = el("a", "", "open →");
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    p.append(a);
  }
}

$("rows").addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button.end");
  if (!btn) return;
  const id = btn.dataset.id;
  state.ending.add(id);
  render();
  try {
    await api("DELETE", "/sessions/" + encodeURIComponent(id));
  } catch (e) {
    state.ending.delete(id);
    showBanner("Could not end " + short(id) + ": " + e.message);
  }
  await refresh();
});

// ---- Token -----------------------------------------------------------

$("token-btn").addEventListener("click", () => {
  $("token-input").value = token();
  $("token-dialog").showModal();
});
$("token-form").addEventListener("submit", () => {
  saveToken($("token-input").value.trim());
});
$("token-clear").addEventListener("click", () => {
  saveToken("");
  $("token-dialog").close();
});
function saveToken(t) {
  try {
    if (t) localStorage.setItem(TOKEN_KEY, t); else localStorage.removeItem(TOKEN_KEY);
  } catch { /* storage off: the token lasts until reload */ }
  showBanner("");
  restartStream();
  refresh();
}

// ---- Events ----------------------------------------------------------
// fetch rather than EventSource, because EventSource cannot send the
// Authorization header.

let streamAbort = null;
let lastEventID = "";

function setConn(s, text) {
  $("conn").dataset.state = s;
  $("conn-text").textContent = text;
}

function restartStream() {
  if (streamAbort) streamAbort.abort();
}

async function streamLoop() {
  let backoff = 1000;
  for (;;) {
    const ctrl = new AbortController();
    streamAbort = ctrl;
    try {
      const url = lastEventID ? "/events?after=" + encodeURIComponent(lastEventID) : "/events?replay=500";
      const resp = await fetch(url, { headers: headers({ Accept: "text/event-stream" }), cache: "no-store", signal: ctrl.signal });
      if (resp.status === 401 || resp.status === 403) {
        setUnauthorized();
        await sleep(5000);
        continue;
      }
      if (!resp.ok || !resp.body) throw new Error("status " + resp.status);
      setConn("live", "Live");
      backoff = 1000;
      await readStream(resp.body);
    } catch (e) {
      if (e.name !== "AbortError") console.debug("event stream:", e);
    }
    if ($("conn").dataset.state !== "unauthorized") setConn("reconnecting", "Reconnecting…");
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 15000);
    refresh();
  }
}

async function readStream(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      handleBlock(buf.slice(0, i));
      buf = buf.slice(i + 2);
    }
  }
}

function handleBlock(block) {
  let data = "", id = "";
  for (const line of block.split("\n")) {
    if (line === ": live") onLive();
    if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "") + "\n";
    if (line.startsWith("id:")) id = line.slice(3).trim();
  }
  if (!data) return;
  if (id) lastEventID = id;
  let ev;
  try { ev = JSON.parse(data); } catch { return; }
  addEvent(ev);
  if (!state.live) state.replayed.push(ev);
  else scheduleRefresh(100);
}

function onLive() {
  if (state.live) return;
  state.live = true;
  refresh();
}

function addEvent(ev) {
  const li = el("li");
  const t = el("time", "", new Date(ev.time).toLocaleTimeString([], { hour12: false }));
  t.dateTime = ev.time;
  const sid = el("span", "sid", short(ev.session_id));
  sid.title = ev.session_id;
  let detail = "";
  if (ev.type === "ready") detail = "in " + (ev.spawn_seconds || 0).toFixed(2) + "s";
  if (ev.type === "failed") detail = (ev.error || ev.reason || "");
  if (ev.type === "stopping") detail = ev.reason || "";
  if (ev.type === "terminated") detail = (ev.reason || "") + (ev.lifetime_seconds ? " after " + human(ev.lifetime_seconds * 1000) : "");
  if (ev.type === "creating" && ev.key) detail = "key " + ev.key;
  const d = el("span", "detail", detail);
  d.title = detail;
  li.append(t, badge(ev.type), sid, d);
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  $("events-empty").hidden = true;
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// ---- Start -----------------------------------------------------------

setInterval(tick, 1000);
setInterval(refresh, POLL_MS);
window.addEventListener("resize", () => chart.draw());
// ---- Apps --------------------------------------------------------------

// loadApps fills the form's app list from the catalog (GET /apps). The
// default app comes first and is selected.
async function loadApps() {
  let data;
  try {
    data = await api("GET", "/apps");
  } catch {
    return; // The form still works: the default app needs no name.
  }
  const apps = (data && data.apps) || [];
  apps.sort((a, b) => (b.default ? 1 : 0) - (a.default ? 1 : 0));
  const sel = $("new-app");
  sel.replaceChildren();
  for (const a of apps) {
    const o = el("option", "", a.description ? a.name + " — " + a.description : a.name);
    o.value = a.name;
    if (a.default) o.selected = true;
    sel.append(o);
  }
  const describe = () => {
    const a = apps.find((x) => x.name === sel.value);
    $("new-app-desc").textContent = a && a.idle_timeout_seconds ? "idle timeout " + human(a.idle_timeout_seconds * 1000) : "";
  };
  sel.addEventListener("change", describe);
  describe();
}

loadApps();
refresh();
streamLoop();
