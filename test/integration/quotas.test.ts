import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { READ_BUFFER_SIZE } from "../../src/io/read-buffers.js";
import { addressOf, type SocksAddress } from "../../src/protocol/address.js";
import {
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
  type Socks5Reply,
} from "../../src/protocol/socks5.js";
import { encodeUdpDatagram } from "../../src/protocol/udp.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { type FerryProcess, type SessionLine, spawnFerry } from "../helpers/ferry-process.js";
import { listenClosable, startEchoServer, waitFor } from "../helpers/net.js";
import { childPid } from "../helpers/proc.js";
import { tempDir } from "../helpers/process.js";
import { socks5Connect, TestClient } from "../helpers/socks.js";
import { sendTo, startUdpEcho, udpClient } from "../helpers/udp.js";

/**
 * Transfer quotas (docs/quotas.md) through real `ferry serve` processes: refusal with its reply
 * and log lines, a download cut when it crosses the quota (not before, and not long after),
 * counts kept across a SIGHUP reload and a restart through the state file, and one count shared
 * by two workers.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const ALICE = { name: "alice", password: "wonderland" };
const BOB = { name: "bob", password: "builder" };
/** A cut comes on the chunk that crosses the quota: less than one read (128 KiB) past it. */
const OVERSHOOT = READ_BUFFER_SIZE;
/** With workers, each may also hold back a batch (64 KiB near the end) not yet reported. */
const WORKERS_OVERSHOOT = READ_BUFFER_SIZE + 2 * 64 * KiB;
/** What the download target sends: more than any quota here, so only a cut stops it short. */
const SOURCE_BYTES = 8 * MiB;

const nextMidnight = (): string => {
  const d = new Date();
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1)).toISOString();
};

/** A target that sends SOURCE_BYTES to whoever connects, then closes. */
function startSource(): Promise<{ port: number; close(): Promise<void> }> {
  const chunk = randomBytes(64 * KiB);
  const server = net.createServer((s) => {
    s.on("error", () => {});
    let left = SOURCE_BYTES / chunk.length;
    const write = (): void => {
      while (left > 0) {
        left--;
        if (!s.write(chunk)) return void s.once("drain", write);
      }
      s.end();
    };
    write();
  });
  return listenClosable(server);
}

const target = (port: number) => ({ type: "ipv4" as const, host: "127.0.0.1", port });

/** The configuration file: the quota, loopback targets only. */
async function writeConfig(file: string, quota: string, extra: Record<string, unknown> = {}): Promise<void> {
  const config = {
    limits: { quota: { perUser: quota, stateFile: "quota-state.json" } },
    rules: [{ allow: { to: ["127.0.0.0/8"] } }],
    ...extra,
  };
  await writeFile(file, JSON.stringify(config));
}

let echo: Awaited<ReturnType<typeof startEchoServer>>;
let source: Awaited<ReturnType<typeof startSource>>;

before(async () => {
  echo = await startEchoServer();
  source = await startSource();
});
after(async () => {
  await echo.close();
  await source.close();
});

/** Echoes `n` bytes through the proxy as `user` (2n bytes counted); resolves once its session line is in. */
async function echoSession(ferry: FerryProcess, n: number, user = ALICE): Promise<SessionLine> {
  const skip = ferry.sessions().length;
  const { client, reply } = await socks5Connect(ferry.port, target(echo.port), {
    user: user.name,
    password: user.password,
  });
  try {
    assert.equal(reply.reply, 0, "CONNECT succeeds");
    const data = randomBytes(n);
    client.write(data);
    assert.ok((await client.readBytes(n, 20_000)).equals(data), "the echo comes back whole");
  } finally {
    client.destroy();
  }
  return ferry.waitForSession((s) => s.user === user.name, { skip });
}

/** Downloads from the source as alice until the end or a cut; the session line and bytes received. */
async function download(ferry: FerryProcess): Promise<{ line: SessionLine; received: number }> {
  const skip = ferry.sessions().length;
  const { client, reply } = await socks5Connect(ferry.port, target(source.port), {
    user: ALICE.name,
    password: ALICE.password,
  });
  try {
    assert.equal(reply.reply, 0, "CONNECT succeeds");
    const { data, ended } = await client.readToEnd(30_000);
    assert.ok(ended, "the download ended");
    const line = await ferry.waitForSession(
      (s) => s.user === ALICE.name && s.target === `127.0.0.1:${source.port}`,
      {
        skip,
      },
    );
    return { line, received: data.length };
  } finally {
    client.destroy();
  }
}

/** A CONNECT as `user` that must be refused: its reply code and session line. */
async function refusedSession(
  ferry: FerryProcess,
  user = ALICE,
): Promise<{ reply: number; line: SessionLine }> {
  const skip = ferry.sessions().length;
  const { client, reply } = await socks5Connect(ferry.port, target(echo.port), {
    user: user.name,
    password: user.password,
  });
  client.destroy();
  return { reply: reply.reply, line: await ferry.waitForSession((s) => s.user === user.name, { skip }) };
}

