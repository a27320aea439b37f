import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { sha256, startEchoServer } from "../helpers/net.js";
import { describeRun, run } from "../helpers/process.js";
import { requireTool } from "../helpers/tools.js";

// Enough to cross many socket buffers both ways; the echo server returns it and then closes.
const payload = randomBytes(1024 * 1024);

function ncat(ferry: FerryProcess, type: "socks4" | "socks5", target: string[], extra: string[] = []) {
  return run(
    "ncat",
    ["--proxy", `127.0.0.1:${ferry.port}`, "--proxy-type", type, "--wait", "5", ...extra, ...target],
    { input: payload, timeoutMs: 60_000, maxBuffer: 4 * 1024 * 1024 },
  );
}

for (const withUser of [false, true]) {
  const bob = { name: "bob", password: "ncat-pw-93" };
  describe(`ncat through \`ferry serve${withUser ? " --user" : ""}\``, { timeout: 120_000 }, () => {
    let ferry: FerryProcess;
    let echo: { port: number; close: () => Promise<void> };
    const auth = withUser ? ["--proxy-auth", `${bob.name}:${bob.password}`] : [];

    before(async () => {
      ferry = await spawnFerry(withUser ? { users: [bob] } : {});
      echo = await startEchoServer();
    });
    after(async () => {
      await ferry?.stop();
      await echo?.close();
    });

    test("socks5 to an address: 1 MB echoed back intact", async (t) => {
      if (!requireTool(t, "ncat", "ncat")) return;
      const skip = ferry.sessions().length;
      const r = await ncat(ferry, "socks5", ["127.0.0.1", String(echo.port)], auth);
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdoutSha256, sha256(payload));
      const s = await ferry.waitForSession(() => true, { skip });
      assert.equal(s.protocol, "socks5");
      assert.equal(s.method, withUser ? "userpass" : "none");
      assert.equal(s.user, withUser ? bob.name : undefined);
      assert.equal(s.target, `127.0.0.1:${echo.port}`);
      assert.equal(s.bytesUp, payload.length);
      assert.equal(s.bytesDown, payload.length);
    });

    test("socks5 with the name resolved by the proxy (--proxy-dns remote)", async (t) => {
      if (!requireTool(t, "ncat", "ncat")) return;
      const skip = ferry.sessions().length;
      const r = await ncat(
        ferry,
        "socks5",
        ["localhost", String(echo.port)],
        [...auth, "--proxy-dns", "remote"],
      );
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdoutSha256, sha256(payload));
      const s = await ferry.waitForSession(() => true, { skip });
      assert.equal(s.target, `localhost:${echo.port}`);
      assert.equal(s.reply, 0);
    });

    if (withUser) {
      test("socks5 with a wrong password fails and nothing is relayed", async (t) => {
        if (!requireTool(t, "ncat", "ncat")) return;
        const skip = ferry.sessions().length;
        const r = await ncat(
          ferry,
          "socks5",
          ["127.0.0.1", String(echo.port)],
          ["--proxy-auth", "bob:nope-7"],
        );
        assert.notEqual(r.code, 0, describeRun(r));
        assert.equal(r.stdoutBytes, 0);
        const s = await ferry.waitForSession(() => true, { skip });
        assert.match(s.reason ?? "", /authentication failed/);
        assert.equal(s.bytesUp, 0);
      });

      test("socks4 is refused with 91", async (t) => {
        if (!requireTool(t, "ncat", "ncat")) return;
        const skip = ferry.sessions().length;
        const r = await ncat(ferry, "socks4", ["127.0.0.1", String(echo.port)]);
        assert.notEqual(r.code, 0, describeRun(r));
        assert.equal(r.stdoutBytes, 0);
        const s = await ferry.waitForSession(() => true, { skip });
        assert.equal(s.reply, 91);
      });
    } else {
      test("socks4: 1 MB echoed back intact", async (t) => {
        if (!requireTool(t, "ncat", "ncat")) return;
        const skip = ferry.sessions().length;
        const r = await ncat(ferry, "socks4", ["127.0.0.1", String(echo.port)]);
        assert.equal(r.code, 0, describeRun(r));
        assert.equal(r.stdoutSha256, sha256(payload));
        const s = await ferry.waitForSession(() => true, { skip });
        assert.equal(s.protocol, "socks4");
        assert.equal(s.reply, 90);
        assert.equal(s.bytesDown, payload.length);
      });
    }

    test("ferry exits 0 on SIGTERM", async () => {
      assert.deepEqual(await ferry.stop(), { code: 0, signal: null });
    });
  });
}
