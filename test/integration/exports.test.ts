import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { connect } from "ferry/client";
import { startServer } from "ferry/server";
import { startEchoServer } from "../helpers/net.js";
import { describeRun, run } from "../helpers/process.js";
import { assertEchoThrough } from "../helpers/socks.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const recorder = new URL("../helpers/import-recorder.js", import.meta.url).href;

/** The module URLs a fresh node process loads to import `spec` (resolved from the package root). */
async function loadedBy(spec: string): Promise<string[]> {
  const script = `const urls = await globalThis.importedUrls(${JSON.stringify(spec)}); console.log(JSON.stringify(urls));`;
  const r = await run(process.execPath, ["--import", recorder, "--input-type=module", "-e", script], {
    cwd: root,
    timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, describeRun(r));
  return JSON.parse(r.stdout.toString()) as string[];
}

const ferryModules = (urls: string[], dir: string) => urls.filter((u) => u.includes(`/dist/src/${dir}/`));
const packages = (urls: string[], name: string) => urls.filter((u) => u.includes(`/node_modules/${name}/`));

describe("package exports", () => {
  it("ferry/client loads neither the server nor undici", async () => {
    const urls = await loadedBy("ferry/client");
    assert.ok(
      urls.some((u) => u.endsWith("/dist/src/client/index.js")),
      `client entry not seen: ${urls}`,
    );
    assert.deepEqual(ferryModules(urls, "server"), []);
    assert.deepEqual(ferryModules(urls, "config"), []);
    assert.deepEqual(packages(urls, "undici"), []);
    assert.deepEqual(packages(urls, "pino"), []);
  });

  it("the root export still carries the undici dispatcher (and the recorder sees undici)", async () => {
    const urls = await loadedBy("ferry");
    assert.ok(packages(urls, "undici").length > 0, "importing ferry should load undici");
    assert.deepEqual(ferryModules(urls, "server"), []);
    const root = await import("ferry");
    for (const name of [
      "connect",
      "bind",
      "associate",
      "SocksAgent",
      "SocksDispatcher",
      "socksify",
      "Reply",
    ]) {
      assert.ok(name in root, `ferry no longer exports ${name}`);
    }
  });

  it("ferry/protocol is the codecs alone", async () => {
    const urls = await loadedBy("ferry/protocol");
    assert.deepEqual(ferryModules(urls, "client"), []);
    assert.deepEqual(ferryModules(urls, "server"), []);
    const protocol = await import("ferry/protocol");
    assert.equal(typeof protocol.encodeGreeting, "function");
  });

  it("ferry/server starts a server from a configuration object, reloads and stops it", async () => {
    const echo = await startEchoServer();
    const handle = await startServer({
      config: { listen: ["127.0.0.1:0"], auth: ["none"], limits: { sessions: 50 } },
      users: [{ name: "alice", password: "s3cret" }],
    });
    try {
      const port = handle.addresses[0]?.port ?? 0;
      assert.ok(port > 0);
      await assertEchoThrough(port, echo.port);
      // A refused configuration leaves the running one serving.
      const bad = await handle.reload({ listen: ["127.0.0.1:0"], limits: { sessions: -1 } });
      assert.equal(bad.ok, false, bad.message);
      await assertEchoThrough(port, echo.port);
      // A login is now required: the library client without one is refused.
      const good = await handle.reload({
        listen: ["127.0.0.1:0"],
        auth: ["userpass"],
      });
      assert.equal(good.ok, true, good.message);
      await assert.rejects(connect(`socks5h://127.0.0.1:${port}`, `127.0.0.1:${echo.port}`));
      await assertEchoThrough(port, echo.port, { user: "alice", password: "s3cret" });
    } finally {
      await handle.stop(0);
      await echo.close();
    }
  });
});
