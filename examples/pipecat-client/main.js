// Pipecat's own JavaScript client against voicegate: SmallWebRTCTransport with the
// WavMediaManager (getUserMedia; nothing from Daily's CDN), the agent picked from
// GET /api/agents, an access token in the request headers. docs/clients.md explains each part.

import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";

const $ = (id) => document.getElementById(id);
let client = null;
let muted = false;

function log(who, text) {
  const li = document.createElement("li");
  li.textContent = `${who}: ${text}`;
  $("log").append(li);
}

function headers() {
  const token = $("token").value.trim();
  return new Headers(token ? { Authorization: `Bearer ${token}` } : {});
}

// The bot's WebRTC track: the WavMediaManager does not play it, an <audio> element does.
function play(track) {
  const audio = new Audio();
  audio.srcObject = new MediaStream([track]);
  audio.play().catch(() => log("page", "press a key or click to allow audio"));
}

async function listAgents() {
  const base = $("server").value.replace(/\/$/, "");
  $("agent").replaceChildren(new Option("(server default)", ""));
  try {
    const res = await fetch(`${base}/api/agents`, { headers: headers() });
    if (!res.ok) return; // an older server (404), or a token is needed first (401)
    const { agents, default_agent: fallback } = await res.json();
    for (const agent of agents) {
      const option = new Option(`${agent.name}: ${agent.description}`, agent.name);
      option.selected = agent.name === fallback;
      $("agent").append(option);
    }
  } catch (err) {
    // "Failed to fetch" from another origin: see voicegate's log (cross_origin_refused).
    log("page", `the server did not answer: ${err.message}`);
  }
}

async function connect() {
  const base = $("server").value.replace(/\/$/, "");
  $("connect").disabled = true;
  // TURN servers with fresh credentials, for users behind strict NATs.
  const ice = await fetch(`${base}/api/ice-servers`, { headers: headers() })
    .then((r) => (r.ok ? r.json() : { iceServers: [] }))
    .catch(() => ({ iceServers: [] }));
  client = new PipecatClient({
    transport: new SmallWebRTCTransport({
      mediaManager: new WavMediaManager(),
      iceServers: ice.iceServers,
    }),
    enableMic: true,
    enableCam: false,
    callbacks: {
      onTransportStateChanged: (state) => {
        $("state").textContent = state;
      },
      onBotReady: () => {
        $("hangup").disabled = false;
        $("mute").disabled = false;
        $("text").disabled = false;
      },
      onUserTranscript: (d) => d.final && log("you", d.text),
      onBotOutput: (d) => log("bot", d.text),
      onLLMFunctionCallStarted: (d) => log("tool", d.function_name || "a tool"),
      onError: (m) => log("error", m.data && (m.data.error || m.data.message)),
      onTrackStarted: (track, who) => {
        if (track.kind === "audio" && who && !who.local) play(track);
      },
      onDisconnected: () => {
        $("connect").disabled = false;
        $("hangup").disabled = true;
        $("mute").disabled = true;
        $("text").disabled = true;
      },
    },
  });
  const agent = $("agent").value;
  try {
    await client.connect({
      webrtcRequestParams: {
        endpoint: `${base}/api/offer`,
        headers: headers(),
        // Nested under "requestData" in the offer; voicegate reads the agent there.
        requestData: agent ? { agent } : {},
      },
    });
  } catch (err) {
    log("error", err.message || String(err));
    $("connect").disabled = false;
  }
}

$("connect").addEventListener("click", connect);
$("hangup").addEventListener("click", () => client && client.disconnectBot());
$("mute").addEventListener("click", () => {
  muted = !muted;
  client.enableMic(!muted);
  $("mute").textContent = muted ? "Unmute" : "Mute";
});
$("say").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text || !client) return;
  client.sendText(text);
  log("you (typed)", text);
  $("text").value = "";
});
$("server").addEventListener("change", listAgents);
$("token").addEventListener("change", listAgents);
listAgents();
