// The one call of this page: microphone, RTCPeerConnection and data channel, connect and hang
// up, typed text, and the automatic re-offer (restart_pc, same pc_id) that keeps the
// conversation when the connection drops or the server asks the page to move.

import { agentField, lockAgent } from "./agents.js";
import { HttpError, deleteSession, describeError, requestJson } from "./http.js";
import { watchServerAudio } from "./liveness.js";
import { measureStream, newMeasurement } from "./measure.js";
import { makeAnalyser, resetMeters, rmsOf, updateMeters } from "./meters.js";
import {
  clearError,
  clearNotice,
  enableTyping,
  logEvent,
  logMark,
  resetDebug,
  setState,
  showError,
  showHint,
  ui,
  vg,
} from "./page.js";
import { MEASURE, RELAY, TOKEN } from "./params.js";
import { iceGatheringDone, openMicrophone } from "./rtc.js";
import { clientReady, handleServerMessage, sendTextMessage } from "./rtvi.js";
import { updateStats } from "./stats.js";
import { resetMute, setMuted } from "./mute.js";
import { showResumed } from "./resumed.js";
import { BACKOFF_MS, serverAway, stopWatching, watchServer } from "./watch.js";
import { transcriptSeparator, transcriptTyped } from "./transcript.js";

// Waiting for the full candidate list lets the offer go in one POST (no trickle PATCH needed);
// the cap keeps a slow or unreachable STUN/TURN server from stalling the call forever.
const ICE_GATHER_TIMEOUT_MS = 5000;
// From the answer to a working media path; Chromium itself may take far longer to give up.
const MEDIA_CONNECT_TIMEOUT_MS = 20000;
// A dropped connection is re-offered (restart_pc, same pc_id) within the server's grace period
// (--reconnect-grace, default 30 s); the conversation carries on.
const RECONNECT_AFTER_MS = 2000; // "disconnected" often heals by itself; wait that long first
const RECONNECT_WINDOW_MS = 25000;
const RECONNECT_BACKOFF_MS = BACKOFF_MS;
// Hang-up closes the peer connection once the server answered the DELETE (or after this long):
// a connection closed first ends the call by itself and the DELETE then finds nothing (404).
const HANGUP_CLOSE_WAIT_MS = 1500;
// The text box's limit (also its maxlength): one typed turn, not a document.
const MAX_TEXT_CHARS = 2000;
const STATS_INTERVAL_MS = 1000;
const METER_INTERVAL_MS = 50;

let call = null; // the one call in progress, or null

class Cancelled extends Error {}

export const micRms = () => rmsOf(call && call.micAnalyser);
export const botRms = () => rmsOf(call && call.botAnalyser);

export async function connect() {
  if (call) return;
  clearError();
  clearNotice();
  stopWatching(); // a new call: no more waiting for the server to come back
  showHint(false);
  resetDebug();
  vg.calls += 1;
  vg.resumed = null;
  transcriptSeparator(`Call ${vg.calls}`);
  logMark(`call ${vg.calls} starts`);
  lockAgent(true);
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
  if (MEASURE) newMeasurement(c.audioCtx);
  const check = () => {
    if (c.closed) throw new Cancelled();
  };
  try {
    const { iceServers } = await requestJson("GET", "/api/ice-servers", undefined, c.abort.signal);
    check();
    c.stream = await openMicrophone();
    // The microphone runs from here; what is said before `connected` never reaches the server.
    vg.timing.micOpened = performance.now();
    if (c.closed) {
      stopStream(c.stream);
      throw new Cancelled();
    }
    c.micAnalyser = makeAnalyser(c.audioCtx, c.stream);
    resetMute(false);
    if (MEASURE) measureStream(c.audioCtx, c.stream, "mic");

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
      { sdp: pc.localDescription.sdp, type: pc.localDescription.type, ...agentField() },
      c.abort.signal,
    );
    check();
    vg.timing.answered = performance.now();
    c.pcId = answer.pc_id;
    c.sessionToken = answer.session_token || null; // the only token that may hang this call up
    keepIceServers(c, answer);
    vg.pcId = answer.pc_id;
    ui.stat.session.textContent = answer.pc_id || "–";
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    check();
    c.timers.push(setInterval(() => updateMeters(c), METER_INTERVAL_MS));
    c.timers.push(setInterval(() => updateStats(c), STATS_INTERVAL_MS));
    // A dead server is noticed by its audio stopping, long before ICE says so (liveness.js).
    c.timers.push(watchServerAudio(() => c.pc, (silentMs) => serverSilent(c, silentMs)));
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
    if (serverAway(err)) watchServer();
    await hangup();
  }
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
  if (MEASURE) measureStream(c.audioCtx, stream, "bot");
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
    // The network changed or paused; offer again and keep the conversation.
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

function serverSilent(c, silentMs) {
  if (c.closed || c.reconnecting || !c.everConnected) return;
  vg.connected = false;
  logEvent({ type: "server-silent", data: { silent_ms: silentMs } });
  reconnect(c, true);
}

