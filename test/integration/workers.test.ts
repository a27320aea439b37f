import assert from "node:assert/strict";
import { createHash, type Hash, randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { encodeGreeting, parseMethodSelection } from "../../src/protocol/socks5.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { sendControl } from "../../src/server/control.js";
import { type FerryProcess, type LogLine, spawnFerry } from "../helpers/ferry-process.js";
import { listenClosable, sleep, startEchoServer, startEndlessSource, waitFor } from "../helpers/net.js";
import { tempDir } from "../helpers/process.js";
import { socks5Connect, TestClient } from "../helpers/socks.js";
import { ANY_V4, socks5Request } from "../helpers/socks-raw.js";

/**
 * `ferry serve --workers 2`, real processes. Every test here counts something both workers did,
 * so a limit kept per worker (twice the cap), or a reload or stop that reaches one worker, fails.
 * The limit tests run the cluster round-robin (NODE_CLUSTER_SCHED_POLICY=rr, which Ferry
 * honours) so that consecutive connections go to alternate workers; which worker served each
 * session is read from its log line (`pid`).
 */

const ALICE = { name: "alice", password: "wonderland" };
const echoTarget = (port: number) => ({ type: "ipv4" as const, host: "127.0.0.1", port });

interface Cluster {
  ferry: FerryProcess;
  primary: number;
  workers: number[];
  config: string;
  remove(): Promise<void>;
}

/** Starts ferry with 2 workers and `config` (JSON is YAML); returns its primary's and workers' PIDs. */
async function startCluster(
  config: Record<string, unknown>,
  options: { roundRobin?: boolean; users?: { name: string; password: string }[] } = {},
): Promise<Cluster> {
  const dir = await tempDir("ferry-workers-");
  const file = join(dir.path, "ferry.yaml");
  await writeFile(file, JSON.stringify({ workers: 2, ...config }));
  const ferry = await spawnFerry({
    args: ["--config", file],
    users: options.users ?? [],
    env: { ...process.env, ...(options.roundRobin !== false && { NODE_CLUSTER_SCHED_POLICY: "rr" }) },
  }).catch(async (err) => {
    await dir.remove();
    throw err;
  });
  const line = ferry.logs().find((l) => l.msg.startsWith("ferry listening on"))!;
  const workers = line.workerPids as number[];
  assert.equal(workers.length, 2, "two workers listening");
  return {
    ferry,
    primary: line.pid as number,
    workers,
    config: file,
    remove: async () => {
      await ferry.stop();
      await dir.remove();
    },
  };
}

/** Log lines from `pid` whose message starts with `prefix`. */
const linesOf = (ferry: FerryProcess, prefix: string, pid?: number): LogLine[] =>
  ferry.logs().filter((l) => l.msg.startsWith(prefix) && (pid === undefined || l.pid === pid));

/** A SOCKS5 CONNECT to the echo server as `user` (if given): the client and its reply code. */
async function connect(
  port: number,
  echoPort: number,
  user?: { name: string; password: string },
): Promise<{ client: TestClient; reply: number }> {
  const { client, reply } = await socks5Connect(
    port,
    echoTarget(echoPort),
    user ? { user: user.name, password: user.password } : {},
  );
  return { client, reply: reply.reply };
}

/** Proves a session carries bytes both ways. */
async function echoes(client: TestClient): Promise<void> {
  const probe = randomBytes(32);
  client.write(probe);
  assert.deepEqual(await client.readBytes(probe.length), probe);
}

describe("workers: limits hold across workers", () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    echo = await startEchoServer();
  });
  after(async () => {
    await echo.close();
  });

  test("sessionsPerUser: 3 admits exactly 3 of 7 sessions spread over both workers, and a freed slot is used by the other", async () => {
    const c = await startCluster({ limits: { sessionsPerUser: 3 } }, { users: [ALICE] });
    const clients: TestClient[] = [];
    try {
      const replies: number[] = [];
      for (let i = 0; i < 7; i++) {
        const { client, reply } = await connect(c.ferry.port, echo.port, ALICE);
        clients.push(client);
        replies.push(reply);
        if (reply === 0) await echoes(client);
      }
      assert.equal(replies.filter((r) => r === 0).length, 3, `replies ${replies}`);
      assert.ok(
        replies.filter((r) => r !== 0).every((r) => r === 2),
        `refusals are 0x02: ${replies}`,
      );
      // The refused ones have ended: their lines say which worker refused them.
      await waitFor(() => c.ferry.sessions().length >= 4, 10_000, "the refusals' session lines");
      const refusedBy = new Set(c.ferry.sessions().map((s) => s.pid));
      assert.equal(refusedBy.size, 2, "both workers refused some");
      for (const s of c.ferry.sessions()) assert.match(s.reason ?? "", /already has 3 sessions/);

      // One admitted session ends: exactly one more is admitted, whichever worker takes it.
      const admitted = clients.filter((_, i) => replies[i] === 0);
      admitted[0]!.destroy();
      await waitFor(() => c.ferry.sessions().length >= 5, 10_000, "the closed session's line");
      const more: number[] = [];
      for (let i = 0; i < 3; i++) {
        const { client, reply } = await connect(c.ferry.port, echo.port, ALICE);
        clients.push(client);
        more.push(reply);
      }
      assert.deepEqual(
        more.map((r) => r === 0),
        [true, false, false],
        `after one closed, one more admitted: ${more}`,
      );
      for (const cl of clients) cl.destroy();
      await waitFor(() => c.ferry.sessions().length >= 10, 10_000, "every session line");
      const admittedBy = new Set(
        c.ferry
          .sessions()
          .filter((s) => s.reply === 0)
          .map((s) => s.pid),
      );
      assert.equal(admittedBy.size, 2, "both workers admitted sessions");
      for (const pid of [...refusedBy, ...admittedBy]) assert.ok(c.workers.includes(pid as number));
    } finally {
      for (const cl of clients) cl.destroy();
      await c.remove();
    }
  });

  test("login throttling: failures from one address double the delay whichever worker checks them", async () => {
    const c = await startCluster({}, { users: [ALICE] });
    try {
      for (let i = 0; i < 4; i++) {
        const client = await TestClient.connect(c.ferry.port);
        try {
          client.write(encodeGreeting({ methods: [2] }));
          assert.equal(await client.read(parseMethodSelection), 2);
          client.write(encodeUserPassRequest({ username: "alice", password: `guess-${i}` }));
          const status = await client.read(parseUserPassReply, 30_000, "the RFC 1929 reply");
          assert.equal(status.ok, false);
        } finally {
          client.destroy();
        }
      }
      await waitFor(() => linesOf(c.ferry, "failed login").length >= 4, 10_000, "four failed-login lines");
      const failed = linesOf(c.ferry, "failed login");
      // One memory for the address: 1, 2, 3, 4 failures and 200, 400, 800, 1600 ms, not 1, 1, 2, 2.
      assert.deepEqual(
        failed.map((l) => l.failures),
        [1, 2, 3, 4],
      );
      assert.deepEqual(
        failed.map((l) => l.delayMs),
        [200, 400, 800, 1600],
      );
      assert.equal(new Set(failed.map((l) => l.pid)).size, 2, "both workers checked logins");
    } finally {
      await c.remove();
    }
  });

  test("bandwidth.perUser holds for the sum of a user's streams on both workers, each way", async () => {
    const rate = 256 * 1024;
    // A short drain: the upload sessions still have megabytes in their socket buffers to relay
    // at the capped rate when the test ends, and are cut at the stop.
    const c = await startCluster(
      { limits: { bandwidth: { perUser: "256KiB/s" } }, timeouts: { drain: "1s" } },
      { users: [ALICE] },
    );
    // A source that sends without end, and a sink that counts what it gets.
    let sunk = 0;
    const chunk = Buffer.alloc(16 * 1024, 1);
    const source = await startEndlessSource(chunk);
    const sink = await listenClosable(
      net.createServer((s) => {
        s.on("error", () => {});
        s.on("data", (d: Buffer) => {
          sunk += d.length;
        });
      }),
    );
    const clients: TestClient[] = [];
    try {
      // Round-robin: downloads on workers 1 and 2, then uploads on 1 and 2 (checked below).
      let received = 0;
      for (const target of [source, source, sink, sink]) {
        const { client, reply } = await socks5Connect(c.ferry.port, echoTarget(target.port), {
          user: ALICE.name,
          password: ALICE.password,
        });
        assert.equal(reply.reply, 0);
        clients.push(client);
        if (target === source) {
          client.socket.removeAllListeners("data");
          client.socket.on("data", (d: Buffer) => {
            received += d.length;
          });
        } else {
          const pump = () => {
            while (!client.socket.destroyed && client.socket.write(chunk)) {}
          };
          client.socket.on("drain", pump);
          pump();
        }
      }
      // After the first burst, bytes over 4 s: about the rate, not twice it.
      await sleep(500);
      const [down0, up0, t0] = [received, sunk, performance.now()];
      await sleep(4000);
      const seconds = (performance.now() - t0) / 1000;
      const down = (received - down0) / seconds / rate;
      const up = (sunk - up0) / seconds / rate;
      assert.ok(down > 0.6 && down < 1.4, `download at ${down.toFixed(2)}x the per-user rate`);
      assert.ok(up > 0.6 && up < 1.4, `upload at ${up.toFixed(2)}x the per-user rate`);
      // Each stream logged its login, in the order they were opened: which worker took it.
      const logins = linesOf(c.ferry, "login: alice").map((l) => l.pid);
      assert.equal(logins.length, 4);
      assert.notEqual(logins[0], logins[1], "both workers carried downloads");
      assert.notEqual(logins[2], logins[3], "both workers carried uploads");
    } finally {
      for (const cl of clients) cl.destroy();
      await Promise.all([source.close(), sink.close()]);
      await c.remove();
    }
  });

  test("associationsPerClient: 2 admits exactly 2 of 5 UDP associations over both workers", async () => {
    const c = await startCluster({ limits: { associationsPerClient: 2 } });
    const open: Awaited<ReturnType<typeof socks5Request>>[] = [];
    try {
      const replies: number[] = [];
      for (let i = 0; i < 5; i++) {
        const a = await socks5Request({ host: "127.0.0.1", port: c.ferry.port }, "udp", ANY_V4);
        open.push(a);
        replies.push(a.reply.reply);
      }
      assert.equal(replies.filter((r) => r === 0).length, 2, `replies ${replies}`);
      await waitFor(() => c.ferry.sessions().length >= 3, 10_000, "the refusals' lines");
      for (const s of c.ferry.sessions()) assert.match(s.reason ?? "", /UDP association limit/);
      for (const a of open) a.socket.destroy();
      await waitFor(() => c.ferry.sessions().length >= 5, 10_000, "every line");
      assert.equal(new Set(c.ferry.sessions().map((s) => s.pid)).size, 2, "both workers served");
      assert.equal(
        new Set(
          c.ferry
            .sessions()
            .filter((s) => s.reply === 0)
            .map((s) => s.pid),
        ).size,
        2,
      );
    } finally {
      for (const a of open) a.socket.destroy();
      await c.remove();
    }
  });
});

