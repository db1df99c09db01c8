// Connection statistics for the debug panel: the browser's getStats() once a second, and the
// server's own samples (turn latency, its RTCP view) that arrive on the data channel.

import { ui, vg } from "./page.js";

export async function updateStats(c) {
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

// End of the user's speech -> first bot audio frame sent, split into the model's share and
// voicegate's playout share when the server reports both.
export function showTurnLatency(data) {
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
export function showServerRtp(data) {
  vg.serverRtp = data;
  const ms = (s) => (typeof s === "number" ? `${Math.round(s * 10000) / 10} ms` : "–");
  const lost = typeof data.inbound_lost === "number" ? data.inbound_lost : "–";
  ui.stat.serverRtp.textContent =
    `in: jitter ${ms(data.inbound_jitter_s)}, lost ${lost}; ` +
    `out: RTT ${ms(data.rtt_s)}, lost ${data.outbound_lost ?? "–"}`;
}
