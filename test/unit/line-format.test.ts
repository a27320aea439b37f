import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { Writable } from "node:stream";
import { test } from "node:test";
import pino from "pino";
import { escapeControlsInJson } from "../../src/observe/escape.js";
import { formatBytes, formatDuration, formatLine, terminalStream } from "../../src/observe/line-format.js";
import { logLineSchema } from "../../src/observe/log-schema.js";
import { logSessions } from "../../src/observe/session-log.js";
import type { SessionRecord } from "../../src/server/context.js";
import type { FerryServer } from "../../src/server/server.js";

/** 12:03:04 local time on some day, as pino's `time` field. */
const AT = new Date(2026, 11, 2, 12, 3, 4, 567).getTime();

const base = { level: 30, time: AT, session: 7, client: "127.0.0.1:51234", protocol: "socks5" };

test("a CONNECT session that went well: client → target, user, outcome, bytes each way, duration", () => {
  const line = formatLine({
    ...base,
    event: "session.end",
    method: "userpass",
    user: "alice",
    command: "connect",
    target: "example.com:443",
    reply: 0,
    outcome: "succeeded",
    bytesUp: 1229,
    bytesDown: 54_272,
    durationMs: 1340,
    msg: "session closed",
  });
  assert.equal(line, "12:03:04 127.0.0.1:51234 → example.com:443 alice connect ok ↑1.2 KiB ↓53 KiB 1.3s\n");
});

test("a failed session says so with the reply and the reason, at warn", () => {
  const line = formatLine({
    ...base,
    level: 40,
    event: "session.end",
    command: "connect",
    target: "db.internal:5432",
    reply: 2,
    outcome: "connection not allowed by ruleset",
    rule: "no-internal",
    bytesUp: 0,
    bytesDown: 0,
    durationMs: 3,
    reason: "denied by rule no-internal",
    msg: "session failed: denied by rule no-internal",
  });
  assert.equal(
    line,
    "12:03:04 WARN 127.0.0.1:51234 → db.internal:5432 - connect failed: connection not allowed by ruleset (denied by rule no-internal) ↑0 B ↓0 B 3ms\n",
  );
});

test("a session that ended before its request: no target, no command, `no reply`", () => {
  const line = formatLine({
    ...base,
    level: 40,
    event: "session.end",
    user: "bob",
    outcome: "no reply",
    bytesUp: 0,
    bytesDown: 0,
    durationMs: 201,
    reason: 'authentication failed for user "bob": wrong password',
    msg: "session failed",
  });
  assert.match(
    line,
    /→ - bob - failed: no reply \(authentication failed for user "bob": wrong password\) ↑0 B ↓0 B 201ms\n$/,
  );
});

test("UDP: bytes and datagrams each way, and the drops by reason", () => {
  const line = formatLine({
    ...base,
    event: "session.end",
    command: "udp",
    target: "0.0.0.0:0",
    reply: 0,
    outcome: "succeeded",
    bytesUp: 3000,
    bytesDown: 512,
    datagramsUp: 3,
    datagramsDown: 1,
    datagramsDropped: { fragment: 2, policy: 1 },
    durationMs: 65_000,
    msg: "session closed",
  });
  assert.equal(
    line,
    "12:03:04 127.0.0.1:51234 → 0.0.0.0:0 - udp ok ↑2.9 KiB in 3 dg ↓512 B in 1 dg dropped fragment 2, policy 1 1m05s\n",
  );
});

test("BIND: the peer that connected, and the ones turned away", () => {
  const line = formatLine({
    ...base,
    event: "session.end",
    command: "bind",
    target: "203.0.113.9:0",
    reply: 0,
    outcome: "succeeded",
    peer: "127.0.0.1:40000",
    peersRefused: 2,
    bytesUp: 10,
    bytesDown: 5 * 1024 * 1024,
    durationMs: 7_200_000,
    msg: "session closed",
  });
  assert.match(line, / - bind ok peer 127\.0\.0\.1:40000 2 peers refused ↑10 B ↓5\.0 MiB 2h00m\n$/);
});

test("the start line, GSSAPI's principal with its protection level, SOCKS4's claimed ident", () => {
  assert.equal(
    formatLine({
      ...base,
      event: "session.start",
      method: "gssapi",
      user: "alice@EXAMPLE.COM",
      protection: "confidentiality",
      command: "connect",
      target: "[2001:db8::1]:22",
      msg: "session started",
    }),
    "12:03:04 127.0.0.1:51234 → [2001:db8::1]:22 alice@EXAMPLE.COM(confidentiality) connect open\n",
  );
  assert.match(
    formatLine({
      ...base,
      event: "session.start",
      protocol: "socks4",
      ident: "root",
      command: "connect",
      target: "h:1",
    }),
    / → h:1 ident:root connect open\n$/,
  );
});

test("other events: their message, the level when not info, the worker when there are several", () => {
  assert.equal(
    formatLine({
      level: 30,
      time: AT,
      event: "listen",
      listen: ["127.0.0.1:1080"],
      msg: "ferry listening on 127.0.0.1:1080",
    }),
    "12:03:04 ferry listening on 127.0.0.1:1080\n",
  );
  assert.equal(
    formatLine({
      level: 50,
      time: AT,
      event: "reload.fail",
      worker: "primary",
      pid: 9,
      msg: "reload refused",
    }),
    "12:03:04 [primary] ERROR reload refused\n",
  );
  assert.equal(
    formatLine({
      level: 40,
      time: AT,
      event: "connection.refused",
      worker: 2,
      client: "10.0.0.1",
      clientPort: 999,
      reason: "too many sessions",
      msg: "connection refused: too many sessions",
    }),
    "12:03:04 [w2] WARN 10.0.0.1:999 refused: too many sessions\n",
  );
});

