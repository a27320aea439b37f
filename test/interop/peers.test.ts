// The third-party servers later tests chain through (Dante, microsocks), started by the helpers
// in test/helpers/: this checks the helpers themselves, with curl as the client.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DANTED, startDante } from "../helpers/dante.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { startMicrosocks } from "../helpers/microsocks.js";
import { describeRun, run } from "../helpers/process.js";
import { requireRoot, requireTool } from "../helpers/tools.js";

function curl(proxy: string, url: string) {
  return run("curl", ["--silent", "--show-error", "--fail", "--max-time", "15", "--proxy", proxy, url], {
    timeoutMs: 60_000,
  });
}

async function accountExists(name: string): Promise<boolean> {
  return (await run("id", ["-u", name], { timeoutMs: 5000 })).code === 0;
}

describe("third-party SOCKS servers started by the test helpers", { timeout: 180_000 }, () => {
  let web: TestHttpServer;
  let web6: TestHttpServer;
  before(async () => {
    web = await startHttpServer();
    web6 = await startHttpServer("::1");
  });
  after(async () => {
    await web?.close();
    await web6?.close();
  });

  test("danted without auth: IPv4 and IPv6 targets; stop() ends it", async (t) => {
    if (!requireTool(t, DANTED, "dante-server") || !requireTool(t, "curl", "curl")) return;
    const dante = await startDante();
    try {
      const r4 = await curl(dante.url, `${web.origin}/`);
      assert.equal(r4.code, 0, describeRun(r4));
      assert.equal(r4.stdout.toString(), web.greeting);
      const r6 = await curl(dante.url, `${web6.origin}/`);
      assert.equal(r6.code, 0, describeRun(r6));
      assert.equal(r6.stdout.toString(), web6.greeting);
    } finally {
      const exit = await dante.stop();
      assert.ok(exit.code !== null || exit.signal !== null, "danted did not exit");
    }
    const after = await curl(dante.url, `${web.origin}/`);
    assert.notEqual(after.code, 0, "danted still answers after stop()");
  });

  test("danted with username auth (a throwaway system account, removed by stop())", async (t) => {
    if (!requireTool(t, DANTED, "dante-server") || !requireTool(t, "curl", "curl")) return;
    if (!requireRoot(t, "Dante's username method (system accounts)")) return;
    const dante = await startDante({ auth: {} });
    const user = dante.user!;
    try {
      assert.ok(await accountExists(user));
      const ok = await curl(dante.url, `${web.origin}/`);
      assert.equal(ok.code, 0, describeRun(ok));
      assert.equal(ok.stdout.toString(), web.greeting);
      const bad = await curl(`socks5h://${user}:wrong@127.0.0.1:${dante.port}`, `${web.origin}/`);
      assert.equal(bad.code, 97, describeRun(bad));
      const none = await curl(`socks5h://127.0.0.1:${dante.port}`, `${web.origin}/`);
      assert.equal(none.code, 97, describeRun(none));
    } finally {
      await dante.stop();
    }
    assert.equal(await accountExists(user), false, `account ${user} left behind`);
  });

  test("microsocks with and without credentials", async (t) => {
    if (!requireTool(t, "microsocks", "microsocks") || !requireTool(t, "curl", "curl")) return;
    const open = await startMicrosocks();
    const locked = await startMicrosocks({ user: "m", password: "m-pw" });
    try {
      const r = await curl(open.url, `${web.origin}/`);
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdout.toString(), web.greeting);
      const ok = await curl(locked.url, `${web.origin}/`);
      assert.equal(ok.code, 0, describeRun(ok));
      assert.equal(ok.stdout.toString(), web.greeting);
      const bad = await curl(`socks5h://m:nope@127.0.0.1:${locked.port}`, `${web.origin}/`);
      assert.notEqual(bad.code, 0);
    } finally {
      await open.stop();
      await locked.stop();
    }
  });
});
