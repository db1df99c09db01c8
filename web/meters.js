// Level meters: a WebAudio AnalyserNode on each stream (microphone, bot), shown on a dBFS scale.

import { ui, vg } from "./page.js";

// Bot RMS (full scale 1.0) that counts as "bot audio arrived" for vg.timing.firstBotAudio;
// Opus comfort noise and silence stay far below it.
const FIRST_AUDIO_RMS = 0.01;

export function makeAnalyser(ctx, stream) {
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser); // not to ctx.destination: no double playback
  return { node: analyser, buf: new Float32Array(analyser.fftSize) };
}

export function rmsOf(a) {
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

export function updateMeters(c) {
  if (c.closed) return;
  const mic = rmsOf(c.micAnalyser);
  const bot = rmsOf(c.botAnalyser);
  vg.micPeak = Math.max(vg.micPeak, mic);
  vg.botPeak = Math.max(vg.botPeak, bot);
  if (bot > FIRST_AUDIO_RMS) vg.timing.firstBotAudio ??= performance.now();
  ui.micMeter.value = meterLevel(mic);
  ui.botMeter.value = meterLevel(bot);
}

export function resetMeters() {
  ui.micMeter.value = 0;
  ui.botMeter.value = 0;
}
