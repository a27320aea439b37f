import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { resolveAdmin } from "../../src/config/admin.js";
import { Secret } from "../../src/config/secret.js";
import { AdminServer, MAX_BODY } from "../../src/observe/admin/server.js";
import { limitOf, ruleLabel } from "../../src/observe/metrics.js";
import { tempDir } from "../helpers/process.js";

describe("the admin router", () => {
  const admin = new AdminServer({ host: "127.0.0.1", port: 0, token: new Secret("s3cret") });
  let base = "";
  before(async () => {
    admin.route("GET", "/x", (req, res) => res.end(`x ${req.url.searchParams.get("a") ?? ""}`));
    admin.route("POST", "/x", (req, res) => res.end(`posted ${req.body.length}`));
    admin.route("GET", "/open", (_req, res) => res.end("open"), { public: true });
    admin.route("GET", "/boom", () => {
      throw new Error("handler bug");
    });
    const { port } = await admin.listen();
    base = `http://127.0.0.1:${port}`;
  });
  after(() => admin.close());

  const get = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(`${base}${path}`, { ...init, signal: AbortSignal.timeout(10_000) });
    return { status: res.status, text: await res.text(), headers: res.headers };
  };
  const bearer = { authorization: "Bearer s3cret" };

  test("routes by exact path and method: 404, 405 with Allow, HEAD from GET", async () => {
    assert.equal((await get("/x?a=1", { headers: bearer })).text, "x 1");
    assert.equal((await get("/x/", { headers: bearer })).status, 404);
    assert.equal((await get("/nope")).status, 404);
    const put = await get("/x", { method: "PUT", headers: bearer });
    assert.deepEqual([put.status, put.headers.get("allow")], [405, "GET, POST, HEAD"]);
    const head = await get("/x", { method: "HEAD", headers: bearer });
    assert.deepEqual([head.status, head.text], [200, ""]);
  });

  test("the token: header, cookie, or a GET's query (which sets the cookie); public routes need none", async () => {
    assert.equal((await get("/x")).status, 401);
    assert.equal((await get("/x", { headers: { authorization: "Bearer s3cre" } })).status, 401);
    assert.equal((await get("/x", { headers: { authorization: "Basic s3cret" } })).status, 401);
    assert.equal((await get("/x", { headers: { cookie: "a=b; ferry_admin=s3cret" } })).status, 200);
    assert.equal((await get("/x", { headers: { cookie: "ferry_admin=wrong" } })).status, 401);
    const q = await get("/x?token=s3cret");
    assert.equal(q.status, 200);
    assert.equal(q.headers.get("set-cookie"), "ferry_admin=s3cret; HttpOnly; SameSite=Strict; Path=/");
    // Not on a POST: a link must not be able to change anything.
    assert.equal((await get("/x?token=s3cret", { method: "POST", body: "1" })).status, 401);
    assert.equal((await get("/open")).status, 200);
  });

  test("bodies are bounded (413) and a failing handler is a 500", async () => {
    assert.equal(
      (await get("/x", { method: "POST", headers: bearer, body: "y".repeat(1000) })).text,
      "posted 1000",
    );
    assert.equal(
      (await get("/x", { method: "POST", headers: bearer, body: "y".repeat(MAX_BODY + 1) })).status,
      413,
    );
    assert.equal((await get("/boom", { headers: bearer })).status, 500);
  });
});

describe("admin: settings", () => {
  test("tokens from a file or the environment; a literal is refused; non-loopback needs one", async () => {
    const dir = await tempDir("ferry-admin-unit-");
    try {
      await writeFile(join(dir.path, "tok"), "from-file\n");
      const listen = { host: "127.0.0.1", port: 9090 };
      const fromVar = "$" + "{T}";
      const fromFile = await resolveAdmin({ listen, tokenFile: "tok" }, { baseDir: dir.path });
      assert.equal(fromFile.token?.reveal(), "from-file");
      assert.equal(JSON.stringify(fromFile), '{"host":"127.0.0.1","port":9090,"token":"[redacted]"}');
      const fromEnv = await resolveAdmin({ listen, token: fromVar }, { env: { T: "from-env" } });
      assert.equal(fromEnv.token?.reveal(), "from-env");
      await assert.rejects(
        resolveAdmin({ listen, token: "literal" }),
        /a literal secret in the configuration is refused/,
      );
      await assert.rejects(resolveAdmin({ listen, token: fromVar }, { env: {} }), /T is not set/);
      await assert.rejects(
        resolveAdmin({ listen, token: fromVar, tokenFile: "tok" }, { env: { T: "x" } }),
        /either admin\.token: or admin\.tokenFile:/,
      );
      assert.equal((await resolveAdmin({ listen })).token, undefined);
      assert.equal((await resolveAdmin({ listen: { host: "::1", port: 1 } })).token, undefined);
      await assert.rejects(resolveAdmin({ listen: { host: "0.0.0.0", port: 9090 } }), /without a token/);
      await assert.rejects(resolveAdmin({ listen: { host: "192.0.2.1", port: 9090 } }), /without a token/);
      const open = await resolveAdmin(
        { listen: { host: "0.0.0.0", port: 9090 }, tokenFile: "tok" },
        { baseDir: dir.path },
      );
      assert.equal(open.host, "0.0.0.0");
    } finally {
      await dir.remove();
    }
  });
});

describe("metrics: label values", () => {
  test("rules by their place, fixed names, everything else other", () => {
    assert.equal(ruleLabel("rules[2] (ferry.yaml:12)"), "rules[2]");
    assert.equal(ruleLabel("clients[0]"), "clients[0]");
    assert.equal(ruleLabel("end of rules"), "end of rules");
    assert.equal(ruleLabel(undefined), "none");
    assert.equal(ruleLabel("something a client said"), "other");
  });

  test("limits from the server's refusal wording, and nothing else", () => {
    assert.equal(limitOf("session limit reached (10 in total)"), "sessions");
    assert.equal(limitOf("refused: session limit for 127.0.0.1 reached (2)"), "sessions_per_client");
    assert.equal(
      limitOf("refused: user alice already has 3 sessions (limits.sessionsPerUser)"),
      "sessions_per_user",
    );
    assert.equal(
      limitOf("refused: rule rules[1] already admits 1 sessions (its sessions cap)"),
      "rule_sessions",
    );
    assert.equal(
      limitOf(
        "closed in the handshake to make room: 4 handshakes in progress (limits.handshakes), the most from x",
      ),
      "handshakes",
    );
    assert.equal(
      limitOf("UDP association limit for 127.0.0.1 reached (16); close one"),
      "associations_per_client",
    );
    assert.equal(
      limitOf(
        "user bob is over the transfer quota: 1 MiB of 1 MiB used this day (UTC); it resets at 2026-12-03T00:00:00.000Z",
      ),
      "quota",
    );
    assert.equal(limitOf("connect to 127.0.0.1:1 refused"), undefined);
    assert.equal(limitOf(undefined), undefined);
  });
});
