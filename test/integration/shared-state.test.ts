import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { LoginEvent } from "../../src/auth/login-guard.js";
import type { FileConfig } from "../../src/config/schema.js";
import { RedisLimitStore, type SharedStatus } from "../../src/shared/redis-store.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { sleep, startEchoServer, startEndlessSource, waitFor } from "../helpers/net.js";
import { type RunningRedis, startRedis } from "../helpers/redis.js";
import { socks5Connect, type TestClient, userPassLogin } from "../helpers/socks.js";

/**
 * Two Ferry instances (in this process, each with its own server state) sharing one
 * redis-server: every limit here is counted by both, so a limit kept per instance (twice the
 * cap, or a login throttle that forgets) fails. Redis is started by the test and killed by PID.
 */

const ALICE = { name: "alice", password: "wonderland" };
const BOB = { name: "bob", password: "builder" };
const USERS = [ALICE, BOB];
const echoTarget = (port: number) => ({ type: "ipv4" as const, host: "127.0.0.1", port });

let prefixes = 0;

/** Two instances with `config` sharing `redis` under a key prefix of their own. */
async function twoInstances(redis: RunningRedis, config: Partial<FileConfig>): Promise<RunningFerry[]> {
  const state = { redis: redis.url, prefix: `test${process.pid}-${prefixes++}:` };
  const a = await startFerry({ ...config, state }, { inlineUsers: USERS });
  const b = await startFerry({ ...config, state }, { inlineUsers: USERS }).catch(async (err) => {
    await a.close();
    throw err;
  });
  return [a, b];
}

const storeOf = (f: RunningFerry): RedisLimitStore => {
  const store = f.context.state.store;
  assert.ok(store instanceof RedisLimitStore, "the instance keeps its limits in Redis");
  return store;
};

/** A CONNECT as `user` through `ferry`: the client and the reply code. */
async function connectAs(ferry: RunningFerry, echoPort: number, user: { name: string; password: string }) {
  const { client, reply } = await socks5Connect(ferry.port, echoTarget(echoPort), {
    user: user.name,
    password: user.password,
  });
  return { client, reply: reply.reply };
}

const login = (f: RunningFerry, user: string, password: string) => userPassLogin(f.port, user, password);

