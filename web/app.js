// voicegate browser client: one WebRTC voice call to the voicegate server.
//
// Plain ES module, no build step. The server contract is documented in docs/protocol.md;
// this page's own notes (URL parameters, test hooks) are in docs/web.md.

const params = new URLSearchParams(location.search);
// ?raw=1 turns the browser's echo cancellation, noise suppression and gain control off.
// Tests use it: a fake microphone fed from a WAV must reach the server unaltered.
const RAW = params.get("raw") === "1";
// ?relay=1 forces ICE through TURN, to check that the relay works for users behind strict NATs.
const RELAY = params.get("relay") === "1";
// ?token=<access token> (issue 7): an exposed server needs one; the app that links here mints it.
// It is dropped from the address bar at once so it does not linger in history or screenshots.
const TOKEN = params.get("token");
if (TOKEN) {
  params.delete("token");
  history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
}
const authHeaders = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

const HTTP_TIMEOUT_MS = 10000;
// Waiting for the full candidate list lets the offer go in one POST (no trickle PATCH needed);
// the cap keeps a slow or unreachable STUN/TURN server from stalling the call forever.
const ICE_GATHER_TIMEOUT_MS = 5000;
// From the answer to a working media path; Chromium itself may take far longer to give up.
const MEDIA_CONNECT_TIMEOUT_MS = 20000;
// issue 4: a dropped connection is re-offered (restart_pc, same pc_id) within the server's
// grace period (--reconnect-grace, default 30 s); the conversation carries on.
const RECONNECT_AFTER_MS = 2000; // "disconnected" often heals by itself; wait that long first
const RECONNECT_WINDOW_MS = 25000;
const RECONNECT_BACKOFF_MS = [500, 1000, 2000, 4000, 4000, 4000];
const STATS_INTERVAL_MS = 1000;
const METER_INTERVAL_MS = 50;
const MAX_EVENTS = 300;
const MAX_EVENT_ROWS = 100;
const MAX_TRANSCRIPT = 200;
// Bot RMS (full scale 1.0) that counts as "bot audio arrived" for vg.timing.firstBotAudio;
// Opus comfort noise and silence stay far below it.
const FIRST_AUDIO_RMS = 0.01;

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  connect: $("connect"),
  hangup: $("hangup"),
  error: $("error"),
  micMeter: $("mic-meter"),
  botMeter: $("bot-meter"),
  transcript: $("transcript"),
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
const vg = {
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
  reconnects: 0, // issue 4: successful automatic reconnects of this page
  continuations: [], // issue 4: the server's renewal/recovery server-messages
  // performance.now() marks of the current call (issue 6's connect-time measurements):
  // click, offerSent, answered, connected, firstBotAudio (first meter tick above FIRST_AUDIO_RMS).
  timing: {},
  micRms: () => rmsOf(call && call.micAnalyser),
  botRms: () => rmsOf(call && call.botAnalyser),
  connect: () => connect(),
  hangup: () => hangup(),
  // Feeds one data-channel message (JSON text) through the page as if the server had sent it.
  receive: (raw) => onServerMessage(raw),
};
window.vg = vg;

let call = null; // the one call in progress, or null

class HttpError extends Error {
  constructor(status, reason) {
    super(`The server refused the call (HTTP ${status}): ${reason}`);
    this.status = status;
  }
}

class Cancelled extends Error {}

// ---------------------------------------------------------------------------------------------
// State line and errors

function setState(state) {
  vg.state = state;
  ui.state.textContent = state;
  ui.state.dataset.state = state;
}

function showError(message) {
  vg.errors.push(message);
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = "";
  ui.error.hidden = true;
}

function describeError(err) {
  if (err instanceof HttpError) return err.message;
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Microphone access was denied. Allow the microphone for this site and press Connect again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found. Plug one in and press Connect again.";
  }
  if (name === "NotReadableError") {
    return "The microphone could not be opened; another application may be using it.";
  }
  if (name === "TimeoutError" || name === "AbortError") {
    return `The voicegate server did not answer within ${HTTP_TIMEOUT_MS / 1000} s.`;
  }
  if (err instanceof TypeError && /fetch|network/i.test(err.message)) {
    return "The voicegate server is unreachable. Is it running, and is this the right address?";
  }
  return `Call failed: ${(err && err.message) || err}`;
}

