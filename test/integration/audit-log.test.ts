import assert from "node:assert/strict";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { EVENT_NAMES } from "../../src/observe/events.js";
import { logLineSchema } from "../../src/observe/log-schema.js";
import { encodeGreeting, parseMethodSelection } from "../../src/protocol/socks5.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { startEchoServer, waitFor, within } from "../helpers/net.js";
import { assertEchoThrough, socks5Connect, TestClient } from "../helpers/socks.js";

// Neither may appear in any output: the right password, and a wrong one a client tried.
const PASSWORD = "pw-Zq81-correct-horse";
const WRONG = "pw-Xk27-wrong-battery";
const BURST = 40;

let dir: string;
let echo: Awaited<ReturnType<typeof startEchoServer>>;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "ferry-audit-"));
  echo = await startEchoServer();
});
after(async () => {
  await echo.close();
  await rm(dir, { recursive: true, force: true });
});

/** The rotated files in the order they were written (pino-roll numbers them NAME.N.log). */
async function fileLines(logs: string): Promise<{ files: string[]; lines: string[] }> {
  const files = (await readdir(logs))
    .filter((f) => /^ferry\.\d+\.log$/.test(f))
    .sort((a, b) => Number(a.split(".")[1]) - Number(b.split(".")[1]));
  const lines: string[] = [];
  for (const f of files) {
    const text = await readFile(path.join(logs, f), "utf8");
    assert.ok(text === "" || text.endsWith("\n"), `${f} ends mid-line`);
    lines.push(...text.split("\n").filter(Boolean));
  }
  return { files, lines };
}

test("a run's every line has a known event and fits its schema, on stderr and in the rotated file", async () => {
  const deniedPort = echo.port === 9 ? 10 : 9;
  const logs = path.join(dir, "logs");
  const config = path.join(dir, "ferry.yaml");
  const yaml = (allowed: string) =>
    [
      "limits: { sessions: 100, handshakes: 100 }",
      "timeouts: { drain: 1s }",
      "rules:",
      `  - deny: { ports: [${deniedPort}], log: true }`,
      `  - allow: { to: [${allowed}], log: true }`,
      "  - deny: {}",
      "log:",
      // Small files, so that this run rotates several times; enough of them kept to lose none.
      "  file: { path: logs/ferry.log, rotate: size, size: 1KiB, keep: 1000 }",
      "",
    ].join("\n");
  await writeFile(config, yaml("127.0.0.1"));
  let ferry: FerryProcess | undefined;
  try {
    ferry = await spawnFerry({ users: [{ name: "alice", password: PASSWORD }], args: ["--config", config] });
    const f = ferry;
    // The file output runs in a worker thread that may take a moment to start (lines wait for it
    // in memory); the steps below are meant to be written as they happen, so rotation is seen.
    await waitFor(
      () => existsSync(path.join(logs, "ferry.1.log")) && statSync(path.join(logs, "ferry.1.log")).size > 0,
      20_000,
      "the file output",
    );
    const login = { user: "alice", password: PASSWORD };

    // A session that carries data.
    await assertEchoThrough(f.port, echo.port, login);
    // A failed login.
    const bad = await TestClient.connect(f.port);
    bad.write(encodeGreeting({ methods: [2] }));
    assert.equal(await bad.read(parseMethodSelection), 2);
    bad.write(encodeUserPassRequest({ username: "alice", password: WRONG }));
    assert.equal((await bad.read(parseUserPassReply, 30_000)).ok, false);
    bad.destroy();
    // A denial by a rule.
    const denied = await socks5Connect(f.port, { type: "ipv4", host: "127.0.0.1", port: deniedPort }, login);
    assert.equal(denied.reply.reply, 2, "connection not allowed by ruleset");
    denied.client.destroy();
    await f.waitForSession((s) => s.reply === 2);

    // A reload (SIGHUP; `timeout` passes it on).
    await writeFile(config, yaml("127.0.0.1, 127.0.0.2"));
    const before = f.logs().length;
    process.kill(f.pid, "SIGHUP");
    await waitFor(
      () =>
        f
          .logs()
          .slice(before)
          .some((l) => l.event === "reload.ok"),
      20_000,
      "the reload",
    );

    // Sessions still open at SIGTERM: the drain cuts them all at its deadline, so their end
    // lines and the last lines are written in the moment before the process exits.
    const held = await Promise.all(
      Array.from({ length: BURST }, () =>
        socks5Connect(f.port, { type: "ipv4", host: "127.0.0.1", port: echo.port }, login),
      ),
    );
    for (const h of held) assert.equal(h.reply.reply, 0);
    await waitFor(
      () => f.logs().filter((l) => l.event === "session.start").length >= BURST + 1,
      10_000,
      "the starts",
    );
    const exit = await within(f.stop(15_000), 20_000, "the stop");
    for (const h of held) h.client.destroy();
    assert.equal(exit.code, 0, f.output());

    // stderr: JSON lines only, each with a known event, each valid under the documented schema.
    const stderr = f.output().split("\n").filter(Boolean);
    const known = new Set<string>(EVENT_NAMES);
    for (const line of stderr) {
      const r = logLineSchema.safeParse(JSON.parse(line));
      assert.ok(r.success, `${line}\n${r.error?.message}`);
      assert.ok(known.has((r.data as { event: string }).event));
    }
    const events = stderr.map((l) => JSON.parse(l).event as string);
    for (const e of [
      "listen",
      "session.start",
      "session.end",
      "auth.ok",
      "auth.fail",
      "policy.allow",
      "policy.deny",
      "reload.start",
      "reload.ok",
      "shutdown.start",
      "shutdown.done",
    ])
      assert.ok(events.includes(e), `no ${e} line in ${events.join(" ")}`);
    assert.equal(events.at(-1), "shutdown.done", events.slice(-6).join(" "));
    // Each session held over the stop: a start and an end line.
    const afterReload = events.slice(events.lastIndexOf("reload.ok"));
    assert.equal(afterReload.filter((e) => e === "session.start").length, BURST);
    assert.equal(afterReload.filter((e) => e === "session.end").length, BURST);

    // The file: the same lines, none lost at SIGTERM, over several rotated files.
    const file = await fileLines(logs);
    assert.ok(file.files.length >= 3, `rotated into ${file.files.join(", ")}`);
    assert.deepEqual(file.lines, stderr);

    // No password anywhere.
    for (const [where, text] of [
      ["stderr", f.output()],
      ["file", file.lines.join("\n")],
    ] as const) {
      assert.ok(!text.includes(PASSWORD), `the password in ${where}`);
      assert.ok(!text.includes(WRONG), `the wrong password in ${where}`);
    }
  } finally {
    await ferry?.stop();
  }
});
