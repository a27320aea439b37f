import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readFdLimit } from "../../src/server/fd-budget.js";
import { startFerry } from "../helpers/ferry.js";
import { type LogLine, spawnFerry } from "../helpers/ferry-process.js";
import { sleep, startEchoServer, waitFor } from "../helpers/net.js";
import { tempDir } from "../helpers/process.js";
import { assertEchoThrough, socks5Connect, type TestClient } from "../helpers/socks.js";

/** Every proxy here may reach loopback targets only. */
const LOOPBACK_ONLY = [{ allow: { to: ["127.0.0.0/8"] } }, { deny: {} }];

/** This process's open-files limit; tests that hold both ends of many connections fit in it. */
const FD_LIMIT = readFdLimit() ?? 1024;

/**
 * Opens a connection from `localAddress` that then stalls in the handshake: silent, or after the
 * first bytes of a greeting. Resolves once connected, or once closed (the server may shed it).
 */
function openStalled(port: number, localAddress: string, partial: boolean): Promise<net.Socket> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1", localAddress });
    s.on("error", () => {});
    s.once("close", () => resolve(s));
    s.once("connect", () => {
      if (partial) s.write(Buffer.from([5, 2, 0])); // a greeting offering two methods, one sent
      resolve(s);
    });
  });
}

/** One whole session: CONNECT to the echo server, a byte there and back. Its time in ms, or the error. */
async function echoSession(proxyPort: number, echoPort: number): Promise<number | Error> {
  const started = performance.now();
  let client: TestClient | undefined;
  try {
    const r = await socks5Connect(proxyPort, { type: "ipv4", host: "127.0.0.1", port: echoPort });
    client = r.client;
    if (r.reply.reply !== 0) return new Error(`reply ${r.reply.reply}`);
    client.write("x");
    if ((await client.readBytes(1)).toString() !== "x") return new Error("wrong echo");
    return performance.now() - started;
  } catch (err) {
    return err as Error;
  } finally {
    client?.destroy();
  }
}

/** Runs `count` tasks, at most `width` at a time. */
async function inWaves<T>(count: number, width: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < count; i += width) {
    const wave = Array.from({ length: Math.min(width, count - i) }, (_, k) => task(i + k));
    out.push(...(await Promise.all(wave)));
  }
  return out;
}

describe("under attack and under load, with the default limits", () => {
  test("2,000 stalled handshakes from 100 addresses do not keep an honest client out", async () => {
    // In this process the test holds both ends of every connection: 2,000 stalled ones take
    // about 4,000 descriptors, the honest sessions a few more. Under a lower limit, fewer
    // attackers against a budget of half as many keep the shape: they hold more than it.
    const attackers = FD_LIMIT >= 6000 ? 2000 : Math.max(200, Math.floor((FD_LIMIT - 500) / 2));
    const budget = attackers === 2000 ? 1000 : Math.floor(attackers / 2);
    const echo = await startEchoServer();
    const ferry = await startFerry({
      rules: LOOPBACK_ONLY,
      ...(attackers !== 2000 && { limits: { handshakes: budget } }),
    });
    const stalled: net.Socket[] = [];
    try {
      // From 127.0.0.2 to 127.0.0.101, 200 connects at a time (the listen backlog is 511).
      stalled.push(
        ...(await inWaves(attackers, 200, (i) =>
          openStalled(ferry.port, `127.0.0.${2 + (i % 100)}`, i % 2 === 0),
        )),
      );
      assert.ok(ferry.server.handshaking <= budget, `${ferry.server.handshaking} handshakes held`);
      assert.ok(
        ferry.server.handshakesShed >= attackers - budget,
        `handshakes shed to make room: ${ferry.server.handshakesShed}`,
      );
      // The honest client, from 127.0.0.1: 200 sessions, 20 at a time.
      const results = await inWaves(200, 20, () => echoSession(ferry.port, echo.port));
      const failed = results.filter((r): r is Error => r instanceof Error);
      assert.equal(
        failed.length,
        0,
        `served ${200 - failed.length} of 200; first failure: ${failed[0]?.message}; refused: ${ferry.refused.slice(0, 3).join("; ")}`,
      );
      const times = (results as number[]).sort((a, b) => a - b);
      const p99 = times[Math.floor(times.length * 0.99) - 1]!;
      // Far below the 10 s handshake timeout, with room for a loaded machine.
      assert.ok(p99 < 3000, `p99 ${Math.round(p99)} ms`);
    } finally {
      for (const s of stalled) s.destroy();
      await ferry.close();
      await echo.close();
    }
  });

  test("1,000 concurrent sessions from one address all succeed", async () => {
    // Four descriptors a session in this process (client, accepted, outbound, echo's end).
    const count = FD_LIMIT >= 5000 ? 1000 : Math.floor((FD_LIMIT - 500) / 4);
    const echo = await startEchoServer();
    const ferry = await startFerry({ rules: LOOPBACK_ONLY });
    const open: TestClient[] = [];
    try {
      const target = { type: "ipv4", host: "127.0.0.1", port: echo.port } as const;
      const replies = await inWaves(count, 100, async () => {
        try {
          const { client, reply } = await socks5Connect(ferry.port, target);
          open.push(client);
          return reply.reply;
        } catch (err) {
          return (err as Error).message;
        }
      });
      const failed = replies.filter((r) => r !== 0);
      assert.equal(
        failed.length,
        0,
        `${count - failed.length} of ${count} succeeded; e.g. ${failed[0]}; refused: ${ferry.refused[0]}`,
      );
      assert.equal(ferry.server.activeSessions, count, "all open at once");
      // Every one of them relays.
      await Promise.all(
        open.map(async (c) => {
          c.write("y");
          assert.equal((await c.readBytes(1, 30_000)).toString(), "y");
        }),
      );
    } finally {
      for (const c of open) c.destroy();
      await ferry.close();
      await echo.close();
    }
  });
});

