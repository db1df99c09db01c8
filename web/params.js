// URL parameters of the page, read once at load (docs/web.md lists them).

const query = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));

// ?raw=1 turns the browser's echo cancellation, noise suppression and gain control off.
// Tests use it: a fake microphone fed from a WAV must reach the server unaltered.
export const RAW = query.get("raw") === "1";

// ?measure=1 timestamps marker tones on the microphone and on the bot's audio (measure.js):
// mouth-to-ear latency with a fake microphone that plays markers and a brain that echoes.
export const MEASURE = query.get("measure") === "1";

// ?relay=1 forces ICE through TURN, to check that the relay works for users behind strict NATs.
export const RELAY = query.get("relay") === "1";

// #agent=NAME: the agent the page's calls ask for (GET /api/agents lists them); the chooser
// writes it back so a reload or a shared link keeps the choice.
export const AGENT = fragment.get("agent");

// #token=<access token>: an exposed server needs one; the app that links here mints it. The
// fragment never leaves the browser: it is not sent with the page request, not in any Referer,
// not in the server's or a proxy's access log. ?token= is still read (older links use it) but
// has already been sent to the server with the page request itself.
// Both are dropped from the address bar at once so the token does not linger in history,
// bookmarks or screenshots; the page keeps it in memory only.
export const TOKEN = fragment.get("token") || query.get("token");
if (query.has("token") || fragment.has("token")) {
  query.delete("token");
  fragment.delete("token");
  const rest = `${query.size ? `?${query}` : ""}${fragment.size ? `#${fragment}` : ""}`;
  history.replaceState(null, "", `${location.pathname}${rest}`);
}
