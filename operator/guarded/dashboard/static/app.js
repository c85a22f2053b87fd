// The dashboard's page: fetches the JSON endpoints every 2 s and renders them. Text goes in through
// textContent only (never HTML), and the chart is plotly.js drawing the figure the server built.
"use strict";

const POLL_MS = 2000;
const CHART_MS = 5000;
let timer = null;
let view = null; // {kind, namespace, name}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, rowAttrs) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((row, i) => el("tr", rowAttrs ? rowAttrs(i) : {}, row.map((c) => el("td", {}, c))))));
}

function phaseBadge(phase, id) {
  return el("span", {class: `phase ${phase}`, id: id}, phase);
}

// The token comes in the URL's fragment (#token=..., never sent to a server), optionally followed by a route
// (#token=...#/rollout/ns/name). It moves to sessionStorage (this origin only, port included) and leaves the
// address bar; every API request carries it in a header. Never a cookie: those go to every port of the host.
const TOKEN_KEY = "guarded-token";
(function takeToken() {
  const match = /^#token=([^&#]*)(.*)$/.exec(location.hash);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  const rest = match[2].startsWith("#") ? match[2] : "";
  history.replaceState(null, "", location.pathname + location.search + rest);
})();

function apiHeaders(extra) {
  return {...(extra || {}), "X-Guarded-Token": sessionStorage.getItem(TOKEN_KEY) || ""};
}

