import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { pseudoRandomSha256, startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { describeRun, run } from "../helpers/process.js";
import { requireTool } from "../helpers/tools.js";

const BIG = 50 * 1024 * 1024;

function curl(proxy: string, url: string, extra: string[] = []) {
  return run(
    "curl",
    ["--silent", "--show-error", "--fail", "--max-time", "30", "--proxy", proxy, ...extra, url],
    {
      timeoutMs: 60_000,
      maxBuffer: 1024 * 1024,
    },
  );
}

/** Runs curl through ferry and returns the output with the session line Ferry logged for it. */
async function curlSession(ferry: FerryProcess, proxy: string, url: string) {
  const skip = ferry.sessions().length;
  const result = await curl(proxy, url);
  const session = await ferry.waitForSession(() => true, { skip });
  return { result, session };
}

describe("curl through `ferry serve` without authentication", { timeout: 360_000 }, () => {
  let ferry: FerryProcess;
  let web: TestHttpServer;
  let web6: TestHttpServer;
  const at = (scheme: string, creds = "") => `${scheme}://${creds}127.0.0.1:${ferry.port}`;

  before(async () => {
    ferry = await spawnFerry();
    web = await startHttpServer("127.0.0.1");
    web6 = await startHttpServer("::1");
  });
  after(async () => {
    await ferry?.stop();
    await web?.close();
    await web6?.close();
  });

  const cases = [
    // socks4 and socks5 resolve on the client: the proxy sees an address.
    { scheme: "socks4", host: "127.0.0.1", protocol: "socks4", target: (p: number) => `127.0.0.1:${p}` },
    { scheme: "socks5", host: "127.0.0.1", protocol: "socks5", target: (p: number) => `127.0.0.1:${p}` },
    // socks4a and socks5h hand the name to the proxy, which resolves it.
    { scheme: "socks4a", host: "localhost", protocol: "socks4a", target: (p: number) => `localhost:${p}` },
    { scheme: "socks5h", host: "localhost", protocol: "socks5", target: (p: number) => `localhost:${p}` },
  ];
  for (const c of cases) {
    test(`${c.scheme}: GET / returns the target's bytes`, async (t) => {
      if (!requireTool(t, "curl", "curl")) return;
      const { result, session } = await curlSession(ferry, at(c.scheme), `http://${c.host}:${web.port}/`);
      assert.equal(result.code, 0, describeRun(result));
      assert.equal(result.stdout.toString(), web.greeting);
      assert.equal(session.protocol, c.protocol);
      assert.equal(session.target, c.target(web.port));
      assert.equal(session.reply, c.protocol === "socks5" ? 0 : 90);
      assert.equal(session.bytesDown > web.greeting.length, true);
    });
  }

  test("socks5h with credentials the server does not need: no-auth is chosen", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const { result, session } = await curlSession(ferry, at("socks5h", "someone:secret@"), `${web.origin}/`);
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout.toString(), web.greeting);
    assert.equal(session.method, "none");
    assert.equal(session.user, undefined);
    assert.ok(!JSON.stringify(ferry.logs()).includes("secret"), "a password reached the log");
  });

  test("socks4a with a user id: USERID reaches the log as ident", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const { result, session } = await curlSession(ferry, at("socks4a", "curl-ident@"), `${web.origin}/`);
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout.toString(), web.greeting);
    assert.equal(session.ident, "curl-ident");
    assert.equal(session.method, "none");
  });

  for (const scheme of ["socks5", "socks5h"]) {
    test(`${scheme}: IPv6 target http://[::1]:PORT/`, async (t) => {
      if (!requireTool(t, "curl", "curl")) return;
      const { result, session } = await curlSession(ferry, at(scheme), `${web6.origin}/`);
      assert.equal(result.code, 0, describeRun(result));
      assert.equal(result.stdout.toString(), web6.greeting);
      assert.equal(session.target, `[::1]:${web6.port}`);
      assert.equal(web6.requests.at(-1)?.remote, "::1");
    });
  }

  test("socks5h: a 50 MB download arrives intact (sha256)", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const { result, session } = await curlSession(ferry, at("socks5h"), `${web.origin}/bytes/${BIG}`);
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdoutBytes, BIG);
    assert.equal(result.stdoutSha256, pseudoRandomSha256(BIG));
    assert.ok(session.bytesDown >= BIG, `ferry counted ${session.bytesDown} bytes down`);
  });

  test("ferry exits 0 on SIGTERM", async () => {
    const exit = await ferry.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
  });
});

