/**
 * `node dist/bench/log-cost.js [sessions] 2>/dev/null`: what the session lines cost the process that writes
 * them, per session, in each way Ferry can log: JSON to stderr (here /dev/null) with and without
 * the `session.start` line, the terminal format, and JSON to a rotated file besides stderr. The
 * records go through the real listeners (logSessions) from a stand-in server. Medians of 5 rounds.
 */
import { EventEmitter } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { closeLogger, createLogger, type LoggerOptions } from "../src/observe/logger.js";
import { logSessions } from "../src/observe/session-log.js";
import type { SessionRecord } from "../src/server/context.js";
import type { FerryServer } from "../src/server/server.js";

const sessions = Number(process.argv[2] ?? 20_000);

function record(id: number): SessionRecord {
  return {
    id,
    client: "127.0.0.1",
    clientPort: 40_000 + (id % 20_000),
    protocol: "socks5",
    method: "userpass",
    user: "alice",
    command: "connect",
    target: "example.com:443",
    remote: "93.184.216.34:443",
    bound: "127.0.0.1:50000",
    reply: 0,
    replyName: "succeeded",
    rule: "default",
    bytesUp: 1234,
    bytesDown: 54_321,
    startedAt: Date.now(),
    durationMs: 1300,
  };
}

async function round(options: LoggerOptions, starts: boolean): Promise<number> {
  const log = createLogger(options);
  const server = new EventEmitter() as unknown as FerryServer;
  logSessions(server, log, { starts });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < sessions; i++) {
    const r = record(i);
    server.emit("established", r);
    server.emit("session", r);
  }
  const ns = Number(process.hrtime.bigint() - t0);
  await closeLogger(log);
  return ns / sessions / 1000;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  // The logger writes to stderr (send it to /dev/null); the results go to stdout.
  const tmp = mkdtempSync(path.join(os.tmpdir(), "ferry-log-cost-"));
  const cases: [string, LoggerOptions, boolean][] = [
    ["json, session.end only", { format: "json" }, false],
    ["json, session.start + session.end", { format: "json" }, true],
    ["terminal format, start + end", { format: "pretty" }, true],
    [
      "json + rotated file, start + end",
      {
        format: "json",
        outputs: { file: { path: path.join(tmp, "f.log"), rotate: "size", size: 64 << 20, keep: 2 } },
      },
      true,
    ],
  ];
  // The cases take turns (the machine is shared and noisy); the first turn warms up and is dropped.
  const times: number[][] = cases.map(() => []);
  for (let turn = 0; turn < 6; turn++) {
    for (const [i, [, options, starts]] of cases.entries()) {
      const us = await round(options, starts);
      if (turn > 0) times[i]!.push(us);
    }
  }
  for (const [i, [name]] of cases.entries()) {
    process.stdout.write(`${name.padEnd(36)} ${median(times[i]!).toFixed(2)} µs per session\n`);
  }
  rmSync(tmp, { recursive: true, force: true });
}

await main();
