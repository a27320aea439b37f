import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { pseudoRandomSha256, startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { type RunningMicrosocks, startMicrosocks } from "../helpers/microsocks.js";
import { describeRun, freePort, run, tempDir } from "../helpers/process.js";
import { requireTool } from "../helpers/tools.js";

const SIZE = 5 * 1024 * 1024;

/** Runs `proxychains4 -f CONF curl URL` with a strict chain of `hops` (proxychains syntax). */
async function chainCurl(dir: string, hops: string[], url: string) {
  const conf = join(dir, `chain-${Math.random().toString(36).slice(2)}.conf`);
  await writeFile(
    conf,
    [
      "strict_chain",
      "quiet_mode",
      "tcp_read_time_out 15000",
      "tcp_connect_time_out 8000",
      "[ProxyList]",
      ...hops,
      "",
    ].join("\n"),
  );
  return run(
    "proxychains4",
    ["-f", conf, "curl", "--silent", "--show-error", "--fail", "--max-time", "20", url],
    {
      timeoutMs: 60_000,
    },
  );
}

function requireChainTools(t: TestContext): boolean {
  return (
    requireTool(t, "proxychains4", "proxychains4") &&
    requireTool(t, "microsocks", "microsocks") &&
    requireTool(t, "curl", "curl")
  );
}

describe("proxychains4: strict chains of ferry and microsocks", { timeout: 180_000 }, () => {
  const gina = { name: "gina", password: "chain-pw:7" };
  const micro = { user: "mic", password: "mic-pw" };
  let open: FerryProcess;
  let withUser: FerryProcess;
  let ms: RunningMicrosocks;
  let msAuth: RunningMicrosocks;
  let web: TestHttpServer;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let microsocksError: unknown;
  const ready = (t: TestContext): boolean => {
    if (!requireChainTools(t)) return false;
    if (microsocksError) throw microsocksError;
    return true;
  };

  before(async () => {
    dir = await tempDir("ferry-proxychains-");
    open = await spawnFerry();
    withUser = await spawnFerry({ users: [gina] });
    web = await startHttpServer();
    // before() cannot skip: a start failure is kept and reported by each test, after the tool
    // check has had its say (skip outside CI, fail under CI=true)
    try {
      ms = await startMicrosocks();
      msAuth = await startMicrosocks(micro);
    } catch (err) {
      microsocksError = err;
    }
  });
  after(async () => {
    await open?.stop();
    await withUser?.stop();
    await ms?.stop();
    await msAuth?.stop();
    await web?.close();
    await dir?.remove();
  });

  test("ferry (socks5) then microsocks", async (t) => {
    if (!ready(t)) return;
    const skip = open.sessions().length;
    const r = await chainCurl(
      dir.path,
      [`socks5 127.0.0.1 ${open.port}`, `socks5 127.0.0.1 ${ms.port}`],
      `${web.origin}/`,
    );
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), web.greeting);
    // ferry carried the connection to the next hop; microsocks made the last one
    const s = await open.waitForSession(() => true, { skip });
    assert.equal(s.target, `127.0.0.1:${ms.port}`);
    assert.equal(s.reply, 0);
    assert.match(ms.output(), new RegExp(`connected to 127\\.0\\.0\\.1:${web.port}`));
  });

  test("`ferry serve --user` (socks5 with credentials) then microsocks with credentials: 5 MB by hash", async (t) => {
    if (!ready(t)) return;
    const skip = withUser.sessions().length;
    const r = await chainCurl(
      dir.path,
      [
        `socks5 127.0.0.1 ${withUser.port} ${gina.name} ${gina.password}`,
        `socks5 127.0.0.1 ${msAuth.port} ${micro.user} ${micro.password}`,
      ],
      `${web.origin}/bytes/${SIZE}`,
    );
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdoutBytes, SIZE);
    assert.equal(r.stdoutSha256, pseudoRandomSha256(SIZE));
    const s = await withUser.waitForSession(() => true, { skip });
    assert.equal(s.user, gina.name);
    assert.equal(s.target, `127.0.0.1:${msAuth.port}`);
    assert.ok(s.bytesDown >= SIZE);
  });

  test("microsocks then ferry as the last hop, over socks4", async (t) => {
    if (!ready(t)) return;
    const skip = open.sessions().length;
    const r = await chainCurl(
      dir.path,
      [`socks5 127.0.0.1 ${ms.port}`, `socks4 127.0.0.1 ${open.port}`],
      `${web.origin}/`,
    );
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), web.greeting);
    const s = await open.waitForSession(() => true, { skip });
    assert.equal(s.protocol, "socks4");
    assert.equal(s.target, `127.0.0.1:${web.port}`);
    assert.equal(s.reply, 90);
  });

  test("microsocks then `ferry serve --user` as the last hop", async (t) => {
    if (!ready(t)) return;
    const skip = withUser.sessions().length;
    const r = await chainCurl(
      dir.path,
      [
        `socks5 127.0.0.1 ${msAuth.port} ${micro.user} ${micro.password}`,
        `socks5 127.0.0.1 ${withUser.port} ${gina.name} ${gina.password}`,
      ],
      `${web.origin}/`,
    );
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), web.greeting);
    const s = await withUser.waitForSession(() => true, { skip });
    assert.equal(s.user, gina.name);
    assert.equal(s.target, `127.0.0.1:${web.port}`);
  });

  test("a dead next hop: the chain fails and ferry logs connection refused", async (t) => {
    if (!ready(t)) return;
    const dead = await freePort();
    const skip = open.sessions().length;
    const r = await chainCurl(
      dir.path,
      [`socks5 127.0.0.1 ${open.port}`, `socks5 127.0.0.1 ${dead}`],
      `${web.origin}/`,
    );
    assert.notEqual(r.code, 0, describeRun(r));
    assert.equal(r.stdoutBytes, 0);
    const s = await open.waitForSession(() => true, { skip });
    assert.equal(s.target, `127.0.0.1:${dead}`);
    assert.equal(s.reply, 5);
  });
});
