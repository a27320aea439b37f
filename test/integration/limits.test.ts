import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
} from "../../src/protocol/socks5.js";
import { startFerry } from "../helpers/ferry.js";
import { sleep, startEchoServer, waitFor } from "../helpers/net.js";
import { assertEchoThrough, recordFor, socks5Connect, TestClient } from "../helpers/socks.js";

/** Opens a session from `localAddress` and proves it runs: CONNECT to the echo server, a byte back. */
async function established(port: number, localAddress: string, echoPort: number): Promise<TestClient> {
  const c = await TestClient.connect(port, "127.0.0.1", localAddress);
  c.write(encodeGreeting({ methods: [0] }));
  assert.equal(await c.read(parseMethodSelection), 0, `a session from ${localAddress} is accepted`);
  c.write(
    encodeRequest({ command: "connect", address: { type: "ipv4", host: "127.0.0.1", port: echoPort } }),
  );
  assert.equal((await c.read(parseReply)).reply, 0, `a session from ${localAddress} is established`);
  c.write("x");
  assert.equal((await c.readBytes(1)).toString(), "x");
  return c;
}

/** Opens a connection and proves it was refused: closed without a byte. */
async function refused(port: number, localAddress: string): Promise<void> {
  const c = await TestClient.connect(port, "127.0.0.1", localAddress);
  try {
    c.write(encodeGreeting({ methods: [0] }));
    const { data, ended } = await c.readToEnd();
    assert.equal(data.length, 0, "a refused connection gets no reply");
    assert.ok(ended, `a connection from ${localAddress} beyond the limit is closed`);
  } finally {
    c.destroy();
  }
}

describe("timeouts", () => {
  test("a silent client is closed when the handshake timeout expires", async () => {
    const ferry = await startFerry({ timeouts: { handshake: "300ms" } });
    try {
      // Timed from before the connects: the server's timer starts at accept, a little later.
      const started = Date.now();
      const silent = await TestClient.connect(ferry.port);
      const partial = await TestClient.connect(ferry.port);
      partial.write(Buffer.from([5, 2, 0])); // a greeting that never finishes
      await silent.waitClosed(8000);
      await partial.waitClosed(8000);
      const took = Date.now() - started;
      // Well under the 10 s default, with room for a loaded machine.
      assert.ok(took >= 290 && took < 8000, `closed after ${took} ms`);
      for (const c of [silent, partial]) {
        const r = await recordFor(ferry, c.localPort);
        assert.equal(r.reason, "handshake not finished within 300 ms");
        c.destroy();
      }
    } finally {
      await ferry.close();
    }
  });

  test("the handshake timeout does not cut a session that finished its handshake", async () => {
    const echo = await startEchoServer();
    // 1 s rather than 300 ms: the handshake itself (greeting, request, dial) must finish inside it
    // even when a loaded machine stalls for a moment.
    const ferry = await startFerry({ timeouts: { handshake: "1s" } });
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: echo.port,
      });
      assert.equal(reply.reply, 0);
      await sleep(1500);
      client.write("late");
      assert.equal((await client.readBytes(4)).toString(), "late");
      client.destroy();
    } finally {
      await ferry.close();
      await echo.close();
    }
  });

  test("timeouts of 0 mean no timeout, as for idle and connect: handshake: 0 does not cut every client", async () => {
    const echo = await startEchoServer();
    const ferry = await startFerry({ timeouts: { handshake: 0, idle: 0, connect: 0 } });
    try {
      const c = await TestClient.connect(ferry.port);
      await sleep(150);
      c.write(encodeGreeting({ methods: [0] }));
      assert.equal(await c.read(parseMethodSelection), 0);
      c.destroy();
      await assertEchoThrough(ferry.port, echo.port);
    } finally {
      await ferry.close();
      await echo.close();
    }
  });

  test("an idle relay is closed after the idle timeout; traffic keeps it open", async () => {
    const IDLE = 2000;
    const echo = await startEchoServer();
    const ferry = await startFerry({ timeouts: { idle: "2s" } });
    try {
      // A loaded machine can stall this process (the server too) for a second or more; timers run
      // before pending reads when it wakes, so a stall looks like silence to the server. The
      // server's silence before a close spans at most two gaps between our echoes, so a try in
      // which some gap reached IDLE / 2 proves nothing and is repeated (three tries at most). A try
      // without such a gap must stay open, and must close on time once we stop.
      for (let attempt = 1; ; attempt++) {
        const { client, reply } = await socks5Connect(ferry.port, {
          type: "ipv4",
          host: "127.0.0.1",
          port: echo.port,
        });
        assert.equal(reply.reply, 0);
        let lastEcho = Date.now();
        let longestGap = 0;
        let lastWrite = 0;
        const BYTES = 22; // one every 100 ms or so: busy for longer than the idle period
        for (let i = 0; i < BYTES && !client.closed && !client.ended; i++) {
          lastWrite = Date.now();
          client.write("x");
          const echoed = await client.readBytes(1).catch(() => undefined);
          longestGap = Math.max(longestGap, Date.now() - lastEcho);
          lastEcho = Date.now();
          if (echoed === undefined) break;
          assert.equal(echoed.toString(), "x");
          await sleep(100);
        }
        longestGap = Math.max(longestGap, Date.now() - lastEcho);
        if ((client.closed || client.ended) && longestGap >= IDLE / 2 && attempt < 3) {
          client.destroy();
          continue;
        }
        assert.ok(
          !client.closed && !client.ended,
          `a busy relay stays open (longest gap between echoes ${longestGap} ms)`,
        );
        await client.waitClosed(8000);
        // The server read our last byte after `lastWrite`, so the close cannot come before
        // IDLE after it (timers may fire a millisecond early, hence the margin).
        const took = Date.now() - lastWrite;
        assert.ok(took >= IDLE - 50 && took < 8000, `closed ${took} ms after the last byte`);
        const r = await recordFor(ferry, client.localPort);
        assert.equal(r.reason, "idle for 2000 ms");
        assert.equal(r.bytesUp, BYTES);
        assert.equal(r.bytesDown, BYTES);
        client.destroy();
        break;
      }
    } finally {
      await ferry.close();
      await echo.close();
    }
  });
});

