import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { addressOf } from "../../src/protocol/address.js";
import { encodeGreeting, parseMethodSelection } from "../../src/protocol/socks5.js";
import { encodeUdpDatagram, parseUdpDatagram } from "../../src/protocol/udp.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { FERRY_BIN, type FerryProcess, type SessionLine, spawnFerry } from "../helpers/ferry-process.js";
import { startEchoServer, waitFor } from "../helpers/net.js";
import { childPid } from "../helpers/proc.js";
import { describeRun, freePort, run, tempDir } from "../helpers/process.js";
import { adminGet, PROMETHEUS_PARSER, type Scrape, scrape } from "../helpers/prometheus.js";
import { socks5Connect, TestClient } from "../helpers/socks.js";
import { socks5Request } from "../helpers/socks-raw.js";
import { requirePythonModule } from "../helpers/tools.js";
import { sendTo, startUdpEcho, udpClient } from "../helpers/udp.js";

/**
 * The admin listener and /metrics through the real CLI: a scripted mix of sessions, then the
 * Prometheus text parsed with a parser and every counter compared with the session lines the
 * same process logged.
 */

const TOKEN = "t0ken-for-tests";
const ALICE = { name: "alice", password: "wonderland" };

interface Admin {
  ferry: FerryProcess;
  base: string;
  remove(): Promise<void>;
}

/** ferry serve with `config` (JSON is YAML) plus an admin listener on a free loopback port. */
async function startWithAdmin(
  config: Record<string, unknown>,
  options: { users?: { name: string; password: string }[]; env?: NodeJS.ProcessEnv } = {},
): Promise<Admin> {
  const dir = await tempDir("ferry-admin-");
  await writeFile(join(dir.path, "token"), `${TOKEN}\n`);
  const adminPort = await freePort();
  const file = join(dir.path, "ferry.yaml");
  await writeFile(
    file,
    JSON.stringify({ admin: { listen: `127.0.0.1:${adminPort}`, tokenFile: "token" }, ...config }),
  );
  const ferry = await spawnFerry({
    args: ["--config", file],
    users: options.users ?? [],
    ...(options.env && { env: options.env }),
  }).catch(async (err) => {
    await dir.remove();
    throw err;
  });
  const base = `http://127.0.0.1:${adminPort}`;
  // The admin listener opens just after the SOCKS one.
  await waitFor(
    () => ferry.logs().some((l) => l.msg.startsWith("admin listener on")),
    10_000,
    "the admin line",
  );
  return {
    ferry,
    base,
    remove: async () => {
      await ferry.stop();
      await dir.remove();
    },
  };
}

/** A SOCKS5 login that must fail (RFC 1929 status non-zero). */
async function failedLogin(port: number, user: string, password: string): Promise<void> {
  const client = await TestClient.connect(port);
  try {
    client.write(encodeGreeting({ methods: [2] }));
    assert.equal(await client.read(parseMethodSelection, 10_000, "the method selection"), 2);
    client.write(encodeUserPassRequest({ username: user, password }));
    const status = await client.read(parseUserPassReply, 30_000, "the RFC 1929 reply");
    assert.equal(status.ok, false, "the login must fail");
  } finally {
    client.destroy();
  }
}

/** One CONNECT that carries `n` bytes to the echo server and back; the client stays open. */
async function echoSession(
  port: number,
  echoPort: number,
  n: number,
  user?: { name: string; password: string },
): Promise<TestClient> {
  const { client, reply } = await socks5Connect(
    port,
    { type: "ipv4", host: "127.0.0.1", port: echoPort },
    user ? { user: user.name, password: user.password } : {},
  );
  assert.equal(reply.reply, 0, "CONNECT succeeds");
  const data = randomBytes(n);
  client.write(data);
  assert.deepEqual(await client.readBytes(n), data);
  return client;
}

/** The log's outcome words (src/protocol/errors.ts) as the metric's outcome label. */
const OUTCOME: Record<string, string> = {
  succeeded: "succeeded",
  "connection not allowed by ruleset": "not_allowed",
  "connection refused": "connection_refused",
  "no reply": "no_reply",
};

/** Sums `value` of the lines grouped by `key`, as "label=value,..." like Scrape.nonZero. */
function tally(lines: SessionLine[], key: (l: SessionLine) => string, value: (l: SessionLine) => number) {
  const out: Record<string, number> = {};
  for (const l of lines) {
    const v = value(l);
    if (v > 0) out[key(l)] = (out[key(l)] ?? 0) + v;
  }
  return out;
}