async function getJson(path) {
  const response = await fetch(path, {credentials: "omit", cache: "no-store", headers: apiHeaders()});
  const body = await response.json().catch(() => ({error: response.status === 401
    ? "missing or wrong token: open the URL kubectl guarded dashboard printed (with its #token=...)"
    : `HTTP ${response.status}`}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

function rolloutHref(namespace, name) {
  return `#/rollout/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
}

// The list -------------------------------------------------------------------------------------------
async function renderList() {
  let data;
  try {
    data = await getJson("/api/rollouts");
  } catch (err) {
    data = {error: err.message};
  }
  if (view.kind !== "list") return; // the user moved on meanwhile
  if (data.error) {
    show(el("h1", {}, "Rollouts"), el("div", {class: "error"}, data.error));
    return;
  }
  const headers = ["Namespace", "Name", "Target", "Phase", "Stage", "Wave", "Canary", "Author", "Approvals", "Age",
    "Message"];
  const rows = data.items.map((r) => [
    r.namespace, el("a", {href: rolloutHref(r.namespace, r.name)}, (r.child ? "↳ " : "") + r.name), r.target,
    phaseBadge(r.phase), r.stage, r.wave,
    el("span", {}, el("span", {class: "bar"}, el("span", {style: `width:${parseFloat(r.canary) || 0}%`})), " ", r.canary),
    r.authors.join(", "), r.approvals, r.age, r.message]);
  show(
    el("h1", {}, "Rollouts ", el("span", {class: "muted"}, `(${data.scope})`)),
    data.note ? el("div", {class: "note"}, data.note) : null,
    data.items.length ? table(headers, rows, (i) => ({
      class: "link", "data-name": data.items[i].name, "data-namespace": data.items[i].namespace,
      "data-phase": data.items[i].phase,
      onclick: (e) => { if (e.target.tagName !== "A") location.hash = rolloutHref(data.items[i].namespace, data.items[i].name); },
    })) : el("p", {class: "muted"}, "No GuardedRollouts you may list here."));
}

// One rollout ----------------------------------------------------------------------------------------
let lastChart = 0;
let lastOutput = null; // {ok, text} of the last button, kept across refreshes

function facts(r) {
  const pairs = [["Target", r.target], ["Change", r.change], ["Authors", r.authors.join(", ") || "<unknown>"],
    ...r.documentation, ["AI-assisted", r.aiAssisted ? "yes" : "no"], ["Replicas", r.replicas],
    ["Canary share", r.canary], ["Revision", String(r.revision)], ["Last request", r.lastRequest]];
  if (r.emergency) pairs.splice(2, 0, ["Emergency", r.emergency]);
  if (r.rollbackReason && /Roll/.test(r.phase)) pairs.splice(1, 0, ["Rollback", r.rollbackReason]);
  return el("dl", {class: "facts"}, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function act(r, action) {
  if ((action === "abort" || action === "promote-full") &&
      !window.confirm(`${action} ${r.name}? This cannot be undone.`)) return;
  const buttons = document.querySelectorAll(".actions button");
  buttons.forEach((b) => { b.disabled = true; });
  const out = document.getElementById("action-output");
  out.className = "";
  out.textContent = `${action}: waiting for the API server and the operator…`;
  const body = action === "approve"
    ? {comment: document.getElementById("approve-comment").value, revision: r.revision} : {};
  try {
    const response = await fetch(
      `/api/rollouts/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}/${action}`,
      {method: "POST", credentials: "omit", headers: apiHeaders({"Content-Type": "application/json"}),
        body: JSON.stringify(body)});
    const result = await response.json();
    lastOutput = response.ok ? {ok: result.ok, text: result.output, action: action}
      : {ok: false, text: result.error || `HTTP ${response.status}`, action: action};
  } catch (err) {
    lastOutput = {ok: false, text: String(err), action: action};
  }
  buttons.forEach((b) => { b.disabled = false; });
  paintOutput();
}

function paintOutput() {
  const out = document.getElementById("action-output");
  if (!out || !lastOutput) return;
  out.className = lastOutput.ok ? "ok" : "refused";
  out.setAttribute("data-action", lastOutput.action);
  out.textContent = lastOutput.text;
}

// The rollout as last painted: the buttons act on it, so an approval names the revision the facts show.
let shown = null;

function actionsBar() {
  const button = (action, label, cls) => el("button", {"data-action": action, class: cls,
    onclick: () => act(shown, action)}, label);
  return el("div", {class: "actions"},
    el("textarea", {id: "approve-comment", placeholder: "Approval comment (kept with the approval)"}),
    button("approve", "Approve", "primary"),
    button("promote", "Promote"), button("promote-full", "Promote all waves"), button("pause", "Pause"),
    button("resume", "Resume"), button("abort", "Abort", "danger"), button("retry", "Retry"));
}

function analysisSection(r) {
  if (!r.analysis.length) return el("p", {class: "muted"}, "No judgement yet.");
  const one = (a) => el("div", {class: "judgement"},
    el("div", {}, el("span", {class: `verdict-${a.verdict}`}, a.verdict), ` at ${a.time}`,
      a.wave ? ` (wave ${a.wave}, ${a.intervals} intervals)` : ` (${a.intervals} intervals)`,
      a.alerts.length ? ` — alerts firing: ${a.alerts.join(", ")}` : ""),
    a.judgements.map((j) => [
      el("div", {}, `${j.metric}: `, el("span", {class: `verdict-${j.verdict}`}, j.verdict),
        j.evidence.length ? "" : ` — ${j.reason}`),
      j.evidence.length ? table(r.evidenceHeaders, j.evidence) : null]));
  const [newest, ...older] = r.analysis;
  return el("div", {id: "evidence"}, one(newest),
    older.length ? el("details", {}, el("summary", {}, `${older.length} earlier judgements`), older.map(one)) : null);
}

let chartPending = false; // one chart request at a time: a slow Prometheus must not pile them up

async function renderChart(r) {
  const node = document.getElementById("chart");
  if (!node || typeof Plotly === "undefined") return;
  let data;
  chartPending = true;
  try {
    data = await getJson(`/api/rollouts/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}/chart`);
  } catch (err) {
    data = {unavailable: err.message};
  } finally {
    chartPending = false;
  }
  if (!node.isConnected) return; // the user moved to another page meanwhile
  if (data.note || data.unavailable) {
    Plotly.purge(node);
    node.removeAttribute("data-ready");
    node.replaceChildren(data.note ? el("p", {class: "muted"}, data.note)
      : el("div", {class: "error", id: "chart-unavailable"}, `charts unavailable: ${data.unavailable}`));
    return;
  }
  const notes = document.getElementById("chart-errors");
  notes.textContent = (data.errors || []).join("\n");
  if (!node.hasAttribute("data-ready")) node.replaceChildren(); // a note or an error was there
  await Plotly.react(node, data.figure.data, data.figure.layout, {displaylogo: false, responsive: true});
  node.setAttribute("data-ready", "true");
}

async function renderRollout(namespace, name) {
  let r;
  try {
    r = await getJson(`/api/rollouts/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`);
  } catch (err) {
    r = {error: err.message};
  }
  if (view.kind !== "rollout" || view.namespace !== namespace || view.name !== name) return;
  if (r.error) {
    show(el("h1", {}, name), el("div", {class: "error"}, r.error));
    return;
  }
  const sameRollout = document.getElementById("rollout-page")?.getAttribute("data-key") === `${namespace}/${name}`;
  const wavesRows = r.waves.map((w) => [String(w.number), w.size, w.bake, w.gate ? "manual gate" : "", w.state]);
  const sections = [
    el("h1", {}, `${r.name} `, phaseBadge(r.phase, "phase"), " ", el("span", {class: "muted"},
      `${r.namespace} · stage ${r.stage || "-"} · wave ${r.progress.done}/${r.progress.total}` +
      (r.paused ? " · paused" : ""))),
    el("p", {id: "message"}, r.message),
    facts(r),
    el("h2", {}, "Waves"),
    table(["#", "Size", "Bake", "Gate", "State"], wavesRows, (i) => ({class: r.waves[i].current ? "current" : ""})),
    el("h2", {}, "Gates and approvals"),
    el("p", {id: "approvals-headline"}, `Approvals: ${r.approvalsHeadline}`),
    r.gates.rows.length ? table(r.gates.headers, r.gates.rows) : el("p", {class: "muted"}, "Gates not evaluated yet."),
    r.approvals.length ? table(["Approval", "Approver", "Revision", "Counted"],
      r.approvals.map((a) => [a.name, a.approver, String(a.revision ?? ""), a.counted])) : null,
    r.policy.length ? table(["Rule", "Value", "Set by"], r.policy) : null,
    el("h2", {}, "Analysis"),
    analysisSection(r),
    el("h2", {}, "Conditions"),
    table(["Type", "Status", "Reason", "Message"], r.conditions),
    el("h2", {}, "History"),
    table(["Time", "Wave", "Reason", "Message"], r.history.slice().reverse()),
    el("details", {}, el("summary", {}, "As kubectl guarded status shows it"), el("pre", {}, r.statusText)),
  ];
  if (!sameRollout) {
    // Built once per rollout so that the chart, the comment being typed and the last answer stay put.
    lastOutput = null;
    lastChart = 0;
    show(el("div", {id: "rollout-page", "data-key": `${namespace}/${name}`},
      el("p", {}, el("a", {href: "#/"}, "← all rollouts")),
      el("div", {id: "rollout-body"}),
      el("h2", {}, "Actions"), actionsBar(), el("div", {id: "action-output"}),
      el("h2", {}, "Error and order rates per version"),
      el("div", {id: "chart"}), el("div", {id: "chart-errors", class: "muted"})));
  }
  const present = (nodes) => nodes.filter((n) => n !== null && n !== undefined);
  document.getElementById("rollout-body").replaceChildren(...present(sections.slice(0, 3)));
  shown = r; // with the facts: a spec change moves the Approve button to the new revision at once
  const approve = document.querySelector('.actions button[data-action="approve"]');
  approve.textContent = `Approve revision ${r.revision}`;
  approve.setAttribute("data-revision", String(r.revision));
  let tail = document.getElementById("rollout-tail");
  if (!tail) {
    tail = el("div", {id: "rollout-tail"});
    document.getElementById("rollout-page").append(tail);
  }
  tail.replaceChildren(...present(sections.slice(3)));
  paintOutput();
  if (!chartPending && Date.now() - lastChart > CHART_MS) {
    lastChart = Date.now();
    renderChart(r);
  }
}

// The audit ------------------------------------------------------------------------------------------
function renderAuditForm() {
  const since = el("input", {id: "audit-since", value: "24h"});
  const until = el("input", {id: "audit-until", placeholder: "now"});
  const out = el("pre", {id: "audit-report"}, "");
  const run = async () => {
    out.textContent = "…";
    const query = new URLSearchParams({since: since.value});
    if (until.value) query.set("until", until.value);
    try {
      const data = await getJson(`/api/audit?${query}`);
      out.textContent = data.markdown;
    } catch (err) {
      out.textContent = err.message;
    }
  };
  show(el("h1", {}, "Audit report"),
    el("div", {class: "audit-form"}, el("label", {}, "Since ", since), el("label", {}, "Until ", until),
      el("button", {onclick: run}, "Show"),
      el("span", {class: "muted"}, "RFC 3339 times or durations back from now (30m, 24h, 7d)")),
    out);
  run();
}

// Routing --------------------------------------------------------------------------------------------
function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "rollout" && parts.length === 3) return {kind: "rollout", namespace: parts[1], name: parts[2]};
  if (parts[0] === "audit") return {kind: "audit"};
  return {kind: "list"};
}

async function refresh() {
  clearTimeout(timer);
  const current = view;
  if (current.kind === "rollout") await renderRollout(current.namespace, current.name);
  else if (current.kind === "list") await renderList();
  if (current === view && current.kind !== "audit") timer = setTimeout(refresh, POLL_MS);
}

function navigate() {
  view = route();
  if (view.kind === "audit") {
    clearTimeout(timer);
    renderAuditForm();
  } else {
    refresh();
  }
}

async function identity() {
  try {
    const who = await getJson("/api/whoami");
    const groups = who.groups.length ? ` (${who.groups.join(", ")})` : "";
    document.getElementById("identity").textContent = who.user
      ? `acting as ${who.user}${groups} · context ${who.context}` : `context ${who.context}`;
  } catch (err) {
    document.getElementById("identity").textContent = err.message;
  }
}

window.addEventListener("hashchange", navigate);
identity();
navigate();
