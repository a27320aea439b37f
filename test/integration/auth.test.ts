import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { hashPassword } from "../../src/auth/htpasswd.js";
import { encodeSocks4Request, parseSocks4Reply } from "../../src/protocol/socks4.js";
import {
  encodeGreeting,
  encodeRequest,
  parseMethodSelection,
  parseReply,
} from "../../src/protocol/socks5.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { spawnFerry } from "../helpers/ferry-process.js";
import { startEchoServer, waitFor } from "../helpers/net.js";
import { assertEchoThrough, recordFor, TestClient } from "../helpers/socks.js";

type Echo = Awaited<ReturnType<typeof startEchoServer>>;
const PASSWORD = "Corr3ct-Horse-XYZZY";
const WRONG = "Wr0ng-Battery-QUUX";

/** Greeting with `methods`; returns the client and the method the server chose. */
async function negotiate(port: number, methods: number[]): Promise<{ client: TestClient; method: number }> {
  const client = await TestClient.connect(port);
  client.write(encodeGreeting({ methods }));
  return { client, method: await client.read(parseMethodSelection) };
}

/** A login attempt: status byte, and whether the server closed afterwards. */
async function login(port: number, username: string, password: string) {
  const { client, method } = await negotiate(port, [2]);
  assert.equal(method, 2);
  client.write(encodeUserPassRequest({ username, password }));
  const status = await client.read(parseUserPassReply, 30_000);
  return { client, status };
}

describe("username/password (RFC 1929)", () => {
  let ferry: RunningFerry;
  let echo: Echo;
  before(async () => {
    echo = await startEchoServer();
    ferry = await startFerry({}, { inlineUsers: [{ name: "alice", password: PASSWORD }] });
  });
  after(async () => {
    await ferry?.close();
    await echo?.close();
  });

  test("the right password relays; the record names the user", async () => {
    const port = await assertEchoThrough(ferry.port, echo.port, { user: "alice", password: PASSWORD });
    const r = await recordFor(ferry, port);
    assert.equal(r.user, "alice");
    assert.equal(r.method, "userpass");
    assert.equal(r.reply, 0);
  });

  test("a wrong password gets status 0x01 and a close", async () => {
    const { client, status } = await login(ferry.port, "alice", WRONG);
    assert.deepEqual(status, { ok: false, status: 1 });
    const rest = await client.readToEnd();
    assert.ok(rest.ended && rest.data.length === 0, "closed with nothing more");
    client.destroy();
    const r = await recordFor(ferry, client.localPort);
    assert.equal(r.user, "alice");
    assert.match(r.reason!, /authentication failed for user "alice": wrong password/);
  });

  test("an unknown user gets status 0x01 and a close", async () => {
    const { client, status } = await login(ferry.port, "mallory", PASSWORD);
    assert.equal(status.status, 1);
    assert.ok((await client.readToEnd()).ended);
    client.destroy();
    assert.match((await recordFor(ferry, client.localPort)).reason!, /unknown user/);
  });

  test("SOCKS4 and SOCKS4a are refused with 91 when authentication is required", async () => {
    for (const address of [
      { type: "ipv4" as const, host: "127.0.0.1", port: echo.port },
      { type: "domain" as const, host: "localhost", port: echo.port },
    ]) {
      const c = await TestClient.connect(ferry.port);
      c.write(encodeSocks4Request({ command: "connect", address, userId: "alice" }));
      assert.equal((await c.read(parseSocks4Reply)).reply, 91);
      assert.ok((await c.readToEnd()).ended);
      c.destroy();
      const r = await recordFor(ferry, c.localPort);
      assert.match(r.reason!, /requires authentication, which SOCKS4 cannot carry; use SOCKS5/);
      assert.equal(r.reply, 91);
    }
  });

  test("greeting, login, request and data pipelined in one write all arrive", async () => {
    const client = await TestClient.connect(ferry.port);
    try {
      client.write(
        Buffer.concat([
          encodeGreeting({ methods: [2] }),
          encodeUserPassRequest({ username: "alice", password: PASSWORD }),
          encodeRequest({
            command: "connect",
            address: { type: "ipv4", host: "127.0.0.1", port: echo.port },
          }),
          Buffer.from("early bird"),
        ]),
      );
      assert.equal(await client.read(parseMethodSelection), 2);
      assert.equal((await client.read(parseUserPassReply, 30_000)).ok, true);
      assert.equal((await client.read(parseReply)).reply, 0);
      assert.equal((await client.readBytes(10)).toString(), "early bird");
    } finally {
      client.destroy();
    }
  });

  test("no password ever appears in a session record", () => {
    assert.ok(ferry.records.length >= 4);
    const all = JSON.stringify(ferry.records);
    assert.ok(!all.includes(PASSWORD) && !all.includes(WRONG), all);
  });
});

