// HTTP to voicegate's signaling API: JSON requests with a timeout and the access token, the
// server's JSON refusals turned into errors, and error messages a user can act on.

import { TOKEN } from "./params.js";

export const HTTP_TIMEOUT_MS = 10000;

export class HttpError extends Error {
  constructor(status, reason) {
    super(`The server refused the call (HTTP ${status}): ${reason}`);
    this.status = status;
  }
}

const authHeaders = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

function timeoutSignal(extra) {
  const timeout = AbortSignal.timeout(HTTP_TIMEOUT_MS);
  return extra && AbortSignal.any ? AbortSignal.any([extra, timeout]) : timeout;
}

export async function requestJson(method, url, body, signal, token = TOKEN) {
  const init = { method, signal: timeoutSignal(signal), headers: authHeaders(token) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  let payload = null;
  try {
    payload = await res.json();
  } catch {
    payload = null;
  }
  if (!res.ok) {
    const reason = payload && typeof payload.error === "string" ? payload.error : res.statusText;
    if (res.status === 401 && payload && payload.auth_required && !TOKEN) {
      throw new HttpError(401, "this server needs an access token: open the page with #token=…");
    }
    throw new HttpError(res.status, reason || "no reason given");
  }
  return payload;
}

// A hang-up refused with a retryable status (503 with Retry-After: the node reached is cut off
// from the cluster directory, or busy) is sent again, at most DELETE_RETRIES times, waiting what
// the server asked for and at least twice as long as the previous time (capped): the call's
// owner would otherwise see the hang-up only as a closed connection, or not at all.
export const DELETE_RETRIES = 4;
const DELETE_RETRY_MIN_MS = 500;
const DELETE_RETRY_MAX_MS = 5000;

function retryDelayMs(res, previousMs) {
  if (res.status !== 503) return null;
  const seconds = Number(res.headers.get("Retry-After"));
  if (!Number.isFinite(seconds) || seconds < 0) return null;
  const wanted = Math.max(seconds * 1000, DELETE_RETRY_MIN_MS, 2 * previousMs);
  return Math.min(wanted, DELETE_RETRY_MAX_MS);
}

// Hangs the call up on the server; the HTTP status, or null when the request failed.
// ``onRetry(status, delayMs)`` is told of each retry before its wait (never with ``keepalive``:
// a closing tab sends once).
export async function deleteSession(pcId, keepalive, token, onRetry) {
  let delayMs = 0;
  for (let attempt = 0; ; attempt++) {
    let res;
    try {
      res = await fetch(`/api/sessions/${encodeURIComponent(pcId)}`, {
        method: "DELETE",
        keepalive,
        headers: authHeaders(token),
        signal: timeoutSignal(null),
      });
    } catch {
      return null;
    }
    const next = keepalive || attempt >= DELETE_RETRIES ? null : retryDelayMs(res, delayMs);
    if (next === null) return res.status;
    delayMs = next;
    if (onRetry) onRetry(res.status, delayMs);
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }
}

export function describeError(err) {
  if (err instanceof HttpError) return err.message;
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Microphone access was denied. Allow the microphone for this site and press Connect again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found. Plug one in and press Connect again.";
  }
  if (name === "NotReadableError") {
    return "The microphone could not be opened; another application may be using it.";
  }
  if (name === "TimeoutError" || name === "AbortError") {
    return `The voicegate server did not answer within ${HTTP_TIMEOUT_MS / 1000} s.`;
  }
  if (err instanceof TypeError && /fetch|network/i.test(err.message)) {
    return "The voicegate server is unreachable. Is it running, and is this the right address?";
  }
  return `Call failed: ${(err && err.message) || err}`;
}