describe("curl through `ferry serve --listen [::1]:PORT`", { timeout: 120_000 }, () => {
  let ferry: FerryProcess;
  let web: TestHttpServer;
  before(async () => {
    ferry = await spawnFerry({ host: "::1" });
    web = await startHttpServer("127.0.0.1");
  });
  after(async () => {
    await ferry?.stop();
    await web?.close();
  });

  test("socks5h over IPv6 to an IPv4 target", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const { result, session } = await curlSession(ferry, ferry.url, `${web.origin}/`);
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout.toString(), web.greeting);
    assert.match(session.client, /^\[::1\]:\d+$/);
    assert.equal(session.target, `127.0.0.1:${web.port}`);
  });
});

describe("curl through `ferry serve --user NAME:PASSWORD`", { timeout: 360_000 }, () => {
  const alice = { name: "alice", password: "p@ss:word with spaces" };
  let ferry: FerryProcess;
  let web: TestHttpServer;
  let web6: TestHttpServer;
  const creds = `${encodeURIComponent(alice.name)}:${encodeURIComponent(alice.password)}@`;
  const at = (scheme: string, c = creds) => `${scheme}://${c}127.0.0.1:${ferry.port}`;

  before(async () => {
    ferry = await spawnFerry({ users: [alice] });
    web = await startHttpServer("127.0.0.1");
    web6 = await startHttpServer("::1");
  });
  after(async () => {
    await ferry?.stop();
    await web?.close();
    await web6?.close();
  });

  for (const scheme of ["socks5", "socks5h"]) {
    test(`${scheme} with the right credentials`, async (t) => {
      if (!requireTool(t, "curl", "curl")) return;
      const host = scheme === "socks5h" ? "localhost" : "127.0.0.1";
      const { result, session } = await curlSession(ferry, at(scheme), `http://${host}:${web.port}/`);
      assert.equal(result.code, 0, describeRun(result));
      assert.equal(result.stdout.toString(), web.greeting);
      assert.equal(session.method, "userpass");
      assert.equal(session.user, alice.name);
      assert.equal(session.target, `${host}:${web.port}`);
      assert.equal(session.reply, 0);
    });
  }

  test("socks5h with credentials to an IPv6 target", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const { result, session } = await curlSession(ferry, at("socks5h"), `${web6.origin}/`);
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout.toString(), web6.greeting);
    assert.equal(session.target, `[::1]:${web6.port}`);
    assert.equal(session.user, alice.name);
  });

  test("a wrong password is refused and the target is never reached", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const before = web.requests.length;
    const { result, session } = await curlSession(
      ferry,
      at("socks5h", "alice:not-alices-pw-4711@"),
      `${web.origin}/`,
    );
    assert.equal(result.code, 97, describeRun(result)); // CURLE_PROXY: the handshake failed
    assert.equal(result.stdout.length, 0);
    assert.equal(web.requests.length, before);
    assert.equal(session.command, undefined);
    assert.match(session.reason ?? "", /authentication failed/);
    assert.ok(!ferry.output().includes("not-alices-pw-4711"), "a password reached the log");
  });

  test("no credentials: no acceptable method", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const { result } = await curlSession(ferry, at("socks5h", ""), `${web.origin}/`);
    assert.equal(result.code, 97, describeRun(result));
    assert.match(result.stderr, /No authentication method was acceptable/i);
  });

  for (const scheme of ["socks4", "socks4a"]) {
    test(`${scheme} is refused with 91 (SOCKS4 cannot carry a password)`, async (t) => {
      if (!requireTool(t, "curl", "curl")) return;
      const { result, session } = await curlSession(ferry, at(scheme, ""), `${web.origin}/`);
      assert.notEqual(result.code, 0, describeRun(result));
      assert.equal(result.stdout.length, 0);
      assert.equal(session.reply, 91);
      assert.match(session.reason ?? "", /requires authentication/);
    });
  }

  test("socks5h with credentials: a 50 MB download arrives intact (sha256)", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const { result, session } = await curlSession(ferry, at("socks5h"), `${web.origin}/bytes/${BIG}`);
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdoutBytes, BIG);
    assert.equal(result.stdoutSha256, pseudoRandomSha256(BIG));
    assert.equal(session.user, alice.name);
    assert.ok(session.bytesDown >= BIG, `ferry counted ${session.bytesDown} bytes down`);
  });

  test("ferry exits 0 on SIGTERM and never logged the password", async () => {
    const exit = await ferry.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(!ferry.output().includes(alice.password), "the password reached the log");
  });
});
