import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { inspect } from "node:util";
import { ConfigError, loadConfig } from "../../src/config/load.js";
import { findLoops } from "../../src/config/loops.js";
import { loadRoutes } from "../../src/config/routes.js";
import { configSchema } from "../../src/config/schema.js";

/** A "$-{NAME}" reference (without the dash), the way a config file refers to an environment variable. */
const v = (name: string) => `\${${name}}`;
const parse = (raw: unknown) => configSchema.parse(raw);

describe("route configuration", () => {
  test("the issue's example loads: URLs, protocols, environment secrets, a chain", async () => {
    const c = parse({
      upstreams: {
        corp: { url: "socks5h://gw.corp.example:1080", user: "svc", password: v("CORP_PW") },
        dmz: { url: "socks4a://10.0.0.5:1080" },
        web: { url: "http://[2001:db8::1]:3128", user: v("WEB_USER"), password: v("WEB_PW") },
      },
      chains: { outside: ["dmz", "corp"] },
    });
    const t = await loadRoutes(c, {
      source: "test",
      env: { CORP_PW: "s3cret", WEB_USER: "webby", WEB_PW: "pw2" },
    });
    const corp = t.upstreams.get("corp")!;
    assert.equal(corp.protocol, "socks5h");
    assert.equal(corp.host, "gw.corp.example");
    assert.equal(corp.port, 1080);
    assert.equal(corp.user, "svc");
    assert.equal(corp.password?.reveal(), "s3cret");
    const web = t.upstreams.get("web")!;
    assert.deepEqual([web.protocol, web.host, web.port, web.user], ["http", "2001:db8::1", 3128, "webby"]);
    assert.deepEqual(
      t.routes.get("outside")!.hops.map((h) => h.members.map((m) => m.name)),
      [["dmz"], ["corp"]],
    );
    assert.deepEqual(
      t.routes.get("corp")!.hops.map((h) => h.members.map((m) => m.name)),
      [["corp"]],
      "an upstream is a route of one hop",
    );
    // The secret never prints.
    const printed = `${JSON.stringify(corp)} ${inspect(corp)} ${String(corp.password)}`;
    assert.ok(!printed.includes("s3cret"), printed);
    assert.ok(printed.includes("[redacted]"));
  });

  test("an inline password is refused with a way out; so is a password in the URL", async () => {
    const inline = parse({
      upstreams: { corp: { url: "socks5://gw:1080", user: "svc", password: "hunter2" } },
    });
    await assert.rejects(loadRoutes(inline, { source: "f.yaml", env: {} }), (err: Error) => {
      assert.match(err.message, /^f\.yaml: upstreams\.corp: password: a literal password .* is refused/);
      assert.match(err.message, /password: "\$\{NAME\}"/);
      assert.match(err.message, /passwordFile/);
      assert.ok(!err.message.includes("hunter2"), "the refused password is not echoed");
      return true;
    });
    const inUrl = parse({ upstreams: { corp: { url: "socks5://svc:hunter2@gw:1080" } } });
    await assert.rejects(loadRoutes(inUrl, { source: "f", env: {} }), (err: Error) => {
      assert.match(err.message, /the URL carries a password/);
      assert.ok(!err.message.includes("hunter2"));
      return true;
    });
  });

  test("an unset variable names itself; passwordFile is read relative to the config", async () => {
    const c = parse({
      upstreams: { corp: { url: "socks5://gw:1080", user: "svc", password: v("NOPE_PW") } },
    });
    await assert.rejects(loadRoutes(c, { source: "f", env: {} }), /environment variable NOPE_PW is not set/);
    const dir = await mkdtemp(join(tmpdir(), "ferry-routes-"));
    try {
      await writeFile(join(dir, "corp.pw"), "from-file\n", { mode: 0o600 });
      const f = parse({
        upstreams: { corp: { url: "socks5://gw:1080", user: "svc", passwordFile: "corp.pw" } },
      });
      const t = await loadRoutes(f, { source: "f", baseDir: dir, env: {} });
      assert.equal(t.upstreams.get("corp")!.password!.reveal(), "from-file", "trailing newline dropped");
      const missing = parse({
        upstreams: { corp: { url: "socks5://gw:1080", user: "s", passwordFile: "nope.pw" } },
      });
      await assert.rejects(
        loadRoutes(missing, { source: "f", baseDir: dir, env: {} }),
        /cannot read .*nope\.pw: ENOENT/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("bad schemes, missing ports, SOCKS4 passwords, unknown hops and nested chains are each named", async () => {
    const c = parse({
      upstreams: {
        a: { url: "ftp://p:21" },
        b: { url: "http://p" },
        c: { url: "socks4://p:1080", user: "u", password: v("PW") },
        d: { url: "socks5://p:1080" },
      },
      chains: { x: ["d", "nosuch"], y: ["x"], d: ["d"] },
    });
    await assert.rejects(loadRoutes(c, { source: "f", env: { PW: "p" } }), (err: Error) => {
      const lines = err.message.split("\n");
      const has = (re: RegExp) =>
        assert.ok(
          lines.some((l) => re.test(l)),
          `${re} in\n${err.message}`,
        );
      has(/upstreams\.a: url: unknown scheme ftp/);
      has(/upstreams\.b: url: give the HTTP proxy's port/);
      has(/upstreams\.c: socks4 has no passwords/);
      has(/chains\.x\[1\]: no upstream named nosuch \(upstreams: a, b, c, d\)/);
      has(/chains\.y\[0\]: x is a chain; chains do not nest/);
      has(/chains\.d: an upstream has the same name/);
      return true;
    });
  });

  test("hop groups keep their mode and retry time; SOCKS default port is 1080", async () => {
    const c = parse({
      upstreams: { a: { url: "socks5://192.0.2.1" }, b: { url: "socks5://192.0.2.1:2" } },
      chains: { ha: [{ any: ["a", "b"], mode: "round-robin", retryAfter: "5s" }, "b"] },
    });
    const t = await loadRoutes(c, { source: "f", env: {} });
    assert.equal(t.upstreams.get("a")!.port, 1080);
    const [g, one] = t.routes.get("ha")!.hops;
    assert.deepEqual([g!.mode, g!.retryAfterMs, g!.members.length], ["round-robin", 5000, 2]);
    assert.deepEqual([one!.mode, one!.members.length], ["failover", 1]);
  });

  test("external takes one address per family; resolve takes the listed preferences", () => {
    assert.deepEqual(parse({ external: "127.0.0.2" }).external, { ipv4: "127.0.0.2" });
    assert.deepEqual(parse({ external: ["::1", "127.0.0.2"] }).external, { ipv4: "127.0.0.2", ipv6: "::1" });
    assert.throws(() => parse({ external: ["127.0.0.2", "127.0.0.3"] }), /two IPv4 addresses/);
    assert.throws(() => parse({ external: "eth0" }), /must be an IPv4 or IPv6 address/);
    assert.equal(parse({}).resolve, "system");
    assert.equal(parse({ resolve: "ipv6-only" }).resolve, "ipv6-only");
    assert.throws(() => parse({ resolve: "ipv6-please" }));
  });
});

describe("loop detection", () => {
  test("a chain hop that is one of our own listen addresses is refused at load", async () => {
    await assert.rejects(
      loadConfig({
        overrides: {
          listen: ["127.0.0.1:10999"],
          upstreams: { self: { url: "socks5://127.0.0.1:10999" }, ok: { url: "socks5://127.0.0.1:11000" } },
          chains: { around: ["ok", "self"] },
        },
      }),
      (err: Error) => {
        assert.ok(err instanceof ConfigError);
        assert.match(
          err.message,
          /upstreams\.self: 127\.0\.0\.1:10999 is this server's own listen address 127\.0\.0\.1:10999; a route through it \(chains: around\) would loop/,
        );
        assert.ok(!/upstreams\.ok/.test(err.message), "a different port is not a loop");
        return true;
      },
    );
  });

  test("names are resolved and wildcard listens match every local address", async () => {
    const local = () => new Set(["192.0.2.7", "2001:db8::7"]);
    const up = (host: string, port = 1080) => ({ name: host, host, port });
    const loops = async (listen: string, ups: ReturnType<typeof up>[]) =>
      (await findLoops([{ host: listen, port: 1080 }], ups, local)).map((l) => l.upstream.name);
    assert.deepEqual(
      await loops("0.0.0.0", [up("localhost"), up("127.0.0.9"), up("192.0.2.7"), up("192.0.2.8")]),
      ["localhost", "127.0.0.9", "192.0.2.7"],
    );
    assert.deepEqual(await loops("0.0.0.0", [up("::1"), up("2001:db8::7")]), [], "0.0.0.0 takes no IPv6");
    assert.deepEqual(await loops("::", [up("::1"), up("2001:db8::7"), up("127.0.0.1"), up("198.51.100.1")]), [
      "::1",
      "2001:db8::7",
      "127.0.0.1",
    ]);
    assert.deepEqual(await loops("localhost", [up("127.0.0.1"), up("127.0.0.2")]), ["127.0.0.1"]);
    assert.deepEqual(await loops("127.0.0.1", [up("0.0.0.0"), up("127.0.0.1", 1081)]), ["0.0.0.0"]);
    assert.deepEqual(
      await findLoops([{ host: "127.0.0.1", port: 0 }], [up("127.0.0.1", 0)]),
      [],
      "port 0 is ephemeral",
    );
  });
});
