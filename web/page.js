// What the user sees (state line, error box, event log) and window.vg, the page's test hooks.
//
// Every other module writes to the page through here, so the DOM ids live in one place.

const MAX_EVENTS = 300;
const MAX_EVENT_ROWS = 100;

const $ = (id) => document.getElementById(id);

export const ui = {
  state: $("state"),
  connect: $("connect"),
  hangup: $("hangup"),
  error: $("error"),
  micMeter: $("mic-meter"),
  botMeter: $("bot-meter"),
  transcript: $("transcript"),
  say: $("say"),
  sayText: $("say-text"),
  saySend: $("say-send"),
  events: $("events"),
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
  stats: {},
  serverRtp: null, // the server's last rtp-stats sample
  micPeak: 0,
  botPeak: 0,
  lastHangupStatus: null,
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
}

export function clearError() {
  ui.error.textContent = "";
  ui.error.hidden = true;
}

// The debug panel's log of data-channel messages (and the page's own notes, e.g. a failed
// reconnect attempt), newest first and bounded.
export function logEvent(msg) {
  vg.events.push(msg);
  if (vg.events.length > MAX_EVENTS) vg.events.shift();
  const li = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  const data = msg.data === undefined ? "" : JSON.stringify(msg.data);
  li.textContent = `${time} ${msg.type} ${data.length > 300 ? `${data.slice(0, 300)}…` : data}`;
  ui.events.prepend(li);
  while (ui.events.children.length > MAX_EVENT_ROWS) ui.events.lastElementChild.remove();
}
