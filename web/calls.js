// The call inspector: lists past calls from GET /api/calls (newest first, paged) and shows one
// call from GET /api/calls/{id} as a timeline: the transcript beside each turn's latency bars,
// with tool calls, barge-ins, renewals and errors marked. Text is only ever set as textContent.
// The admin token stays in this tab (sessionStorage) and goes out only as a bearer header.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "voicegate-admin-token";
let nextCursor = null;

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function getJson(url) {
  const res = await fetch(url, { headers: headers(), signal: AbortSignal.timeout(10000) });
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const reason = body && typeof body.error === "string" ? body.error : res.statusText;
    throw new Error(`HTTP ${res.status}: ${reason}`);
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

const seconds = (s) => (s === null || s === undefined ? "–" : `${Number(s).toFixed(1)} s`);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

function query(cursor) {
  const params = new URLSearchParams({ limit: "25" });
  const agent = $("agent").value.trim();
  const reason = $("reason").value.trim();
  if (agent) params.set("agent", agent);
  if (reason) params.set("end_reason", reason);
  if (cursor) params.set("cursor", cursor);
  return `/api/calls?${params}`;
}

async function loadCalls(append) {
  showError("");
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  try {
    const body = await getJson(query(append ? nextCursor : null));
    const rows = $("calls").tBodies[0];
    if (!append) rows.replaceChildren();
    for (const call of body.calls) rows.append(callRow(call));
    nextCursor = body.next_cursor || null;
    $("more").hidden = !nextCursor;
    $("empty").hidden = rows.children.length > 0;
  } catch (err) {
    showError(`Could not list calls: ${err.message}`);
  }
}

function callRow(call) {
  const row = el("tr");
  row.dataset.callId = call.call_id;
  for (const value of [when(call.started_at), call.agent || "–", call.subject || "–",
    seconds(call.duration_s), call.end_reason || "in progress", call.turns]) {
    row.append(el("td", value));
  }
  row.tabIndex = 0;
  row.addEventListener("click", () => openCall(call.call_id));
  row.addEventListener("keydown", (e) => {
    if (e.key === "Enter") openCall(call.call_id);
  });
  return row;
}

async function openCall(callId) {
  showError("");
  for (const row of $("calls").tBodies[0].rows) {
    row.setAttribute("aria-selected", String(row.dataset.callId === callId));
  }
  try {
    const call = await getJson(`/api/calls/${encodeURIComponent(callId)}`);
    renderCall(call);
    history.replaceState(null, "", `#call=${encodeURIComponent(callId)}`);
  } catch (err) {
    showError(`Could not open the call: ${err.message}`);
  }
}

function renderCall(call) {
  $("detail").hidden = false;
  $("detail-title").textContent = `Call ${call.call_id}`;
  const summary = $("summary");
  summary.replaceChildren();
  const usage = call.usage && call.usage.total_tokens !== undefined
    ? `${call.usage.input_tokens} in / ${call.usage.output_tokens} out`
    : "–";
  for (const [name, value] of [
    ["Agent", call.agent || "–"], ["Subject", call.subject || "–"], ["Backend", call.backend],
    ["Started", when(call.started_at)], ["Length", seconds(call.duration_s)],
    ["Ended", call.end_reason || "in progress"], ["Turns", call.turns],
    ["Barge-ins", call.barge_ins], ["Tool calls", call.tool_calls], ["Tokens", usage],
    ["Recording", call.recording || "none"],
  ]) {
    summary.append(el("dt", name), el("dd", value));
  }
  renderTimeline(call);
  renderRecording(call);
}

async function renderRecording(call) {
  // <audio src> cannot send the admin token: each file is fetched with it and played as a blob.
  const box = $("recording");
  box.replaceChildren();
  box.hidden = !call.recording || call.recording.startsWith("s3://");
  if (box.hidden) return;
  for (const [stream, label] of [["user", "Caller (what the model heard)"], ["bot", "Assistant (what the caller heard)"]]) {
    try {
      const res = await fetch(`/api/calls/${encodeURIComponent(call.call_id)}/audio/${stream}`,
        { headers: headers(), signal: AbortSignal.timeout(30000) });
      if (!res.ok) continue;
      const audio = el("audio");
      audio.controls = true;
      audio.src = URL.createObjectURL(await res.blob());
      audio.dataset.stream = stream;
      const figure = el("figure");
      figure.append(el("figcaption", label), audio);
      box.append(figure);
    } catch {
      // a recording that cannot be fetched is simply not offered
    }
  }
}

function entries(call) {
  const items = [];
  for (const t of call.transcript) items.push({ t: t.t, kind: t.role, text: t.text });
  for (const b of call.barge_in_events) items.push({ t: b.t, kind: "mark", text: "Caller interrupted the assistant" });
  for (const tool of call.tool_call_events) {
    const outcome = tool.ok === null ? "no result" : tool.ok ? "ok" : "failed";
    const took = tool.ms === null ? "" : `, ${Math.round(tool.ms)} ms`;
    items.push({ t: tool.t, kind: "mark", text: `Tool ${tool.name} (${outcome}${took})` });
  }
  for (const c of call.continuations) {
    const forced = c.forced ? ", forced" : "";
    items.push({ t: c.t, kind: "mark", text: `Model stream ${c.leg}: ${c.kind} (${c.reason}${forced}), gap ${c.gap_ms} ms` });
  }
  for (const e of call.error_events) items.push({ t: e.t, kind: "error mark", text: `Error ${e.kind}: ${e.message}` });
  for (const turn of call.turn_latency) items.push({ t: turn.t, kind: "turn", turn });
  return items.sort((a, b) => a.t - b.t);
}

function renderTimeline(call) {
  const list = $("timeline");
  list.replaceChildren();
  const longest = Math.max(1000, ...call.turn_latency.map((t) => t.total_ms || 0));
  for (const item of entries(call)) {
    const li = el("li", null, item.kind);
    li.append(el("span", `${item.t.toFixed(1)} s`, "t"));
    if (item.kind === "turn") li.append(latency(item.turn, longest));
    else li.append(el("div", item.text, "say"));
    list.append(li);
  }
}

function latency(turn, longest) {
  const box = el("div", null, "latency");
  const model = turn.model_ms ?? turn.total_ms;
  const playout = turn.playout_ms ?? 0;
  box.append(el("span", `Answer after ${Math.round(turn.total_ms)} ms (model ${Math.round(model)} ms, playout ${Math.round(playout)} ms)`));
  const bar = el("div", null, "bar");
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", `turn latency ${Math.round(turn.total_ms)} ms`);
  const m = el("span", null, "model");
  m.style.width = `${(100 * model) / longest}%`;
  const p = el("span", null, "playout");
  p.style.width = `${(100 * playout) / longest}%`;
  bar.append(m, p);
  box.append(bar);
  return box;
}

$("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
$("access").addEventListener("submit", (e) => {
  e.preventDefault();
  loadCalls(false);
});
$("more").addEventListener("click", () => loadCalls(true));
loadCalls(false).then(() => {
  const wanted = new URLSearchParams(location.hash.slice(1)).get("call");
  if (wanted) openCall(wanted);
});