// ---------------------------------------------------------------------------------------------
// HTTP

function timeoutSignal(extra) {
  const timeout = AbortSignal.timeout(HTTP_TIMEOUT_MS);
  return extra && AbortSignal.any ? AbortSignal.any([extra, timeout]) : timeout;
}

async function requestJson(method, url, body, signal, token = TOKEN) {
  const init = { method, signal: timeoutSignal(signal), headers: authHeaders(token) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  let payload = null;
  try {
    payload = await res.json();
  } catch {
    payload = null;
  }
  if (!res.ok) {
    const reason = payload && typeof payload.error === "string" ? payload.error : res.statusText;
    if (res.status === 401 && payload && payload.auth_required && !TOKEN) {
      throw new HttpError(401, "this server needs an access token: open the page with ?token=…");
    }
    throw new HttpError(res.status, reason || "no reason given");
  }
  return payload;
}

// ---------------------------------------------------------------------------------------------
// Connect / hang up

async function connect() {
  if (call) return;
  clearError();
  vg.timing = { click: performance.now() };
  setState("connecting");
  ui.connect.disabled = true;
  ui.hangup.disabled = false;
  const c = {
    pc: null,
    dc: null,
    stream: null,
    abort: new AbortController(),
    closed: false,
    everConnected: false,
    pcId: null,
    // Created inside the click handler: browsers only let an AudioContext run after a gesture.
    audioCtx: new AudioContext(),
    micAnalyser: null,
    botAnalyser: null,
    timers: [],
  };
  call = c;
  const check = () => {
    if (c.closed) throw new Cancelled();
  };
  try {
    const { iceServers } = await requestJson("GET", "/api/ice-servers", undefined, c.abort.signal);
    check();
    c.stream = await openMicrophone();
    if (c.closed) {
      stopStream(c.stream);
      throw new Cancelled();
    }
    c.micAnalyser = makeAnalyser(c.audioCtx, c.stream);

    const pc = new RTCPeerConnection({
      iceServers: Array.isArray(iceServers) ? iceServers : [],
      iceTransportPolicy: RELAY ? "relay" : "all",
    });
    c.pc = pc;
    // The data channel must exist before createOffer so the offer carries an SCTP section.
    c.dc = pc.createDataChannel("rtvi", { ordered: true });
    wireDataChannel(c);
    const [track] = c.stream.getAudioTracks();
    pc.addTransceiver(track, { direction: "sendrecv", streams: [c.stream] });
    pc.ontrack = (ev) => onRemoteTrack(c, ev);
    pc.onconnectionstatechange = () => onConnectionState(c);

    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc, ICE_GATHER_TIMEOUT_MS);
    check();
    if (!/^a=candidate:/m.test(pc.localDescription.sdp)) {
      throw new Error(
        RELAY
          ? "relay-only mode (?relay=1) found no TURN relay: the server announces no TURN server, " +
            "or the browser cannot reach it."
          : "the browser found no network address to offer (no ICE candidate).",
      );
    }
    vg.timing.offerSent = performance.now();
    const answer = await requestJson(
      "POST",
      "/api/offer",
      { sdp: pc.localDescription.sdp, type: pc.localDescription.type },
      c.abort.signal,
    );
    check();
    vg.timing.answered = performance.now();
    c.pcId = answer.pc_id;
    c.sessionToken = answer.session_token || null; // the only token that may hang this call up
    vg.pcId = answer.pc_id;
    ui.stat.session.textContent = answer.pc_id || "–";
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    check();
    c.timers.push(setInterval(() => updateMeters(c), METER_INTERVAL_MS));
    c.timers.push(setInterval(() => updateStats(c), STATS_INTERVAL_MS));
    c.timers.push(
      setTimeout(() => {
        if (c.closed || c.everConnected) return;
        showError(
          `No media connection after ${MEDIA_CONNECT_TIMEOUT_MS / 1000} s. A firewall or NAT ` +
            "may block it: the server needs a TURN relay (open the page with ?relay=1 to test it).",
        );
        hangup();
      }, MEDIA_CONNECT_TIMEOUT_MS),
    );
  } catch (err) {
    if (err instanceof Cancelled || c.closed) return;
    showError(describeError(err));
    await hangup();
  }
}

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error(
      "this browser gives no microphone access here; open the page over https or on localhost.",
    );
  }
  const processing = !RAW;
  return navigator.mediaDevices.getUserMedia({
    audio: {
      echoCancellation: processing,
      noiseSuppression: processing,
      autoGainControl: processing,
      channelCount: 1,
    },
    video: false,
  });
}

