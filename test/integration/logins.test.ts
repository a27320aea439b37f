import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import bcrypt from "bcryptjs";
import { LOGIN_LINE_DEFAULTS, type LoginEvent, LoginGuard } from "../../src/auth/login-guard.js";
import { userPassAuth } from "../../src/auth/userpass.js";
import type { FileConfig } from "../../src/config/schema.js";
import {
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
} from "../../src/protocol/socks5.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startEchoServer, waitFor } from "../helpers/net.js";
import { recordFor, TestClient } from "../helpers/socks.js";

const PASSWORD = "Corr3ct-Horse-XYZZY";
const alice = { name: "alice", password: PASSWORD };
/** Every proxy here may reach loopback only. */
const LOOPBACK_ONLY: Partial<FileConfig> = { rules: [{ allow: { to: ["127.0.0.0/8"] } }, { deny: {} }] };

let echo: Awaited<ReturnType<typeof startEchoServer>>;
let dir: string;
before(async () => {
  echo = await startEchoServer();
  dir = await mkdtemp(path.join(tmpdir(), "ferry-logins-"));
});
after(async () => {
  await echo.close();
  await rm(dir, { recursive: true, force: true });
});

/** A connection that has chosen username/password and may send its credentials. */
async function ready(ferry: RunningFerry, localAddress?: string): Promise<TestClient> {
  const c = await TestClient.connect(ferry.port, "127.0.0.1", localAddress);
  c.write(encodeGreeting({ methods: [2] }));
  assert.equal(await c.read(parseMethodSelection, 10_000, "the method selection"), 2);
  return c;
}

interface Reply {
  i: number;
  status: number;
  /** performance.now() when the reply arrived. */
  at: number;
}

/** Sends the credentials; resolves with the RFC 1929 status and when it came. */
async function login(c: TestClient, i: number, username: string, password: string, timeoutMs = 30_000) {
  c.write(encodeUserPassRequest({ username, password }));
  const { status } = await c.read(parseUserPassReply, timeoutMs, `reply ${i}`);
  return { i, status, at: performance.now() };
}

async function usersFile(name: string, lines: string[]): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, `${lines.join("\n")}\n`);
  return file;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Median time, in the test process, of one bcryptjs check at `cost`: what the old server spent per attempt on its own loop. */
function bcryptMs(cost: number, runs = 5): number {
  const hash = bcrypt.hashSync("reference", cost);
  bcrypt.compareSync("warm-up", hash);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    bcrypt.compareSync("not it", hash);
    times.push(performance.now() - t);
  }
  return median(times);
}