const place = (rule: unknown): string => String(rule ?? "none").replace(/ \(.*\)$/, "");

describe("admin listener and /metrics", () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let capped: Awaited<ReturnType<typeof startEchoServer>>;
  let udpEcho: Awaited<ReturnType<typeof startUdpEcho>>;
  let admin: Admin;
  before(async () => {
    echo = await startEchoServer();
    capped = await startEchoServer();
    udpEcho = await startUdpEcho();
    admin = await startWithAdmin(
      {
        auth: ["userpass", "none"],
        rules: [
          { deny: { to: "127.0.0.2" } },
          { allow: { to: "127.0.0.1", ports: capped.port, sessions: 1 } },
          { allow: { to: ["127.0.0.0/8", "::1"] } },
        ],
      },
      { users: [ALICE] },
    );
  });
  after(async () => {
    await admin?.remove();
    await echo?.close();
    await capped?.close();
    await udpEcho?.close();
  });

  test("the token: 401 without it or with a wrong one, 200 with it (header, cookie, query)", async () => {
    const none = await adminGet(admin.base, "/metrics");
    assert.equal(none.status, 401);
    assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer/);
    assert.equal((await adminGet(admin.base, "/metrics", "wrong")).status, 401);
    assert.equal((await adminGet(admin.base, "/metrics", `${TOKEN}x`)).status, 401);
    const ok = await adminGet(admin.base, "/metrics", TOKEN);
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    assert.equal(
      (await adminGet(admin.base, "/metrics", undefined, { cookie: `ferry_admin=${TOKEN}` })).status,
      200,
    );
    const byQuery = await adminGet(admin.base, `/metrics?token=${TOKEN}`);
    assert.equal(byQuery.status, 200);
    assert.match(byQuery.headers.get("set-cookie") ?? "", /^ferry_admin=.*HttpOnly; SameSite=Strict/);
    // The probes need none; unknown paths and methods are told apart.
    assert.equal((await adminGet(admin.base, "/healthz")).status, 200);
    const ready = await adminGet(admin.base, "/readyz");
    assert.deepEqual([ready.status, ready.text], [200, "ready\n"]);
    assert.equal((await adminGet(admin.base, "/nothing-here", TOKEN)).status, 404);
    const post = await fetch(`${admin.base}/metrics`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    await post.text();
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
  });

  test("a scripted mix of sessions: every counter equals what the session lines say, bytes counted live and once", async (t) => {
    if (!requirePythonModule(t, PROMETHEUS_PARSER.module, PROMETHEUS_PARSER.debianPackage)) return;
    const { ferry, base } = admin;
    const port = ferry.port;
    const skip = ferry.sessions().length;
    const lines = () => ferry.sessions().slice(skip);
    const waitLines = (n: number) => waitFor(() => lines().length >= n, 20_000, `${n} session lines`);

    // Alice three times, an anonymous client once.
    for (const n of [1000, 2000, 3000]) (await echoSession(port, echo.port, n, ALICE)).destroy();
    (await echoSession(port, echo.port, 700)).destroy();
    await waitLines(4);

    // A long session, scraped while it runs: its bytes show already, and its command is active.
    const long = await echoSession(port, echo.port, 5000, ALICE);
    const during = await scrape(base, TOKEN);
    const aliceUp = (ls: SessionLine[]) =>
      ls.filter((l) => l.user === "alice").reduce((n, l) => n + l.bytesUp, 0);
    assert.equal(
      during.value("ferry_user_bytes_total", { user: "alice", direction: "up" }),
      aliceUp(lines()) + 5000,
    );
    assert.equal(
      during.value("ferry_user_bytes_total", { user: "alice", direction: "down" }),
      aliceUp(lines()) + 5000,
    );
    assert.equal(during.value("ferry_sessions_active", { command: "connect" }), 1);
    long.destroy();
    await waitLines(5);

    // Denied by rules[0]; a dial refused (nothing listens); the capped rule's second session.
    const denied = await socks5Connect(port, { type: "ipv4", host: "127.0.0.2", port: echo.port });
    assert.equal(denied.reply.reply, 2);
    denied.client.destroy();
    const nobody = await freePort();
    const refused = await socks5Connect(port, { type: "ipv4", host: "127.0.0.1", port: nobody });
    assert.equal(refused.reply.reply, 5);
    refused.client.destroy();
    const first = await echoSession(port, capped.port, 10);
    const second = await socks5Connect(port, { type: "ipv4", host: "127.0.0.1", port: capped.port });
    assert.equal(second.reply.reply, 2, "the rule's sessions cap refuses the second");
    second.client.destroy();
    first.destroy();

    // A login by a user nobody configured.
    await failedLogin(port, "mallory", "guess");

    // A UDP association: one datagram each way, one from a stranger dropped.
    const client = await udpClient();
    const stranger = await udpClient("127.0.0.2");
    try {
      const udp = await socks5Request({ host: "127.0.0.1", port }, "udp", addressOf("0.0.0.0", client.port));
      const relay = udp.reply.address;
      await sendTo(stranger.socket, Buffer.from("junk"), relay.port, relay.host);
      await sendTo(
        client.socket,
        encodeUdpDatagram({
          frag: 0,
          address: addressOf("127.0.0.1", udpEcho.port),
          data: Buffer.from("12345"),
        }),
        relay.port,
        relay.host,
      );
      const back = await client.next();
      assert.ok(back, "the datagram came back");
      assert.equal(parseUdpDatagram(back).data.toString(), "12345");
      udp.socket.end();
    } finally {
      client.close();
      stranger.close();
    }
    await waitLines(11);
    const all = lines();
    assert.equal(all.length, 11, JSON.stringify(all));

    const m: Scrape = await scrape(base, TOKEN);
    // Sessions by command and outcome.
    assert.equal(m.total("ferry_sessions_total"), all.length);
    assert.deepEqual(
      m.nonZero("ferry_sessions_total"),
      tally(
        all,
        (l) => `command=${l.command ?? "none"},outcome=${OUTCOME[l.outcome] ?? l.outcome}`,
        () => 1,
      ),
    );
    assert.equal(m.total("ferry_sessions_active"), 0);
    // Bytes by user and by rule, each way: the long session's counted once.
    const user = (l: SessionLine) => (l.user === undefined ? "anonymous" : l.user);
    assert.deepEqual(m.nonZero("ferry_user_bytes_total"), {
      ...tally(
        all,
        (l) => `direction=up,user=${user(l)}`,
        (l) => l.bytesUp,
      ),
      ...tally(
        all,
        (l) => `direction=down,user=${user(l)}`,
        (l) => l.bytesDown,
      ),
    });
    assert.deepEqual(m.nonZero("ferry_rule_bytes_total"), {
      ...tally(
        all,
        (l) => `direction=up,rule=${place(l.rule)}`,
        (l) => l.bytesUp,
      ),
      ...tally(
        all,
        (l) => `direction=down,rule=${place(l.rule)}`,
        (l) => l.bytesDown,
      ),
    });
    // One denial, by rules[0]; the cap's refusal is a limit, not a denial.
    assert.deepEqual(m.nonZero("ferry_denials_total"), { "rule=rules[0],stage=request": 1 });
    assert.deepEqual(m.nonZero("ferry_limits_hit_total"), { "limit=rule_sessions": 1 });
    // Dials: every CONNECT that got as far as dialling.
    const connects = all.filter((l) => l.command === "connect");
    assert.deepEqual(m.nonZero("ferry_dials_total"), {
      "result=ok,route=direct": connects.filter((l) => l.reply === 0).length,
      "result=failed,route=direct": 1,
    });
    assert.equal(
      m.value("ferry_dial_duration_seconds_count", { route: "direct" }),
      m.total("ferry_dials_total"),
    );
    // Histograms count every session that got so far.
    assert.equal(
      m.total("ferry_handshake_duration_seconds_count"),
      all.filter((l) => l.command !== undefined).length,
    );
    assert.deepEqual(
      m.nonZero("ferry_session_duration_seconds_count"),
      tally(
        all,
        (l) => `command=${l.command ?? "none"}`,
        () => 1,
      ),
    );
    // The failed login, with the unknown name kept out of every label.
    assert.deepEqual(m.nonZero("ferry_login_failures_total"), { "method=userpass,user=other": 1 });
    assert.ok(!m.labelValues().has("mallory"), "a client's user name is never a label value");
    assert.ok(![...m.labelValues()].some((v) => v.includes("127.0.0")), "no address is a label value");
    // UDP.
    const udpLine = all.find((l) => l.command === "udp")!;
    assert.deepEqual(m.nonZero("ferry_udp_datagrams_total"), {
      "direction=up": udpLine.datagramsUp,
      "direction=down": udpLine.datagramsDown,
    });
    assert.deepEqual(
      m.nonZero("ferry_udp_dropped_total"),
      Object.fromEntries(
        Object.entries(udpLine.datagramsDropped as object).map(([k, v]) => [`reason=${k}`, v]),
      ),
    );
    assert.deepEqual(udpLine.datagramsDropped, { "wrong source": 1 });
    // Process metrics are there too.
    assert.ok(m.value("process_resident_memory_bytes") > 0);
  });
});

