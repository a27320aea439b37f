import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { encodeSocks4Request, parseSocks4Reply } from "../../src/protocol/socks4.js";
import {
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
} from "../../src/protocol/socks5.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { sleep, startEchoServer, waitFor, within } from "../helpers/net.js";
import { freePort } from "../helpers/process.js";
import { recordFor, socks5Connect, TestClient } from "../helpers/socks.js";
import { requireTool, SYSTEM_PYTHON } from "../helpers/tools.js";

type Echo = Awaited<ReturnType<typeof startEchoServer>>;

/** A target server whose behaviour each test writes; tracks its sockets so they can be checked and closed. */
async function startTarget(onSocket: (s: net.Socket) => void) {
  const sockets: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.push(s);
    s.on("error", () => {});
    onSocket(s);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe("CONNECT", () => {
  let ferry: RunningFerry;
  let echo4: Echo;
  let echo6: Echo;
  before(async () => {
    ferry = await startFerry();
    echo4 = await startEchoServer("127.0.0.1");
    echo6 = await startEchoServer("::1");
  });
  after(async () => {
    await ferry?.close();
    await echo4?.close();
    await echo6?.close();
  });

  const targets = [
    {
      name: "an IPv4 target",
      echo: () => echo4,
      type: "ipv4" as const,
      host: "127.0.0.1",
      bound: "127.0.0.1",
    },
    { name: "an IPv6 target", echo: () => echo6, type: "ipv6" as const, host: "::1", bound: "::1" },
    {
      name: "a domain target",
      echo: () => echo4,
      type: "domain" as const,
      host: "localhost",
      bound: "127.0.0.1",
    },
  ];
  for (const t of targets) {
    test(`${t.name}: relays, and BND.ADDR/PORT is the outbound socket's real local address`, async () => {
      const echo = t.echo();
      const { client, reply } = await socks5Connect(ferry.port, {
        type: t.type,
        host: t.host,
        port: echo.port,
      });
      try {
        assert.equal(reply.reply, 0);
        const probe = randomBytes(1000);
        client.write(probe);
        assert.deepEqual(await client.readBytes(probe.length), probe);
        const seen = echo.peers.at(-1)!;
        assert.deepEqual(reply.address, {
          type: t.bound === "::1" ? "ipv6" : "ipv4",
          host: t.bound,
          port: seen.port,
        });
        assert.equal(seen.address, t.bound);
      } finally {
        client.destroy();
      }
      const r = await recordFor(ferry, client.localPort);
      assert.equal(r.protocol, "socks5");
      assert.equal(r.command, "connect");
      assert.equal(r.reply, 0);
      assert.equal(r.replyName, "succeeded");
      const b = t.bound === "::1" ? `[::1]` : t.bound;
      assert.equal(r.bound, `${b}:${echo.peers.at(-1)!.port}`);
      assert.equal(r.remote, `${b}:${echo.port}`);
      assert.equal(r.target, t.type === "ipv6" ? `[::1]:${echo.port}` : `${t.host}:${echo.port}`);
    });
  }

  test("SOCKS4 to an IPv4 target: granted (90) with the bound port, then relays", async () => {
    const client = await TestClient.connect(ferry.port);
    try {
      client.write(
        encodeSocks4Request({
          command: "connect",
          address: { type: "ipv4", host: "127.0.0.1", port: echo4.port },
          userId: "me",
        }),
      );
      const reply = await client.read(parseSocks4Reply);
      assert.deepEqual(reply, { reply: 90, host: "127.0.0.1", port: echo4.peers.at(-1)!.port });
      client.write("four");
      assert.equal((await client.readBytes(4)).toString(), "four");
    } finally {
      client.destroy();
    }
    const r = await recordFor(ferry, client.localPort);
    assert.equal(r.protocol, "socks4");
    assert.equal(r.ident, "me");
    assert.equal(r.reply, 90);
  });

  test("SOCKS4a to a name: the proxy resolves it, granted, relays", async () => {
    const client = await TestClient.connect(ferry.port);
    try {
      client.write(
        encodeSocks4Request({
          command: "connect",
          address: { type: "domain", host: "localhost", port: echo4.port },
          userId: "",
        }),
      );
      const reply = await client.read(parseSocks4Reply);
      assert.equal(reply.reply, 90);
      assert.equal(reply.port, echo4.peers.at(-1)!.port);
      client.write("4a");
      assert.equal((await client.readBytes(2)).toString(), "4a");
    } finally {
      client.destroy();
    }
    assert.equal((await recordFor(ferry, client.localPort)).protocol, "socks4a");
  });

  test("a refused dial gets 0x05 and an immediate close", async () => {
    const port = await freePort();
    const { client, reply } = await socks5Connect(ferry.port, { type: "ipv4", host: "127.0.0.1", port });
    try {
      assert.equal(reply.reply, 0x05);
      assert.deepEqual(reply.address, { type: "ipv4", host: "0.0.0.0", port: 0 });
      const started = Date.now();
      // "Immediate" means long before any server timer (the handshake one is 10 s) could close it;
      // a tighter bound would fail on a loaded machine that stalls for a second or two.
      const rest = await client.readToEnd(5000);
      assert.ok(rest.ended && rest.data.length === 0, "closed right after the failure reply");
      assert.ok(Date.now() - started < 5000, "the close is immediate");
    } finally {
      client.destroy();
    }
    const r = await recordFor(ferry, client.localPort);
    assert.equal(r.reply, 5);
    assert.equal(r.replyName, "connection refused");
    assert.match(r.reason!, /ECONNREFUSED/);
  });

  test("a refused dial over SOCKS4 gets 91 and a close", async () => {
    const port = await freePort();
    const client = await TestClient.connect(ferry.port);
    try {
      client.write(
        encodeSocks4Request({
          command: "connect",
          address: { type: "ipv4", host: "127.0.0.1", port },
          userId: "",
        }),
      );
      const { data, ended } = await client.readToEnd();
      assert.equal(data.toString("hex"), "005b000000000000");
      assert.ok(ended);
    } finally {
      client.destroy();
    }
  });

  test("a name that does not resolve gets 0x04 and an immediate close", async () => {
    const { client, reply } = await socks5Connect(ferry.port, {
      type: "domain",
      host: "nonexistent.invalid",
      port: 80,
    });
    try {
      assert.equal(reply.reply, 0x04);
      const rest = await client.readToEnd();
      assert.ok(rest.ended && rest.data.length === 0);
    } finally {
      client.destroy();
    }
    const r = await recordFor(ferry, client.localPort);
    assert.equal(r.replyName, "host unreachable");
    assert.match(r.reason!, /cannot resolve nonexistent\.invalid/);
  });

  test("1 MB pipelined in the same write as greeting and request is delivered and counted", async () => {
    const client = await TestClient.connect(ferry.port);
    const early = randomBytes(1024 * 1024);
    try {
      client.write(
        Buffer.concat([
          encodeGreeting({ methods: [0] }),
          encodeRequest({
            command: "connect",
            address: { type: "ipv4", host: "127.0.0.1", port: echo4.port },
          }),
          early,
        ]),
      );
      assert.equal(await client.read(parseMethodSelection), 0);
      assert.equal((await client.read(parseReply)).reply, 0);
      assert.deepEqual(await client.readBytes(early.length), early);
      const later = randomBytes(5000);
      client.write(later);
      assert.deepEqual(await client.readBytes(later.length), later);
      client.socket.end();
      assert.ok((await client.readToEnd()).ended);
    } finally {
      client.destroy();
    }
    const r = await recordFor(ferry, client.localPort);
    assert.equal(r.bytesUp, 1024 * 1024 + 5000);
    assert.equal(r.bytesDown, 1024 * 1024 + 5000);
    assert.equal(r.reason, undefined, "a clean close has no failure reason");
  });

  test("greeting, request, data and FIN all in one flush: the data arrives and the FIN follows it", async () => {
    const client = await TestClient.connect(ferry.port);
    const early = randomBytes(2000);
    try {
      client.socket.end(
        Buffer.concat([
          encodeGreeting({ methods: [0] }),
          encodeRequest({
            command: "connect",
            address: { type: "ipv4", host: "127.0.0.1", port: echo4.port },
          }),
          early,
        ]),
      );
      assert.equal(await client.read(parseMethodSelection), 0);
      assert.equal((await client.read(parseReply)).reply, 0);
      const rest = await client.readToEnd();
      assert.ok(rest.ended, "the echo server's FIN comes back through the proxy");
      assert.deepEqual(rest.data, early);
    } finally {
      client.destroy();
    }
    const r = await recordFor(ferry, client.localPort);
    assert.equal(r.bytesUp, 2000);
    assert.equal(r.bytesDown, 2000);
  });

  test("half-close: the client's FIN reaches the target, which answers after it", async () => {
    const answer = randomBytes(200_000);
    const target = await startTarget((s) => {
      const got: Buffer[] = [];
      s.on("data", (c: Buffer) => got.push(c));
      // Answers only once the request is complete, i.e. after the client's FIN.
      s.on("end", () =>
        s.end(Buffer.concat([Buffer.from(createHash("sha256").update(Buffer.concat(got)).digest()), answer])),
      );
    });
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: target.port,
      });
      try {
        assert.equal(reply.reply, 0);
        const question = randomBytes(50_000);
        client.write(question);
        client.socket.end();
        const rest = await client.readToEnd();
        assert.ok(rest.ended);
        assert.deepEqual(rest.data.subarray(0, 32), createHash("sha256").update(question).digest());
        assert.deepEqual(rest.data.subarray(32), answer);
      } finally {
        client.destroy();
      }
      const r = await recordFor(ferry, client.localPort);
      assert.equal(r.bytesUp, 50_000);
      assert.equal(r.bytesDown, 32 + answer.length);
    } finally {
      await target.close();
    }
  });

  test("half-close the other way: the target's FIN reaches the client, which keeps sending", async () => {
    let received = 0;
    let targetGotEnd = false;
    const target = await startTarget((s) => {
      s.end("bye");
      s.on("data", (c: Buffer) => {
        received += c.length;
      });
      s.on("end", () => {
        targetGotEnd = true;
      });
    });
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: target.port,
      });
      try {
        assert.equal(reply.reply, 0);
        assert.equal((await client.readBytes(3)).toString(), "bye");
        await waitFor(() => client.ended, 10_000, "the target's FIN at the client");
        for (let i = 0; i < 5; i++) {
          client.write(Buffer.alloc(10_000, i));
          await sleep(20);
        }
        await waitFor(() => received === 50_000, 10_000, "every byte sent after the target's FIN");
        client.socket.end();
        await waitFor(() => targetGotEnd, 10_000, "the client's FIN at the target");
        await client.waitClosed();
      } finally {
        client.destroy();
      }
    } finally {
      await target.close();
    }
  });

  test("20 MB each way through slow readers arrive intact (sha256)", async () => {
    const SIZE = 20 * 1024 * 1024;
    const down = randomBytes(SIZE);
    const up = randomBytes(SIZE);
    let upHash = "";
    const target = await startTarget((s) => {
      const h = createHash("sha256");
      let n = 0;
      s.on("data", (c: Buffer) => {
        h.update(c);
        n += c.length;
        // A slow reader: stop now and then so the proxy must hold the client back.
        if (n % (2 * 1024 * 1024) < c.length) {
          s.pause();
          setTimeout(() => s.resume(), 30);
        }
      });
      s.on("end", () => {
        upHash = h.digest("hex");
        s.end();
      });
      s.write(down);
    });
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: target.port,
      });
      try {
        assert.equal(reply.reply, 0);
        const h = createHash("sha256");
        const early = client.takeOver();
        h.update(early);
        let n = early.length;
        const sock = client.socket;
        const done = new Promise<void>((resolve, reject) => {
          sock.on("data", (c: Buffer) => {
            h.update(c);
            n += c.length;
            if (n % (2 * 1024 * 1024) < c.length) {
              sock.pause();
              setTimeout(() => sock.resume(), 30);
            }
          });
          sock.on("end", resolve);
          sock.on("error", reject);
        });
        for (let at = 0; at < SIZE; at += 1024 * 1024) {
          if (!sock.write(up.subarray(at, at + 1024 * 1024))) await once(sock, "drain");
        }
        sock.end();
        await within(done, 60_000, "the transfer");
        assert.equal(n, SIZE);
        assert.equal(h.digest("hex"), createHash("sha256").update(down).digest("hex"));
        await waitFor(() => upHash !== "", 10_000, "the target's hash");
        assert.equal(upHash, createHash("sha256").update(up).digest("hex"));
      } finally {
        client.destroy();
      }
      const r = await recordFor(ferry, client.localPort);
      assert.equal(r.bytesUp, SIZE);
      assert.equal(r.bytesDown, SIZE);
    } finally {
      await target.close();
    }
  });

  /**
   * A writer facing a reader that stopped: with backpressure the writer is blocked once the
   * buffers along the way are full; a proxy that kept reading would let it write without end.
   */
  async function writeUntilBlocked(sock: net.Socket): Promise<{ written: number; blocked: boolean }> {
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    let written = 0;
    while (written < 256 * 1024 * 1024) {
      written += chunk.length;
      if (!sock.write(chunk)) {
        const drained = await Promise.race([
          once(sock, "drain").then(() => true),
          sleep(700).then(() => false),
        ]);
        if (!drained) return { written, blocked: true };
      }
    }
    return { written, blocked: false };
  }

  test("backpressure downstream: a client that stops reading stops the target's writes", async () => {
    let result: { written: number; blocked: boolean } | undefined;
    const target = await startTarget((s) => {
      void writeUntilBlocked(s).then((r) => {
        result = r;
        s.end();
      });
    });
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: target.port,
      });
      try {
        assert.equal(reply.reply, 0);
        client.socket.pause();
        await waitFor(() => result !== undefined, 20_000, "the target to block or give up");
        assert.ok(result!.blocked, `the target was never blocked (wrote ${result!.written} bytes)`);
        assert.ok(result!.written < 64 * 1024 * 1024, `${result!.written} bytes in flight`);
        let n = client.takeOver().length;
        client.socket.on("data", (c: Buffer) => {
          n += c.length;
        });
        client.socket.resume();
        await waitFor(() => n === result!.written, 10_000, "every byte after resuming");
      } finally {
        client.destroy();
      }
    } finally {
      await target.close();
    }
  });

  test("backpressure upstream: a target that stops reading stops the client's writes", async () => {
    let targetSocket: net.Socket | undefined;
    let n = 0;
    const target = await startTarget((s) => {
      targetSocket = s;
      s.pause();
    });
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: target.port,
      });
      try {
        assert.equal(reply.reply, 0);
        const result = await writeUntilBlocked(client.socket);
        assert.ok(result.blocked, `the client was never blocked (wrote ${result.written} bytes)`);
        assert.ok(result.written < 64 * 1024 * 1024, `${result.written} bytes in flight`);
        targetSocket!.on("data", (c: Buffer) => {
          n += c.length;
        });
        targetSocket!.resume();
        await waitFor(() => n === result.written, 10_000, "every byte after resuming");
      } finally {
        client.destroy();
      }
    } finally {
      await target.close();
    }
  });

  test("a client reset destroys the target connection", async () => {
    const target = await startTarget(() => {});
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: target.port,
      });
      assert.equal(reply.reply, 0);
      await waitFor(() => target.sockets.length === 1, 10_000, "the target connection");
      const t = target.sockets[0]!;
      const closed = new Promise((resolve) => t.on("close", resolve));
      client.socket.resetAndDestroy();
      await within(closed, 10_000, "closing the target connection");
      const r = await recordFor(ferry, client.localPort);
      assert.match(r.reason!, /client/);
    } finally {
      await target.close();
    }
  });

  test("a client reset in the middle of the handshake ends only that session", async () => {
    // This used to surface as an unhandled rejection, which kills the process.
    const client = await TestClient.connect(ferry.port);
    client.write(Buffer.from([5, 1, 0]));
    assert.equal(await client.read(parseMethodSelection), 0);
    client.socket.resetAndDestroy();
    const r = await recordFor(ferry, client.localPort);
    assert.match(r.reason!, /ECONNRESET|closed/);
    assert.ok(r.durationMs >= 0);
    await waitFor(() => ferry.server.activeSessions === 0, 10_000, "the session to be released");
    const again = await socks5Connect(ferry.port, { type: "ipv4", host: "127.0.0.1", port: echo4.port });
    again.client.destroy();
    assert.equal(again.reply.reply, 0);
  });

  test("a target reset destroys the client connection", async () => {
    const target = await startTarget(() => {});
    try {
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: target.port,
      });
      try {
        assert.equal(reply.reply, 0);
        await waitFor(() => target.sockets.length === 1, 10_000, "the target connection");
        client.write("something in flight");
        await sleep(50);
        target.sockets[0]!.resetAndDestroy();
        await waitFor(() => client.closed, 10_000, "the client connection to be destroyed");
      } finally {
        client.destroy();
      }
      const r = await recordFor(ferry, client.localPort);
      assert.match(r.reason!, /target/);
    } finally {
      await target.close();
    }
  });
});

