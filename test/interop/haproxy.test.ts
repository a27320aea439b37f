import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { encodeProxyV1, encodeProxyV2 } from "../../src/protocol/proxy-protocol.js";
import {
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
} from "../../src/protocol/socks5.js";
import { type FerryProcess, type LogLine, spawnFerry } from "../helpers/ferry-process.js";
import { type RunningHaproxy, startHaproxy } from "../helpers/haproxy.js";
import { startEchoServer, waitFor } from "../helpers/net.js";
import { TestClient } from "../helpers/socks.js";
import { hasTool, requireTool } from "../helpers/tools.js";

/**
 * HAProxy (TCP mode) in front of two Ferry processes, as docs/scale-out.md sets it up: the
 * client rules name client addresses, which Ferry only sees through the PROXY header.
 */

const greeting = encodeGreeting({ methods: [0] });

/** A Ferry configuration: PROXY protocol from HAProxy (127.0.0.1), 127.0.0.2 denied, loopback targets only. */
function ferryConfig(allowDirect: boolean) {
  return (listen: string) => ({
    listen: [{ address: listen, proxyProtocol: { from: ["127.0.0.1/32"], allowDirect } }],
    clients: [{ deny: { from: "127.0.0.2" } }, { allow: { from: "127.0.0.0/8" } }],
    rules: [{ allow: { to: "127.0.0.0/8" } }],
  });
}

/** A CONNECT to the echo server from `from` through `port`; returns the client's port once echoed. */
async function allowed(port: number, from: string, echoPort: number): Promise<number> {
  const c = await TestClient.connect(port, "127.0.0.1", from);
  try {
    c.write(greeting);
    assert.equal(await c.read(parseMethodSelection), 0, `${from} gets a method selection`);
    c.write(
      encodeRequest({ command: "connect", address: { type: "ipv4", host: "127.0.0.1", port: echoPort } }),
    );
    assert.equal((await c.read(parseReply)).reply, 0, `${from}'s CONNECT succeeds`);
    c.write("through haproxy");
    assert.equal((await c.readBytes(15)).toString(), "through haproxy");
    return c.localPort;
  } finally {
    c.destroy();
  }
}

/** Connects from `from`, sends `bytes`, and expects the connection closed without a byte. */
async function refused(port: number, from: string, bytes: Buffer): Promise<number> {
  const c = await TestClient.connect(port, "127.0.0.1", from);
  try {
    c.write(bytes);
    const { data, ended } = await c.readToEnd(8000);
    assert.equal(data.length, 0, `${from} gets no reply`);
    assert.ok(ended, `${from}'s connection is closed`);
    return c.localPort;
  } finally {
    c.destroy();
  }
}

async function waitForLine(f: FerryProcess, what: string, match: (l: LogLine) => boolean): Promise<LogLine> {
  await waitFor(() => f.logs().some(match), 10_000, what).catch((err: Error) => {
    throw new Error(`${err.message}; logged: ${JSON.stringify(f.logs(), null, 1)}`);
  });
  return f.logs().find(match)!;
}