function iceGatheringDone(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      resolve();
    };
    const onChange = () => {
      if (pc.iceGatheringState === "complete") finish();
    };
    const timer = setTimeout(finish, ms);
    pc.addEventListener("icegatheringstatechange", onChange);
  });
}

function onRemoteTrack(c, ev) {
  if (ev.track.kind !== "audio") return;
  const stream = ev.streams[0] || new MediaStream([ev.track]);
  // The <audio> element plays the bot. Chromium only feeds a remote WebRTC stream into WebAudio
  // while some media element is also playing it, so the analyser taps the same stream.
  ui.audio.srcObject = stream;
  ui.audio.play().catch(() => {
    /* autoplay refusal: the Connect click normally prevents it; the meters still work */
  });
  c.botAnalyser = makeAnalyser(c.audioCtx, stream);
}

function onConnectionState(c) {
  if (c.closed) return;
  const state = c.pc.connectionState;
  ui.stat.connection.textContent = RELAY ? `${state} (relay only)` : state;
  if (state === "connected") {
    vg.connected = true;
    vg.timing.connected ??= performance.now();
    c.everConnected = true;
    if (vg.state === "connecting") setState("listening");
  } else if ((state === "failed" || state === "disconnected") && c.everConnected) {
    vg.connected = false;
    // issue 4: the network changed or paused; offer again and keep the conversation.
    const delay = state === "failed" ? 0 : RECONNECT_AFTER_MS;
    c.timers.push(setTimeout(() => reconnect(c), delay));
  } else if (state === "failed") {
    showError(
      "The media connection failed. A firewall or NAT may block it: the server needs a TURN " +
        "relay (open the page with ?relay=1 to test it).",
    );
    hangup();
  } else if (state === "disconnected") {
    vg.connected = false;
  }
}

// issue 4: a new peer connection for the same call (same microphone track, new data channel);
// the server moves the running conversation onto it. Only once the server has taken the new
// offer is the old connection closed, so its close can never end the call.
// A server that drains asks for the same move while the connection is still fine (`moving`).
async function reconnect(c, moving = false) {
  if (c.closed || c.reconnecting || !c.pcId) return;
  const state = c.pc.connectionState;
  if (!moving && state !== "failed" && state !== "disconnected") return; // healed by itself
  c.reconnecting = true;
  setState("reconnecting");
  const deadline = performance.now() + RECONNECT_WINDOW_MS;
  for (let attempt = 0; !c.closed && performance.now() < deadline; attempt++) {
    const pc = new RTCPeerConnection(c.pc.getConfiguration());
    try {
      const dc = pc.createDataChannel("rtvi", { ordered: true });
      const [track] = c.stream.getAudioTracks();
      pc.addTransceiver(track, { direction: "sendrecv", streams: [c.stream] });
      pc.ontrack = (ev) => onRemoteTrack(c, ev);
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc, ICE_GATHER_TIMEOUT_MS);
      const { sdp, type } = pc.localDescription;
      const body = { sdp, type, pc_id: c.pcId, restart_pc: true };
      const token = c.sessionToken || TOKEN;
      const answer = await requestJson("POST", "/api/offer", body, c.abort.signal, token);
      if (c.closed) throw new Cancelled();
      const old = c.pc;
      old.onconnectionstatechange = null;
      c.dc.onclose = null;
      old.close();
      c.pc = pc;
      c.dc = dc;
      wireDataChannel(c);
      pc.onconnectionstatechange = () => onConnectionState(c);
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
      vg.reconnects += 1;
      c.reconnecting = false;
      setState("listening");
      return;
    } catch (err) {
      pc.close();
      if (err instanceof Cancelled || c.closed) return;
      logEvent({ type: "reconnect-failed", data: { attempt, error: String(err) } });
      const wait = RECONNECT_BACKOFF_MS[Math.min(attempt, RECONNECT_BACKOFF_MS.length - 1)];
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
  c.reconnecting = false;
  if (c.closed) return;
  showError("The connection to the server was lost and could not be restored.");
  hangup();
}

async function hangup() {
  const c = call;
  if (!c) return;
  call = null;
  c.closed = true;
  c.abort.abort();
  // Tell the server first, then tear down locally; closing the peer connection alone also ends
  // the call on the server, so a lost DELETE leaks nothing.
  const deleted = c.pcId ? deleteSession(c.pcId, false, c.sessionToken) : Promise.resolve(null);
  for (const t of c.timers) clearTimeout(t); // clearTimeout also clears intervals
  if (c.dc) c.dc.close();
  if (c.pc) c.pc.close();
  stopStream(c.stream);
  ui.audio.srcObject = null;
  c.audioCtx.close().catch(() => {});
  vg.connected = false;
  vg.botReady = false;
  ui.micMeter.value = 0;
  ui.botMeter.value = 0;
  ui.stat.connection.textContent = "closed";
  setState("idle");
  ui.connect.disabled = false;
  ui.hangup.disabled = true;
  vg.lastHangupStatus = await deleted;
}

async function deleteSession(pcId, keepalive, token) {
  try {
    const res = await fetch(`/api/sessions/${encodeURIComponent(pcId)}`, {
      method: "DELETE",
      keepalive,
      headers: authHeaders(token),
      signal: timeoutSignal(null),
    });
    return res.status;
  } catch {
    return null;
  }
}

function stopStream(stream) {
  if (stream) for (const t of stream.getTracks()) t.stop();
}

// ---------------------------------------------------------------------------------------------
// Data channel (Pipecat RTVI message shape)

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("");
}

