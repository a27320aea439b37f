import { createHash } from "node:crypto";
import type { OutgoingHttpHeaders } from "node:http";

/**
 * The live admin page: one HTML document with its CSS and script inline, no build step, nothing
 * fetched from elsewhere. Its script reads /api/events (server-sent events) and draws the tables
 * with textContent only: user names, targets and reasons come from clients and are never parsed
 * as HTML. The Content-Security-Policy allows exactly this script and style (by hash) and
 * connections to this listener, and no framing (the page has buttons that end sessions).
 */

const STYLE = `
:root { color-scheme: light dark; --line: #8884; --dim: #888; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1rem 1.5rem; }
h1 { font-size: 1.2rem; margin: 0 0 .5rem; }
h2 { font-size: 1rem; margin: 1.5rem 0 .4rem; }
#status { color: var(--dim); }
#status.bad { color: #c33; }
#message:empty { display: none; }
#message { padding: .3rem .6rem; border: 1px solid var(--line); display: inline-block; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .2rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { overflow-wrap: anywhere; }
tbody:empty::after { content: "none"; color: var(--dim); display: table-cell; padding: .2rem .5rem; }
button { font: inherit; padding: 0 .5rem; }
.dim { color: var(--dim); }
`;

const SCRIPT = `
"use strict";
const $ = (id) => document.getElementById(id);
const units = ["B", "KiB", "MiB", "GiB", "TiB"];
function bytes(n) {
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}
function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function time(at) { return new Date(at).toLocaleTimeString(); }
function or(v, dash) { return v === undefined || v === null || v === "" ? (dash || "–") : String(v); }
function both(a, b) { return a && b ? a + " / " + b : or(a || b); }

// Rows are kept by key and their cells rewritten in place, so a button being clicked stays put.
function sync(tbody, items, key, columns, button) {
  const rows = new Map();
  for (const tr of Array.from(tbody.rows)) rows.set(tr.dataset.key, tr);
  let at = 0;
  for (const item of items) {
    const k = key(item);
    let tr = rows.get(k);
    rows.delete(k);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.key = k;
      for (const c of columns) {
        const td = tr.insertCell();
        td.className = c.num ? "num" : "text";
        if (c.name) td.dataset.col = c.name;
      }
      if (button) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = button.label;
        b.title = button.title(item);
        b.addEventListener("click", () => button.click(k, b));
        tr.insertCell().append(b);
      }
    }
    columns.forEach((c, i) => {
      const td = tr.cells[i];
      const text = c.text(item);
      if (td.textContent !== text) td.textContent = text;
      if (c.value) td.dataset.value = String(c.value(item));
    });
    if (tbody.rows[at] !== tr) tbody.insertBefore(tr, tbody.rows[at] || null);
    at++;
  }
  for (const tr of rows.values()) tr.remove();
}

async function act(path, body, what) {
  const msg = $("message");
  try {
    const res = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-ferry-admin": "1" },
      body: JSON.stringify(body),
    });
    const answer = await res.json().catch(() => ({}));
    msg.textContent = res.ok
      ? what + ": ended " + answer.ended.length + " session" + (answer.ended.length === 1 ? "" : "s")
      : what + ": " + (answer.error || res.status + " " + res.statusText);
  } catch (err) {
    msg.textContent = what + ": " + err;
  }
}

let userExtra = "";
function render(s) {
  const now = s.at;
  $("count").textContent = s.sessionsTotal > s.sessions.length
    ? s.sessions.length + " of " + s.sessionsTotal : String(s.sessions.length);
  sync($("sessions"), s.sessions, (v) => v.id, [
    { name: "id", text: (v) => v.id },
    { name: "user", text: (v) => or(v.user) },
    { name: "client", text: (v) => v.client },
    { name: "target", text: (v) => or(v.target) },
    { name: "route", text: (v) => both(v.route, v.rule) },
    { name: "protocol", text: (v) => both(v.protocol, v.command) },
    { name: "up", num: true, text: (v) => bytes(v.bytesUp), value: (v) => v.bytesUp },
    { name: "down", num: true, text: (v) => bytes(v.bytesDown), value: (v) => v.bytesDown },
    { name: "age", num: true, text: (v) => age(now - v.startedAt), value: (v) => now - v.startedAt },
  ], { label: "end", title: (v) => "end session " + v.id,
       click: (id, b) => { b.disabled = true; act("/api/sessions/end", { id: id }, "session " + id); } });

  // Columns beyond the fixed ones (quotas, say) come named in the snapshot.
  const extra = s.columns || [];
  const names = extra.map((c) => c.key).join("\\n");
  if (names !== userExtra) {
    userExtra = names;
    const head = $("user-head");
    while (head.cells.length > 5) head.deleteCell(5);
    for (const c of extra) {
      const th = document.createElement("th");
      th.textContent = c.label;
      head.append(th);
    }
    head.append(document.createElement("th"));
    $("users").replaceChildren();
  }
  sync($("users"), s.users, (u) => u.user, [
    { name: "user", text: (u) => or(u.user, "(no user)") },
    { name: "sessions", num: true, text: (u) => String(u.sessions), value: (u) => u.sessions },
    { name: "active", num: true, text: (u) => String(u.active), value: (u) => u.active },
    { name: "up", num: true, text: (u) => bytes(u.bytesUp), value: (u) => u.bytesUp },
    { name: "down", num: true, text: (u) => bytes(u.bytesDown), value: (u) => u.bytesDown },
    ...extra.map((c) => ({ name: c.key, text: (u) => or(u[c.key]) })),
  ], { label: "end all", title: (u) => "end every session of " + or(u.user, "(no user)"),
       click: (user) => {
         if (user === "") { $("message").textContent = "sessions without a user are ended one by one"; return; }
         act("/api/users/end", { user: user }, "user " + user);
       } });

  sync($("denials"), s.denials, (d) => d.id, [
    { name: "time", text: (d) => time(d.at) },
    { name: "client", text: (d) => d.client },
    { name: "user", text: (d) => or(d.user) },
    { name: "target", text: (d) => or(d.target) },
    { name: "rule", text: (d) => or(d.rule) },
    { name: "reason", text: (d) => d.reason },
    { name: "stage", text: (d) => d.stage + (d.worker ? " (worker " + d.worker + ")" : "") },
  ]);
  const status = $("status");
  status.className = "";
  status.textContent = "live, updated " + time(s.at) +
    (s.missing && s.missing.length ? " (no answer from worker " + s.missing.join(", ") + ")" : "");
}

// The token was in the address once; the cookie (HttpOnly, SameSite=Strict) has it now.
if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);
const events = new EventSource("/api/events");
events.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
events.addEventListener("error", () => {
  const status = $("status");
  status.className = "bad";
  status.textContent = "not connected (retrying); if this lasts, open this page as /?token=TOKEN";
});
`;

