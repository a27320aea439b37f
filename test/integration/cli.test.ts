import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { encodeGreeting, parseMethodSelection } from "../../src/protocol/socks5.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { FERRY_BIN, spawnFerry } from "../helpers/ferry-process.js";
import { sleep, startEchoServer, waitFor, within } from "../helpers/net.js";
import { run } from "../helpers/process.js";
import { assertEchoThrough, socks5Connect, TestClient } from "../helpers/socks.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** `node bin/ferry ARGS` to completion, killed after 60 s (a loaded machine can take 10 s or more to start node). */
async function runFerry(args: string[], { input }: { input?: string } = {}) {
  const r = await run(process.execPath, [FERRY_BIN, ...args], { input, cwd: ROOT, timeoutMs: 60_000 });
  return { code: r.code, stdout: r.stdout.toString("utf8"), stderr: r.stderr };
}

/** Holds a loopback port for the duration of a test. */
async function occupyPort(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "ferry-cli-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("ferry --version and --help", () => {
  test("--version prints the package version", async () => {
    const pkg = JSON.parse(await readFile(path.join(ROOT, "package.json"), "utf8")) as { version: string };
    const r = await runFerry(["--version"]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), pkg.version);
  });

  test("--help lists the commands; serve --help lists its flags", async () => {
    const top = await runFerry(["--help"]);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /Usage: ferry/);
    assert.match(top.stdout, /serve/);
    assert.match(top.stdout, /users/);
    const serve = await runFerry(["serve", "--help"]);
    assert.equal(serve.code, 0);
    for (const flag of [
      "--listen",
      "--config",
      "--user",
      "--users",
      "--log-level",
      "--log-format",
      "--allow-open-proxy",
    ]) {
      assert.ok(serve.stdout.includes(flag), `serve --help mentions ${flag}`);
    }
  });
});