function wireDataChannel(c) {
  c.dc.onopen = () => {
    c.dc.send(
      JSON.stringify({
        label: "rtvi-ai",
        type: "client-ready",
        id: newId(),
        data: { version: "1.0.0", about: { library: "voicegate-web" } },
      }),
    );
  };
  const dc = c.dc;
  dc.onmessage = (ev) => onServerMessage(ev.data);
  dc.onclose = () => {
    if (c.closed || c.reconnecting || c.dc !== dc) return;
    showError("The server ended the call.");
    hangup();
  };
}

function onServerMessage(raw) {
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    logEvent({ type: "unparseable", data: String(raw).slice(0, 200) });
    return;
  }
  if (!msg || typeof msg !== "object") return;
  logEvent(msg);
  const data = msg.data && typeof msg.data === "object" ? msg.data : {};
  switch (msg.type) {
    case "bot-ready":
      vg.botReady = true;
      if (vg.state === "connecting") setState("listening");
      break;
    case "user-started-speaking":
    case "bot-stopped-speaking":
      setState("listening");
      break;
    case "user-stopped-speaking":
      setState("thinking");
      break;
    case "bot-started-speaking":
      setState("speaking");
      break;
    case "bot-interrupted":
      transcriptBotInterrupted();
      setState("listening");
      break;
    case "user-transcription":
      if (typeof data.text === "string") transcriptUser(data.text, data.final === true);
      break;
    case "bot-llm-text":
      if (typeof data.text === "string") transcriptBotSpeculative(data.text);
      break;
    case "bot-transcription":
      if (typeof data.text === "string") transcriptBotFinal(data.text);
      break;
    case "server-message":
      // The server drains (rolling restart): move the call now; another node adopts it.
      if (data.type === "reconnect") {
        if (call) reconnect(call, true);
      } else if (data.kind === "turn-latency") showTurnLatency(data);
      else if (data.kind === "rtp-stats") showServerRtp(data);
      else if (data.kind === "renewal" || data.kind === "recovery") vg.continuations.push(data);
      break;
    case "error":
      showError(`Server error: ${data.message || "unknown"}`);
      if (data.fatal) hangup();
      break;
    default:
      break; // metrics, llm-function-call and anything newer: the debug log shows them
  }
}

