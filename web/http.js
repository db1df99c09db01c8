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

// Hangs the call up on the server; the HTTP status, or null when the request failed.
export async function deleteSession(pcId, keepalive, token) {
  try {
    const res = await fetch(`/api/sessions/${encodeURIComponent(pcId)}`, {
      method: "DELETE",
      keepalive,
      headers: authHeaders(token),
      signal: timeoutSignal(null),
    });
    return res.status;
  } catch {
    return null;
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