describe("shared state in Redis: two instances", () => {
  test("sessionsPerUser: 3 holds across both instances, the fourth refused wherever it lands", async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const echo = await startEchoServer();
    const [a, b] = await twoInstances(redis, { limits: { sessionsPerUser: 3 } });
    const open: TestClient[] = [];
    try {
      for (const f of [a!, b!, a!]) {
        const { client, reply } = await connectAs(f, echo.port, ALICE);
        open.push(client);
        assert.equal(reply, 0, "the first three sessions are admitted");
      }
      for (const f of [b!, a!]) {
        const { client, reply } = await connectAs(f, echo.port, ALICE);
        client.destroy();
        assert.notEqual(reply, 0, "a fourth session is refused on either instance");
      }
      // Another user is not held back by alice's count.
      const other = await connectAs(b!, echo.port, BOB);
      other.client.destroy();
      assert.equal(other.reply, 0);
      // One of alice's ends on a: its slot is free for a session on b.
      open.shift()!.destroy();
      await waitFor(() => storeOf(a!).heldHere("user\0alice") === 1, 10_000, "a's slot given back");
      let admitted = false;
      for (let i = 0; i < 50 && !admitted; i++) {
        const { client, reply } = await connectAs(b!, echo.port, ALICE);
        if (reply === 0) {
          admitted = true;
          open.push(client);
        } else {
          client.destroy();
          await sleep(50);
        }
      }
      assert.ok(admitted, "the freed slot is taken on the other instance");
    } finally {
      for (const c of open) c.destroy();
      await Promise.all([a!.close(), b!.close()]);
      await echo.close();
      await redis.stop();
    }
  });

  test("a rule's bandwidth is shared: two users' downloads on two instances together get about the rate", async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const rate = 256 * 1024;
    const [a, b] = await twoInstances(redis, {
      rules: [{ allow: { users: ["alice", "bob"], bandwidth: "256KiB/s" } }],
    });
    const source = await startEndlessSource(Buffer.alloc(16 * 1024, 1));
    const clients: TestClient[] = [];
    let received = 0;
    try {
      const port = source.port;
      for (const [f, user] of [
        [a!, ALICE],
        [b!, BOB],
      ] as const) {
        const { client, reply } = await connectAs(f, port, user);
        clients.push(client);
        assert.equal(reply, 0);
        client.socket.removeAllListeners("data");
        client.socket.on("data", (d: Buffer) => {
          received += d.length;
        });
      }
      // After the first bursts, bytes over 4 s: about the rate, not twice it (one bucket each).
      await sleep(1000);
      const [r0, t0] = [received, performance.now()];
      await sleep(4000);
      const ratio = (received - r0) / ((performance.now() - t0) / 1000) / rate;
      assert.ok(
        ratio > 0.6 && ratio < 1.4,
        `both downloads together at ${ratio.toFixed(2)}x the rule's rate`,
      );
    } finally {
      for (const c of clients) c.destroy();
      await source.close();
      await Promise.all([a!.close(), b!.close()]);
      await redis.stop();
    }
  });

  test("failed logins on one instance throttle the next attempt on the other", async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const [a, b] = await twoInstances(redis, {});
    const events: LoginEvent[] = [];
    b!.context.state.logins.on("login", (e) => events.push(e));
    try {
      for (let i = 0; i < 3; i++) assert.equal((await login(a!, "alice", "wrong")).ok, false);
      // The fourth failure from this address, counted on b: held 200 ms * 2^3.
      const fourth = await login(b!, "alice", "still wrong");
      assert.equal(fourth.ok, false);
      assert.equal(events.at(-1)?.failures, 4, "b knows a's three failures");
      assert.equal(events.at(-1)?.delayMs, 1600);
      assert.ok(fourth.ms >= 1400, `b held its failure reply ${fourth.ms.toFixed(0)} ms`);
      // The right password on a: checked once the hold b set is over, with the failures known.
      const right = await login(a!, "alice", ALICE.password);
      assert.equal(right.ok, true);
    } finally {
      await Promise.all([a!.close(), b!.close()]);
      await redis.stop();
    }
  });

  test("Redis killed mid-test: both keep serving alone, then share again once it is back", async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const echo = await startEchoServer();
    const [a, b] = await twoInstances(redis, { limits: { sessionsPerUser: 3 } });
    const changes = new Map<RedisLimitStore, SharedStatus[]>();
    const open: TestClient[] = [];
    const connectOk = async (f: RunningFerry) => {
      const { client, reply } = await connectAs(f, echo.port, ALICE);
      open.push(client);
      assert.equal(reply, 0);
    };
    try {
      for (const f of [a!, b!]) {
        const s = storeOf(f);
        assert.equal(s.shared, true, "sharing from the start");
        changes.set(s, []);
        s.on("status", (st) => changes.get(s)!.push(st));
      }
      await connectOk(a!);
      await connectOk(a!);
      await redis.kill();
      await waitFor(() => !storeOf(a!).shared && !storeOf(b!).shared, 10_000, "both to notice Redis is gone");
      // Serving goes on, with each instance's own count: b holds none of alice's yet.
      await connectOk(b!);
      await redis.restart();
      await waitFor(() => storeOf(a!).shared && storeOf(b!).shared, 15_000, "both to share again");
      // The new Redis knows a's two and b's one: a fourth session is refused on either.
      for (const f of [a!, b!]) {
        const { client, reply } = await connectAs(f, echo.port, ALICE);
        client.destroy();
        assert.notEqual(reply, 0, "the slots held through the outage were written back");
      }
      for (const [store, seen] of changes) {
        assert.deepEqual(
          seen.map((s) => s.shared),
          [false, true],
          `${store.instance}: told once when Redis went and once when it came back`,
        );
      }
    } finally {
      for (const c of open) c.destroy();
      await Promise.all([a!.close(), b!.close()]);
      await echo.close();
      await redis.stop();
    }
  });

  test("a crashed instance's slots are free again once its heartbeat stops", async (t) => {
    const redis = await startRedis(t);
    if (!redis) return;
    const prefix = `crash${process.pid}:`;
    const crashed = new RedisLimitStore({ url: redis.url, prefix, instanceTtlMs: 1500 });
    const survivor = new RedisLimitStore({ url: redis.url, prefix, instanceTtlMs: 1500 });
    try {
      await Promise.all([crashed.ready(), survivor.ready()]);
      const claim = [{ key: "user\0carol", limit: 2 }];
      for (let i = 0; i < 2; i++) assert.ok("release" in (await crashed.take(claim)));
      assert.ok(
        "refused" in (await survivor.take(claim)),
        "the crashed instance's slots count while it beats",
      );
      // No release: the connection and the heartbeat just stop.
      await crashed.close();
      const t0 = Date.now();
      let taken = false;
      while (!taken && Date.now() - t0 < 10_000) {
        taken = "release" in (await survivor.take(claim));
        if (!taken) await sleep(100);
      }
      assert.ok(taken, "a slot is free again after the dead instance's time-out");
      assert.ok(Date.now() - t0 >= 1000, "not before the instance could have been taken for dead");
    } finally {
      await Promise.all([crashed.close(), survivor.close()]);
      await redis.stop();
    }
  });
});