describe("the open-files limit", () => {
  test("a limit below what the limits need is said at start, in one line with the fix", async () => {
    const ferry = await spawnFerry({ fdLimit: 256 });
    try {
      const lines = ferry.logs().filter((l) => /open-files limit is/.test(l.msg));
      assert.equal(lines.length, 1, ferry.output());
      // The defaults: 10,000 sessions at two each, 1,000 handshakes, one listener, a margin.
      const needed = 2 * 10_000 + 1000 + 1 + 64;
      assert.match(lines[0]!.msg, new RegExp(`^the open-files limit is 256, below the ${needed} `));
      assert.ok(lines[0]!.msg.includes(`\`ulimit -n ${needed}\``), lines[0]!.msg);
      assert.ok(lines[0]!.msg.includes(`LimitNOFILE=${needed}`), lines[0]!.msg);
      assert.equal(lines[0]!.level, 40, "a warning");
      const listening = ferry.logs().findIndex((l) => l.msg.startsWith("ferry listening"));
      assert.ok(ferry.logs().indexOf(lines[0]!) < listening, "said before listening");
    } finally {
      await ferry.stop();
    }
  });

  test("with enough descriptors nothing is said", async () => {
    const dir = await tempDir();
    const config = join(dir.path, "ferry.yaml");
    // Limits small enough for any machine's open-files limit: 2 × 100 + 100 + 1 + 64 = 365.
    await writeFile(config, "limits: { sessions: 100, handshakes: 100 }\n");
    const ferry = await spawnFerry({ fdLimit: 1024, args: ["--config", config] });
    try {
      assert.equal(ferry.logs().filter((l) => /open-files limit/.test(l.msg)).length, 0, ferry.output());
    } finally {
      await ferry.stop();
      await dir.remove();
    }
  });

  test("out of descriptors, accept neither crashes nor spins, says so once a second at most, and recovers", async () => {
    const dir = await tempDir();
    const echo = await startEchoServer();
    const config = join(dir.path, "ferry.yaml");
    await writeFile(config, 'rules:\n  - allow: { to: ["127.0.0.0/8"] }\n  - deny: {}\n');
    // 128: Node itself needs some 60 to load Ferry's modules (64 does not start); what is left
    // holds a few dozen connections.
    const ferry = await spawnFerry({ fdLimit: 128, args: ["--config", config] });
    const held: net.Socket[] = [];
    try {
      const pid = nodePid(ferry.pid);
      const cpuBefore = cpuMs(pid);
      const started = performance.now();
      // 150 at once, far more than fit, then 10 more every 200 ms for 3 s.
      held.push(...(await inWaves(150, 150, () => openStalled(ferry.port, "127.0.0.1", false))));
      for (let i = 0; i < 15; i++) {
        await sleep(200);
        held.push(...(await inWaves(10, 10, () => openStalled(ferry.port, "127.0.0.1", false))));
      }
      const elapsed = performance.now() - started;
      const cpu = cpuMs(pid) - cpuBefore;
      assert.equal(ferry.child.exitCode, null, `ferry is running: ${ferry.output().slice(-2000)}`);
      // A spinning accept loop would take a whole core; serving these takes a little.
      assert.ok(cpu < elapsed * 0.35, `ferry used ${cpu} ms of CPU in ${Math.round(elapsed)} ms`);
      const stillOpen = held.filter((s) => !s.closed).length;
      assert.ok(stillOpen > 10 && stillOpen < held.length, `${stillOpen} of ${held.length} still open`);

      await waitFor(() => exhaustedLines(ferry.logs()).length >= 2, 5000, "the exhaustion to be logged");
      const lines = exhaustedLines(ferry.logs());
      const closing = lines.find((l) => / closed \d+ new connections? at accept/.test(l.msg));
      assert.match(
        closing?.msg ?? "",
        /at the open-files limit \(128\): closed \d+ new connections? at accept/,
      );
      assert.ok(closing!.msg.includes("ulimit -n"), closing!.msg);
      const times = lines.map((l) => l.time as number);
      for (let i = 1; i < times.length; i++) {
        assert.ok(
          times[i]! - times[i - 1]! >= 950,
          `log lines ${times[i]! - times[i - 1]!} ms apart: ${JSON.stringify(lines.slice(i - 1, i + 1))}`,
        );
      }
      const closed = lines.reduce((n, l) => n + (l.closed as number), 0);
      assert.ok(closed > 100, `${closed} connections reported closed`);

      // Once the connections close, it serves again.
      for (const s of held) s.destroy();
      let served: number | Error = new Error("not tried");
      for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(200)) {
        served = await echoSession(ferry.port, echo.port);
        if (typeof served === "number") break;
      }
      assert.equal(typeof served, "number", `served again: ${served}; ${ferry.output().slice(-1500)}`);
    } finally {
      for (const s of held) s.destroy();
      await ferry.stop();
      await echo.close();
      await dir.remove();
    }
  });
});

