import assert from "node:assert/strict";
import { once } from "node:events";
import { writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { SocksClient } from "socks";
import type { FileConfig } from "../../src/config/schema.js";
import { type RunningDante, startDante } from "../helpers/dante.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { startMicrosocks } from "../helpers/microsocks.js";
import { waitFor } from "../helpers/net.js";
import { run, tempDir } from "../helpers/process.js";
import { startTinyproxy } from "../helpers/tinyproxy.js";
import { requireRoot, requireTool } from "../helpers/tools.js";

/** A server that tells each client the address it sees it from, then closes. */
async function startWhoServer(): Promise<{ port: number; close: () => void }> {
  const server = net.createServer((s) => {
    s.on("error", () => {});
    s.end(`seen ${s.remoteAddress}`);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

/** Through Ferry with the npm `socks` client: what the who server said. */
async function whoThrough(ferry: RunningFerry, port: number): Promise<string> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: ferry.host, port: ferry.port, type: 5 },
    command: "connect",
    destination: { host: "127.0.0.1", port },
    timeout: 10_000,
  });
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  await once(socket, "end");
  socket.destroy();
  return Buffer.concat(chunks).toString();
}

/** SOCKS5 CONNECT through Ferry with the npm client; the reply code on failure. */
async function replyThrough(ferry: RunningFerry, port: number): Promise<number> {
  try {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: ferry.host, port: ferry.port, type: 5 },
      command: "connect",
      destination: { host: "127.0.0.1", port },
      timeout: 10_000,
    });
    socket.destroy();
    return 0;
  } catch (err) {
    const m = /Socks5 proxy rejected connection - (\w+)/.exec((err as Error).message);
    const names: Record<string, number> = {
      Failure: 1,
      NotAllowed: 2,
      NetworkUnreachable: 3,
      HostUnreachable: 4,
      ConnectionRefused: 5,
      TTLExpired: 6,
    };
    assert.ok(m && names[m[1]!] !== undefined, (err as Error).message);
    return names[m[1]!]!;
  }
}

/** Ferry with the given routes and one rule sending everything through `via`. */
function ferryVia(via: string, config: Partial<FileConfig>): Promise<RunningFerry> {
  return startFerry({ ...config, rules: [{ allow: { via } }] });
}

