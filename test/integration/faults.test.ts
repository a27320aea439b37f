import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { describe, test } from "node:test";
import { buildOutbound } from "../../src/dial/build-outbound.js";
import type { Resolved } from "../../src/dial/family.js";
import { resetBehindEnd } from "../../src/io/peer-reset.js";
import { addressOf } from "../../src/protocol/address.js";
import { startFerry } from "../helpers/ferry.js";
import { type SessionLine, spawnFerry } from "../helpers/ferry-process.js";
import { startMicrosocks } from "../helpers/microsocks.js";
import { listenClosable, startEchoServer, waitFor, within } from "../helpers/net.js";
import { childPid, residentBytes } from "../helpers/proc.js";
import { tempDir } from "../helpers/process.js";
import { assertEchoThrough, socks5Connect } from "../helpers/socks.js";

/**
 * Faults from outside (issue 13): what a client sees when an upstream or a target dies, when DNS
 * never answers, when it stops reading. Every proxy here allows loopback targets only.
 */

const LOOPBACK = ["127.0.0.0/8", "::1"];
const CHUNK = Buffer.alloc(64 * 1024, 0x5a);

/** A target whose sockets run `onSocket`; tracks them so they can be closed. */
function startTarget(onSocket: (s: net.Socket) => void) {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on("error", () => {});
    onSocket(s);
  });
  return listenClosable(server);
}

/** Writes CHUNKs as fast as the reader takes them (honouring backpressure) until `limit` bytes. */
function pump(s: net.Socket, limit = Number.POSITIVE_INFINITY): { written: () => number } {
  let written = 0;
  const go = (): void => {
    while (!s.destroyed && written < limit) {
      written += CHUNK.length;
      if (!s.write(CHUNK)) return;
    }
  };
  s.on("drain", go);
  go();
  return { written: () => written };
}

/** How a client connection ended: a reset (error) or a clean end, and what it got before. */
function watchEnd(socket: net.Socket): {
  bytes: () => number;
  ended: Promise<{ error?: string; end: boolean }>;
} {
  let bytes = 0;
  let end = false;
  socket.on("data", (c: Buffer) => {
    bytes += c.length;
  });
  const ended = new Promise<{ error?: string; end: boolean }>((resolve) => {
    // A clean end is an answer too (the wrong one here): the socket is half-open and stays.
    socket.on("end", () => {
      // This client runs on the same libuv as Ferry: a reset behind unread bytes reaches it as
      // an end too (see src/io/peer-reset.ts), so it asks the kernel as Ferry does.
      if (resetBehindEnd(socket)) return resolve({ error: "ECONNRESET", end });
      end = true;
      resolve({ end });
    });
    socket.on("error", (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message, end }));
    socket.on("close", () => resolve({ end }));
  });
  return { bytes: () => bytes, ended };
}