describe("listening on IPv6", () => {
  test("a server on [::1] accepts a client over IPv6 and relays to an IPv4 target", async () => {
    const echo = await startEchoServer();
    const ferry = await startFerry({ listen: ["[::1]:0"] });
    try {
      assert.equal(ferry.host, "::1");
      const { client, reply } = await socks5Connect(
        ferry.port,
        { type: "ipv4", host: "127.0.0.1", port: echo.port },
        { host: "::1" },
      );
      try {
        assert.equal(reply.reply, 0);
        client.write("six");
        assert.equal((await client.readBytes(3)).toString(), "six");
      } finally {
        client.destroy();
      }
      assert.equal((await recordFor(ferry, client.localPort)).client, "::1");
    } finally {
      await ferry.close();
      await echo.close();
    }
  });
});

/**
 * A port whose SYNs go unanswered. Node always accepts, so a listener that never does is a small
 * Python program with a backlog of 0: once one connection waits in its queue (two fillers make
 * sure), the kernel drops further SYNs.
 */
async function startBlackhole(): Promise<{ port: number; close(): void }> {
  const py = spawn(
    SYSTEM_PYTHON,
    [
      "-c",
      "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)",
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const [line] = (await once(py.stdout!, "data")) as [Buffer];
  const port = Number(line.toString().trim());
  const filler: net.Socket[] = [];
  for (let i = 0; i < 2; i++) filler.push(net.connect(port, "127.0.0.1").on("error", () => {}));
  // Make sure a further connection really hangs.
  await sleep(200);
  return {
    port,
    close: () => {
      for (const s of filler) s.destroy();
      if (py.pid && py.exitCode === null) process.kill(py.pid, "SIGKILL");
    },
  };
}

describe("dial timeout", () => {
  test("a target that never completes the TCP handshake gets 0x06 after timeouts.connect", async (t) => {
    if (!requireTool(t, SYSTEM_PYTHON, "python3")) return;
    const hole = await startBlackhole();
    const ferry = await startFerry({ timeouts: { connect: "300ms" } });
    try {
      const started = Date.now();
      const { client, reply } = await socks5Connect(ferry.port, {
        type: "ipv4",
        host: "127.0.0.1",
        port: hole.port,
      });
      const took = Date.now() - started;
      try {
        assert.equal(reply.reply, 0x06);
        // Well under the 10 s default, with room for a loaded machine.
        assert.ok(took >= 250 && took < 8000, `answered after ${took} ms`);
        assert.ok((await client.readToEnd()).ended);
      } finally {
        client.destroy();
      }
      const r = await recordFor(ferry, client.localPort);
      assert.equal(r.replyName, "TTL expired");
      assert.match(r.reason!, /timed out after 300 ms/);
    } finally {
      hole.close();
      await ferry.close();
    }
  });

  test("a client that hangs up while the target is being dialled ends the dial at once", async (t) => {
    if (!requireTool(t, SYSTEM_PYTHON, "python3")) return;
    const hole = await startBlackhole();
    const ferry = await startFerry({ timeouts: { connect: "30s" } });
    const client = net.connect(ferry.port, "127.0.0.1");
    client.on("error", () => {});
    try {
      await once(client, "connect");
      client.write(encodeGreeting({ methods: [0] }));
      client.write(
        encodeRequest({ command: "connect", address: { type: "ipv4", host: "127.0.0.1", port: hole.port } }),
      );
      // The request has been read and the dial is under way once the session is established.
      await waitFor(
        () => ferry.server.activeSessions === 1 && ferry.server.handshaking === 0,
        5000,
        "the dial",
      );
      const port = client.localPort!;
      const left = Date.now();
      // A reset: a FIN alone is a half-close, and the client may still want its reply.
      client.resetAndDestroy();
      const r = await recordFor(ferry, port, 20_000);
      const took = Date.now() - left;
      assert.equal(r.reason, "dial aborted");
      // Not the 30 s of timeouts.connect: the hang-up ended it.
      assert.ok(took < 10_000, `the session ended ${took} ms after the client left`);
      assert.equal(ferry.server.activeSessions, 0);
    } finally {
      client.destroy();
      hole.close();
      await ferry.close();
    }
  });
});
