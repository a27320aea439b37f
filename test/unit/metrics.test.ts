import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { test } from "node:test";
import { UserDatabase } from "../../src/auth/users.js";
import { loadConfig } from "../../src/config/load.js";
import { FerryMetrics } from "../../src/observe/metrics.js";
import type { ServerContext, SessionRecord } from "../../src/server/context.js";
import type { LocalQuotaStore } from "../../src/server/quota-store.js";
import type { FerryServer } from "../../src/server/server.js";
import { ServerState } from "../../src/server/state.js";
import { seriesValue } from "../helpers/prometheus.js";

/** A stand-in for FerryServer: its events, its running sessions and its context. */
async function fakeServer() {
  const config = await loadConfig({
    overrides: {
      listen: ["127.0.0.1:0"],
      groups: { staff: ["bob@EXAMPLE.ORG"] },
      rules: [{ allow: { users: ["carol@EXAMPLE.ORG"] } }],
    },
  });
  const running = new Set<SessionRecord>();
  const emitter = new EventEmitter();
  const current = {
    config,
    users: new UserDatabase([], [{ name: "alice", password: "x" }]),
  } as ServerContext;
  const server = Object.assign(emitter, {
    current,
    activeSessions: 0,
    handshaking: 0,
    sessions: () => running.values(),
  }) as unknown as FerryServer;
  return { server, running };
}

const record = (over: Partial<SessionRecord>): SessionRecord => ({
  id: 1,
  client: "127.0.0.1",
  clientPort: 1,
  bytesUp: 0,
  bytesDown: 0,
  startedAt: Date.now(),
  durationMs: 5,
  ...over,
});

test("bytes and datagrams: counted while a session runs and at its end, each byte once", async () => {
  const { server, running } = await fakeServer();
  const metrics = new FerryMetrics(server);
  const r = record({ user: "alice", rule: "rules[0] (f.yaml:3)", command: "udp", datagramsUp: 0 });
  running.add(r);
  r.bytesUp = 100;
  r.datagramsUp = 2;
  r.datagramsDropped = { "queue full": 1 };
  metrics.refresh();
  metrics.refresh();
  assert.equal(await seriesValue(metrics, "ferry_user_bytes_total", { user: "alice", direction: "up" }), 100);
  assert.equal(await seriesValue(metrics, "ferry_sessions_active", { command: "udp" }), 1);
  r.bytesUp = 250;
  r.datagramsUp = 3;
  r.datagramsDropped = { "queue full": 2, "a reason nobody listed": 1 };
  running.delete(r);
  server.emit("session", r);
  metrics.refresh();
  assert.equal(await seriesValue(metrics, "ferry_user_bytes_total", { user: "alice", direction: "up" }), 250);
  assert.equal(
    await seriesValue(metrics, "ferry_rule_bytes_total", { rule: "rules[0]", direction: "up" }),
    250,
  );
  assert.equal(await seriesValue(metrics, "ferry_udp_datagrams_total", { direction: "up" }), 3);
  assert.equal(await seriesValue(metrics, "ferry_udp_dropped_total", { reason: "queue full" }), 2);
  assert.equal(await seriesValue(metrics, "ferry_udp_dropped_total", { reason: "other" }), 1);
  assert.equal(await seriesValue(metrics, "ferry_sessions_active", { command: "udp" }), 0);
});