describe("a listener that runs out of descriptors", () => {
  test("rests, says so, and listens again", async () => {
    const echo = await startEchoServer();
    const ferry = await startFerry({ rules: LOOPBACK_ONLY });
    try {
      const reports: { pausedMs?: number }[] = [];
      ferry.server.on("fdExhausted", (e) => reports.push(e));
      // What libuv does when even its spare descriptor is gone: accept fails with EMFILE, and
      // would fail again at once for as long as the listener stays open.
      const listener = (ferry.server as unknown as { servers: net.Server[] }).servers[0]!;
      listener.emit(
        "error",
        Object.assign(new Error("accept EMFILE"), { code: "EMFILE", syscall: "accept" }),
      );
      assert.equal(listener.listening, false, "closed for the rest");
      assert.equal(reports[0]?.pausedMs, 100);
      assert.deepEqual(ferry.server.listening, [{ host: "127.0.0.1", port: ferry.port }]);
      await waitFor(() => listener.listening, 5000, "the listener to open again");
      await assertEchoThrough(ferry.port, echo.port);
    } finally {
      await ferry.close();
      await echo.close();
    }
  });
});

/** The lines saying connections were closed at accept for lack of descriptors. */
function exhaustedLines(logs: LogLine[]): LogLine[] {
  return logs.filter((l) => /at the open-files limit/.test(l.msg));
}

/** The node process under `timeout` (spawnFerry's pid is timeout's; bash exec'd into node). */
function nodePid(timeoutPid: number): number {
  const children = readFileSync(`/proc/${timeoutPid}/task/${timeoutPid}/children`, "utf8").trim();
  return Number(children.split(/\s+/)[0]);
}

/** User + system CPU of a process so far, in ms (from /proc/PID/stat, in clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
