import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { associate, bind, connect, SocksError } from "../../src/index.js";
import { DANTED, type RunningDante, startDante } from "../helpers/dante.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { MICROSOCKS, type RunningMicrosocks, startMicrosocks } from "../helpers/microsocks.js";
import { retryUntil, sha256, startEchoServer } from "../helpers/net.js";
import { echoWithoutFin, startUdpEcho } from "../helpers/targets.js";
import { requireTool } from "../helpers/tools.js";

const payload = randomBytes(512 * 1024);
// microsocks closes both directions on the first FIN, so these exchanges never half-close.

describe("proxy chains: Ferry, microsocks and Dante mixed, SOCKS4a and SOCKS5", { timeout: 180_000 }, () => {
  let first: RunningFerry;
  let last: RunningFerry;
  let micro: RunningMicrosocks | undefined;
  let dante: RunningDante | undefined;
  let echo: { port: number; close: () => Promise<void> };

  before(async () => {
    first = await startFerry();
    last = await startFerry();
    echo = await startEchoServer();
  });
  after(async () => {
    await first?.close();
    await last?.close();
    await micro?.stop();
    await dante?.stop();
    await echo?.close();
  });
  const microsocks = async (t: Parameters<typeof requireTool>[0]) => {
    if (!requireTool(t, MICROSOCKS, "microsocks")) return undefined;
    micro ??= await startMicrosocks({ user: "mike", password: "pa ss" });
    return micro;
  };
  const danted = async (t: Parameters<typeof requireTool>[0]) => {
    if (!requireTool(t, DANTED, "dante-server")) return undefined;
    dante ??= await startDante({ auth: {} });
    return dante;
  };

  test("microsocks alone, with username/password", async (t) => {
    const m = await microsocks(t);
    if (!m) return;
    const socket = await connect(m.url, `127.0.0.1:${echo.port}`);
    assert.equal(sha256(await echoWithoutFin(socket, payload)), sha256(payload));
    await assert.rejects(connect(m.url.replace("pa%20ss", "nope"), `127.0.0.1:${echo.port}`), SocksError);
  });

  test("two deep: Ferry (socks4a) -> microsocks (socks5h, userpass)", async (t) => {
    const m = await microsocks(t);
    if (!m) return;
    const next = first.nextRecord();
    // Hop 1 named by name: the socks4a hop carries it for hop 0 to resolve.
    const byName = m.url.replace("127.0.0.1", "localhost");
    const socket = await connect([`socks4a://127.0.0.1:${first.port}`, byName], `localhost:${echo.port}`);
    assert.equal(sha256(await echoWithoutFin(socket, payload)), sha256(payload));
    const record = await next;
    assert.equal(record.protocol, "socks4a");
    assert.equal(record.target, `localhost:${m.port}`, "hop 0 was asked for hop 1, by name");
  });

  test("three deep: Ferry (socks4a) -> microsocks (socks5h) -> Ferry (socks5), bytes by hash", async (t) => {
    const m = await microsocks(t);
    if (!m) return;
    const firstRecord = first.nextRecord();
    const lastRecord = last.nextRecord();
    const chain = [`socks4a://127.0.0.1:${first.port}`, m.url, `socks5://127.0.0.1:${last.port}`];
    const socket = await connect(chain, `localhost:${echo.port}`);
    assert.equal(sha256(await echoWithoutFin(socket, payload)), sha256(payload));
    const [r0, r2] = await Promise.all([firstRecord, lastRecord]);
    assert.equal(r0.target, `127.0.0.1:${m.port}`);
    assert.equal(r2.protocol, "socks5");
    assert.equal(r2.target, `127.0.0.1:${echo.port}`, "socks5:// resolved the name on the client");
  });

  test("three deep, the last hop refuses: the error names hop 2", async (t) => {
    const m = await microsocks(t);
    if (!m) return;
    const chain = [`socks4a://127.0.0.1:${first.port}`, m.url, `socks4://127.0.0.1:${last.port}`];
    await assert.rejects(connect(chain, "127.0.0.1:1"), (err) => {
      assert.ok(err instanceof SocksError);
      assert.equal(err.hop, 2);
      assert.equal(err.version, 4);
      assert.equal(err.reply, 91);
      return true;
    });
  });

  test("BIND and UDP ASSOCIATE at the end of a chain: Ferry -> Dante", async (t) => {
    const d = await danted(t);
    if (!d) return;
    const chain = [`socks5h://127.0.0.1:${first.port}`, d.url];
    const b = await bind(chain, { acceptTimeout: 10_000 });
    const peer = net.connect({ host: b.address, port: b.port });
    const { socket } = await b.accepted;
    peer.end("through two proxies");
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    await once(socket, "end");
    assert.equal(Buffer.concat(chunks).toString(), "through two proxies");
    socket.destroy();
    peer.destroy();

    const udpEcho = await startUdpEcho();
    const udp = await associate(chain);
    try {
      const got: string[] = [];
      udp.on("message", (data) => got.push(data.toString()));
      // UDP may drop; resend every 100 ms, for up to 10 s, until the answer comes.
      await retryUntil(
        () => udp.send("chained", `127.0.0.1:${udpEcho.port}`),
        () => got.length > 0,
      );
      assert.equal(got[0], "echo:chained");
    } finally {
      udp.close();
      udpEcho.close();
    }
  });
});