test("GSSAPI sessions by protection level; principals a group names are labels, others are not", async () => {
  const { server } = await fakeServer();
  const metrics = new FerryMetrics(server);
  const gss = (user: string, protection: SessionRecord["protection"], bytesUp: number) =>
    server.emit(
      "session",
      record({
        method: "gssapi",
        user,
        protection,
        bytesUp,
        command: "connect",
        reply: 0,
        replyName: "succeeded",
      }),
    );
  gss("bob@EXAMPLE.ORG", "confidentiality", 10);
  gss("eve@EXAMPLE.ORG", "integrity", 20);
  gss("eve@EXAMPLE.ORG", "integrity", 30);
  gss("carol@EXAMPLE.ORG", "none", 5);
  assert.equal(
    await seriesValue(metrics, "ferry_gssapi_sessions_total", { protection: "confidentiality" }),
    1,
  );
  assert.equal(await seriesValue(metrics, "ferry_gssapi_sessions_total", { protection: "integrity" }), 2);
  assert.equal(
    await seriesValue(metrics, "ferry_user_bytes_total", { user: "bob@EXAMPLE.ORG", direction: "up" }),
    10,
  );
  assert.equal(await seriesValue(metrics, "ferry_user_bytes_total", { user: "other", direction: "up" }), 50);
  assert.equal(
    await seriesValue(metrics, "ferry_user_bytes_total", { user: "carol@EXAMPLE.ORG", direction: "up" }),
    5,
  );
  assert.equal(await seriesValue(metrics, "ferry_gssapi_sessions_total", { protection: "none" }), 1);
  assert.equal(
    await seriesValue(metrics, "ferry_sessions_total", { command: "connect", outcome: "succeeded" }),
    4,
  );
});

test("refusals: a client rule is a denial, a limit is a limit, running out of files counts each connection", async () => {
  const { server } = await fakeServer();
  const metrics = new FerryMetrics(server);
  server.emit("refused", {
    client: "10.0.0.1",
    clientPort: 1,
    reason: "client refused by rule clients[1]: x",
    rule: "clients[1] (f.yaml:9)",
  });
  server.emit("refused", {
    client: "10.0.0.1",
    clientPort: 2,
    reason: "session limit for 10.0.0.1 reached (2)",
  });
  server.emit("fdExhausted", { connections: 10, closed: 3 });
  server.emit(
    "session",
    record({
      reason: "refused: user alice already has 1 sessions (limits.sessionsPerUser)",
      reply: 2,
      replyName: "connection not allowed by ruleset",
      command: "connect",
    }),
  );
  assert.equal(await seriesValue(metrics, "ferry_denials_total", { stage: "client", rule: "clients[1]" }), 1);
  assert.equal(await seriesValue(metrics, "ferry_limits_hit_total", { limit: "sessions_per_client" }), 1);
  assert.equal(await seriesValue(metrics, "ferry_limits_hit_total", { limit: "open_files" }), 3);
  assert.equal(await seriesValue(metrics, "ferry_limits_hit_total", { limit: "sessions_per_user" }), 1);
  assert.equal(
    await seriesValue(metrics, "ferry_sessions_total", { command: "connect", outcome: "not_allowed" }),
    1,
  );
  // SOCKS4's rejection carries the SOCKS5 reason it stands for.
  server.emit(
    "session",
    record({ reply: 91, replyName: "request rejected or failed (host unreachable)", command: "connect" }),
  );
  assert.equal(
    await seriesValue(metrics, "ferry_sessions_total", { command: "connect", outcome: "host_unreachable" }),
    1,
  );
});

test("quota gauges: each user's use and limit this period, from the quota report", async () => {
  const { server } = await fakeServer();
  const config = await loadConfig({
    overrides: {
      listen: ["127.0.0.1:0"],
      limits: { quota: { perUser: "1MiB/day", stateFile: "/nonexistent" } },
    },
  });
  const state = new ServerState();
  state.quotas.adopt(config);
  const day = new Date().toISOString().slice(0, 10);
  (state.quotas.store as LocalQuotaStore).add("alice", `day:${day}`, 4096);
  const metrics = new FerryMetrics(server, state);
  assert.equal(await seriesValue(metrics, "ferry_quota_used_bytes", { user: "alice", period: "day" }), 4096);
  assert.equal(
    await seriesValue(metrics, "ferry_quota_limit_bytes", { user: "alice", period: "day" }),
    1048576,
  );
  (state.quotas.store as LocalQuotaStore).add("alice", `day:${day}`, 1000);
  assert.equal(await seriesValue(metrics, "ferry_quota_used_bytes", { user: "alice", period: "day" }), 5096);
});
