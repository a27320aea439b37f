import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { describe, test } from "node:test";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { sleep, startEchoServer, waitFor } from "../helpers/net.js";
import { childPid } from "../helpers/proc.js";
import { tempDir } from "../helpers/process.js";
import { assertEchoThrough, socks5Connect } from "../helpers/socks.js";

/**
 * A burst of 5,000 connections in one second against a `ferry serve` child process (issue 13),
 * each a complete CONNECT and the echo of one byte; and the same with a SIGHUP in the middle.
 * The clients and the echo server hold up to 10,000 descriptors here, the server as many.
 */

const COUNT = 5000;
const SPAN_MS = 1000;
const BATCH = 100;

type Outcome = "ok" | "refused" | "closed" | "reset" | "truncated" | "timeout" | `error ${string}`;

interface BurstResult {
  counts: Record<string, number>;
  /** From the first connection opened to the last. */
  openedMs: number;
  /** From the first connection opened to the last settled. */
  settledMs: number;
  /** When the last batch was opened (Date.now()). */
  lastOpenedAt: number;
  /** When the last connection settled (Date.now()). */
  settledAt: number;
}

/**
 * One client: greeting, CONNECT to 127.0.0.1:echoPort and one byte in a single write, then the
 * method selection, the reply and the byte echoed. A failure reply followed by a close is clean
 * ("refused"); so is a close before any reply ("closed"); a reset or a cut reply is not.
 */
function oneClient(proxyPort: number, echoPort: number, settle: (o: Outcome) => void): () => void {
  const request = Buffer.from([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 0, 0x78]);
  request.writeUInt16BE(echoPort, 11);
  const s = net.connect({ host: "127.0.0.1", port: proxyPort });
  let got: Buffer = Buffer.alloc(0);
  let outcome: Outcome | undefined;
  const done = (o: Outcome): void => {
    if (outcome) return;
    outcome = o;
    settle(o);
    s.destroy();
  };
  s.on("connect", () => s.write(request));
  s.on("data", (c: Buffer) => {
    got = got.length ? Buffer.concat([got, c]) : c;
    if (got.length < 4) return;
    if (got[0] !== 5 || got[1] !== 0) return done("truncated");
    if (got[3] !== 0) return done("refused");
    const replyLength = got.length > 5 ? (got[5] === 4 ? 22 : 10) : 10;
    if (got.length >= 2 + replyLength + 1) done(got[2 + replyLength] === 0x78 ? "ok" : "truncated");
  });
  s.on("error", (err: NodeJS.ErrnoException) =>
    done(err.code === "ECONNRESET" ? "reset" : `error ${err.code}`),
  );
  s.on("close", () =>
    done(got.length === 0 ? "closed" : got.length >= 4 && got[3] !== 0 ? "refused" : "truncated"),
  );
  return () => done("timeout");
}

/** Opens COUNT clients over SPAN_MS in batches; `midway` runs once half are open. */
async function burst(proxyPort: number, echoPort: number, midway?: () => void): Promise<BurstResult> {
  const counts: Record<string, number> = {};
  let settled = 0;
  const timeouts: (() => void)[] = [];
  const settle = (o: Outcome): void => {
    counts[o] = (counts[o] ?? 0) + 1;
    settled++;
  };
  const started = Date.now();
  const batches = COUNT / BATCH;
  for (let b = 0; b < batches; b++) {
    // Catch up when late rather than drift: the batches stay within the second.
    const due = started + (b * SPAN_MS) / batches;
    if (due > Date.now()) await sleep(due - Date.now());
    for (let i = 0; i < BATCH; i++) timeouts.push(oneClient(proxyPort, echoPort, settle));
    if (b === batches / 2) midway?.();
  }
  const lastOpenedAt = Date.now();
  const openedMs = lastOpenedAt - started;
  try {
    await waitFor(() => settled === COUNT, 90_000, `all ${COUNT} connections to settle`);
  } catch {
    for (const t of timeouts) t();
  }
  const settledAt = Date.now();
  return { counts, openedMs, settledMs: settledAt - started, lastOpenedAt, settledAt };
}

// The burst is one client at 5,000 connections a second: limits (and the handshake budget, whose
// shedding load.test.ts covers) are raised so that what is measured is the server keeping up.
const config = (extraRules = "") =>
  `limits:\n  sessions: 12000\n  sessionsPerClient: 12000\n  handshakes: 12000\nrules:\n${extraRules}  - allow: { to: ["127.0.0.0/8", "::1"] }\n  - deny: {}\n`;

async function withServer(fn: (ferry: FerryProcess, file: string, echoPort: number) => Promise<void>) {
  const dir = await tempDir("ferry-burst-");
  const echo = await startEchoServer();
  const file = path.join(dir.path, "ferry.yaml");
  await writeFile(file, config());
  const ferry = await spawnFerry({ args: ["--config", file], lifetimeSec: 240 });
  try {
    await fn(ferry, file, echo.port);
  } finally {
    await ferry.stop(10_000);
    await echo.close();
    await dir.remove();
  }
}

describe("a burst of 5,000 connections in one second", { timeout: 240_000 }, () => {
  test("every one completes its CONNECT and echo, and the server keeps serving", async (t) => {
    await withServer(async (ferry, _file, echoPort) => {
      const r = await burst(ferry.port, echoPort);
      t.diagnostic(`opened in ${r.openedMs} ms, settled in ${r.settledMs} ms: ${JSON.stringify(r.counts)}`);
      assert.ok(r.openedMs < 3000, `opening ${COUNT} connections took ${r.openedMs} ms`);
      assert.deepEqual(r.counts, { ok: COUNT });
      assert.equal(ferry.child.exitCode, null, "the server is still running");
      await assertEchoThrough(ferry.port, echoPort);
    });
  });

  test("SIGHUP with a changed, valid configuration in the middle: every session completes, the reload applies", async (t) => {
    await withServer(async (ferry, file, echoPort) => {
      // A rule the burst does not meet, but a later request does: proof the new rules run.
      await writeFile(file, config('  - deny: { to: ["127.0.0.2"] }\n'));
      const pid = childPid(ferry.pid);
      const r = await burst(ferry.port, echoPort, () => process.kill(pid, "SIGHUP"));
      t.diagnostic(`opened in ${r.openedMs} ms, settled in ${r.settledMs} ms: ${JSON.stringify(r.counts)}`);
      assert.deepEqual(r.counts, { ok: COUNT });
      await waitFor(
        () => ferry.output().includes('"msg":"configuration reloaded'),
        30_000,
        "the reload in the log",
      );
      assert.ok(!ferry.output().includes("reload refused"), "the reload was not refused");
      const reloaded = ferry.logs().find((l) => l.msg.startsWith("configuration reloaded"))!;
      // Applied while the burst was still in flight (on a loaded machine it may finish after the
      // last connection opened, but never after the last one settled).
      assert.ok(
        (reloaded.time as number) <= r.settledAt,
        `the reload was applied at ${reloaded.time}, after the burst had settled (${r.settledAt})`,
      );
      assert.equal(ferry.child.exitCode, null, "the server is still running");
      await assertEchoThrough(ferry.port, echoPort);
      const denied = await socks5Connect(ferry.port, { type: "ipv4", host: "127.0.0.2", port: echoPort });
      assert.equal(denied.reply.reply, 0x02, "the reloaded rules apply to new requests");
      denied.client.destroy();
    });
  });
});
