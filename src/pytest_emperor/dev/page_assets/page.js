// emperor-dev up's page: polls up.json (rewritten by `up` whenever something changes) and updates the rows in
// place. Everything in the document (app names, URLs, log lines) is untrusted text: it only ever goes into the
// page as textContent or an attribute value, never as HTML.
"use strict";

const POLL_MS = 250; // the document is a few kB, served by nginx from a file: polling costs nothing measurable
const FAILING = new Set(["cursed", "throttled", "error"]);
const rows = new Map(); // app name -> {row, cells, errors}
let lastEvents = "";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function uptime(started, now) {
  if (started == null) return "-";
  let seconds = Math.max(0, Math.floor(now - started));
  const parts = [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]]
    .map(([size, unit]) => { const n = Math.floor(seconds / size); seconds -= n * size; return [n, unit]; });
  const first = parts.findIndex(([n]) => n > 0);
  if (first < 0) return "0s";
  return parts.slice(first, first + 2).map(([n, unit]) => n + unit).join(" ");
}

function megabytes(bytes) {
  return bytes == null ? "-" : (bytes / 1048576).toFixed(1) + " MB";
}

function newRow(app) {
  const row = element("tr", "app");
  row.setAttribute("data-app", app.name);
  const cells = {};
  for (const name of ["name", "state", "url", "pid", "up", "requests", "memory"]) {
    cells[name] = element("td", name === "pid" || name === "requests" || name === "memory" ? "num " + name : name);
    row.append(cells[name]);
  }
  cells.badge = element("span", "state");
  cells.state.append(cells.badge);
  cells.link = element("a");
  cells.url.append(cells.link);
  const errors = element("tr", "errors");
  errors.setAttribute("data-app", app.name);
  const errorCell = element("td");
  errorCell.colSpan = 7;
  cells.errorText = element("pre");
  errorCell.append(cells.errorText);
  errors.append(errorCell);
  return {row, cells, errors};
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function renderApps(apps, now) {
  const body = document.querySelector("#apps tbody");
  const seen = new Set();
  let previous = null;
  for (const app of apps) {
    seen.add(app.name);
    let entry = rows.get(app.name);
    if (!entry) {
      entry = newRow(app);
      rows.set(app.name, entry);
    }
    const {row, cells, errors} = entry;
    // Keep the document's order (up's deploy order), moving only what is out of place.
    const anchor = previous ? previous.nextSibling : body.firstChild;
    if (anchor !== row) body.insertBefore(row, anchor);
    if (row.nextSibling !== errors) body.insertBefore(errors, row.nextSibling);
    previous = errors;

    const failing = FAILING.has(app.state) || (app.state === "ready" && !app.routed);
    row.classList.toggle("failing", failing);
    setText(cells.name, app.name);
    setText(cells.badge, app.state === "ready" && !app.routed ? "not routed" : app.state);
    cells.badge.className = "state state-" + (app.state === "ready" && !app.routed ? "error" : app.state);
    setText(cells.link, app.url);
    if (/^https?:\/\//.test(app.url)) {
      if (cells.link.getAttribute("href") !== app.url) cells.link.setAttribute("href", app.url);
    } else {
      cells.link.removeAttribute("href");
    }
    setText(cells.pid, app.pid == null ? "-" : String(app.pid));
    setText(cells.up, uptime(app.started, now));
    setText(cells.requests, app.requests == null ? "-" : String(app.requests));
    setText(cells.memory, megabytes(app.memory));
    setText(cells.errorText, app.errors.join("\n"));
    errors.hidden = app.errors.length === 0;
  }
  for (const [name, entry] of rows) {
    if (!seen.has(name)) {
      entry.row.remove();
      entry.errors.remove();
      rows.delete(name);
    }
  }
}

function renderSummary(apps) {
  const counts = new Map();
  for (const app of apps) counts.set(app.state, (counts.get(app.state) || 0) + 1);
  const summary = document.getElementById("summary");
  const parts = [...counts].map(([state, n]) => n + " " + state);
  const failing = apps.filter((app) => FAILING.has(app.state) || (app.state === "ready" && !app.routed));
  const text = apps.length + (apps.length === 1 ? " app" : " apps") + (parts.length ? ": " + parts.join(", ") : "");
  const key = text + "\u0000" + failing.map((app) => app.name).join("\u0000");
  if (summary.dataset.key === key) return;
  summary.dataset.key = key;
  summary.replaceChildren(element("span", "", text));
  for (const app of failing) {
    const link = element("a", "", app.name);
    link.setAttribute("href", "#");
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const entry = rows.get(app.name);
      if (entry) entry.row.scrollIntoView({block: "center"});
    });
    summary.append(link);
  }
}

function renderEvents(events) {
  const key = events.length + ":" + JSON.stringify(events[events.length - 1] || null);
  if (key === lastEvents) return;
  lastEvents = key;
  const list = document.getElementById("events");
  list.replaceChildren(...events.slice().reverse().map((event) => {
    const time = new Date(event.time * 1000).toLocaleTimeString([], {hour12: false});
    const item = element("li", "event event-" + event.kind, time + "  " + event.app + ": " + event.text);
    item.setAttribute("data-app", event.app);
    return item;
  }));
}

function setConnection(problem) {
  const banner = document.getElementById("connection");
  banner.hidden = problem === null;
  if (problem !== null) {
    setText(banner, "emperor-dev up is not answering (" + problem + "): what is shown may be out of date.");
  }
}

async function poll() {
  try {
    const response = await fetch("up.json", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const state = await response.json();
    const now = Date.now() / 1000;
    renderApps(state.apps, now);
    renderSummary(state.apps);
    renderEvents(state.events);
    document.title = "emperor-dev up: " + state.apps.filter((app) => app.state === "ready").length + "/" +
      state.apps.length + " ready";
    setConnection(null);
  } catch (error) {
    setConnection(error.message || String(error));
  }
  setTimeout(poll, POLL_MS);
}

poll();
