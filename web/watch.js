// After the server went away (a drain, a restart, unreachable), its error stays only until the
// server is ready again. The page asks /healthz on the reconnect back-off schedule, not on a
// fixed tick, for a bounded time; a new call stops it.

import { HttpError, requestJson } from "./http.js";
import { clearError, showNotice } from "./page.js";

export const BACKOFF_MS = [500, 1000, 2000, 4000, 4000, 4000];
const SERVER_BACK_WINDOW_MS = 300000;

let watching = 0; // bumped to stop the current watch (a new call, a newer watch)

// An error that says the server is away (not the user's microphone or a refusal).
export const serverAway = (err) =>
  (err instanceof HttpError && err.status >= 502 && err.status <= 504) ||
  (err instanceof TypeError && /fetch|network/i.test(err.message));

export function stopWatching() {
  watching += 1;
}

export async function watchServer() {
  const mine = ++watching;
  const deadline = performance.now() + SERVER_BACK_WINDOW_MS;
  for (let attempt = 0; watching === mine && performance.now() < deadline; attempt++) {
    const wait = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
    await new Promise((resolve) => setTimeout(resolve, wait));
    if (watching !== mine) return;
    let health = null;
    try {
      health = await requestJson("GET", "/healthz");
    } catch {
      health = null; // still away
    }
    if (watching !== mine) return;
    if (health && health.ready && !health.draining) {
      clearError();
      showNotice("The server is back. Press Connect to start a new call.");
      return;
    }
  }
}
