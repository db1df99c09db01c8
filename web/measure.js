// The measuring mode (?measure=1): mouth-to-ear latency of the call as the page hears it.
//
// Both the microphone stream and the bot's (remote) stream go through an AudioWorklet
// (measure-worklet.js) that timestamps each marker tone's onset on the AudioContext clock. With
// a fake microphone that plays marker tones (benchmarks/markers.py) and a brain that echoes, every
// marker arrives twice: once as captured, once as played back after the whole trip (capture,
// Opus, network, the gateway, the model, back, and the browser's own jitter buffer and decoder).
// Each bot onset is paired with the latest microphone onset before it; the difference is one
// mouth-to-ear sample. Results are plain data in vg.measure (docs/web.md).

import { vg } from "./page.js";

// Markers come once a second: a longer "round trip" would be paired with the wrong marker.
const MAX_PAIR_S = 2;
const MAX_ONSETS = 2000;
const WORKLET_URL = new URL("./measure-worklet.js", import.meta.url);

const loaded = new WeakMap(); // AudioContext -> Promise of its worklet module

export function newMeasurement(ctx) {
  vg.measure = {
    sampleRate: ctx.sampleRate,
    // What WebAudio itself adds after the worklet, to the speaker; headless Chromium often says 0.
    baseLatencyMs: (ctx.baseLatency || 0) * 1000,
    outputLatencyMs: (ctx.outputLatency || 0) * 1000,
    micStart: null, // context time when getUserMedia handed over the microphone
    micOnsets: [], // context times (s) of marker onsets in the microphone stream
    botOnsets: [], // ... and in the bot's stream
    mouthToEarMs: [], // one per paired marker
    lastPaired: -1, // index in micOnsets of the last paired marker
    errors: [],
  };
  return vg.measure;
}

function moduleFor(ctx) {
  if (!loaded.has(ctx)) loaded.set(ctx, ctx.audioWorklet.addModule(WORKLET_URL.href));
  return loaded.get(ctx);
}

export async function measureStream(ctx, stream, label) {
  const m = vg.measure;
  if (!m) return;
  if (label === "mic") m.micStart = ctx.currentTime;
  try {
    await moduleFor(ctx);
    if (ctx.state === "closed") return;
    const node = new AudioWorkletNode(ctx, "marker-onsets", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { label },
    });
    node.port.onmessage = (ev) => onOnset(m, ev.data);
    ctx.createMediaStreamSource(stream).connect(node);
    // The node writes nothing (silence) but must reach the destination to be rendered at all.
    node.connect(ctx.destination);
  } catch (err) {
    m.errors.push(String(err));
  }
}

function onOnset(m, { label, t }) {
  if (label === "mic") {
    if (m.micOnsets.length < MAX_ONSETS) m.micOnsets.push(t);
    return;
  }
  if (m.botOnsets.length >= MAX_ONSETS) return;
  m.botOnsets.push(t);
  let i = m.micOnsets.length - 1;
  while (i >= 0 && m.micOnsets[i] >= t) i--;
  // A marker pairs once: a second onset of the same returning tone (a gap concealed inside it)
  // is not a second round trip.
  if (i < 0 || i === m.lastPaired || t - m.micOnsets[i] >= MAX_PAIR_S) return;
  m.lastPaired = i;
  m.mouthToEarMs.push((t - m.micOnsets[i]) * 1000);
}