describe("ferry serve refuses to start, with one clear line", () => {
  test("a port already in use exits 1 naming the address, the cause and a hint", async () => {
    const held = await occupyPort();
    try {
      const r = await runFerry(["serve", "--listen", `127.0.0.1:${held.port}`]);
      assert.equal(r.code, 1);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, new RegExp(`127\\.0\\.0\\.1:${held.port}: address already in use`));
      assert.match(
        lines[0]!,
        new RegExp(`--listen 127\\.0\\.0\\.1:${held.port + 1}`),
        "the hint names a free-port flag",
      );
    } finally {
      await held.close();
    }
  });

  // The open-proxy check runs before listening; holding the port on 127.0.0.1 makes sure that even
  // when the check passes, nothing ever accepts connections on a non-loopback address here.
  test("0.0.0.0 without authentication is refused unless --allow-open-proxy", async () => {
    const held = await occupyPort();
    try {
      const open = await runFerry(["serve", "--listen", `0.0.0.0:${held.port}`]);
      assert.equal(open.code, 1);
      assert.match(
        open.stderr,
        new RegExp(`refusing to listen on 0\\.0\\.0\\.0:${held.port} without authentication`),
      );
      assert.match(open.stderr, /--allow-open-proxy/);
      assert.match(open.stderr, /--user NAME:PASSWORD/);
      assert.equal(open.stderr.trim().split("\n").length, 1);

      const allowed = await runFerry(["serve", "--listen", `0.0.0.0:${held.port}`, "--allow-open-proxy"]);
      assert.equal(allowed.code, 1);
      assert.doesNotMatch(allowed.stderr, /refusing/);
      assert.match(allowed.stderr, /address already in use/, "got past the check, to the listen");

      const withAuth = await runFerry(["serve", "--listen", `0.0.0.0:${held.port}`, "--user", "u:p"]);
      assert.doesNotMatch(withAuth.stderr, /refusing/);
      assert.match(withAuth.stderr, /address already in use/);
    } finally {
      await held.close();
    }
  });

  test("bad flags are refused the same way as a bad file, naming the flag's key", async () => {
    const listen = await runFerry(["serve", "--listen", "bogus"]);
    assert.equal(listen.code, 1);
    assert.match(
      listen.stderr,
      /^ferry: command line: listen\.0: "bogus" is not HOST:PORT; write it like 127\.0\.0\.1:1080/,
    );
    const noUsers = await runFerry(["serve", "--listen", "127.0.0.1:0", "--auth", "userpass"]);
    assert.equal(noUsers.code, 1);
    assert.match(noUsers.stderr, /userpass is offered but no users are configured/);
    const badUser = await runFerry(["serve", "--listen", "127.0.0.1:0", "--user", "nopassword"]);
    assert.equal(badUser.code, 1);
    assert.match(badUser.stderr, /--user expects NAME:PASSWORD/);
  });

  const badConfigs = [
    {
      name: "an unknown key gets a did-you-mean",
      yaml: "listne:\n  - 127.0.0.1:0\n",
      expect: [/listne: unknown key \(did you mean "listen"\?\)/],
    },
    {
      name: "an unknown nested key gets a did-you-mean",
      yaml: "timeouts:\n  idel: 5s\n",
      expect: [/:2: timeouts\.idel: unknown key \(did you mean "idle"\?\)/],
    },
    {
      name: "a bad duration names the key and the reason",
      yaml: "timeouts:\n  idle: soon\n",
      expect: [/timeouts\.idle: "soon" is not a duration; write it like 500ms/],
    },
    {
      name: "a bad limit names the key",
      yaml: "limits:\n  sessions: -3\n",
      expect: [/limits\.sessions: /],
    },
    {
      name: "a bad listen address names the key and the form",
      yaml: "listen: [localhost]\n",
      expect: [/listen\.0: "localhost" is not HOST:PORT/],
    },
    {
      name: "YAML that does not parse",
      yaml: "listen: [127.0.0.1:0\n",
      expect: [/not valid YAML or JSON/],
    },
  ];
  for (const c of badConfigs) {
    test(`invalid config file: ${c.name}; exits 1 naming the file`, async () => {
      const file = path.join(dir, `bad-${badConfigs.indexOf(c)}.yaml`);
      await writeFile(file, c.yaml);
      const r = await runFerry(["serve", "--config", file]);
      assert.equal(r.code, 1);
      // FILE: or FILE:LINE: (the line of the offending key, when it can be found).
      assert.ok(
        new RegExp(`^ferry: ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(:\\d+)?: `).test(r.stderr),
        r.stderr,
      );
      for (const e of c.expect) assert.match(r.stderr, e);
    });
  }
});

describe("ferry users add", () => {
  test("writes a bcrypt htpasswd line from stdin that serve --users then accepts", async () => {
    const file = path.join(dir, "users");
    const add = await runFerry(["users", "add", file, "dave", "--cost", "4"], { input: "s3cret pass\n" });
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stderr, /added dave/);
    const text = await readFile(file, "utf8");
    assert.match(text, /^dave:\$2[aby]\$04\$[./A-Za-z0-9]{53}\n$/);
    assert.ok(!text.includes("s3cret"));
    assert.equal((await stat(file)).mode & 0o777, 0o600, "the users file is private");
    const list = await runFerry(["users", "list", file]);
    assert.equal(list.stdout, "dave\n");

    const echo = await startEchoServer();
    const ferry = await spawnFerry({ args: ["--users", file] });
    try {
      await assertEchoThrough(ferry.port, echo.port, { user: "dave", password: "s3cret pass" });
      const c = await TestClient.connect(ferry.port);
      c.write(encodeGreeting({ methods: [2] }));
      assert.equal(await c.read(parseMethodSelection), 2);
      c.write(encodeUserPassRequest({ username: "dave", password: "s3cret" }));
      assert.equal((await c.read(parseUserPassReply, 30_000)).status, 1);
      c.destroy();
    } finally {
      await ferry.stop();
      await echo.close();
    }
  });

  test("an empty password on stdin is refused and nothing is written", async () => {
    const file = path.join(dir, "empty-users");
    const r = await runFerry(["users", "add", file, "erin"], { input: "\n" });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /password must be 1 to 255 bytes/);
    await assert.rejects(stat(file), { code: "ENOENT" });
  });
});

