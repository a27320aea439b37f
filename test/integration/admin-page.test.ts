import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";
import { liveRoutes } from "../../src/observe/admin/live-routes.js";
import { AdminServer } from "../../src/observe/admin/server.js";
import type { DenialView, SessionView, UserRow } from "../../src/observe/live/view.js";
import { type FerryWithPage, startFerryWithPage } from "../helpers/admin-page.js";
import { startEchoServer, waitFor, within } from "../helpers/net.js";
import { socks5Connect, type TestClient } from "../helpers/socks.js";

/**
 * The live page's JSON API on an in-process server (the browser test drives the page itself):
 * what it lists, ending sessions, and what it refuses (no token, cross-site POSTs).
 */

const ALICE = { name: "alice", password: "wonderland" };
const BOB = { name: "bob", password: "builder" };
let page: FerryWithPage;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
const clients: TestClient[] = [];

before(async () => {
  echo = await startEchoServer();
  page = await startFerryWithPage(
    { rules: [{ deny: { to: ["127.0.0.2/32"] } }, { allow: { to: ["127.0.0.0/8"] } }] },
    { inlineUsers: [ALICE, BOB] },
  );
});

after(async () => {
  for (const c of clients) c.destroy();
  await page.close();
  await echo.close();
});

const target = (host = "127.0.0.1") => ({ type: "ipv4" as const, host, port: echo.port });

async function open(user: { name: string; password: string }, host?: string) {
  const r = await socks5Connect(page.ferry.port, target(host), { user: user.name, password: user.password });
  clients.push(r.client);
  return r;
}

async function get<T>(path: string): Promise<T> {
  const res = await page.api(path);
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return (await res.json()) as T;
}

const sessions = async () => (await get<{ sessions: SessionView[] }>("/api/sessions")).sessions;
const mine = async (c: TestClient) => (await sessions()).find((s) => s.client === `127.0.0.1:${c.localPort}`);

function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  return page.api(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-ferry-admin": "1", ...headers },
    body: JSON.stringify(body),
  });
}

test("a session opened through the proxy is listed with its user and target, and its bytes grow", async () => {
  const { client, reply } = await open(ALICE);
  assert.equal(reply.reply, 0);
  const listed = await mine(client);
  assert.ok(listed, "the session is listed");
  assert.equal(listed.user, "alice");
  assert.equal(listed.target, `127.0.0.1:${echo.port}`);
  assert.equal(listed.command, "connect");
  assert.equal(listed.protocol, "socks5");
  assert.equal(listed.rule, "rules[1]");
  assert.equal(listed.bytesUp, 0);
  client.write(Buffer.alloc(3000, 7));
  await client.readBytes(3000);
  // The relay counts as data moves; the API reads the counts live.
  const grown = await mine(client);
  assert.equal(grown?.bytesUp, 3000);
  assert.equal(grown?.bytesDown, 3000);
  const users = (await get<{ users: UserRow[] }>("/api/users")).users;
  const alice = users.find((u) => u.user === "alice");
  assert.ok(alice && alice.active >= 1 && alice.bytesUp >= 3000, JSON.stringify(users));
  client.destroy();
  await waitFor(() => [...page.ferry.server.sessions()].length === 0, 10_000, "the session to end");
});

test("ending a session closes the client's connection, names the reason in the record, and logs the action", async () => {
  const { client } = await open(ALICE);
  const listed = await mine(client);
  assert.ok(listed);
  const record = page.ferry.nextRecord();
  const res = await post("/api/sessions/end", { id: listed.id });
  assert.equal(res.status, 200);
  const body = (await res.json()) as { ended: SessionView[] };
  assert.deepEqual(
    body.ended.map((v) => v.id),
    [listed.id],
  );
  await client.waitClosed(10_000);
  const ended = await within(record, 10_000, "the session record");
  assert.equal(ended.id, Number(listed.id));
  assert.equal(ended.reason, "ended from the admin page");
  const line = page.logs.find((l) => l.event === "admin.session.end");
  assert.ok(line, "the admin action is logged");
  assert.equal(line.session, listed.id);
  assert.equal(line.user, "alice");
  assert.match(line.msg, /ended session .* ended from the admin page/);
  assert.equal((await post("/api/sessions/end", { id: listed.id })).status, 404, "gone now");
});

test("ending a user's sessions ends all of theirs and no one else's", async () => {
  const a1 = (await open(ALICE)).client;
  const a2 = (await open(ALICE)).client;
  const b = (await open(BOB)).client;
  const res = await post("/api/users/end", { user: "alice", reason: "quota talk" });
  assert.equal(res.status, 200);
  const { ended } = (await res.json()) as { ended: SessionView[] };
  assert.equal(ended.length, 2, JSON.stringify(ended));
  await a1.waitClosed(10_000);
  await a2.waitClosed(10_000);
  const left = await sessions();
  assert.deepEqual(
    left.map((s) => s.user),
    ["bob"],
  );
  assert.ok(!b.closed && !b.ended, "bob's session runs on");
  const line = page.logs.find((l) => l.event === "admin.user.end");
  assert.match(line?.msg ?? "", /ended 2 sessions of user alice: quota talk/);
  b.destroy();
  await waitFor(() => [...page.ferry.server.sessions()].length === 0, 10_000, "bob's session to end");
});

