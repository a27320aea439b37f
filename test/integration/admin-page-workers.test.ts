import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import type { SessionView } from "../../src/observe/live/view.js";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { startEchoServer, waitFor } from "../helpers/net.js";
import { tempDir } from "../helpers/process.js";
import { socks5Connect, type TestClient } from "../helpers/socks.js";

/**
 * The admin page's API with `workers: 2`: the primary serves it, asks both workers for their
 * sessions, and sends an end request to the worker that holds the session. Round-robin
 * scheduling (NODE_CLUSTER_SCHED_POLICY=rr) spreads the connections over both workers.
 */

const TOKEN = "workers-page-token";
const TOKEN_VAR = "FERRY_TEST_ADMIN_TOKEN";
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function startClusterWithAdmin(): Promise<{ ferry: FerryProcess; admin: string }> {
  const dir = await tempDir("ferry-page-workers-");
  cleanups.push(dir.remove);
  const file = join(dir.path, "ferry.yaml");
  await writeFile(
    file,
    JSON.stringify({
      workers: 2,
      // `${VAR}` in the configuration: the token comes from the environment.
      admin: { listen: "127.0.0.1:0", token: `\${${TOKEN_VAR}}` },
      rules: [{ allow: { to: ["127.0.0.0/8"] } }],
    }),
  );
  const ferry = await spawnFerry({
    args: ["--config", file],
    env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: "rr", [TOKEN_VAR]: TOKEN },
  });
  cleanups.push(async () => void (await ferry.stop()));
  await waitFor(() => ferry.logs().some((l) => typeof l.admin === "string"), 20_000, "the admin listener");
  const line = ferry.logs().find((l) => typeof l.admin === "string")!;
  assert.equal(line.worker, "primary", "the primary serves the admin listener");
  return { ferry, admin: `http://${line.admin as string}` };
}

test("with two workers the page lists both workers' sessions and ends one held by a worker", async () => {
  const echo = await startEchoServer();
  cleanups.push(echo.close);
  const { ferry, admin } = await startClusterWithAdmin();
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${admin}${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}`, ...init.headers } });
  const list = async (): Promise<SessionView[]> => {
    const res = await api("/api/sessions");
    assert.equal(res.status, 200);
    return ((await res.json()) as { sessions: SessionView[] }).sessions;
  };

  const clients: TestClient[] = [];
  cleanups.push(async () => {
    for (const c of clients) c.destroy();
  });
  for (let i = 0; i < 4; i++) {
    const { client, reply } = await socks5Connect(ferry.port, {
      type: "ipv4",
      host: "127.0.0.1",
      port: echo.port,
    });
    assert.equal(reply.reply, 0);
    clients.push(client);
    client.write(Buffer.alloc(100 * (i + 1), i));
    await client.readBytes(100 * (i + 1));
  }
  let sessions: SessionView[] = [];
  const deadline = Date.now() + 20_000;
  while (sessions.length < 4 && Date.now() < deadline) sessions = await list();
  assert.equal(sessions.length, 4, JSON.stringify(sessions));
  const workers = new Set(sessions.map((s) => s.worker));
  assert.deepEqual([...workers].sort(), [1, 2], "sessions from both workers");
  for (const s of sessions) {
    assert.match(s.id, new RegExp(`^${s.worker}:\\d+$`), "ids are prefixed with the worker's index");
    assert.equal(s.target, `127.0.0.1:${echo.port}`);
  }
  // Both workers number their sessions from 1: the prefix keeps the ids apart.
  assert.equal(new Set(sessions.map((s) => s.id)).size, 4);

  // The client with the most bytes is the fourth; whichever worker holds it is asked to end it.
  const victim = sessions.find((s) => s.bytesUp === 400);
  assert.ok(victim, JSON.stringify(sessions));
  const res = await api("/api/sessions/end", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: victim.id }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  assert.deepEqual(
    ((await res.json()) as { ended: SessionView[] }).ended.map((v) => v.id),
    [victim.id],
  );
  await clients[3]!.waitClosed(10_000);
  const line = await ferry.waitForSession((l) => l.reason === "ended from the admin page");
  assert.equal(line.worker, victim.worker, "ended by the worker that held it");
  assert.equal(line.bytesUp, 400);
  assert.ok(
    ferry
      .logs()
      .some((l) => l.event === "admin.session.end" && l.session === victim.id && l.worker === "primary"),
    "the primary logs the admin action",
  );
  const left = await list();
  assert.deepEqual(
    left.map((s) => s.id).sort(),
    sessions
      .filter((s) => s !== victim)
      .map((s) => s.id)
      .sort(),
  );
  for (const c of clients.slice(0, 3)) assert.ok(!c.closed && !c.ended, "the others run on");

  // Per-user totals sum both workers (no authentication: one row for "no user").
  const users = (await (await api("/api/users")).json()) as { users: { user: string; sessions: number }[] };
  assert.deepEqual(
    users.users.map((u) => [u.user, u.sessions]),
    [["", 4]],
  );
});
