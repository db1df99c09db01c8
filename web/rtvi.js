// The data channel's messages (Pipecat RTVI shape, docs/protocol.md): what the page sends, and
// what each server message does to the page. Knows nothing of the peer connection: a message
// that needs the call itself (a fatal error, a request to move) is returned to call.js as an
// action ("hangup", "server-gone", "reconnect").

import { logEvent, setState, showError, vg } from "./page.js";
import { showServerRtp, showTurnLatency } from "./stats.js";
import {
  transcriptBotFinal,
  transcriptBotInterrupted,
  transcriptBotSpeculative,
  transcriptUser,
} from "./transcript.js";

export function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("");
}

function clientMessage(type, data) {
  return JSON.stringify({ label: "rtvi-ai", type, id: newId(), data });
}

export const clientReady = () =>
  clientMessage("client-ready", { version: "1.0.0", about: { library: "voicegate-web" } });

// Typed text as a user turn (RTVI send-text): the model answers it at once, in speech.
export const sendTextMessage = (content) =>
  clientMessage("send-text", {
    content,
    options: { run_immediately: true, audio_response: true },
  });

// Handles one server message (JSON text). Returns the action it asks of the call: "hangup"
// (a fatal error), "reconnect" (the server asks the page to move its connection, e.g. before
// it drains) or null.
export function handleServerMessage(raw) {
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    logEvent({ type: "unparseable", data: String(raw).slice(0, 200) });
    return null;
  }
  if (!msg || typeof msg !== "object") return null;
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
      if (data.type === "reconnect") return "reconnect";
      if (data.kind === "turn-latency") showTurnLatency(data);
      else if (data.kind === "rtp-stats") showServerRtp(data);
      else if (data.kind === "renewal" || data.kind === "recovery") vg.continuations.push(data);
      break;
    case "error": {
      // voicegate's own `message` (with `kind`), or Pipecat's `error`.
      showError(`Server error: ${data.message || data.error || "unknown"}`);
      // A server shutting down comes back: its error lasts until it does.
      if (data.fatal) return data.kind === "shutdown" ? "server-gone" : "hangup";
      break;
    }
    default:
      break; // metrics, llm-function-call and anything newer: the debug log shows them
  }
  return null;
}