test("a denied request is listed once among the denials, with its rule and reason", async () => {
  const { client, reply } = await open(BOB, "127.0.0.2");
  assert.equal(reply.reply, 2, "refused by the ruleset");
  await client.waitClosed(10_000);
  // The decision comes first; the session's record completes the entry once the connection closed.
  await waitFor(
    () => page.live.denials.list().some((d) => d.target === `127.0.0.2:${echo.port}` && d.session),
    10_000,
    "the denial with its session",
  );
  const { denials } = await get<{ denials: DenialView[] }>("/api/denials");
  const mineOnly = denials.filter((d) => d.target === `127.0.0.2:${echo.port}`);
  // The decision event and the session record of one refusal make one entry.
  assert.equal(mineOnly.length, 1, JSON.stringify(denials));
  assert.equal(mineOnly[0]!.rule, "rules[0]");
  assert.equal(mineOnly[0]!.user, "bob");
  assert.match(mineOnly[0]!.reason, /deny rule matched: address 127.0.0.2/);
  assert.equal(mineOnly[0]!.stage, "address");
});

test("the event stream sends snapshots of all three lists", async () => {
  const ac = new AbortController();
  const res = await page.api("/api/events", { signal: ac.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
  const reader = res.body!.getReader();
  let text = "";
  const deadline = Date.now() + 10_000;
  // Two snapshots: the first at once, the next from the timer.
  while ((text.match(/event: snapshot\n/g) ?? []).length < 2 && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString("utf8");
  }
  ac.abort();
  const events = text.split("\n\n").filter((e) => e.startsWith("event: snapshot"));
  assert.ok(events.length >= 2, text);
  const data = JSON.parse(events[0]!.split("\ndata: ")[1]!) as Record<string, unknown>;
  for (const key of ["at", "sessions", "denials", "users", "columns"]) assert.ok(key in data, key);
});

test("every route but /healthz and /readyz needs the token", async () => {
  const routes: [string, string][] = [
    ["GET", "/"],
    ["GET", "/api/sessions"],
    ["GET", "/api/denials"],
    ["GET", "/api/users"],
    ["GET", "/api/events"],
    ["POST", "/api/sessions/end"],
    ["POST", "/api/users/end"],
  ];
  for (const [method, path] of routes) {
    for (const authorization of ["", "Bearer wrong"]) {
      const res = await fetch(`${page.base}${path}`, {
        method,
        headers: {
          ...(authorization && { authorization }),
          "x-ferry-admin": "1",
          "content-type": "application/json",
        },
        ...(method === "POST" && { body: "{}" }),
      });
      assert.equal(res.status, 401, `${method} ${path} with ${authorization || "no token"}`);
      await res.body?.cancel();
    }
  }
  for (const path of ["/healthz", "/readyz"])
    assert.equal((await fetch(`${page.base}${path}`)).status, 200, path);
  // With the token in the address, the page is served with a policy that forbids anything else.
  const res = await fetch(`${page.base}/?token=${page.token}`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("set-cookie") ?? "", /HttpOnly; SameSite=Strict/);
  assert.match(res.headers.get("content-security-policy") ?? "", /default-src 'none'; script-src 'sha256-/);
  assert.match(await res.text(), /<title>Ferry admin<\/title>/);
});

test("a POST that could come from another site is refused, and ends nothing", async () => {
  const { client } = await open(BOB);
  const listed = await mine(client);
  assert.ok(listed);
  const cookie = { cookie: `ferry_admin=${page.token}` };
  const asBrowser = (headers: Record<string, string>, contentType = "application/json") =>
    fetch(`${page.base}/api/sessions/end`, {
      method: "POST",
      headers: { "content-type": contentType, ...cookie, ...headers },
      body: JSON.stringify({ id: listed.id }),
    });
  // A form or a plain fetch from another page: the cookie alone is not enough.
  assert.equal((await asBrowser({})).status, 403, "no action header");
  assert.equal(
    (await asBrowser({ "x-ferry-admin": "1", origin: "http://evil.example" })).status,
    403,
    "origin",
  );
  assert.equal(
    (await asBrowser({ "x-ferry-admin": "1", "sec-fetch-site": "cross-site" })).status,
    403,
    "site",
  );
  assert.equal((await asBrowser({ "x-ferry-admin": "1" }, "text/plain")).status, 415, "not JSON");
  assert.ok(await mine(client), "still running");
  // The page itself: same origin, the header, the cookie.
  const url = new URL(page.base);
  const ok = await asBrowser({ "x-ferry-admin": "1", origin: url.origin, "sec-fetch-site": "same-origin" });
  assert.equal(ok.status, 200);
  await client.waitClosed(10_000);
});

test("without a token, the page answers only requests addressed to loopback (no DNS rebinding)", async () => {
  const admin = new AdminServer({ host: "127.0.0.1", port: 0 });
  const routes = liveRoutes(admin, page.live);
  const { port } = await admin.listen();
  const statusFor = (host: string, to = port, headers: Record<string, string> = {}) =>
    new Promise<number>((resolve, reject) => {
      const options = { host: "127.0.0.1", port: to, path: "/api/sessions", headers: { host, ...headers } };
      const req = http.get(options, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
    });
  try {
    assert.equal(await statusFor("rebound.example:8080"), 403);
    assert.equal(await statusFor(`127.0.0.1:${port}`), 200);
    assert.equal(await statusFor(`localhost:${port}`), 200);
    assert.equal(await statusFor(`[::1]:${port}`), 200);
    // With a token the Host is not checked: the cookie and the token guard it.
    const guarded = Number(new URL(page.base).port);
    assert.equal(await statusFor("admin.example", guarded, { authorization: `Bearer ${page.token}` }), 200);
  } finally {
    routes.close();
    await admin.close();
  }
});