describe("workers: reload, stop and a crash reach every worker", () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    echo = await startEchoServer();
  });
  after(async () => {
    await echo.close();
  });

  test("a reload through the control socket changes the rules of both workers", async () => {
    const dir = await tempDir("ferry-workers-control-");
    const control = join(dir.path, "ferry.sock");
    const c = await startCluster({ control, rules: [{ allow: { to: ["127.0.0.1"] } }] });
    try {
      for (let i = 0; i < 2; i++) {
        const { client, reply } = await connect(c.ferry.port, echo.port);
        assert.equal(reply, 0, "allowed before the reload");
        client.destroy();
      }
      await writeFile(c.config, JSON.stringify({ workers: 2, control, rules: [{ deny: {} }] }));
      const answer = await sendControl(control, "reload");
      assert.ok(answer.ok, answer.message);
      assert.match(answer.message, /in all 2 workers/);
      const before = c.ferry.sessions().length;
      for (let i = 0; i < 4; i++) {
        const { client, reply } = await connect(c.ferry.port, echo.port);
        assert.equal(reply, 2, `denied after the reload (connection ${i + 1})`);
        client.destroy();
      }
      await waitFor(() => c.ferry.sessions().length >= before + 4, 10_000, "the denials' lines");
      const denied = c.ferry.sessions().slice(before);
      assert.equal(new Set(denied.map((s) => s.pid)).size, 2, "both workers denied");
    } finally {
      await c.remove();
      await dir.remove();
    }
  });

  test("SIGTERM to the primary drains both workers: live sessions go on, then everything exits 0", async () => {
    const c = await startCluster({ timeouts: { drain: "20s" } });
    const clients: TestClient[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const { client, reply } = await connect(c.ferry.port, echo.port);
        assert.equal(reply, 0);
        clients.push(client);
      }
      process.kill(c.primary, "SIGTERM");
      for (const pid of c.workers) {
        await waitFor(
          () => linesOf(c.ferry, "stop from the primary", pid).length > 0,
          10_000,
          `worker ${pid} draining`,
        );
      }
      // Draining, not cut: both sessions (one on each worker) still carry bytes.
      for (const cl of clients) await echoes(cl);
      for (const cl of clients) cl.destroy();
      const exit = await Promise.race([c.ferry.exited, sleep(15_000).then(() => undefined)]);
      assert.deepEqual(exit, { code: 0, signal: null }, "ferry exits 0 once the sessions end");
      for (const pid of [...c.workers, c.primary]) {
        assert.equal(linesOf(c.ferry, "stopped", pid).length, 1, `${pid} logged stopped`);
      }
      const served = new Set(c.ferry.sessions().map((s) => s.pid));
      assert.equal(served.size, 2, "the two drained sessions were on different workers");
    } finally {
      for (const cl of clients) cl.destroy();
      await c.remove();
    }
  });

  test("SIGKILL of one worker: logged, replaced, and the other worker's sessions keep carrying data", async () => {
    const c = await startCluster({});
    const clients: TestClient[] = [];
    try {
      const sent: Hash[] = [];
      const got: Hash[] = [];
      for (let i = 0; i < 4; i++) {
        const { client, reply } = await connect(c.ferry.port, echo.port);
        assert.equal(reply, 0);
        clients.push(client);
        sent.push(createHash("sha256"));
        got.push(createHash("sha256"));
      }
      /** Sends `n` random bytes on session i and reads their echo, hashing both. */
      const exchange = async (i: number, n: number): Promise<void> => {
        const data = randomBytes(n);
        sent[i]!.update(data);
        clients[i]!.write(data);
        got[i]!.update(await clients[i]!.readBytes(n, 5000));
      };
      for (let i = 0; i < 4; i++) await exchange(i, 64 * 1024);
      const victim = c.workers[0]!;
      process.kill(victim, "SIGKILL");
      const gone = (cl: TestClient) => cl.ended || cl.closed;
      await waitFor(() => clients.filter(gone).length >= 2, 10_000, "the killed worker's sessions to close");
      const survivors = clients.flatMap((cl, i) => (gone(cl) ? [] : [i]));
      assert.equal(survivors.length, 2, "the other worker's two sessions are still open");
      for (const i of survivors) await exchange(i, 256 * 1024);
      for (const i of survivors) assert.equal(got[i]!.copy().digest("hex"), sent[i]!.copy().digest("hex"));

      await waitFor(() => linesOf(c.ferry, "worker 1 (pid").length > 0, 10_000, "the death's line");
      assert.match(
        linesOf(c.ferry, "worker 1 (pid")[0]!.msg,
        new RegExp(`pid ${victim}\\) exited \\(SIGKILL\\)`),
      );
      await waitFor(
        () => c.ferry.logs().some((l) => /^worker 1 \(pid \d+\) listening/.test(l.msg)),
        20_000,
        "a replacement worker",
      );
      const replacement = c.ferry
        .logs()
        .find((l) => /^worker 1 \(pid \d+\) listening/.test(l.msg))!.workerPid;
      assert.notEqual(replacement, victim);
      // The survivors' sessions end cleanly on their own worker; new sessions are served.
      for (const i of survivors) clients[i]!.destroy();
      for (let i = 0; i < 4; i++) {
        const { client, reply } = await connect(c.ferry.port, echo.port);
        assert.equal(reply, 0, "served after the replacement");
        await echoes(client);
        client.destroy();
      }
      await waitFor(() => c.ferry.sessions().length >= 6, 10_000, "the survivors' lines");
      const survivorLines = c.ferry.sessions().filter((s) => s.bytesUp === 64 * 1024 + 256 * 1024);
      assert.equal(survivorLines.length, 2);
      for (const s of survivorLines) assert.equal(s.pid, c.workers[1]);
    } finally {
      for (const cl of clients) cl.destroy();
      await c.remove();
    }
  });
});