const moved = (s: SessionLine): number => s.bytesUp + s.bytesDown;

/** The cut came after the quota was reached, and not long after. */
function assertCutNear(total: number, limit: number, overshoot: number, what: string): void {
  process.stderr.write(`${what}: ${total - limit} bytes past the quota\n`);
  assert.ok(total > limit, `${what}: not cut before the quota (${total} bytes in all, quota ${limit})`);
  assert.ok(
    total <= limit + overshoot,
    `${what}: cut soon after the quota (${total} bytes in all, quota ${limit})`,
  );
}

describe("quotas: one process", () => {
  test("1MiB/day: a user transfers under it, is cut mid-download when crossing it, then refused with 'not allowed' and a log line", async () => {
    const dir = await tempDir("ferry-quota-");
    const file = join(dir.path, "ferry.json");
    await writeConfig(file, "1MiB/day");
    const ferry = await spawnFerry({ args: ["--config", file], users: [ALICE, BOB] });
    try {
      const first = await echoSession(ferry, 256 * KiB);
      assert.equal(first.outcome, "succeeded");
      assert.equal(first.reason, undefined, "the first session is not cut");
      assert.equal(moved(first), 512 * KiB);

      // An idle session of alice's, open while another of hers uses the quota up.
      const idle = await socks5Connect(ferry.port, target(echo.port), {
        user: ALICE.name,
        password: ALICE.password,
      });
      assert.equal(idle.reply.reply, 0);
      const { line, received } = await download(ferry);
      assert.ok(received < SOURCE_BYTES, `cut short: ${received} bytes received`);
      assert.match(line.reason ?? "", /user alice has used up the transfer quota/);
      assertCutNear(moved(first) + moved(line), MiB, OVERSHOOT, "the download");
      await waitFor(
        () => ferry.logs().some((l) => l.msg.startsWith("user alice has used up the transfer quota")),
        5000,
        "the quota's warning line",
      );
      await idle.client.waitClosed(5000);
      const idleLine = await ferry.waitForSession(
        (s) => s.user === ALICE.name && s.target === `127.0.0.1:${echo.port}` && moved(s) === 0,
      );
      assert.match(
        idleLine.reason ?? "",
        /user alice has used up the transfer quota; it resets at/,
        "the idle one is cut too",
      );
      const warn = ferry.logs().find((l) => l.msg.startsWith("user alice has used up the transfer quota"))!;
      assert.match(warn.msg, new RegExp(`sessions refused and cut until ${nextMidnight()}`));

      const refused = await refusedSession(ferry);
      assert.equal(refused.reply, 2, "SOCKS5 0x02: connection not allowed by ruleset");
      assert.equal(refused.line.level, 40, "a warning");
      assert.match(
        refused.line.reason ?? "",
        new RegExp(
          `user alice is over the transfer quota: .* of 1MiB used this day \\(UTC\\); it resets at ${nextMidnight()}`,
        ),
      );
      assert.match(refused.line.msg, /session failed: refused: user alice is over the transfer quota/);
      // Another user's count is their own.
      assert.equal((await echoSession(ferry, 64 * KiB, BOB)).reason, undefined);
    } finally {
      await ferry.stop();
      await dir.remove();
    }
  });

  test("counts survive a SIGHUP reload and a restart (the state file); a reload's new quota applies to the running count", async () => {
    const dir = await tempDir("ferry-quota-");
    const file = join(dir.path, "ferry.json");
    const stateFile = join(dir.path, "quota-state.json");
    await writeConfig(file, "1MiB/day");
    let ferry = await spawnFerry({ args: ["--config", file], users: [ALICE] });
    try {
      const reloaded = async (n: number): Promise<void> => {
        process.kill(childPid(ferry.pid), "SIGHUP");
        await waitFor(
          () => ferry.logs().filter((l) => l.msg.startsWith("configuration reloaded")).length >= n,
          10_000,
          "the reload",
        );
      };
      let total = moved(await echoSession(ferry, 256 * KiB));
      // The same configuration reloaded: the 512 KiB still count.
      await reloaded(1);
      const cut = await download(ferry);
      total += moved(cut.line);
      assertCutNear(total, MiB, OVERSHOOT, "after a reload");

      // Raised to 2 MiB: what was used counts against the new quota.
      await writeConfig(file, "2MiB/day");
      await reloaded(2);
      const raised = await download(ferry);
      total += moved(raised.line);
      assert.match(raised.line.reason ?? "", /used up the transfer quota \(2MiB\/day\)/);
      assertCutNear(total, 2 * MiB, OVERSHOOT, "after a reload that raised the quota");

      // A restart reads the count back: with 3 MiB, alice has a little under 1 MiB left.
      const stopped = await ferry.stop(10_000);
      assert.equal(stopped.code, 0, "ferry stopped cleanly");
      const saved = JSON.parse(await readFile(stateFile, "utf8"));
      const today = `day:${new Date().toISOString().slice(0, 10)}`;
      assert.equal(saved.periods[today].alice, total, "every byte counted is in the state file");
      await writeConfig(file, "3MiB/day");
      ferry = await spawnFerry({ args: ["--config", file], users: [ALICE] });
      const afterRestart = await download(ferry);
      total += moved(afterRestart.line);
      assertCutNear(total, 3 * MiB, OVERSHOOT, "after a restart");
      const refused = await refusedSession(ferry);
      assert.equal(refused.reply, 2);
    } finally {
      await ferry.stop();
      await dir.remove();
    }
  });
});

