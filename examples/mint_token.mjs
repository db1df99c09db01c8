// Mint a voicegate access token in a Node.js backend: a standard HS256 JWT made with the
// `jose` package, signed with the same secret the server has in --auth-secret.
//
//   npm install jose
//   VOICEGATE_AUTH_SECRET=... node examples/mint_token.mjs user-42 support
//
// Keep the lifetime short (minutes) and within the server's --max-token-ttl; add an audience
// (.setAudience) if the server runs with --token-audience.
import { SignJWT } from "jose";

export async function voicegateToken(secret, subject, { agent, ttl = 300, maxCallSeconds } = {}) {
  const claims = {};
  if (agent) claims.agent = agent; // the one agent this caller may talk to
  if (maxCallSeconds) claims.max_call_seconds = maxCallSeconds;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(subject)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + ttl)
    .sign(new TextEncoder().encode(secret));
}

const [subject = "user-1", agent] = process.argv.slice(2);
console.log(await voicegateToken(process.env.VOICEGATE_AUTH_SECRET, subject, { agent }));
