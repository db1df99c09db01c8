// voicegate browser client: one WebRTC voice call to the voicegate server.
//
// Plain ES modules, no build step, no inline script or style (the page runs under a strict
// Content-Security-Policy). This entry module wires the buttons and publishes window.vg; the
// server contract is docs/protocol.md, the page's own notes (URL parameters, test hooks)
// docs/web.md. Modules: params (URL), page (DOM, vg), http, agents (who answers), call, mute,
// watch (the server coming back), liveness (a dead server heard), resumed (a reconnect's
// answer), rtvi (data channel), transcript, meters, stats.

import { loadAgents } from "./agents.js";
import {
  botRms,
  connect,
  hangup,
  leave,
  micRms,
  receive,
  sendText,
  toggleMute,
} from "./call.js";
import { ui, vg } from "./page.js";
import { RELAY } from "./params.js";

vg.micRms = micRms;
vg.botRms = botRms;
vg.connect = () => connect();
vg.hangup = () => hangup();
vg.toggleMute = () => toggleMute();
// Feeds one data-channel message (JSON text) through the page as if the server had sent it.
vg.receive = (raw) => receive(raw);
vg.sendText = (text) => sendText(text);
window.vg = vg;

ui.connect.addEventListener("click", () => connect());
ui.hangup.addEventListener("click", () => hangup());
ui.mute.addEventListener("click", () => toggleMute());
// Enter in the text box submits the form.
ui.say.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (sendText(ui.sayText.value)) ui.sayText.value = "";
});
window.addEventListener("pagehide", leave);
if (RELAY) ui.stat.connection.textContent = "relay only (?relay=1)";
loadAgents();
