import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { SessionRecord } from "../../src/server/context.js";
import { makePki, type TestPki } from "../helpers/certs.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { type EchoTarget, LOOPBACK_RULES, startEchoTarget } from "../helpers/http-proxy.js";
import { waitFor } from "../helpers/net.js";
import { describeRun, run } from "../helpers/process.js";
import { requireTool } from "../helpers/tools.js";

/**
 * An HTTPS proxy: HTTP proxying inside a TLS listener (docs/tls.md, docs/http-proxy.md), driven by
 * curl's `--proxy https://`, with and without a login, and with a client certificate standing for
 * the login. The same port serves SOCKS5 over TLS (test/integration/tls.test.ts).
 */

const curl = (args: string[]) =>
  run("curl", ["--silent", "--show-error", "--max-time", "30", "--noproxy", "", ...args], {
    timeoutMs: 60_000,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
  });

describe("curl --proxy https:// (HTTP proxy over TLS)", { timeout: 180_000 }, () => {
  let pki: TestPki;
  let open: RunningFerry;
  let guarded: RunningFerry;
  let certified: RunningFerry;
  let target: EchoTarget;

  before(async () => {
    pki = await makePki();
    const server = await pki.issue("server", "localhost");
    target = await startEchoTarget();
    open = await startFerry({ listen: [{ address: "127.0.0.1:0", tls: server }], rules: LOOPBACK_RULES });
    guarded = await startFerry(
      { listen: [{ address: "127.0.0.1:0", tls: server }], rules: LOOPBACK_RULES },
      { inlineUsers: [{ name: "alice", password: "s3cret" }] },
    );
    certified = await startFerry(
      {
        listen: [
          { address: "127.0.0.1:0", tls: { ...server, clientCa: pki.ca.cert, requireClientCert: true } },
        ],
        rules: [{ allow: { users: ["carol"], to: ["127.0.0.0/8"] } }, { deny: {} }],
      },
      { inlineUsers: [{ name: "alice", password: "s3cret" }] },
    );
  });

  after(async () => {
    await open?.close();
    await guarded?.close();
    await certified?.close();
    await target?.close();
    await pki?.remove();
  });

  async function lastRecord(ferry: RunningFerry, skip: number): Promise<SessionRecord> {
    const mine = () => ferry.records.slice(skip).filter((r) => r.target?.endsWith(`:${target.port}`));
    await waitFor(() => mine().length > 0, 10_000, "the request's record");
    return mine()[0]!;
  }

  test("a plain http:// URL forwarded, and a CONNECT tunnel (-p), both inside TLS", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const proxy = `https://localhost:${open.port}`;
    let skip = open.records.length;
    const forwarded = await curl([
      "--fail",
      "--proxy-cacert",
      pki.ca.cert,
      "-x",
      proxy,
      `${target.origin}/forwarded`,
    ]);
    assert.equal(forwarded.code, 0, describeRun(forwarded));
    assert.equal(forwarded.stdout.toString(), "seen GET /forwarded\n");
    const rec = await lastRecord(open, skip);
    assert.deepEqual([rec.protocol, rec.command, rec.status], ["http", "http", 200]);
    assert.match(rec.tls ?? "", /^TLSv1\.[23]$/, "the record names the TLS version");

    skip = open.records.length;
    const tunnelled = await curl([
      "--fail",
      "-p",
      "--proxy-cacert",
      pki.ca.cert,
      "-x",
      proxy,
      `${target.origin}/tunnelled`,
    ]);
    assert.equal(tunnelled.code, 0, describeRun(tunnelled));
    assert.equal(tunnelled.stdout.toString(), "seen GET /tunnelled\n");
    const tunnel = await lastRecord(open, skip);
    assert.deepEqual([tunnel.protocol, tunnel.command, tunnel.reply], ["http", "connect", 0]);
  });

  test("a proxy certificate curl does not trust fails in curl, and the server keeps serving", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const untrusted = await curl(["--fail", "-x", `https://localhost:${open.port}`, `${target.origin}/x`]);
    assert.notEqual(untrusted.code, 0, "curl must refuse a proxy certificate it cannot verify");
    assert.match(untrusted.stderr.toString(), /certificate/i);
    const again = await curl([
      "--fail",
      "--proxy-cacert",
      pki.ca.cert,
      "-x",
      `https://localhost:${open.port}`,
      `${target.origin}/after`,
    ]);
    assert.equal(again.code, 0, describeRun(again));
  });

  test("a login over TLS: 407 without it, the target's bytes with it", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const proxy = `https://localhost:${guarded.port}`;
    const without = await curl([
      "--proxy-cacert",
      pki.ca.cert,
      "-x",
      proxy,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `${target.origin}/x`,
    ]);
    assert.equal(without.stdout.toString(), "407", describeRun(without));
    const skip = guarded.records.length;
    const withLogin = await curl([
      "--fail",
      "--proxy-cacert",
      pki.ca.cert,
      "--proxy-user",
      "alice:s3cret",
      "-x",
      proxy,
      `${target.origin}/logged-in`,
    ]);
    assert.equal(withLogin.code, 0, describeRun(withLogin));
    assert.equal(withLogin.stdout.toString(), "seen GET /logged-in\n");
    const rec = await lastRecord(guarded, skip);
    assert.deepEqual([rec.user, rec.method], ["alice", "userpass"]);
  });

  test("a client certificate is the login: its CN is the user the rules see, no password asked", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const carol = await pki.issue("carol", "carol");
    const dave = await pki.issue("dave", "dave");
    const proxy = `https://localhost:${certified.port}`;
    const skip = certified.records.length;
    const ok = await curl([
      "--fail",
      "--proxy-cacert",
      pki.ca.cert,
      "--proxy-cert",
      carol.cert,
      "--proxy-key",
      carol.key,
      "-x",
      proxy,
      `${target.origin}/carol`,
    ]);
    assert.equal(ok.code, 0, describeRun(ok));
    assert.equal(ok.stdout.toString(), "seen GET /carol\n");
    const rec = await lastRecord(certified, skip);
    assert.deepEqual([rec.user, rec.method], ["carol", "tls-cert"]);
    // Another certificate of the same CA: a user the rules do not allow.
    const denied = await curl([
      "--proxy-cacert",
      pki.ca.cert,
      "--proxy-cert",
      dave.cert,
      "--proxy-key",
      dave.key,
      "-x",
      proxy,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `${target.origin}/dave`,
    ]);
    assert.equal(denied.stdout.toString(), "403", describeRun(denied));
    // No certificate at all: the TLS handshake itself is refused.
    const none = await curl(["--fail", "--proxy-cacert", pki.ca.cert, "-x", proxy, `${target.origin}/none`]);
    assert.notEqual(none.code, 0, "a client without a certificate must be refused");
    assert.ok(
      !target.seen.some((s) => s.url.endsWith("/none") || s.url.endsWith("/dave")),
      "nothing reached the target",
    );
  });
});
