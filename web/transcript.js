// The transcript: one line per speaker turn. Final text stays; partial (user) or speculative
// (bot) text is shown dimmed after it and replaced when the final text arrives.

import { ui, vg } from "./page.js";

const MAX_TRANSCRIPT = 200;

const rows = new Map(); // transcript entry -> <li>
const MAX_SEPARATORS = 50;
let separated = false; // a separator came after the last entry: the next line starts afresh

// A line between calls (or between a lost conversation and a fresh one), with the time, so
// turns of different conversations never run together.
export function transcriptSeparator(text) {
  const li = document.createElement("li");
  li.className = "separator";
  li.setAttribute("role", "separator");
  li.textContent = `${text} · ${new Date().toLocaleTimeString()}`;
  ui.transcript.append(li);
  separated = true;
  const all = ui.transcript.querySelectorAll(".separator");
  if (all.length > MAX_SEPARATORS) all[0].remove();
  li.scrollIntoView({ block: "nearest" });
}

function currentEntry(role) {
  const last = vg.transcript[vg.transcript.length - 1];
  if (last && last.role === role && !separated) return last;
  separated = false;
  const entry = { role, text: "", final: true, interrupted: false, parts: [], pending: [] };
  vg.transcript.push(entry);
  const li = document.createElement("li");
  li.className = `line ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Bot";
  const said = document.createElement("span");
  said.className = "said";
  const pending = document.createElement("span");
  pending.className = "pending";
  li.append(who, said, pending);
  ui.transcript.append(li);
  rows.set(entry, li);
  if (vg.transcript.length > MAX_TRANSCRIPT) {
    const old = vg.transcript.shift();
    rows.get(old).remove();
    rows.delete(old);
  }
  return entry;
}

function render(entry) {
  const said = entry.parts.join(" ");
  const pending = entry.pending.join(" ");
  entry.text = [said, pending].filter(Boolean).join(" ");
  entry.final = entry.pending.length === 0;
  const li = rows.get(entry);
  li.querySelector(".said").textContent = said;
  li.querySelector(".pending").textContent = pending;
  li.classList.toggle("interrupted", entry.interrupted);
  li.scrollIntoView({ block: "nearest" });
}

// Typed texts shown at once and not yet confirmed by the server: the server reports each typed
// turn back as the user's final transcript, which must not put the same words there twice.
const typedUnconfirmed = [];
const MAX_TYPED_UNCONFIRMED = 8;

export function transcriptUser(text, final) {
  if (final && text) {
    const i = typedUnconfirmed.indexOf(text.trim());
    if (i >= 0) {
      typedUnconfirmed.splice(i, 1);
      return;
    }
  }
  const entry = currentEntry("user");
  // Interim user transcripts are the whole utterance so far: replace, never append.
  entry.pending = final || !text ? [] : [text];
  if (final && text) entry.parts.push(text);
  render(entry);
}

// Text the user typed: final at once, on the user's line like speech.
export function transcriptTyped(text) {
  typedUnconfirmed.push(text.trim());
  if (typedUnconfirmed.length > MAX_TYPED_UNCONFIRMED) typedUnconfirmed.shift();
  const entry = currentEntry("user");
  entry.parts.push(text);
  render(entry);
}

export function transcriptBotSpeculative(text) {
  const entry = currentEntry("bot");
  entry.pending.push(text);
  render(entry);
}

const squash = (s) => s.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "");

export function transcriptBotFinal(text) {
  const entry = currentEntry("bot");
  entry.parts.push(text);
  // Drop the speculative text this final text replaces: whole-sentence previews (Nova Sonic)
  // or small streamed chunks (LLM tokens) that spell the start of it.
  const target = squash(text);
  let spelled = "";
  let used = 0;
  while (used < entry.pending.length) {
    const next = spelled + squash(entry.pending[used]);
    if (!target.startsWith(next)) break;
    spelled = next;
    used += 1;
  }
  entry.pending.splice(0, Math.max(used, entry.pending.length ? 1 : 0));
  render(entry);
}

export function transcriptBotInterrupted() {
  const last = vg.transcript[vg.transcript.length - 1];
  if (!last || last.role !== "bot") return;
  last.pending = [];
  last.interrupted = true;
  render(last);
}