describe("an upstream or a target that dies mid-transfer", { timeout: 120_000 }, () => {
  test("an upstream killed mid-transfer with bytes in flight to it: the client gets a reset, not a clean end", async () => {
    const microsocks = await startMicrosocks({ lifetimeSec: 120 });
    // Sends for ever and swallows what comes: a download and an upload at once.
    const target = await startTarget((s) => {
      s.resume();
      pump(s);
    });
    const ferry = await startFerry({
      upstreams: { up: { url: `socks5://127.0.0.1:${microsocks.port}` } },
      rules: [{ allow: { to: LOOPBACK, via: "up" } }, { deny: {} }],
    });
    try {
      const { client, reply } = await socks5Connect(ferry.port, addressOf("127.0.0.1", target.port));
      assert.equal(reply.reply, 0);
      client.takeOver();
      const socket = client.socket;
      const seen = watchEnd(socket);
      let uploadBlocked = false;
      let lastDrain = Date.now();
      const up = (): void => {
        uploadBlocked = false;
        lastDrain = Date.now();
        while (!socket.destroyed && socket.write(CHUNK)) {}
        uploadBlocked = true;
      };
      // The upload starts once the download is under way: microsocks serves its client's side
      // first whenever it is readable, so an upload at full speed from the start can keep the
      // download from ever reaching 4 MB.
      await waitFor(() => seen.bytes() > 4 * 1024 * 1024, 20_000, "4 MB downloaded through the upstream");
      socket.on("drain", up);
      up();
      // Stopped first, so that what the client keeps sending waits unread in the upstream's
      // buffers when it dies: a process killed with nothing unread closes with a FIN, which no
      // proxy can tell from a clean end (see the report of issue 13).
      process.kill(-microsocks.pid, "SIGSTOP");
      // Blocked for half a second: every buffer up to the upstream's is full, its own too.
      await waitFor(
        () => uploadBlocked && Date.now() - lastDrain > 500,
        20_000,
        "the upload to back up behind the stopped upstream",
      );
      const record = ferry.nextRecord();
      process.kill(-microsocks.pid, "SIGKILL");
      const how = await within(seen.ended, 20_000, "the client's connection to end");
      assert.equal(how.error, "ECONNRESET", `the client got ${JSON.stringify(how)}, not a reset`);
      assert.equal(how.end, false, "no FIN came before the reset");
      const r = await within(record, 20_000, "the session record");
      assert.match(r.reason ?? "", /target (error|closed|reset)/);
    } finally {
      await ferry.close();
      await target.close();
      await microsocks.stop(500);
    }
  });

  test("a target that resets mid-download: the client gets a reset, not a clean end", async () => {
    let sent = 0;
    const target = await startTarget((s) => {
      const p = pump(s);
      // Reset once 8 MB are out: in the middle of the transfer, with more queued.
      const check = setInterval(() => {
        sent = p.written();
        if (sent >= 8 * 1024 * 1024 || s.destroyed) {
          clearInterval(check);
          s.resetAndDestroy();
        }
      }, 5);
    });
    const ferry = await startFerry({ rules: [{ allow: { to: LOOPBACK } }, { deny: {} }] });
    try {
      const { client, reply } = await socks5Connect(ferry.port, addressOf("127.0.0.1", target.port));
      assert.equal(reply.reply, 0);
      client.takeOver();
      const seen = watchEnd(client.socket);
      const record = ferry.nextRecord();
      const how = await within(seen.ended, 20_000, "the client's connection to end");
      assert.equal(how.error, "ECONNRESET", `the client got ${JSON.stringify(how)}, not a reset`);
      assert.equal(how.end, false, "no FIN came before the reset");
      assert.ok(seen.bytes() > 0 && seen.bytes() < sent, `${seen.bytes()} of ${sent} bytes arrived`);
      assert.match((await within(record, 20_000, "the session record")).reason ?? "", /target (error|reset)/);
    } finally {
      await ferry.close();
      await target.close();
    }
  });
});

describe("DNS that never answers", { timeout: 60_000 }, () => {
  test("CONNECT to a name whose lookup never returns gets 0x06 after timeouts.connect, and the server keeps serving", async () => {
    const echo = await startEchoServer();
    let lookups = 0;
    const lookup = (host: string): Promise<Resolved[]> => {
      if (host === "never.test") {
        lookups++;
        return new Promise(() => {});
      }
      return Promise.resolve([{ address: "127.0.0.1", family: 4 }]);
    };
    const connectMs = 500;
    const ferry = await startFerry(
      { timeouts: { connect: `${connectMs}ms` }, rules: [{ allow: { to: LOOPBACK } }, { deny: {} }] },
      {},
      (ctx) => ({ ...ctx, outbound: buildOutbound(ctx.config, ctx.policy, { lookup }) }),
    );
    try {
      // Ten at once: they wait on one lookup, and none holds up the server.
      const started = Date.now();
      const answers = await Promise.all(
        Array.from({ length: 10 }, async () => {
          const { client, reply } = await socks5Connect(ferry.port, addressOf("never.test", 80));
          const took = Date.now() - started;
          const closed = await client.readToEnd(5000);
          client.destroy();
          return { reply: reply.reply, took, closed: closed.ended };
        }),
      );
      assert.equal(lookups, 1, "the ten requests shared one lookup (the resolver coalesces)");
      for (const a of answers) {
        assert.ok(a.reply === 0x06 || a.reply === 0x04, `reply 0x${a.reply.toString(16)}`);
        assert.ok(
          a.took >= connectMs - 50 && a.took < connectMs + 5000,
          `answered after ${a.took} ms (timeouts.connect ${connectMs} ms)`,
        );
        assert.ok(a.closed, "the connection was closed after the failure reply");
      }
      await waitFor(() => ferry.records.length >= 10, 10_000, "ten session records");
      for (const r of ferry.records.slice(0, 10))
        assert.match(
          r.reason ?? "",
          /cannot resolve never\.test: lookup of never\.test timed out after \d+ ms/,
        );
      await assertEchoThrough(ferry.port, echo.port);
    } finally {
      await ferry.close();
      await echo.close();
    }
  });
});