describe("login attempts from one address", () => {
  test("30 sent at once are checked one by one, each after the one before has served its delay", async (t) => {
    const ferry = await startFerry(LOOPBACK_ONLY, { inlineUsers: [alice] });
    const logins: LoginEvent[] = [];
    ferry.context.state.logins.on("login", (e) => logins.push(e));
    const clients = await Promise.all(Array.from({ length: 30 }, () => ready(ferry)));
    try {
      // The right password is the fifth sent: a server that checks them all at once lets it in
      // at once; one that lines them up makes it wait out the four failures before it.
      const RIGHT = 4;
      const arrived: Reply[] = [];
      const t0 = performance.now();
      const attempts = clients.map((c, i) =>
        login(c, i, "alice", i === RIGHT ? PASSWORD : `guess-${i}`).then((r) => {
          arrived.push(r);
          return r;
        }),
      );
      for (const a of attempts) a.catch(() => {}); // the rest are cut off below
      const right = await attempts[RIGHT]!;
      assert.equal(right.status, 0, "the right password is still accepted");
      const failedFirst = arrived.filter((r) => r.i !== RIGHT);
      const okAt = logins.findIndex((e) => e.ok);
      const delays = logins.slice(0, okAt).map((e) => e.delayMs);
      // Lined up in the order sent, give or take one the server read out of turn.
      assert.ok(failedFirst.length >= 3, `only ${failedFirst.length} failures answered before the success`);
      assert.equal(failedFirst.length, okAt, "every failure before the success was answered before it");
      assert.deepEqual(
        delays,
        delays.map((_, k) => 200 * 2 ** k),
        "each failure doubled the delay",
      );
      // Each failure's reply came at least its own delay after the one before: the next was not
      // checked until the delay was over. Timers are never early, but are rounded to a
      // millisecond either side of these clock readings.
      let previous = t0;
      failedFirst.forEach((r, k) => {
        assert.equal(r.status, 1);
        assert.ok(
          r.at - previous >= delays[k]! - 2,
          `failure ${k + 1} answered ${(r.at - previous).toFixed(0)} ms after the one before; its delay is ${delays[k]} ms`,
        );
        previous = r.at;
      });
      const sum = delays.reduce((a, b) => a + b, 0);
      t.diagnostic(
        `let in after ${(right.at - t0).toFixed(0)} ms, behind failures held ${delays.join(", ")} ms; replies at ${failedFirst.map((r) => (r.at - t0).toFixed(0)).join(", ")} ms`,
      );
      assert.ok(right.at - t0 >= sum - 2, `let in after ${(right.at - t0).toFixed(0)} ms, before ${sum} ms`);
      // Those still in line leave it when their clients hang up; only one held for its delay stays.
      for (const c of clients) c.destroy();
      await waitFor(() => ferry.context.state.logins.pending() <= 1, 5000, "the line to empty");
    } finally {
      for (const c of clients) c.destroy();
      await ferry.close();
    }
  });

  test(`more than ${LOGIN_LINE_DEFAULTS.maxPendingPerClient} at once: the extra ones are refused at once, unchecked; the server keeps serving`, async () => {
    const ferry = await startFerry(LOOPBACK_ONLY, { inlineUsers: [alice] });
    const bound = LOGIN_LINE_DEFAULTS.maxPendingPerClient;
    const extra = 8;
    const clients = await Promise.all(Array.from({ length: bound + extra }, () => ready(ferry)));
    try {
      const arrived: Reply[] = [];
      const attempts = clients.map((c, i) =>
        login(c, i, "alice", `guess-${i}`).then((r) => {
          arrived.push(r);
          return r;
        }),
      );
      for (const a of attempts) a.catch(() => {});
      // The first one checked fails and holds the line 200 ms, the next 400 ms: all refusals
      // must come before that second failure.
      await waitFor(() => arrived.length >= extra + 2, 30_000, "the refusals and two failures");
      const reasons = await Promise.all(
        arrived.map(async (r) => (await recordFor(ferry, clients[r.i]!.localPort)).reason ?? ""),
      );
      const refused = arrived.filter((_, k) => /too many login attempts in line/.test(reasons[k]!));
      const failed = arrived.filter((_, k) => /wrong password/.test(reasons[k]!));
      assert.equal(refused.length, extra, reasons.join("\n"));
      assert.ok(failed.length >= 2, reasons.join("\n"));
      assert.ok(arrived.every((r) => r.status === 1));
      assert.ok(
        refused.every((r) => r.at < failed[1]!.at),
        "every refusal came before the second failure was checked",
      );
      assert.match(
        reasons.find((r) => /in line/.test(r))!,
        new RegExp(
          `authentication failed for user "alice": too many login attempts in line from 127\\.0\\.0\\.1 \\(${bound}\\); not checked`,
        ),
      );
      // Another client is served meanwhile.
      const other = await ready(ferry, "127.0.0.2");
      try {
        assert.equal((await login(other, -1, "alice", PASSWORD)).status, 0);
        other.write(
          encodeRequest({
            command: "connect",
            address: { type: "ipv4", host: "127.0.0.1", port: echo.port },
          }),
        );
        assert.equal((await other.read(parseReply)).reply, 0);
        other.write("still serving");
        assert.equal((await other.readBytes(13)).toString(), "still serving");
      } finally {
        other.destroy();
      }
      for (const c of clients) c.destroy();
      await waitFor(() => ferry.context.state.logins.pending() <= 1, 5000, "the line to empty");
    } finally {
      for (const c of clients) c.destroy();
      await ferry.close();
    }
  });
});