describe("SIGTERM", () => {
  test("drains: a live session keeps flowing, new connections are refused, exit 0 after it ends", async () => {
    const echo = await startEchoServer();
    const ferry = await spawnFerry();
    let exited: unknown;
    void ferry.exited.then((e) => {
      exited = e;
    });
    let client: TestClient | undefined;
    try {
      const s = await socks5Connect(ferry.port, { type: "ipv4", host: "127.0.0.1", port: echo.port });
      client = s.client;
      assert.equal(s.reply.reply, 0);
      // `timeout` passes each on to ferry and again to its process group (then ignores that
      // signal itself), so ferry gets up to four at once: one stop, as when npm forwards the
      // Ctrl-C the terminal has also delivered.
      process.kill(ferry.pid, "SIGTERM");
      process.kill(ferry.pid, "SIGINT");
      await waitFor(() => /draining live sessions/.test(ferry.output()), 10_000, "the drain to start");
      await assert.rejects(TestClient.connect(ferry.port), { code: "ECONNREFUSED" });
      for (let i = 0; i < 5; i++) {
        const probe = Buffer.from(`during the drain ${i}`);
        client.write(probe);
        assert.deepEqual(await client.readBytes(probe.length), probe);
        await sleep(100);
      }
      assert.equal(exited, undefined, "still running while a session is live");
      assert.doesNotMatch(ferry.output(), /closing every session now/);
      client.socket.end();
      // Below the 10 s drain deadline (counted from the signal): the exit follows the last session.
      const exit = await within(ferry.exited, 8000, "the exit after the last session");
      assert.equal(exit.code, 0, ferry.output());
      await waitFor(() => /"msg":"stopped"/.test(ferry.output()), 10_000, "the last log line");
      const session = ferry.sessions()[0];
      assert.equal(session?.outcome, "succeeded");
      assert.equal(session?.reason, undefined, "the session ended on its own, it was not cut");
    } finally {
      client?.destroy();
      await ferry.stop();
      await echo.close();
    }
  });

  test("SIGINT too: the drain deadline cuts sessions that do not end, and the exit is still 0", async () => {
    const config = path.join(dir, "drain.yaml");
    await writeFile(config, "timeouts:\n  drain: 500ms\n");
    const echo = await startEchoServer();
    const ferry = await spawnFerry({ args: ["--config", config] });
    let client: TestClient | undefined;
    try {
      const s = await socks5Connect(ferry.port, { type: "ipv4", host: "127.0.0.1", port: echo.port });
      client = s.client;
      const started = Date.now();
      process.kill(ferry.pid, "SIGINT"); // `timeout` passes it on to ferry
      await client.waitClosed();
      const took = Date.now() - started;
      assert.ok(took >= 400, `cut after ${took} ms, not before the deadline`);
      const exit = await within(ferry.exited, 15_000, "the exit");
      assert.equal(exit.code, 0);
      await waitFor(() => /"msg":"stopped"/.test(ferry.output()), 10_000, "the last log line");
      assert.match(ferry.output(), /SIGINT: no longer accepting/);
      const session = ferry.sessions()[0];
      assert.match(
        String(session?.reason),
        /cut at shutdown: still open after the 500 ms drain/,
        "the cut session is logged",
      );
    } finally {
      client?.destroy();
      await ferry.stop();
      await echo.close();
    }
  });

  test("a throttled session whose client half-closed and stopped reading or left is cut at the drain deadline, and the exit follows", async () => {
    const drainMs = 1000;
    const config = path.join(dir, "throttled-drain.yaml");
    await writeFile(
      config,
      `timeouts:\n  drain: ${drainMs}ms\nrules:\n  - allow: { to: ["127.0.0.0/8"], bandwidth: "1KiB/s" }\n  - deny: {}\n`,
    );
    // A target that sends far more than the 64 KiB burst and never ends, so the relay's download
    // direction is paused on the bucket (for about a minute at 1 KiB/s) when the stop comes.
    const held = new Set<net.Socket>();
    const source = net.createServer({ allowHalfOpen: true }, (s) => {
      held.add(s);
      s.on("error", () => {});
      s.on("close", () => held.delete(s));
      s.resume(); // to see the FIN Ferry passes on
      s.write(Buffer.alloc(1024 * 1024, 7));
    });
    source.listen(0, "127.0.0.1");
    await once(source, "listening");
    const target = {
      type: "ipv4" as const,
      host: "127.0.0.1",
      port: (source.address() as net.AddressInfo).port,
    };
    const ferry = await spawnFerry({ args: ["--config", config] });
    const clients: TestClient[] = [];
    try {
      for (const leaves of [false, true]) {
        const s = await socks5Connect(ferry.port, target);
        clients.push(s.client);
        assert.equal(s.reply.reply, 0);
        if (!leaves)
          await s.client.readBytes(64 * 1024, 15_000); // the burst: the bucket is now in debt
        else {
          // This one shares the rule's bucket, already in debt: it gets one read passed on whole.
          // Everything is read before it leaves, or its close would be a reset.
          let got = s.client.takeOver().length;
          let last = Date.now();
          s.client.socket.on("data", (c: Buffer) => {
            got += c.length;
            last = Date.now();
          });
          await waitFor(() => got > 0 && Date.now() - last > 500, 15_000, "the second download to rest");
        }
        s.client.socket.end(); // half-close: Ferry passes the FIN on, the target keeps sending
        s.client.socket.pause();
        if (leaves) s.client.destroy();
      }
      await waitFor(
        () => held.size === 2 && [...held].every((t) => t.readableEnded),
        10_000,
        "both half-closes to reach the target",
      );
      const started = Date.now();
      process.kill(ferry.pid, "SIGTERM");
      // Before the fix, nothing ever resumed the paused download and the process lived on.
      const exit = await within(ferry.exited, drainMs + 6000, "the exit after the drain deadline");
      const took = Date.now() - started;
      assert.equal(exit.code, 0, ferry.output());
      assert.ok(took >= drainMs - 100, `exited after ${took} ms, before the drain deadline`);
      await waitFor(() => /"msg":"stopped"/.test(ferry.output()), 10_000, "the last log line");
      assert.doesNotMatch(ferry.output(), /exiting anyway/, "the sessions ended; no backstop was needed");
      const sessions = ferry.sessions();
      assert.equal(sessions.length, 2, ferry.output());
      for (const session of sessions) assert.match(String(session.reason), /cut at shutdown/);
      // The relays ended (that is what "stopped" waits for), so Ferry's target sockets went too.
    } finally {
      for (const c of clients) c.destroy();
      for (const s of held) s.destroy();
      await ferry.stop();
      await new Promise<void>((r) => source.close(() => r()));
    }
  });

  test("a signal again a second later cuts the live sessions at once, and the exit is still 0", async () => {
    const echo = await startEchoServer();
    const ferry = await spawnFerry();
    let client: TestClient | undefined;
    try {
      const s = await socks5Connect(ferry.port, { type: "ipv4", host: "127.0.0.1", port: echo.port });
      client = s.client;
      process.kill(ferry.pid, "SIGTERM");
      await waitFor(() => /draining live sessions/.test(ferry.output()), 10_000, "the drain to start");
      await sleep(1200);
      const probe = Buffer.from("still draining");
      client.write(probe);
      assert.deepEqual(await client.readBytes(probe.length), probe, "the first stop only drains");
      // SIGINT: `timeout` ignores a SIGTERM after the first one it passed on.
      process.kill(ferry.pid, "SIGINT");
      // Well under the rest of the 10 s drain deadline, which would close it anyway.
      await client.waitClosed(5000);
      const exit = await within(ferry.exited, 15_000, "the exit");
      assert.equal(exit.code, 0, ferry.output());
      assert.match(ferry.output(), /SIGINT during the drain: closing every session now/);
    } finally {
      client?.destroy();
      await ferry.stop();
      await echo.close();
    }
  });
});
