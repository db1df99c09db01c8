// Who answers: the server's agents (GET /api/agents), the one the next call asks for
// (`#agent=NAME` in the URL, or the chooser), and what it can do (its tools and knowledge).
//
// An older server has no /api/agents (404): the page then names the backend from /healthz and
// offers no choice; its offers carry no "agent".

import { HttpError, requestJson } from "./http.js";
import { ui, vg } from "./page.js";
import { AGENT } from "./params.js";

export async function loadAgents() {
  let listed = null;
  try {
    listed = await requestJson("GET", "/api/agents");
  } catch (err) {
    if (!(err instanceof HttpError) || err.status !== 404) {
      // No token yet, or the server is away: Connect will say why; nothing to show here.
      ui.agentSummary.textContent = "The server did not say which assistant answers.";
      return;
    }
  }
  if (listed && Array.isArray(listed.agents) && listed.agents.length) {
    vg.agents = listed;
    showAgents(listed);
    return;
  }
  try {
    const health = await requestJson("GET", "/healthz");
    ui.agentSummary.textContent = `Backend: ${health.backend}.`;
  } catch {
    ui.agentSummary.textContent = "The server did not say which assistant answers.";
  }
}

function showAgents(listed) {
  const names = listed.agents.map((a) => a.name);
  vg.agent = names.includes(AGENT) ? AGENT : names.includes(listed.default_agent)
    ? listed.default_agent
    : names[0];
  ui.agent.replaceChildren(
    ...listed.agents.map((a) => {
      const option = document.createElement("option");
      option.value = a.name;
      option.textContent = a.description ? `${a.name}: ${a.description}` : a.name;
      return option;
    }),
  );
  ui.agent.value = vg.agent;
  ui.agentPick.hidden = listed.agents.length < 2;
  ui.agent.addEventListener("change", () => choose(ui.agent.value));
  describe();
}

function choose(name) {
  vg.agent = name;
  // The choice lives in the fragment, so a link or a reload keeps it (and no server sees it).
  const fragment = new URLSearchParams(location.hash.slice(1));
  fragment.set("agent", name);
  history.replaceState(null, "", `${location.pathname}${location.search}#${fragment}`);
  describe();
}

// The chooser is locked during a call: the agent is fixed when the call starts.
export function lockAgent(locked) {
  ui.agent.disabled = locked;
}

function describe() {
  const listed = vg.agents;
  const agent = listed.agents.find((a) => a.name === vg.agent);
  if (!agent) return;
  const voice = agent.voice ? `, voice ${agent.voice}` : "";
  const about = agent.description ? `: ${agent.description}` : "";
  ui.agentSummary.textContent = `${agent.name}${about} (backend ${listed.backend}${voice}).`;
  const rows = [];
  for (const tool of Array.isArray(agent.tools) ? agent.tools : []) {
    rows.push(ability("Can", tool.description || tool.name, tool.name));
  }
  const knowledge = Array.isArray(agent.knowledge) ? agent.knowledge : [];
  if (knowledge.length) rows.push(ability("Knows", knowledge.join(", "), "knowledge"));
  ui.agentAbilities.replaceChildren(...rows);
  ui.agentAbilities.hidden = rows.length === 0;
}

function ability(verb, text, name) {
  const li = document.createElement("li");
  li.dataset.name = name;
  const b = document.createElement("strong");
  b.textContent = `${verb}: `;
  li.append(b, text);
  return li;
}

// The "agent" field of a new call's offer; none for a server that has no agents list.
export const agentField = () => (vg.agents && vg.agent ? { agent: vg.agent } : {});