/** UDP ASSOCIATE as alice: the control connection and the reply naming the relay. */
async function udpAssociate(
  port: number,
  from: SocksAddress,
): Promise<{ client: TestClient; reply: Socks5Reply }> {
  const client = await TestClient.connect(port);
  client.write(encodeGreeting({ methods: [2] }));
  assert.equal(await client.read(parseMethodSelection), 2, "username/password chosen");
  client.write(encodeUserPassRequest({ username: ALICE.name, password: ALICE.password }));
  assert.ok((await client.read(parseUserPassReply, 30_000)).ok, "logged in");
  client.write(encodeRequest({ command: "udp", address: from }));
  return { client, reply: await client.read(parseReply, 15_000, "the UDP ASSOCIATE reply") };
}

describe("quotas: UDP", () => {
  test("a UDP association ends on the datagram that would take its user over the quota", async () => {
    const dir = await tempDir("ferry-quota-");
    const file = join(dir.path, "ferry.json");
    await writeConfig(file, "64KiB/day");
    const ferry = await spawnFerry({ args: ["--config", file], users: [ALICE] });
    const udpEcho = await startUdpEcho();
    const client = await udpClient();
    try {
      const skip = ferry.sessions().length;
      const { client: control, reply } = await udpAssociate(ferry.port, addressOf("127.0.0.1", client.port));
      assert.equal(reply.reply, 0, "association granted");
      const datagram = encodeUdpDatagram({ frag: 0, address: target(udpEcho.port), data: randomBytes(1000) });
      let echoed = 0;
      // 1000 bytes each way a round: the quota lasts 32 rounds.
      for (let i = 0; i < 100 && !control.closed && !control.ended; i++) {
        await sendTo(client.socket, datagram, reply.address.port, reply.address.host);
        if (await client.next(2000)) echoed++;
        else break;
      }
      await control.waitClosed(5000);
      const line = await ferry.waitForSession((s) => s.user === ALICE.name, { skip });
      assert.match(line.reason ?? "", /user alice has used up the transfer quota \(64KiB\/day\)/);
      assert.deepEqual(line.datagramsDropped, { "over quota": 1 });
      assert.ok(moved(line) <= 64 * KiB && moved(line) > 64 * KiB - 2000, `${moved(line)} bytes relayed`);
      assert.equal(echoed, 32, "every datagram under the quota came back");
    } finally {
      client.close();
      await udpEcho.close();
      await ferry.stop();
      await dir.remove();
    }
  });
});

describe("quotas: workers", () => {
  test("workers: 2 share one count: a session on one worker is cut by what alice used on the other, then both refuse her", async () => {
    const dir = await tempDir("ferry-quota-");
    const file = join(dir.path, "ferry.json");
    await writeConfig(file, "1MiB/day", { workers: 2 });
    // Round-robin: consecutive connections go to alternate workers.
    const ferry = await spawnFerry({
      args: ["--config", file],
      users: [ALICE],
      env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: "rr" },
    });
    try {
      const first = await echoSession(ferry, 256 * KiB);
      const cut = await download(ferry);
      assert.notEqual(first.pid, cut.line.pid, "the two sessions ran on different workers");
      assert.match(cut.line.reason ?? "", /user alice has used up the transfer quota/);
      assertCutNear(moved(first) + moved(cut.line), MiB, WORKERS_OVERSHOOT, "across workers");
      const refusals = [await refusedSession(ferry), await refusedSession(ferry)];
      assert.deepEqual(
        refusals.map((r) => r.reply),
        [2, 2],
        "refused by both workers",
      );
      assert.equal(new Set(refusals.map((r) => r.line.pid)).size, 2, "each worker refused one");
      const stopped = await ferry.stop(10_000);
      assert.equal(stopped.code, 0);
      const saved = JSON.parse(await readFile(join(dir.path, "quota-state.json"), "utf8"));
      const today = `day:${new Date().toISOString().slice(0, 10)}`;
      assert.equal(
        saved.periods[today].alice,
        moved(first) + moved(cut.line),
        "the primary saved both workers' counts",
      );
    } finally {
      await ferry.stop();
      await dir.remove();
    }
  });
});
