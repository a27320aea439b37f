import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { pseudoRandomSha256, startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { describeRun, run, tempDir } from "../helpers/process.js";
import { requireTool } from "../helpers/tools.js";

const SIZE = 5 * 1024 * 1024;

/**
 * Runs `socksify curl URL` with a socks.conf (Dante client syntax) that sends every TCP connect
 * through ferry. Dante's client adds direct routes for the machine's own networks (loopback
 * included) unless SOCKS_AUTOADD_LANROUTES=no, and our targets live on loopback.
 */
async function socksifyCurl(
  dir: string,
  ferry: FerryProcess,
  url: string,
  route: { protocol: "socks_v4" | "socks_v5"; username?: string; password?: string },
) {
  const conf = join(dir, `socks-${route.protocol}-${ferry.port}.conf`);
  await writeFile(
    conf,
    [
      "route {",
      `  from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = ${ferry.port}`,
      `  proxyprotocol: ${route.protocol}`,
      `  method: ${route.username ? "username" : "none"}`,
      "}",
      "",
    ].join("\n"),
  );
  const env: NodeJS.ProcessEnv = { ...process.env, SOCKS_CONF: conf, SOCKS_AUTOADD_LANROUTES: "no" };
  if (route.username) {
    env.SOCKS_USERNAME = route.username;
    env.SOCKS_PASSWORD = route.password;
  }
  return run("socksify", ["curl", "--silent", "--show-error", "--fail", "--max-time", "20", url], {
    env,
    timeoutMs: 60_000,
  });
}

describe("Dante's socksify (LD_PRELOAD) running curl through ferry", { timeout: 180_000 }, () => {
  const frank = { name: "frank", password: "socksify-pw" };
  let open: FerryProcess;
  let withUser: FerryProcess;
  let web: TestHttpServer;
  let dir: Awaited<ReturnType<typeof tempDir>>;

  before(async () => {
    dir = await tempDir("ferry-socksify-");
    open = await spawnFerry();
    withUser = await spawnFerry({ users: [frank] });
    web = await startHttpServer();
  });
  after(async () => {
    await open?.stop();
    await withUser?.stop();
    await web?.close();
    await dir?.remove();
  });

  test("socks_v5 route, no auth: page and a 5 MB download by hash", async (t) => {
    if (!requireTool(t, "socksify", "dante-client") || !requireTool(t, "curl", "curl")) return;
    const skip = open.sessions().length;
    const page = await socksifyCurl(dir.path, open, `${web.origin}/`, { protocol: "socks_v5" });
    assert.equal(page.code, 0, describeRun(page));
    assert.equal(page.stdout.toString(), web.greeting);
    const s = await open.waitForSession(() => true, { skip });
    assert.equal(s.protocol, "socks5");
    assert.equal(s.target, `127.0.0.1:${web.port}`);

    const big = await socksifyCurl(dir.path, open, `${web.origin}/bytes/${SIZE}`, { protocol: "socks_v5" });
    assert.equal(big.code, 0, describeRun(big));
    assert.equal(big.stdoutBytes, SIZE);
    assert.equal(big.stdoutSha256, pseudoRandomSha256(SIZE));
    const s2 = await open.waitForSession(() => true, { skip: skip + 1 });
    assert.ok(s2.bytesDown >= SIZE);
  });

  test("socks_v4 route", async (t) => {
    if (!requireTool(t, "socksify", "dante-client") || !requireTool(t, "curl", "curl")) return;
    const skip = open.sessions().length;
    const r = await socksifyCurl(dir.path, open, `${web.origin}/`, { protocol: "socks_v4" });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), web.greeting);
    const s = await open.waitForSession(() => true, { skip });
    assert.equal(s.protocol, "socks4");
    assert.equal(s.reply, 90);
  });

  test("socks_v5 route with username (SOCKS_USERNAME/SOCKS_PASSWORD) to `ferry serve --user`", async (t) => {
    if (!requireTool(t, "socksify", "dante-client") || !requireTool(t, "curl", "curl")) return;
    const skip = withUser.sessions().length;
    const r = await socksifyCurl(dir.path, withUser, `${web.origin}/`, {
      protocol: "socks_v5",
      username: frank.name,
      password: frank.password,
    });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), web.greeting);
    const s = await withUser.waitForSession(() => true, { skip });
    assert.equal(s.user, frank.name);
    assert.equal(s.method, "userpass");
  });

  test("a wrong password: the program's connect fails, nothing reaches the target", async (t) => {
    if (!requireTool(t, "socksify", "dante-client") || !requireTool(t, "curl", "curl")) return;
    const skip = withUser.sessions().length;
    const served = web.requests.length;
    const r = await socksifyCurl(dir.path, withUser, `${web.origin}/`, {
      protocol: "socks_v5",
      username: frank.name,
      password: "not-franks",
    });
    assert.equal(r.code, 7, describeRun(r)); // CURLE_COULDNT_CONNECT
    assert.equal(web.requests.length, served);
    const s = await withUser.waitForSession(() => true, { skip });
    assert.match(s.reason ?? "", /authentication failed/);
  });
});