describe("chains through Dante, microsocks and tinyproxy", { timeout: 240_000 }, () => {
  const stops: (() => unknown)[] = [];
  let who: { port: number; close: () => void };
  let web: TestHttpServer;
  let dir: { path: string; remove: () => Promise<void> };
  before(async () => {
    who = await startWhoServer();
    web = await startHttpServer();
    dir = await tempDir("ferry-routes-");
    stops.push(who.close, web.close, dir.remove);
  });
  after(async () => {
    for (const stop of stops.reverse()) await stop();
  });
  const dante = async (): Promise<RunningDante> => {
    const d = await startDante({ auth: {} });
    stops.push(() => d.stop());
    return d;
  };
  const micro = async (bindAddress: string, auth?: { user: string; password: string }) => {
    const m = await startMicrosocks({ bindAddress, ...(auth ?? {}) });
    stops.push(() => m.stop());
    return m;
  };
  const socks5 = (d: { port: number }, scheme = "socks5h") => `${scheme}://127.0.0.1:${d.port}`;

  test("two deep: Dante (username auth, password from the environment) then microsocks (password from a file); curl in front", async (t) => {
    if (
      !requireTool(t, "/usr/sbin/danted", "dante-server") ||
      !requireTool(t, "/usr/bin/microsocks", "microsocks")
    )
      return;
    if (!requireTool(t, "curl", "curl") || !requireRoot(t, "Dante's username auth")) return;
    const d = await dante();
    const m = await micro("127.0.0.5", { user: "mick", password: "file pw" });
    await writeFile(join(dir.path, "mick.pw"), "file pw\n", { mode: 0o600 });
    process.env.FERRY_TEST_DANTE_PW = d.password!;
    const ferry = await ferryVia("outside", {
      upstreams: {
        dante: { url: socks5(d), user: d.user!, password: "$" + "{FERRY_TEST_DANTE_PW}" },
        mick: { url: socks5(m), user: "mick", passwordFile: join(dir.path, "mick.pw") },
      },
      chains: { outside: ["dante", "mick"] },
    });
    stops.push(ferry.close);
    const r = await run("curl", ["-sS", "--max-time", "10", "--proxy", ferry.url, `${web.origin}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), web.greeting);
    assert.equal(
      web.requests.at(-1)?.remote,
      "127.0.0.5",
      "the target is reached from the last hop's egress",
    );
    const record = ferry.records.at(-1) ?? (await ferry.nextRecord());
    assert.equal(record.reply, 0);
    const text = JSON.stringify(ferry.records);
    assert.ok(!text.includes(d.password!) && !text.includes("file pw"), "no password in session records");
  });

  test("three deep: microsocks, Dante, microsocks; the npm socks client in front; a stopped first hop fails with 0x01", async (t) => {
    if (
      !requireTool(t, "/usr/sbin/danted", "dante-server") ||
      !requireTool(t, "/usr/bin/microsocks", "microsocks")
    )
      return;
    if (!requireRoot(t, "Dante's username auth")) return;
    const first = await micro("127.0.0.4");
    const d = await dante();
    const last = await micro("127.0.0.5", { user: "u3", password: "p3" });
    process.env.FERRY_TEST_DANTE_PW = d.password!;
    process.env.FERRY_TEST_U3_PW = "p3";
    const ferry = await ferryVia("deep", {
      upstreams: {
        first: { url: socks5(first, "socks5") },
        dante: { url: socks5(d), user: d.user!, password: "$" + "{FERRY_TEST_DANTE_PW}" },
        last: { url: socks5(last), user: "u3", password: "$" + "{FERRY_TEST_U3_PW}" },
      },
      chains: { deep: ["first", "dante", "last"] },
    });
    stops.push(ferry.close);
    assert.equal(await whoThrough(ferry, who.port), "seen 127.0.0.5");
    await first.stop();
    assert.equal(await replyThrough(ferry, who.port), 0x01);
    await waitFor(() => ferry.records.some((r) => r.reply === 0x01), 10_000, "the failed session's record");
    const failed = ferry.records.find((r) => r.reply === 0x01)!;
    assert.match(failed.reason ?? "", /route deep: cannot reach proxy #1 .*ECONNREFUSED/);
  });

  test("failover: a stopped member is skipped and the next one carries the connection", async (t) => {
    if (!requireTool(t, "/usr/bin/microsocks", "microsocks")) return;
    const a = await micro("127.0.0.7");
    const b = await micro("127.0.0.6");
    const ferry = await ferryVia("ha", {
      upstreams: { a: { url: socks5(a) }, b: { url: socks5(b) } },
      chains: { ha: [{ any: ["a", "b"], mode: "failover", retryAfter: "1m" }] },
    });
    stops.push(ferry.close);
    assert.equal(await whoThrough(ferry, who.port), "seen 127.0.0.7", "the first member while it is up");
    const result = await a.stop();
    assert.ok(result.signal || result.code !== null, "microsocks a ended");
    assert.equal(
      await whoThrough(ferry, who.port),
      "seen 127.0.0.6",
      "the second member once the first is gone",
    );
    assert.equal(await whoThrough(ferry, who.port), "seen 127.0.0.6");
    // A refusal by the target is the target's: it is passed on, not failed over.
    const closed = net.createServer().listen(0, "127.0.0.1");
    await once(closed, "listening");
    const deadPort = (closed.address() as net.AddressInfo).port;
    closed.close();
    assert.equal(await replyThrough(ferry, deadPort), 0x05);
    assert.equal(await whoThrough(ferry, who.port), "seen 127.0.0.6", "b is still in use");
  });

  test("round robin: each connection starts at the next member", async (t) => {
    if (!requireTool(t, "/usr/bin/microsocks", "microsocks")) return;
    const a = await micro("127.0.0.8");
    const b = await micro("127.0.0.9");
    const ferry = await ferryVia("rr", {
      upstreams: { a: { url: socks5(a) }, b: { url: socks5(b) } },
      chains: { rr: [{ any: ["a", "b"], mode: "round-robin" }] },
    });
    stops.push(ferry.close);
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) seen.push(await whoThrough(ferry, who.port));
    assert.deepEqual(seen, ["seen 127.0.0.8", "seen 127.0.0.9", "seen 127.0.0.8", "seen 127.0.0.9"]);
  });

  test("a wrong password at Dante fails the dial with 0x01 and stays out of the record", async (t) => {
    if (!requireTool(t, "/usr/sbin/danted", "dante-server") || !requireRoot(t, "Dante's username auth"))
      return;
    const d = await dante();
    process.env.FERRY_TEST_WRONG_PW = "not-the-password";
    const ferry = await ferryVia("dante", {
      upstreams: { dante: { url: socks5(d), user: d.user!, password: "$" + "{FERRY_TEST_WRONG_PW}" } },
    });
    stops.push(ferry.close);
    const recordP = ferry.nextRecord();
    assert.equal(await replyThrough(ferry, who.port), 0x01);
    const record = await recordP;
    assert.match(record.reason ?? "", /route dante: proxy #1 .*(auth|rejected|failed)/i);
    assert.ok(!JSON.stringify(record).includes("not-the-password"));
  });

  test("an HTTP CONNECT hop: tinyproxy (Basic auth) then microsocks; a wrong password is refused with 0x01", async (t) => {
    if (
      !requireTool(t, "/usr/bin/tinyproxy", "tinyproxy") ||
      !requireTool(t, "/usr/bin/microsocks", "microsocks")
    )
      return;
    const tp = await startTinyproxy({ auth: { user: "webby", password: "tiny-pw" } });
    stops.push(() => tp.stop());
    const m = await micro("127.0.0.5");
    process.env.FERRY_TEST_TINY_PW = "tiny-pw";
    process.env.FERRY_TEST_TINY_WRONG = "wrong-pw";
    const ferry = await ferryVia("web", {
      upstreams: {
        tiny: { url: tp.url, user: "webby", password: "$" + "{FERRY_TEST_TINY_PW}" },
        badtiny: { url: tp.url, user: "webby", password: "$" + "{FERRY_TEST_TINY_WRONG}" },
        m: { url: socks5(m) },
      },
      chains: { web: ["tiny", "m"], bad: ["badtiny", "m"] },
    });
    stops.push(ferry.close);
    assert.equal(await whoThrough(ferry, who.port), "seen 127.0.0.5");
    // Straight through tinyproxy: the target sees tinyproxy's own connection.
    const direct = await ferryVia("tiny", {
      upstreams: { tiny: { url: tp.url, user: "webby", password: "$" + "{FERRY_TEST_TINY_PW}" } },
    });
    stops.push(direct.close);
    assert.equal(await whoThrough(direct, who.port), "seen 127.0.0.1");
    const bad = await ferryVia("bad", {
      upstreams: {
        badtiny: { url: tp.url, user: "webby", password: "$" + "{FERRY_TEST_TINY_WRONG}" },
        m: { url: socks5(m) },
      },
      chains: { bad: ["badtiny", "m"] },
    });
    stops.push(bad.close);
    const recordP = bad.nextRecord();
    assert.equal(await replyThrough(bad, who.port), 0x01);
    const record = await recordP;
    assert.match(
      record.reason ?? "",
      /route bad: proxy #1 \(http:\/\/webby@127\.0\.0\.1:\d+\): refused CONNECT .*HTTP 40[17] .*check the user and password/,
    );
    assert.ok(!JSON.stringify(record).includes("wrong-pw"));
  });

  test("rules pick the route by destination, user and command; direct when no via", async (t) => {
    if (!requireTool(t, "/usr/bin/microsocks", "microsocks")) return;
    const a = await micro("127.0.0.11");
    const b = await micro("127.0.0.12");
    const who2 = await startWhoServer();
    stops.push(who2.close);
    const ferry = await startFerry(
      {
        upstreams: { a: { url: socks5(a) }, b: { url: socks5(b) } },
        rules: [
          { deny: { commands: ["bind"] } },
          { allow: { users: ["carol"], via: "b" } },
          { allow: { to: ["127.0.0.1"], ports: [who2.port], via: "a" } },
          { allow: { via: "direct" } },
        ],
      },
      {
        inlineUsers: [
          { name: "carol", password: "c-pw" },
          { name: "dave", password: "d-pw" },
        ],
      },
    );
    stops.push(ferry.close);
    const as = async (user: string, port: number): Promise<string> => {
      const { socket } = await SocksClient.createConnection({
        proxy: {
          host: ferry.host,
          port: ferry.port,
          type: 5,
          userId: user,
          password: user === "carol" ? "c-pw" : "d-pw",
        },
        command: "connect",
        destination: { host: "127.0.0.1", port },
        timeout: 10_000,
      });
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => chunks.push(c));
      await once(socket, "end");
      socket.destroy();
      return Buffer.concat(chunks).toString();
    };
    assert.equal(await as("carol", who.port), "seen 127.0.0.12", "by user: carol goes through b");
    assert.equal(await as("dave", who2.port), "seen 127.0.0.11", "by destination: this port goes through a");
    assert.equal(await as("dave", who.port), "seen 127.0.0.1", "otherwise direct");
    await waitFor(() => ferry.records.length >= 3, 10_000, "three session records");
    assert.deepEqual(
      ferry.records.slice(0, 3).map((r) => r.rule?.replace(/ .*/, "")),
      ["rules[1]", "rules[2]", "rules[3]"],
    );
  });

  test("a via that names nothing, or a via on a deny rule, is refused at load", async () => {
    await assert.rejects(
      startFerry({
        upstreams: { a: { url: "socks5://192.0.2.1:1080" } },
        rules: [{ allow: { via: "nowhere" } }],
      }),
      /rules\.0\.allow\.via: no upstream or chain named "nowhere"; known: direct, a/,
    );
    await assert.rejects(
      startFerry({ upstreams: { a: { url: "socks5://192.0.2.1:1080" } }, rules: [{ deny: { via: "a" } }] }),
      /via and resolve .* only make sense on allow rules/,
    );
  });
});
