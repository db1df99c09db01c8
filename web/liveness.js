// Notices a dead server in well under a second. The server sends the call's audio as a steady
// 20 ms packet stream, silence included, so a connection that has received no audio packet for
// SILENT_LIMIT_MS has lost its server (killed, stalled, cut off): far sooner than ICE, whose
// consent checks take seconds to call the connection "disconnected". The call then re-offers
// (restart_pc) at once and another node adopts it.

// Long enough for a loaded machine's jitter (packets late by a few hundred ms), short enough
// that the caller is back within about a second and a half of the server's death.
export const SILENT_LIMIT_MS = 600;
export const PROBE_INTERVAL_MS = 100;

async function audioPacketsReceived(pc) {
  let packets = 0;
  const report = await pc.getStats();
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") packets += r.packetsReceived || 0;
  });
  return packets;
}

// Calls onSilent(silentMs) once per silence of a connected connection (getPc() names the
// current one; a new connection starts a new count). Returns the interval id (clearTimeout
// clears it).
export function watchServerAudio(getPc, onSilent) {
  let watched = null;
  let last = -1;
  let since = 0;
  let probing = false;
  return setInterval(async () => {
    const pc = getPc();
    const now = performance.now();
    if (!pc || pc !== watched || pc.connectionState !== "connected") {
      watched = pc;
      last = -1;
      since = now;
      return;
    }
    if (probing) return;
    probing = true;
    try {
      const packets = await audioPacketsReceived(pc);
      if (pc !== watched) return;
      if (packets !== last) {
        last = packets;
        since = now;
      } else if (last > 0 && now - since >= SILENT_LIMIT_MS) {
        const silentMs = Math.round(now - since);
        since = now;
        onSilent(silentMs);
      }
    } catch {
      // a connection closed between the check and getStats: the next probe sees the new one
    } finally {
      probing = false;
    }
  }, PROBE_INTERVAL_MS);
}
