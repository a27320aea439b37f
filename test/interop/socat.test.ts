import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { sha256, startEchoServer } from "../helpers/net.js";
import { describeRun, run } from "../helpers/process.js";
import { requireTool } from "../helpers/tools.js";

const payload = randomBytes(512 * 1024);

/** socat between stdin/stdout and a SOCKS4 or SOCKS4A address through ferry. */
function socat(ferry: FerryProcess, address: "SOCKS4" | "SOCKS4A", host: string, port: number, user: string) {
  return run(
    "socat",
    // -t 5: after stdin's EOF, wait up to 5 s for the echo to finish before closing
    ["-t", "5", "-", `${address}:127.0.0.1:${host}:${port},socksport=${ferry.port},socksuser=${user}`],
    { input: payload, timeoutMs: 60_000, maxBuffer: 4 * 1024 * 1024 },
  );
}

describe("socat through `ferry serve`", { timeout: 120_000 }, () => {
  let ferry: FerryProcess;
  let echo: { port: number; close: () => Promise<void> };

  before(async () => {
    ferry = await spawnFerry();
    echo = await startEchoServer();
  });
  after(async () => {
    await ferry?.stop();
    await echo?.close();
  });

  test("SOCKS4 to an address: echoed intact, USERID logged as ident", async (t) => {
    if (!requireTool(t, "socat", "socat")) return;
    const skip = ferry.sessions().length;
    const r = await socat(ferry, "SOCKS4", "127.0.0.1", echo.port, "socat-four");
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdoutSha256, sha256(payload));
    const s = await ferry.waitForSession(() => true, { skip });
    assert.equal(s.protocol, "socks4");
    assert.equal(s.ident, "socat-four");
    assert.equal(s.target, `127.0.0.1:${echo.port}`);
    assert.equal(s.reply, 90);
    assert.equal(s.bytesUp, payload.length);
    assert.equal(s.bytesDown, payload.length);
  });

  test("SOCKS4A with a name the proxy resolves", async (t) => {
    if (!requireTool(t, "socat", "socat")) return;
    const skip = ferry.sessions().length;
    const r = await socat(ferry, "SOCKS4A", "localhost", echo.port, "socat-four-a");
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdoutSha256, sha256(payload));
    const s = await ferry.waitForSession(() => true, { skip });
    assert.equal(s.protocol, "socks4a");
    assert.equal(s.ident, "socat-four-a");
    assert.equal(s.target, `localhost:${echo.port}`);
    assert.equal(s.reply, 90);
  });

  test("SOCKS4A to a name that does not resolve: socat fails, ferry replies 91", async (t) => {
    if (!requireTool(t, "socat", "socat")) return;
    const skip = ferry.sessions().length;
    const r = await socat(ferry, "SOCKS4A", "no-such-host.invalid", echo.port, "x");
    assert.notEqual(r.code, 0, describeRun(r));
    assert.equal(r.stdoutBytes, 0);
    const s = await ferry.waitForSession(() => true, { skip });
    assert.equal(s.reply, 91);
    assert.equal(s.target, `no-such-host.invalid:${echo.port}`);
  });

  test("ferry exits 0 on SIGTERM", async () => {
    assert.deepEqual(await ferry.stop(), { code: 0, signal: null });
  });
});

describe("socat through `ferry serve --user`", { timeout: 120_000 }, () => {
  let ferry: FerryProcess;
  let echo: { port: number; close: () => Promise<void> };

  before(async () => {
    ferry = await spawnFerry({ users: [{ name: "carol", password: "socat-pw" }] });
    echo = await startEchoServer();
  });
  after(async () => {
    await ferry?.stop();
    await echo?.close();
  });

  for (const address of ["SOCKS4", "SOCKS4A"] as const) {
    test(`${address} is refused with 91 and a log line that says why`, async (t) => {
      if (!requireTool(t, "socat", "socat")) return;
      const skip = ferry.sessions().length;
      const r = await socat(ferry, address, "127.0.0.1", echo.port, "carol");
      assert.notEqual(r.code, 0, describeRun(r));
      assert.equal(r.stdoutBytes, 0);
      const s = await ferry.waitForSession(() => true, { skip });
      assert.equal(s.reply, 91);
      assert.match(s.reason ?? "", /requires authentication.*SOCKS5/);
    });
  }
});