// End of the user's speech -> first bot audio frame sent, split into the model's share and
// voicegate's playout share when the server reports both.
function showTurnLatency(data) {
  const total = typeof data.total_ms === "number" ? data.total_ms : data.ms;
  if (typeof total !== "number") return;
  vg.lastTurnLatencyMs = total;
  let text = `${Math.round(total)} ms`;
  if (typeof data.model_ms === "number" && typeof data.playout_ms === "number") {
    text += ` (model ${Math.round(data.model_ms)}, playout ${Math.round(data.playout_ms)})`;
  }
  ui.stat.latency.textContent = text;
}

// The server's own getStats() sample (every 5 s): the browser's stream as voicegate receives
// it, and voicegate's stream as this browser reports it back in RTCP receiver reports.
function showServerRtp(data) {
  vg.serverRtp = data;
  const ms = (s) => (typeof s === "number" ? `${Math.round(s * 10000) / 10} ms` : "–");
  const lost = typeof data.inbound_lost === "number" ? data.inbound_lost : "–";
  ui.stat.serverRtp.textContent =
    `in: jitter ${ms(data.inbound_jitter_s)}, lost ${lost}; ` +
    `out: RTT ${ms(data.rtt_s)}, lost ${data.outbound_lost ?? "–"}`;
}

function logEvent(msg) {
  vg.events.push(msg);
  if (vg.events.length > MAX_EVENTS) vg.events.shift();
  const li = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  const data = msg.data === undefined ? "" : JSON.stringify(msg.data);
  li.textContent = `${time} ${msg.type} ${data.length > 300 ? `${data.slice(0, 300)}…` : data}`;
  ui.events.prepend(li);
  while (ui.events.children.length > MAX_EVENT_ROWS) ui.events.lastElementChild.remove();
}

// ---------------------------------------------------------------------------------------------
// Transcript: one line per speaker turn. Final text stays; partial (user) or speculative (bot)
// text is shown dimmed after it and replaced when the final text arrives.

const rows = new Map(); // transcript entry -> <li>

