// The mute button's state. Muting disables the microphone track: the browser then sends
// silence, so a noisy room (or a looping microphone) cannot talk over an answer, and the
// server hears nothing to transcribe. The same track serves every reconnect of the call, so
// the state holds across them.

import { ui, vg } from "./page.js";

export function setMuted(track, muted) {
  track.enabled = !muted;
  show(muted);
}

// Unmuted; the button usable only while a call holds the microphone.
export function resetMute(disabled = true) {
  show(false);
  ui.mute.disabled = disabled;
}

function show(muted) {
  vg.muted = muted;
  ui.mute.textContent = muted ? "Unmute" : "Mute";
  ui.mute.setAttribute("aria-pressed", String(muted));
  ui.mute.classList.toggle("muted", muted);
  ui.state.dataset.muted = String(muted);
}