test("control characters in any field stay visible text, on the one line; long names are whole", () => {
  const long = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}:443`;
  const line = formatLine({
    ...base,
    level: 40,
    event: "session.end",
    user: "bob\nINFO forged",
    ident: "x",
    command: "connect",
    target: long,
    reply: 4,
    outcome: "host unreachable",
    bytesUp: 0,
    bytesDown: 0,
    durationMs: 10,
    reason: "evil\r\n\u001b[2J\u0085\u2028",
    msg: "m",
  });
  assert.equal(line.indexOf("\n"), line.length - 1, "one line");
  assert.ok(line.includes("bob\\nINFO forged"));
  assert.ok(line.includes("evil\\r\\n\\x1b[2J\\x85\\u2028"));
  assert.ok(line.includes(` → ${long} `), "the name is not cut");
  for (const c of line.slice(0, -1)) {
    const cp = c.codePointAt(0)!;
    assert.ok(
      !(cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f) || cp === 0x2028 || cp === 0x2029),
      `raw U+${cp.toString(16)}`,
    );
  }
  // With colour, the only control characters are the SGR sequences themselves.
  const colored = formatLine(
    { level: 50, time: AT, event: "reload.fail", msg: "x\u001b]0;title\u0007" },
    { color: true },
  );
  const escapes = colored.split("\u001b").slice(1);
  assert.ok(escapes.length > 0 && escapes.every((e) => /^\[\d+m/.test(e)), "no escape other than CSI ... m");
  assert.ok(colored.includes("x\\x1b]0;title\\x07"));
});

test("sizes and durations read at a glance", () => {
  assert.deepEqual([0, 1023, 1024, 1536, 10 * 1024, 1024 ** 2 * 1.25, 1024 ** 3 * 20].map(formatBytes), [
    "0 B",
    "1023 B",
    "1.0 KiB",
    "1.5 KiB",
    "10 KiB",
    "1.3 MiB",
    "20 GiB",
  ]);
  assert.deepEqual(
    [0, 999, 1000, 9_949, 10_000, 59_400, 60_000, 3_599_000, 3_600_000, 90_061_000].map(formatDuration),
    ["0ms", "999ms", "1.0s", "9.9s", "10s", "59s", "1m00s", "59m59s", "1h00m", "25h01m"],
  );
});

/** What a logger writes, line by line. */
function capture(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split("\n").filter(Boolean));
      done();
    },
  });
  return { stream, lines };
}

test("from a real record: the JSON lines match the schema, and the terminal shows each on one line", () => {
  const json = capture();
  const term: string[] = [];
  const hooks = { streamWrite: escapeControlsInJson };
  const jsonLog = pino({ base: { pid: 1, hostname: "h" }, hooks }, json.stream);
  const termLog = pino(
    { base: undefined, hooks },
    terminalStream((s) => term.push(s)),
  );
  const server = new EventEmitter() as unknown as FerryServer;
  logSessions(server, jsonLog);
  logSessions(server, termLog);
  // A GSSAPI session: the principal is the user, the agreed level is on both lines (issue 17).
  const record: SessionRecord = {
    id: 3,
    client: "::1",
    clientPort: 40_001,
    protocol: "socks5",
    method: "gssapi",
    user: "alice@EXAMPLE.COM",
    protection: "integrity",
    command: "connect",
    target: "127.0.0.1:7",
    remote: "127.0.0.1:7",
    bound: "127.0.0.1:50000",
    reply: 0,
    replyName: "succeeded",
    rule: "default",
    bytesUp: 100,
    bytesDown: 100,
    startedAt: AT,
    durationMs: 12,
  };
  server.emit("established", record);
  server.emit("session", record);
  assert.equal(json.lines.length, 2);
  const [start, end] = json.lines.map((l) => logLineSchema.parse(JSON.parse(l)) as Record<string, unknown>);
  assert.equal(start?.event, "session.start");
  assert.equal(end?.event, "session.end");
  for (const r of [start, end]) {
    assert.equal(r?.user, "alice@EXAMPLE.COM");
    assert.equal(r?.protection, "integrity");
    assert.equal(r?.method, "gssapi");
    assert.equal(r?.client, "[::1]:40001");
  }
  assert.equal(term.length, 2);
  assert.match(term[0]!, / \[::1\]:40001 → 127\.0\.0\.1:7 alice@EXAMPLE\.COM\(integrity\) connect open\n$/);
  assert.match(term[1]!, / alice@EXAMPLE\.COM\(integrity\) connect ok ↑100 B ↓100 B 12ms\n$/);
});

test("with starts off, a session is one line", () => {
  const json = capture();
  const server = new EventEmitter() as unknown as FerryServer;
  logSessions(server, pino({ base: undefined }, json.stream), { starts: false });
  const record = {
    id: 1,
    client: "127.0.0.1",
    clientPort: 1,
    bytesUp: 0,
    bytesDown: 0,
    startedAt: AT,
    durationMs: 0,
  };
  server.emit("established", record);
  server.emit("session", record);
  assert.deepEqual(
    json.lines.map((l) => JSON.parse(l).event),
    ["session.end"],
  );
});

test("with workers each process has its own log file; the primary and a single process keep the name", async () => {
  const { processLogPath } = await import("../../src/observe/outputs.js");
  assert.equal(processLogPath("/var/log/ferry/ferry.log", "single"), "/var/log/ferry/ferry.log");
  assert.equal(processLogPath("/var/log/ferry/ferry.log", "primary"), "/var/log/ferry/ferry.log");
  assert.equal(processLogPath("/var/log/ferry/ferry.log", 2), "/var/log/ferry/ferry.worker2.log");
  assert.equal(processLogPath("/var/log/ferry.d/audit", 1), "/var/log/ferry.d/audit.worker1.log");
});