describe("method negotiation", () => {
  const users = { inlineUsers: [{ name: "bob", password: PASSWORD }] };

  test("the server's order of preference wins over the client's", async () => {
    const prefersLogin = await startFerry({ auth: ["userpass", "none"] }, users);
    const prefersNone = await startFerry({ auth: ["none", "userpass"] }, users);
    try {
      for (const [server, offered, chosen] of [
        [prefersLogin, [0, 2], 2],
        [prefersLogin, [2, 0], 2],
        [prefersLogin, [0], 0],
        [prefersNone, [2, 0], 0],
        [prefersNone, [2], 2],
      ] as const) {
        const { client, method } = await negotiate(server.port, [...offered]);
        client.destroy();
        assert.equal(
          method,
          chosen,
          `offered ${offered} to a server preferring ${server.context.methods[0]!.name}`,
        );
      }
    } finally {
      await prefersLogin.close();
      await prefersNone.close();
    }
  });

  test("nothing acceptable gets 0xFF and a close; the record lists both sides", async () => {
    const ferry = await startFerry({ auth: ["userpass"] }, users);
    try {
      const { client, method } = await negotiate(ferry.port, [0x00, 0x01, 0x80]);
      assert.equal(method, 0xff);
      assert.ok((await client.readToEnd()).ended);
      client.destroy();
      const r = await recordFor(ferry, client.localPort);
      assert.equal(
        r.reason,
        "no acceptable authentication method: client offered 0x00, 0x01, 0x80; this server accepts userpass (0x02)",
      );
    } finally {
      await ferry.close();
    }
  });
});

describe("users from an htpasswd file (bcrypt)", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "ferry-auth-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("a bcrypt user from the file logs in; a wrong password does not", async () => {
    const file = path.join(dir, "users");
    await writeFile(file, `# test users\ncarol:${await hashPassword(PASSWORD, 4)}\n`);
    const echo = await startEchoServer();
    const ferry = await startFerry({ users: file });
    try {
      await assertEchoThrough(ferry.port, echo.port, { user: "carol", password: PASSWORD });
      const { client, status } = await login(ferry.port, "carol", WRONG);
      client.destroy();
      assert.equal(status.status, 1);
    } finally {
      await ferry.close();
      await echo.close();
    }
  });
});

describe("logs of bin/ferry serve", () => {
  test("one JSON line per session, with the user and outcome, and never a password", async () => {
    const echo = await startEchoServer();
    // At trace level, so that no debug detail anywhere may carry a password either.
    const ferry = await spawnFerry({
      users: [{ name: "alice", password: PASSWORD }],
      args: ["--log-level", "trace"],
    });
    try {
      await assertEchoThrough(ferry.port, echo.port, { user: "alice", password: PASSWORD });
      const bad = await login(ferry.port, "alice", WRONG);
      assert.equal(bad.status.status, 1);
      await bad.client.readToEnd();
      bad.client.destroy();
      const v4 = await TestClient.connect(ferry.port);
      v4.write(
        encodeSocks4Request({
          command: "connect",
          address: { type: "ipv4", host: "127.0.0.1", port: echo.port },
          userId: "",
        }),
      );
      assert.equal((await v4.read(parseSocks4Reply)).reply, 91);
      v4.destroy();
      await ferry.waitForSession((s) => s.reply === 91);
      const exit = await ferry.stop();
      assert.equal(exit.code, 0);
      await waitFor(() => ferry.output().includes('"msg":"stopped"'), 10_000, "the last log line");
      const out = ferry.output();
      assert.ok(!out.includes(PASSWORD), "the right password is not logged");
      assert.ok(!out.includes(WRONG), "the wrong password is not logged");
      const sessions = ferry.sessions();
      assert.equal(sessions.length, 3, out);
      const [ok, wrong, socks4] = sessions;
      assert.equal(ok!.user, "alice");
      assert.equal(ok!.outcome, "succeeded");
      assert.equal(ok!.command, "connect");
      assert.equal(ok!.target, `127.0.0.1:${echo.port}`);
      assert.ok(typeof ok!.bytesUp === "number" && (ok!.bytesUp as number) > 0);
      assert.ok(typeof ok!.durationMs === "number");
      assert.match(String(wrong!.msg), /wrong password/);
      assert.equal(wrong!.level, 40);
      assert.match(String(socks4!.msg), /SOCKS4 request refused: this server requires authentication/);
      assert.equal(socks4!.reply, 91);
    } finally {
      await ferry.stop();
      await echo.close();
    }
  });
});