describe("limits", () => {
  test("sessionsPerClient and sessions refuse extra connections, and free slots are reused", async () => {
    const echo = await startEchoServer();
    const ferry = await startFerry({
      limits: { sessions: 3, sessionsPerClient: 2 },
      rules: [{ allow: { to: ["127.0.0.0/8"] } }],
    });
    const open: TestClient[] = [];
    try {
      // 127.0.0.2 is a second loopback client address, so the per-client and total limits differ.
      open.push(
        await established(ferry.port, "127.0.0.1", echo.port),
        await established(ferry.port, "127.0.0.1", echo.port),
      );
      await refused(ferry.port, "127.0.0.1");
      assert.match(ferry.refused.at(-1)!, /session limit for 127\.0\.0\.1 reached \(2\)/);
      open.push(await established(ferry.port, "127.0.0.2", echo.port));
      await refused(ferry.port, "127.0.0.2");
      assert.match(ferry.refused.at(-1)!, /session limit reached \(3 in total\)/);
      // Closing one frees its slot.
      open.shift()!.destroy();
      await waitFor(() => ferry.server.activeSessions === 2, 10_000, "the slot to be freed");
      open.push(await established(ferry.port, "127.0.0.1", echo.port));
      assert.equal(ferry.refused.length, 2);
    } finally {
      for (const c of open) c.destroy();
      await ferry.close();
      await echo.close();
    }
  });

  test("connections in the handshake take no session slot; the limit is applied when the request is read", async () => {
    const echo = await startEchoServer();
    const ferry = await startFerry({
      limits: { sessions: 10, sessionsPerClient: 1 },
      rules: [{ allow: { to: ["127.0.0.0/8"] } }],
    });
    const open: TestClient[] = [];
    try {
      // Two handshakes at once from one client allowed one session: both are let in...
      const first = await TestClient.connect(ferry.port);
      const second = await TestClient.connect(ferry.port);
      open.push(first, second);
      for (const c of [first, second]) {
        c.write(encodeGreeting({ methods: [0] }));
        assert.equal(await c.read(parseMethodSelection), 0);
      }
      const target = { type: "ipv4", host: "127.0.0.1", port: echo.port } as const;
      first.write(encodeRequest({ command: "connect", address: target }));
      assert.equal((await first.read(parseReply)).reply, 0);
      // ...and the second request is refused with "not allowed", saying which limit.
      second.write(encodeRequest({ command: "connect", address: target }));
      assert.equal((await second.read(parseReply)).reply, 0x02);
      const r = await recordFor(ferry, second.localPort);
      assert.equal(r.reason, "refused: session limit for 127.0.0.1 reached (1)");
      assert.equal(r.command, "connect");
      assert.equal(ferry.refused.length, 0);
    } finally {
      for (const c of open) c.destroy();
      await ferry.close();
      await echo.close();
    }
  });
});

describe("other protocols on the SOCKS port", () => {
  test("with http: false, an HTTP client gets an HTTP/1.1 400 whose body explains, then a close", async () => {
    const echo = await startEchoServer();
    const ferry = await startFerry({ http: false });
    try {
      const c = await TestClient.connect(ferry.port);
      c.write("GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
      const { data, ended } = await c.readToEnd();
      c.destroy();
      assert.ok(ended);
      const text = data.toString("utf8");
      const [head, body] = text.split("\r\n\r\n");
      assert.match(head!, /^HTTP\/1\.1 400 Bad Request\r\n/);
      assert.match(head!, /\r\nConnection: close/);
      assert.equal(Number(/Content-Length: (\d+)/.exec(head!)?.[1]), Buffer.byteLength(body!));
      assert.match(body!, /SOCKS proxy, not an HTTP proxy/);
      assert.ok(
        body!.includes(`socks5h://127.0.0.1:${ferry.port}`),
        "the body says how to point a client here",
      );
      const r = await recordFor(ferry, c.localPort);
      assert.equal(r.protocol, "http");
      assert.match(r.reason!, /HTTP GET request on the SOCKS port/);
      await assertEchoThrough(ferry.port, echo.port);
    } finally {
      await ferry.close();
      await echo.close();
    }
  });

  test("with http: false, an HTTP CONNECT request gets the 400 too", async () => {
    const ferry = await startFerry({ http: false });
    try {
      const c = await TestClient.connect(ferry.port);
      c.write("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
      const { data } = await c.readToEnd();
      c.destroy();
      assert.match(data.toString(), /^HTTP\/1\.1 400 /);
    } finally {
      await ferry.close();
    }
  });
});