function currentEntry(role) {
  const last = vg.transcript[vg.transcript.length - 1];
  if (last && last.role === role) return last;
  const entry = { role, text: "", final: true, interrupted: false, parts: [], pending: [] };
  vg.transcript.push(entry);
  const li = document.createElement("li");
  li.className = `line ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Bot";
  const said = document.createElement("span");
  said.className = "said";
  const pending = document.createElement("span");
  pending.className = "pending";
  li.append(who, said, pending);
  ui.transcript.append(li);
  rows.set(entry, li);
  if (vg.transcript.length > MAX_TRANSCRIPT) {
    const old = vg.transcript.shift();
    rows.get(old).remove();
    rows.delete(old);
  }
  return entry;
}

function render(entry) {
  const said = entry.parts.join(" ");
  const pending = entry.pending.join(" ");
  entry.text = [said, pending].filter(Boolean).join(" ");
  entry.final = entry.pending.length === 0;
  const li = rows.get(entry);
  li.querySelector(".said").textContent = said;
  li.querySelector(".pending").textContent = pending;
  li.classList.toggle("interrupted", entry.interrupted);
  li.scrollIntoView({ block: "nearest" });
}

function transcriptUser(text, final) {
  const entry = currentEntry("user");
  // Interim user transcripts are the whole utterance so far: replace, never append.
  entry.pending = final || !text ? [] : [text];
  if (final && text) entry.parts.push(text);
  render(entry);
}

function transcriptBotSpeculative(text) {
  const entry = currentEntry("bot");
  entry.pending.push(text);
  render(entry);
}

const squash = (s) => s.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "");

function transcriptBotFinal(text) {
  const entry = currentEntry("bot");
  entry.parts.push(text);
  // Drop the speculative text this final text replaces: whole-sentence previews (Nova Sonic)
  // or small streamed chunks (LLM tokens) that spell the start of it.
  const target = squash(text);
  let spelled = "";
  let used = 0;
  while (used < entry.pending.length) {
    const next = spelled + squash(entry.pending[used]);
    if (!target.startsWith(next)) break;
    spelled = next;
    used += 1;
  }
  entry.pending.splice(0, Math.max(used, entry.pending.length ? 1 : 0));
  render(entry);
}

function transcriptBotInterrupted() {
  const last = vg.transcript[vg.transcript.length - 1];
  if (!last || last.role !== "bot") return;
  last.pending = [];
  last.interrupted = true;
  render(last);
}

// ---------------------------------------------------------------------------------------------
// Level meters (WebAudio AnalyserNode)

function makeAnalyser(ctx, stream) {
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser); // not to ctx.destination: no double playback
  return { node: analyser, buf: new Float32Array(analyser.fftSize) };
}

function rmsOf(a) {
  if (!a) return 0;
  a.node.getFloatTimeDomainData(a.buf);
  let sum = 0;
  for (const x of a.buf) sum += x * x;
  return Math.sqrt(sum / a.buf.length);
}

// Maps RMS to 0..1 on a -60..0 dBFS scale, which is how loud speech looks to a listener.
function meterLevel(rms) {
  if (rms <= 0) return 0;
  return Math.min(1, Math.max(0, (20 * Math.log10(rms) + 60) / 60));
}

function updateMeters(c) {
  if (c.closed) return;
  const mic = rmsOf(c.micAnalyser);
  const bot = rmsOf(c.botAnalyser);
  vg.micPeak = Math.max(vg.micPeak, mic);
  vg.botPeak = Math.max(vg.botPeak, bot);
  if (bot > FIRST_AUDIO_RMS) vg.timing.firstBotAudio ??= performance.now();
  ui.micMeter.value = meterLevel(mic);
  ui.botMeter.value = meterLevel(bot);
}

// ---------------------------------------------------------------------------------------------
// Connection statistics (debug panel)

async function updateStats(c) {
  if (c.closed || !c.pc) return;
  let report;
  try {
    report = await c.pc.getStats();
  } catch {
    return;
  }
  let transport = null;
  let pair = null;
  let inbound = null;
  let outbound = null;
  report.forEach((s) => {
    if (s.type === "transport") transport = s;
    else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair ??= s;
    else if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
    else if (s.type === "outbound-rtp" && s.kind === "audio") outbound = s;
  });
  if (transport && transport.selectedCandidatePairId) {
    pair = report.get(transport.selectedCandidatePairId) || pair;
  }
  const local = pair && report.get(pair.localCandidateId);
  const remote = pair && report.get(pair.remoteCandidateId);
  const stats = {
    localCandidateType: local ? local.candidateType : null,
    remoteCandidateType: remote ? remote.candidateType : null,
    protocol: local ? local.protocol : null,
    rttMs: pair && pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
    jitterMs: inbound && inbound.jitter != null ? inbound.jitter * 1000 : null,
    packetsLost: inbound ? inbound.packetsLost : null,
    packetsReceived: inbound ? inbound.packetsReceived : null,
    packetsSent: outbound ? outbound.packetsSent : null,
    // Average time a received sample waited in the browser's jitter buffer before playout.
    jitterBufferMs:
      inbound && inbound.jitterBufferEmittedCount > 0
        ? (inbound.jitterBufferDelay / inbound.jitterBufferEmittedCount) * 1000
        : null,
  };
  vg.stats = stats;
  const show = (v, unit = "") => (v == null ? "–" : `${Math.round(v * 10) / 10}${unit}`);
  ui.stat.pair.textContent = local
    ? `${stats.localCandidateType} ↔ ${stats.remoteCandidateType} (${stats.protocol})`
    : "–";
  ui.stat.rtt.textContent = show(stats.rttMs, " ms");
  ui.stat.jitter.textContent = show(stats.jitterMs, " ms");
  ui.stat.lost.textContent = show(stats.packetsLost);
  ui.stat.packets.textContent = `${show(stats.packetsReceived)} / ${show(stats.packetsSent)}`;
  ui.stat.jbuf.textContent = show(stats.jitterBufferMs, " ms");
}

// ---------------------------------------------------------------------------------------------

ui.connect.addEventListener("click", () => connect());
ui.hangup.addEventListener("click", () => hangup());
// Closing the tab ends the call at once instead of waiting for the server's ICE timeout.
window.addEventListener("pagehide", () => {
  if (call && call.pcId) deleteSession(call.pcId, true, call.sessionToken);
});
if (RELAY) ui.stat.connection.textContent = "relay only (?relay=1)";