describe("bcrypt and the event loop", () => {
  test("a CONNECT is served promptly while 30 cost-10 checks run", async (t) => {
    const COST = 10;
    // What the old server did: all 30 checks on its own event loop, one after another.
    const stall = 30 * bcryptMs(COST);
    const file = await usersFile("cost10", [`carol:${bcrypt.hashSync(PASSWORD, COST)}`]);
    const ferry = await startFerry({ ...LOOPBACK_ONLY, users: file, auth: ["userpass", "none"] });
    // From 30 addresses, so no line holds them back: 30 checks at once.
    const clients = await Promise.all(
      Array.from({ length: 30 }, (_, i) => ready(ferry, `127.0.0.${i + 10}`)),
    );
    try {
      const arrived: Reply[] = [];
      const attempts = clients.map((c, i) =>
        login(c, i, "carol", `guess-${i}`, 60_000).then((r) => arrived.push(r)),
      );
      for (const a of attempts) a.catch(() => {}); // awaited at the end, if the test gets there
      const trips: number[] = [];
      for (let k = 0; k < 3; k++) {
        const t = performance.now();
        const c = await TestClient.connect(ferry.port);
        try {
          c.write(
            Buffer.concat([
              encodeGreeting({ methods: [0] }),
              encodeRequest({
                command: "connect",
                address: { type: "ipv4", host: "127.0.0.1", port: echo.port },
              }),
              Buffer.from("ping"),
            ]),
          );
          assert.equal(await c.read(parseMethodSelection, 30_000), 0);
          assert.equal((await c.read(parseReply, 30_000)).reply, 0);
          assert.equal((await c.readBytes(4, 30_000)).toString(), "ping");
        } finally {
          c.destroy();
        }
        trips.push(performance.now() - t);
      }
      const checking = 30 - arrived.length;
      const worst = Math.max(...trips);
      t.diagnostic(
        `CONNECT round trips ${trips.map((x) => x.toFixed(1)).join(", ")} ms; 30 checks on the loop: ${stall.toFixed(0)} ms`,
      );
      assert.ok(
        worst < stall / 4,
        `a CONNECT took ${worst.toFixed(0)} ms (${trips.map((t) => t.toFixed(0)).join(", ")}) while the checks ran; on the event loop they would take ${stall.toFixed(0)} ms`,
      );
      assert.ok(checking > 0, "the checks were still running while the CONNECTs were served");
      await Promise.all(attempts);
    } finally {
      for (const c of clients) c.destroy();
      await ferry.close();
    }
  });
});

describe("user names and timing", () => {
  test("an unknown user costs what a cost-5 user's wrong password does", async (t) => {
    // htpasswd -B makes cost 5; the decoy must not stay at cost 10 (70 ms slower) or be dropped.
    const file = await usersFile("cost5", [`dave:${bcrypt.hashSync(PASSWORD, 5)}`]);
    // Each try is a batch of attempts sent at once, which the server checks one after another
    // (one line per address and user): the few milliseconds of a cost-5 check add up BATCH
    // times over, against the jitter of one exchange.
    const BATCH = 8;
    // No throttle delays here, which would drown what is measured.
    const ferry = await startFerry({ ...LOOPBACK_ONLY, users: file }, {}, (ctx) => ({
      ...ctx,
      methods: [userPassAuth(() => ctx.users, new LoginGuard({ baseDelayMs: 0 }))],
    }));
    try {
      const batch = async (user: string, password = "not-the-password"): Promise<number> => {
        const clients = await Promise.all(Array.from({ length: BATCH }, () => ready(ferry)));
        try {
          const started = performance.now();
          const replies = clients.map((c, i) => login(c, i, user, password));
          for (const r of await Promise.all(replies)) assert.equal(r.status, password === PASSWORD ? 0 : 1);
          return performance.now() - started;
        } finally {
          for (const c of clients) c.destroy();
        }
      };
      // warm up (and the right password's success is remembered, users.ts)
      for (let i = 0; i < 2; i++)
        await Promise.all([batch("dave"), batch("mallory"), batch("dave", PASSWORD)]);
      const known: number[] = [];
      const unknown: number[] = [];
      const free: number[] = [];
      for (let i = 0; i < 11; i++) {
        // Interleaved, so a load that comes and goes weighs on each alike.
        known.push(await batch("dave"));
        unknown.push(await batch("mallory"));
        // The same exchange with no bcrypt in it: the right password, remembered.
        free.push(await batch("dave", PASSWORD));
      }
      // Paired by round, so a load that comes and goes weighs on both sides of each difference.
      const apart = median(unknown.map((u, i) => u - known[i]!));
      // Half of what the checks cost on this server now: an unknown user that skipped them (no
      // decoy) would be a whole of it apart; a decoy at cost 10, some 30 times more.
      const band = median(known.map((k, i) => k - free[i]!)) / 2;
      const figures = `${BATCH} attempts (medians of 11): unknown user ${median(unknown).toFixed(1)} ms, known user's wrong password ${median(known).toFixed(1)} ms, no check ${median(free).toFixed(1)} ms; unknown - known ${apart.toFixed(1)} ms, band ${band.toFixed(1)} ms`;
      t.diagnostic(figures);
      assert.ok(Math.abs(apart) < band, figures);
    } finally {
      await ferry.close();
    }
  });
});