describe("admin listener at start and stop", () => {
  test("a non-loopback admin.listen without a token is refused at start, saying what to do", async () => {
    const dir = await tempDir("ferry-admin-");
    try {
      const file = join(dir.path, "ferry.yaml");
      await writeFile(file, JSON.stringify({ listen: ["127.0.0.1:0"], admin: { listen: "0.0.0.0:9090" } }));
      const r = await run(process.execPath, [FERRY_BIN, "serve", "--config", file], { timeoutMs: 30_000 });
      assert.equal(r.code, 1, describeRun(r));
      assert.match(
        r.stderr,
        /admin\.listen: refusing to serve the admin listener on 0\.0\.0\.0:9090 without a token/,
      );
      assert.match(r.stderr, /admin\.tokenFile/);
      // A literal token in the file is refused as well (secrets come from the environment or a file).
      await writeFile(
        file,
        JSON.stringify({ listen: ["127.0.0.1:0"], admin: { listen: "127.0.0.1:0", token: "x" } }),
      );
      const literal = await run(process.execPath, [FERRY_BIN, "serve", "--config", file], {
        timeoutMs: 30_000,
      });
      assert.equal(literal.code, 1, describeRun(literal));
      assert.match(literal.stderr, /admin\.token: a literal secret in the configuration is refused/);
    } finally {
      await dir.remove();
    }
  });

  test("/readyz answers 503 while draining, /healthz 200 until the end", async () => {
    const echo = await startEchoServer();
    const a = await startWithAdmin({});
    try {
      assert.equal((await adminGet(a.base, "/readyz")).status, 200);
      const held = await echoSession(a.ferry.port, echo.port, 10);
      process.kill(childPid(a.ferry.pid), "SIGTERM");
      let ready = await adminGet(a.base, "/readyz");
      for (let i = 0; i < 100 && ready.status === 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        ready = await adminGet(a.base, "/readyz");
      }
      assert.deepEqual([ready.status, ready.text], [503, "not ready: draining\n"]);
      assert.equal((await adminGet(a.base, "/healthz")).status, 200);
      held.destroy();
      const exit = await a.ferry.exited;
      assert.equal(exit.code, 0);
    } finally {
      await a.remove();
      await echo.close();
    }
  });
});