describe("a client that reads nothing while the target sends 1 GB", { timeout: 120_000 }, () => {
  test("Ferry's memory stays bounded, the target is held by backpressure, the idle timer ends the session", async (t) => {
    const GB = 1024 * 1024 * 1024;
    const idleMs = 3000;
    const dir = await tempDir("ferry-faults-");
    let progress = { written: 0, at: 0, closedAt: 0, blocked: false };
    const target = await startTarget((s) => {
      progress = { written: 0, at: Date.now(), closedAt: 0, blocked: false };
      const go = (): void => {
        progress.blocked = false;
        while (!s.destroyed && progress.written < GB) {
          progress.written += CHUNK.length;
          progress.at = Date.now();
          if (!s.write(CHUNK)) {
            progress.blocked = true;
            return;
          }
        }
      };
      s.on("drain", go);
      s.on("close", () => {
        progress.closedAt = Date.now();
      });
      go();
    });
    const echo = await startEchoServer();
    const config = path.join(dir.path, "ferry.yaml");
    await writeFile(
      config,
      `timeouts:\n  idle: ${idleMs}ms\nrules:\n  - allow: { to: ["127.0.0.0/8", "::1"] }\n  - deny: {}\n`,
    );
    const ferry = await spawnFerry({ args: ["--config", config], lifetimeSec: 120 });
    try {
      const pid = childPid(ferry.pid);
      // One session first, so that the baseline includes what the first relay loads.
      await assertEchoThrough(ferry.port, echo.port);
      await ferry.waitForSession();
      const baseline = residentBytes(pid);
      let peak = baseline;
      const sampler = setInterval(() => {
        try {
          peak = Math.max(peak, residentBytes(pid));
        } catch {
          // The process is gone: the assertions below say so.
        }
      }, 20);
      try {
        const { client, reply } = await socks5Connect(ferry.port, addressOf("127.0.0.1", target.port));
        assert.equal(reply.reply, 0);
        const buffered = client.takeOver().length;
        client.socket.pause();
        client.socket.on("error", () => {});
        const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
        const figures = () =>
          `baseline ${mb(baseline)}, peak ${mb(peak)}, target wrote ${mb(progress.written)}, ${buffered} bytes read by the client`;
        const LIMIT = 100 * 1024 * 1024;
        let line: SessionLine | undefined;
        const session = ferry
          .waitForSession((s) => s.target === `127.0.0.1:${target.port}`, { timeoutMs: 60_000 })
          .then((l) => {
            line = l;
          });
        // Ends when the session does, or as soon as Ferry has swallowed too much to be right.
        await waitFor(
          () => line !== undefined || peak - baseline > LIMIT || progress.written >= GB,
          60_000,
          "the session to end",
        );
        assert.ok(peak - baseline < LIMIT, `Ferry grew by ${mb(peak - baseline)}: ${figures()}`);
        assert.ok(progress.written < 256 * 1024 * 1024, `the target was not held back: ${figures()}`);
        await session;
        // Ferry closed its side; the client, reading again, gets what was in flight and the end.
        client.socket.resume();
        await waitFor(() => client.ended || client.closed, 20_000, "the client's connection to end");
        client.destroy();
        await waitFor(() => progress.closedAt > 0, 10_000, "the target's connection to close");
        clearInterval(sampler);
        assert.ok(peak - baseline < LIMIT, `Ferry grew by ${mb(peak - baseline)}: ${figures()}`);
        assert.ok(
          progress.blocked,
          `the target was not waiting on backpressure when it was closed: ${figures()}`,
        );
        assert.match(line!.reason ?? "", /^idle for 3000 ms$/);
        // It sat blocked for the idle period: nothing flowed, and only the idle timer ended it.
        const stalled = progress.closedAt - progress.at;
        assert.ok(stalled >= idleMs - 200, `the target was closed ${stalled} ms after its last write`);
        t.diagnostic(`${figures()}; stalled ${stalled} ms`);
      } finally {
        clearInterval(sampler);
      }
      await assertEchoThrough(ferry.port, echo.port);
    } finally {
      await ferry.stop();
      await target.close();
      await echo.close();
      await dir.remove();
    }
  });
});