describe("HAProxy with send-proxy-v2 / send-proxy in front of two Ferry instances", {
  skip:
    !hasTool("haproxy") && process.env.CI !== "true"
      ? "haproxy is not installed (apt-get install haproxy)"
      : false,
}, () => {
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let ferries: FerryProcess[] = [];
  let haproxy: RunningHaproxy | undefined;
  let v2Port = 0;
  let v1Port = 0;

  before(async () => {
    echo = await startEchoServer();
    // The second takes direct clients too: a forgery must be refused there for what it is.
    ferries = [
      await spawnFerry({ config: ferryConfig(false) }),
      await spawnFerry({ config: ferryConfig(true) }),
    ];
    const backends = ferries.map((f) => ({ host: "127.0.0.1", port: f.port }));
    haproxy = await startHaproxy([
      { backends, sendProxy: "v2" },
      { backends, sendProxy: "v1" },
    ]);
    [v2Port, v1Port] = haproxy.ports as [number, number];
  });

  after(async () => {
    await haproxy?.stop();
    await Promise.all(ferries.map((f) => f.stop()));
    await echo?.close();
  });

  test("haproxy is installed (a failure under CI)", (t) => {
    requireTool(t, "haproxy", "haproxy");
  });

  for (const version of ["v2", "v1"] as const) {
    test(`${version}: 127.0.0.3 is served by both instances, logged as itself; 127.0.0.2 is denied`, async () => {
      const port = version === "v2" ? v2Port : v1Port;
      const clientPorts: number[] = [];
      for (let i = 0; i < 4; i++) clientPorts.push(await allowed(port, "127.0.0.3", echo.port));
      // Each session is logged, by whichever instance round robin gave it to, with the client's
      // own address and port, and HAProxy as the proxy.
      const servedBy = new Set<number>();
      for (const cp of clientPorts) {
        await waitFor(
          () => ferries.some((f) => f.sessions().some((s) => s.client === `127.0.0.3:${cp}`)),
          10_000,
          `the session line of 127.0.0.3:${cp}`,
        );
        ferries.forEach((f, i) => {
          const line = f.sessions().find((s) => s.client === `127.0.0.3:${cp}`);
          if (!line) return;
          servedBy.add(i);
          assert.equal(line.reply, 0);
          assert.equal(line.target, `127.0.0.1:${echo.port}`);
          assert.match(String(line.proxy), /^127\.0\.0\.1:\d+$/);
        });
      }
      assert.deepEqual([...servedBy].sort(), [0, 1], "round robin reached both instances");

      const deniedPorts = [
        await refused(port, "127.0.0.2", greeting),
        await refused(port, "127.0.0.2", greeting),
      ];
      for (const dp of deniedPorts) {
        const line = await Promise.race(
          ferries.map((f) =>
            waitForLine(
              f,
              `the refusal of 127.0.0.2:${dp}`,
              (l) => l.client === "127.0.0.2" && l.clientPort === dp,
            ),
          ),
        );
        assert.match(line.msg, /connection refused: client refused by rule clients\[0\]/);
        assert.match(String(line.proxy), /^127\.0\.0\.1:\d+$/);
      }
      // No session of 127.0.0.2 ran anywhere, and none was recorded as HAProxy's address.
      for (const f of ferries) {
        assert.ok(!f.sessions().some((s) => s.client.startsWith("127.0.0.2:")));
        assert.ok(!f.sessions().some((s) => s.client.startsWith("127.0.0.1:") && s.reply === 0));
      }
    });
  }

  test("direct connections: a forged header from another source, and a listed source without one, are refused", async () => {
    const [closed, open] = ferries as [FerryProcess, FerryProcess];
    const forgeries = [
      encodeProxyV2({
        family: "ipv4",
        sourceAddress: "127.0.0.3",
        sourcePort: 1,
        destinationAddress: "127.0.0.1",
        destinationPort: 1,
      }),
      encodeProxyV1({
        family: "ipv4",
        sourceAddress: "127.0.0.3",
        sourcePort: 1,
        destinationAddress: "127.0.0.1",
        destinationPort: 1,
      }),
    ];
    for (const forged of forgeries) {
      // Not a balancer and no allowDirect: refused before anything is read.
      const a = await refused(closed.port, "127.0.0.5", Buffer.concat([forged, greeting]));
      const la = await waitForLine(closed, "the refusal", (l) => l.clientPort === a);
      assert.equal(la.client, "127.0.0.5");
      assert.match(la.msg, /127\.0\.0\.5 is not a PROXY protocol source of this listener/);
      // allowDirect: served as itself, so a header from it is a forgery.
      const b = await refused(open.port, "127.0.0.5", Buffer.concat([forged, greeting]));
      const lb = await waitForLine(open, "the refusal", (l) => l.clientPort === b);
      assert.equal(lb.client, "127.0.0.5");
      assert.match(lb.msg, /PROXY header from a source not in proxyProtocol\.from/);
    }
    // HAProxy's own address, connecting without a header.
    const c = await refused(closed.port, "127.0.0.1", greeting);
    const lc = await waitForLine(closed, "the refusal", (l) => l.clientPort === c);
    assert.match(lc.msg, /bad PROXY header from 127\.0\.0\.1/);
    // A direct client that speaks SOCKS is served on the allowDirect instance, as itself.
    const d = await allowed(open.port, "127.0.0.5", echo.port);
    const line = await open.waitForSession((s) => s.client === `127.0.0.5:${d}`);
    assert.equal(line.reply, 0);
    assert.equal(line.proxy, undefined);
  });
});