describe("admin listener with workers", () => {
  test("workers: 2: the primary serves /metrics, summing both workers' sessions and bytes", async (t) => {
    if (!requirePythonModule(t, PROMETHEUS_PARSER.module, PROMETHEUS_PARSER.debianPackage)) return;
    const echo = await startEchoServer();
    // Round-robin, so consecutive connections go to alternate workers.
    const a = await startWithAdmin(
      { workers: 2 },
      { env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: "rr" } },
    );
    try {
      const ready = await adminGet(a.base, "/readyz");
      assert.deepEqual([ready.status, ready.text], [200, "ready\n"]);
      for (let i = 1; i <= 6; i++) (await echoSession(a.ferry.port, echo.port, 100 * i)).destroy();
      await waitFor(() => a.ferry.sessions().length >= 6, 20_000, "six session lines");
      const lines = a.ferry.sessions();
      assert.equal(new Set(lines.map((l) => l.pid)).size, 2, "both workers served sessions");
      const m = await scrape(a.base, TOKEN);
      assert.deepEqual(m.nonZero("ferry_sessions_total"), { "command=connect,outcome=succeeded": 6 });
      const up = lines.reduce((n, l) => n + l.bytesUp, 0);
      assert.equal(up, 2100);
      assert.equal(m.value("ferry_user_bytes_total", { user: "anonymous", direction: "up" }), up);
      assert.equal(m.value("ferry_session_duration_seconds_count", { command: "connect" }), 6);
      // A reload through the primary is counted once, not once per worker.
      process.kill(childPid(a.ferry.pid), "SIGHUP");
      await waitFor(
        () => a.ferry.logs().some((l) => l.msg.includes("(in all 2 workers)")),
        20_000,
        "the reload line",
      );
      assert.deepEqual((await scrape(a.base, TOKEN)).nonZero("ferry_reloads_total"), { "result=ok": 1 });
    } finally {
      await a.remove();
      await echo.close();
    }
  });
});
