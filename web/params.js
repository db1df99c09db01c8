// URL parameters of the page, read once at load (docs/web.md lists them).

const params = new URLSearchParams(location.search);

// ?raw=1 turns the browser's echo cancellation, noise suppression and gain control off.
// Tests use it: a fake microphone fed from a WAV must reach the server unaltered.
export const RAW = params.get("raw") === "1";

// ?relay=1 forces ICE through TURN, to check that the relay works for users behind strict NATs.
export const RELAY = params.get("relay") === "1";

// ?token=<access token>: an exposed server needs one; the app that links here mints it.
// It is dropped from the address bar at once so it does not linger in history or screenshots.
export const TOKEN = params.get("token");
if (TOKEN) {
  params.delete("token");
  history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
}