const BODY = `
<h1>Ferry <span class="dim">live</span></h1>
<p><span id="status">connecting…</span></p>
<p id="message" role="status"></p>
<h2>Sessions in progress (<span id="count">0</span>)</h2>
<table>
<thead><tr><th>id</th><th>user</th><th>client</th><th>target</th><th>route / rule</th><th>protocol / command</th>
<th class="num">up</th><th class="num">down</th><th class="num">age</th><th></th></tr></thead>
<tbody id="sessions"></tbody>
</table>
<h2>Users since start</h2>
<table>
<thead><tr id="user-head"><th>user</th><th class="num">sessions</th><th class="num">running</th><th class="num">up</th><th class="num">down</th><th></th></tr></thead>
<tbody id="users"></tbody>
</table>
<h2>Recent denials</h2>
<table>
<thead><tr><th>time</th><th>client</th><th>user</th><th>target</th><th>rule</th><th>reason</th><th>stage</th></tr></thead>
<tbody id="denials"></tbody>
</table>
`;

export const pageHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ferry admin</title>
<style>${STYLE}</style>
</head>
<body>${BODY}<script>${SCRIPT}</script>
</body>
</html>
`;

const hash = (text: string): string => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

const CSP = [
  "default-src 'none'",
  `script-src ${hash(SCRIPT)}`,
  `style-src ${hash(STYLE)}`,
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** The page's response headers. */
export function pageHeaders(): OutgoingHttpHeaders {
  return {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    // The address may hold the token: never sent on.
    "referrer-policy": "no-referrer",
  };
}