// A new peer connection for the same call (same microphone track, new data channel); the
// server moves the running conversation onto it. Only once the server has taken the new offer
// is the old connection closed, so its close can never end the call. ``asked`` is the server's
// own request to move (a draining server): the connection is healthy, so it re-offers at once,
// and if no attempt succeeds the old connection carries on for as long as it lasts.
async function reconnect(c, asked = false) {
  if (c.closed || c.reconnecting || !c.pcId) return;
  const state = c.pc.connectionState;
  if (!asked && state !== "failed" && state !== "disconnected") return; // healed by itself
  c.reconnecting = true;
  setState("reconnecting");
  const deadline = performance.now() + RECONNECT_WINDOW_MS;
  for (let attempt = 0; !c.closed && performance.now() < deadline; attempt++) {
    const config = c.pc.getConfiguration();
    if (c.iceServers) config.iceServers = c.iceServers;
    const pc = new RTCPeerConnection(config);
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
      keepIceServers(c, answer);
      const old = c.pc;
      old.onconnectionstatechange = null;
      c.dc.onclose = null;
      old.close();
      c.pc = pc;
      c.dc = dc;
      enableTyping(false); // until the new channel opens
      wireDataChannel(c);
      pc.onconnectionstatechange = () => onConnectionState(c);
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
      vg.reconnects += 1;
      clearError(); // the server is back
      showResumed(answer);
      c.reconnecting = false;
      setState("listening");
      return;
    } catch (err) {
      pc.close();
      if (err instanceof Cancelled || c.closed) return;
      logEvent({ type: "reconnect-failed", data: { attempt, error: String(err) } });
      if (err instanceof HttpError && err.status === 410) {
        // The server ended this call meanwhile (e.g. its grace ran out): no retry can revive it.
        c.reconnecting = false;
        showError("The call has ended on the server. Press Connect to start a new one.");
        hangup();
        return;
      }
      const wait = RECONNECT_BACKOFF_MS[Math.min(attempt, RECONNECT_BACKOFF_MS.length - 1)];
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
  c.reconnecting = false;
  if (c.closed) return;
  if (asked && c.pc.connectionState === "connected") {
    logEvent({ type: "reconnect-abandoned", data: { reason: "no attempt succeeded" } });
    setState("listening");
    return;
  }
  serverGone("The connection to the server was lost and could not be restored.");
}

// Ends the call with an error that lasts only while the server is away.
export function serverGone(message) {
  showError(message);
  watchServer();
  hangup();
}

export function toggleMute() {
  const track = call && call.stream && call.stream.getAudioTracks()[0];
  if (track) setMuted(track, track.enabled);
}

// TURN credentials from the latest answer, for the next reconnect: the relay accepts an
// expired credential only for allocations it already has, and a reconnect makes new ones.
function keepIceServers(c, answer) {
  if (Array.isArray(answer.iceServers) && answer.iceServers.length) {
    c.iceServers = answer.iceServers;
  }
}

export async function hangup() {
  const c = call;
  if (!c) return;
  call = null;
  c.closed = true;
  c.abort.abort();
  // Tell the server first; the peer connection closes once it answered (or after
  // HANGUP_CLOSE_WAIT_MS). Closing the connection alone also ends the call on the server, so a
  // lost DELETE leaks nothing; but a DELETE refused retryably (the node reached cannot find the
  // call's owner for now) is retried, and the connection kept until the retries end (bounded,
  // http.js), so that the hang-up reaches the call's owner as a hang-up. Microphone, meters and
  // buttons stop at once.
  let retrying = false;
  const onRetry = () => {
    retrying = true;
    vg.hangupRetries += 1;
  };
  const deleted = c.pcId
    ? deleteSession(c.pcId, false, c.sessionToken, onRetry)
    : Promise.resolve(null);
  for (const t of c.timers) clearTimeout(t); // clearTimeout also clears intervals
  const { pc, dc } = c;
  const waited = new Promise((resolve) => setTimeout(resolve, HANGUP_CLOSE_WAIT_MS)).then(() =>
    retrying ? deleted : undefined,
  );
  Promise.race([deleted, waited]).then(() => {
    if (dc) dc.close();
    if (pc) pc.close();
  });
  enableTyping(false);
  stopStream(c.stream);
  ui.audio.srcObject = null;
  c.audioCtx.close().catch(() => {});
  vg.connected = false;
  vg.botReady = false;
  resetMeters();
  ui.stat.connection.textContent = "closed";
  setState("idle");
  resetMute();
  showHint(true);
  lockAgent(false);
  ui.connect.disabled = false;
  ui.hangup.disabled = true;
  vg.lastHangupStatus = await deleted;
}

// Closing the tab ends the call at once instead of waiting for the server's ICE timeout.
export function leave() {
  if (call && call.pcId) deleteSession(call.pcId, true, call.sessionToken);
}

function stopStream(stream) {
  if (stream) for (const t of stream.getTracks()) t.stop();
}

function wireDataChannel(c) {
  const dc = c.dc;
  dc.onopen = () => {
    dc.send(clientReady());
    if (c.dc === dc && !c.closed) enableTyping(true);
  };
  dc.onmessage = (ev) => receive(ev.data);
  dc.onclose = () => {
    if (c.closed || c.reconnecting || c.dc !== dc) return;
    // The server is up (it closed the channel itself): this error stays until the next call.
    showError("The server ended the call.");
    hangup();
  };
}

// One data-channel message (JSON text), from the channel or from a test through vg.receive.
export function receive(raw) {
  const action = handleServerMessage(raw);
  if (action === "hangup") {
    hangup();
  } else if (action === "server-gone") {
    watchServer();
    hangup();
  } else if (action === "reconnect" && call) {
    vg.moveRequests += 1;
    reconnect(call, true);
  }
}

// Sends typed text as a user turn; shows it in the transcript. False if there is no open
// channel to send it on (the text box is disabled then anyway) or nothing to send.
export function sendText(text) {
  const content = String(text).trim().slice(0, MAX_TEXT_CHARS);
  const dc = call && call.dc;
  if (!content || !dc || dc.readyState !== "open") return false;
  dc.send(sendTextMessage(content));
  transcriptTyped(content);
  return true;
}
