// What the user sees (state line, error box, event log) and window.vg, the page's test hooks.
//
// Every other module writes to the page through here, so the DOM ids live in one place.

const MAX_EVENTS = 300;
const MAX_EVENT_ROWS = 100;

const $ = (id) => document.getElementById(id);

export const ui = {
  state: $("state"),
  connect: $("connect"),
  mute: $("mute"),
  hangup: $("hangup"),
  hint: $("hint"),
  error: $("error"),
  notice: $("notice"),
  agentPick: $("agent-pick"),
  agent: $("agent"),
  agentSummary: $("agent-summary"),
  agentAbilities: $("agent-abilities"),
  micMeter: $("mic-meter"),
  botMeter: $("bot-meter"),
  transcript: $("transcript"),
  say: $("say"),
  sayText: $("say-text"),
  saySend: $("say-send"),
  events: $("events"),
  eventsStats: $("events-stats"),
  audio: $("bot-audio"),
  stat: {
    session: $("stat-session"),
    connection: $("stat-connection"),
    pair: $("stat-pair"),
    rtt: $("stat-rtt"),
    jitter: $("stat-jitter"),
    jbuf: $("stat-jbuf"),
    serverRtp: $("stat-server-rtp"),
    lost: $("stat-lost"),
    packets: $("stat-packets"),
    latency: $("stat-latency"),
  },
};

// Test hooks (Playwright reads these): plain data only, so page.evaluate can return them.
// app.js (the entry module) adds the functions (connect, hangup, receive, sendText, micRms,
// botRms) and publishes it as window.vg.
export const vg = {
  state: "idle",
  connected: false,
  botReady: false,
  pcId: null,
  transcript: [], // {role: "user"|"bot", text, final, interrupted}
  events: [], // every data-channel message received, oldest dropped first
  errors: [], // every message shown in the error box
  notices: [], // every message shown in the notice line (new conversation, server back)
  calls: 0, // calls started on this page (each gets a separator in the transcript)
  muted: false,
  agents: null, // GET /api/agents as the server answered it (null: an older server, or none yet)
  agent: null, // the agent the next call asks for (null: the server's default)
  resumed: null, // the last reconnect's answer: did the conversation carry on?
  stats: {},
  serverRtp: null, // the server's last rtp-stats sample
  micPeak: 0,
  botPeak: 0,
  lastHangupStatus: null,
  hangupRetries: 0, // DELETEs sent again after a retryable refusal (503 with Retry-After)
  lastTurnLatencyMs: null,
  reconnects: 0, // successful automatic reconnects of this page
  moveRequests: 0, // server-messages asking the page to reconnect (e.g. the server drains)
  continuations: [], // the server's renewal/recovery server-messages
  // performance.now() marks of the current call (the connect-time benchmark reads them):
  // click, offerSent, answered, connected, firstBotAudio (first meter tick above the floor).
  timing: {},
  // ?measure=1 only (measure.js): marker onsets and mouth-to-ear samples of the current call.
  measure: null,
};

// The text box works while a data channel is open.
export function enableTyping(on) {
  ui.sayText.disabled = !on;
  ui.saySend.disabled = !on;
}

export function setState(state) {
  vg.state = state;
  ui.state.textContent = state;
  ui.state.dataset.state = state;
}

export function showError(message) {
  vg.errors.push(message);
  ui.error.textContent = message;
  ui.error.hidden = false;
  clearNotice();
}

export function clearError() {
  ui.error.textContent = "";
  ui.error.hidden = true;
}

// A calm note (not an error): the conversation started afresh, the server is back.
export function showNotice(message) {
  vg.notices.push(message);
  ui.notice.textContent = message;
  ui.notice.hidden = false;
}

export function clearNotice() {
  ui.notice.textContent = "";
  ui.notice.hidden = true;
}

// The "Press Connect" hint belongs to a page with no call.
export function showHint(on) {
  ui.hint.hidden = !on;
}

let rtpSamples = 0; // rtp-stats samples folded into the one updating line of the event log

// A new call starts with an empty debug panel: nothing of the last call's connection may pass
// for this one's.
export function resetDebug() {
  for (const dd of Object.values(ui.stat)) dd.textContent = "–";
  vg.stats = {};
  vg.serverRtp = null;
  vg.lastTurnLatencyMs = null;
  vg.micPeak = 0;
  vg.botPeak = 0;
  rtpSamples = 0;
  ui.eventsStats.textContent = "";
  ui.eventsStats.hidden = true;
}

// The debug panel's log of data-channel messages (and the page's own notes, e.g. a failed
// reconnect attempt), newest first and bounded.

export function logEvent(msg) {
  vg.events.push(msg);
  if (vg.events.length > MAX_EVENTS) vg.events.shift();
  const time = new Date().toLocaleTimeString();
  if (msg.type === "server-message" && msg.data && msg.data.kind === "rtp-stats") {
    // The server's RTP sample arrives every few seconds: one line updated in place, not a
    // flood that pushes the messages that matter out of the log.
    rtpSamples += 1;
    ui.eventsStats.textContent = `${time} rtp-stats (${rtpSamples} samples, latest): ${JSON.stringify(msg.data)}`;
    ui.eventsStats.hidden = false;
    return;
  }
  logRow(msg, time);
}

// A line of its own in the event log (a new call starts, for instance).
export function logMark(text) {
  logRow({ type: text }, new Date().toLocaleTimeString());
}

function logRow(msg, time) {
  const li = document.createElement("li");
  const data = msg.data === undefined ? "" : JSON.stringify(msg.data);
  li.textContent = `${time} ${msg.type} ${data.length > 300 ? `${data.slice(0, 300)}…` : data}`;
  ui.events.prepend(li);
  while (ui.events.children.length > MAX_EVENT_ROWS) ui.events.lastElementChild.remove();
}
