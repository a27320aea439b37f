import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { copyFile, writeFile } from "node:fs/promises";
import type net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type tls from "node:tls";
import { connect, SocksError } from "../../src/index.js";
import { addressOf } from "../../src/protocol/address.js";
import { encodeGreeting, encodeRequest, Method } from "../../src/protocol/socks5.js";
import { makePki, type TestPki } from "../helpers/certs.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { FERRY_BIN, type LogLine } from "../helpers/ferry-process.js";
import { pseudoRandomSha256, startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { sha256, startEchoServer, waitFor, within } from "../helpers/net.js";
import { childPid } from "../helpers/proc.js";
import { type Daemon, describeRun, run, startDaemon } from "../helpers/process.js";
import { STUNNEL, startStunnel } from "../helpers/stunnel.js";
import { echoThrough } from "../helpers/targets.js";
import { startTinyproxy, TINYPROXY } from "../helpers/tinyproxy.js";
import { requireTool } from "../helpers/tools.js";

const FERRY = FERRY_BIN;

/**
 * GET `path` over an already open stream to the target, without a FIN (tinyproxy closes both ways
 * on one); the whole response as text, up to the server's close (10 s cap).
 */
async function httpGet(socket: net.Socket, host: string, path = "/"): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  await within(once(socket, "end"), 10_000, "the end of the response");
  socket.destroy();
  return Buffer.concat(chunks).toString("latin1");
}

describe("SOCKS5 over TLS with third-party clients", { timeout: 180_000 }, () => {
  let pki: TestPki;
  let ferry: RunningFerry;
  let web: TestHttpServer;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  const daemons: Daemon[] = [];

  before(async () => {
    pki = await makePki();
    const server = await pki.issue("server", "localhost");
    ferry = await startFerry({ listen: [{ address: "127.0.0.1:0", tls: server }] });
    web = await startHttpServer();
    echo = await startEchoServer();
  });
  after(async () => {
    for (const d of daemons) await d.stop();
    await ferry?.close();
    await web?.close();
    await echo?.close();
    await pki?.remove();
  });

  test("ncat --ssl speaks raw SOCKS5 bytes to the TLS port: greeting, request and 256 KiB pipelined", async (t) => {
    if (!requireTool(t, "ncat", "ncat")) return;
    const payload = randomBytes(256 * 1024);
    const input = Buffer.concat([
      encodeGreeting({ methods: [Method.NO_AUTH] }),
      encodeRequest({ command: "connect", address: addressOf("127.0.0.1", echo.port) }),
      payload,
    ]);
    const r = await run(
      "ncat",
      [
        "--ssl",
        "--ssl-verify",
        "--ssl-trustfile",
        pki.ca.cert,
        "localhost",
        String(ferry.port),
        "--wait",
        "5",
      ],
      { input, timeoutMs: 60_000, maxBuffer: 1024 * 1024 },
    );
    assert.equal(r.code, 0, describeRun(r));
    // Method selection (05 00), the success reply (10 bytes for an IPv4 BND), then the echo.
    assert.deepEqual([...r.stdout.subarray(0, 4)], [5, 0, 5, 0]);
    assert.equal(sha256(r.stdout.subarray(12)), sha256(payload));
    const rec = ferry.records.find(
      (x) => x.target === `127.0.0.1:${echo.port}` && x.bytesUp === payload.length,
    );
    assert.ok(rec, JSON.stringify(ferry.records));
    assert.equal(rec.tls, "TLSv1.3");
  });

  test("curl --socks5-hostname through stunnel (TLS client) to Ferry's TLS port: 4 MB byte-exact", async (t) => {
    if (!requireTool(t, "curl", "curl") || !requireTool(t, STUNNEL, "stunnel4")) return;
    const tunnel = await startStunnel({
      client: true,
      connectPort: ferry.port,
      caFile: pki.ca.cert,
      checkHost: "localhost",
    });
    daemons.push(tunnel);
    const size = 4_000_000;
    const r = await run(
      "curl",
      [
        "-sS",
        "--fail",
        "--socks5-hostname",
        `127.0.0.1:${tunnel.port}`,
        `http://localhost:${web.port}/bytes/${size}`,
      ],
      { timeoutMs: 60_000, maxBuffer: 1024 },
    );
    assert.equal(r.code, 0, `${describeRun(r)}\n${tunnel.output()}`);
    assert.equal(r.stdoutBytes, size);
    assert.equal(r.stdoutSha256, pseudoRandomSha256(size));
    await waitFor(
      () => ferry.records.some((x) => x.target === `localhost:${web.port}`),
      10_000,
      "the session record",
    );
    const rec = ferry.records.find((x) => x.target === `localhost:${web.port}`)!;
    assert.equal(rec.tls, "TLSv1.3");
    assert.equal(rec.replyName, "succeeded");
  });

  test("stunnel with another CA refuses Ferry's certificate; Ferry records the failed handshake and keeps serving", async (t) => {
    if (!requireTool(t, "curl", "curl") || !requireTool(t, STUNNEL, "stunnel4")) return;
    const other = await makePki();
    try {
      const tunnel = await startStunnel({ client: true, connectPort: ferry.port, caFile: other.ca.cert });
      daemons.push(tunnel);
      const before = ferry.records.length;
      const r = await run(
        "curl",
        ["-sS", "--socks5-hostname", `127.0.0.1:${tunnel.port}`, `http://localhost:${web.port}/`],
        { timeoutMs: 30_000 },
      );
      assert.notEqual(r.code, 0, "curl must fail when stunnel refuses the certificate");
      await waitFor(() => ferry.records.length > before, 10_000, "the failed session's record");
      const rec = ferry.records.slice(before).find((x) => /TLS handshake failed/.test(x.reason ?? ""));
      assert.ok(rec, JSON.stringify(ferry.records.slice(before)));
      assert.match(rec.reason!, /unknown ca|certificate/i);
      assert.match(tunnel.output(), /certificate verify failed|CERT_CHAIN|unable to get local issuer/i);
      // Still serving.
      const s = await connect(
        `socks5h+tls://127.0.0.1:${ferry.port}?ca=${pki.ca.cert}`,
        `127.0.0.1:${echo.port}`,
      );
      assert.equal((await echoThrough(s, Buffer.from("ok"))).toString(), "ok");
    } finally {
      await other.remove();
    }
  });
});

describe("an HTTPS proxy (stunnel in front of tinyproxy) with Ferry's client", { timeout: 180_000 }, () => {
  let pki: TestPki;
  let web: TestHttpServer;
  let proxy: Daemon | undefined;
  let tinyproxy: Daemon | undefined;

  before(async () => {
    pki = await makePki();
    web = await startHttpServer();
  });
  after(async () => {
    await proxy?.stop();
    await tinyproxy?.stop();
    await web?.close();
    await pki?.remove();
  });

  const httpsProxy = async (t: Parameters<typeof requireTool>[0]): Promise<number | undefined> => {
    if (!requireTool(t, TINYPROXY, "tinyproxy") || !requireTool(t, STUNNEL, "stunnel4")) return undefined;
    if (!proxy) {
      tinyproxy = await startTinyproxy({ auth: { user: "dora", password: "tiny-pw" } });
      const server = await pki.issue("proxy", "localhost");
      proxy = await startStunnel({ client: false, connectPort: tinyproxy.port, ...server });
    }
    return proxy.port;
  };

  test("library: connect through https:// with a login, content intact; the socket is TLS to the proxy", async (t) => {
    const port = await httpsProxy(t);
    if (port === undefined) return;
    const socket = await connect(
      `https://dora:tiny-pw@localhost:${port}?ca=${pki.ca.cert}`,
      `127.0.0.1:${web.port}`,
    );
    assert.equal((socket as tls.TLSSocket).authorized, true);
    const response = await httpGet(socket, `127.0.0.1:${web.port}`);
    assert.match(response, /^HTTP\/1\.1 200/);
    assert.ok(response.endsWith(web.greeting), response);
  });

  test("ferry forward --proxy https://...: curl through the forwarded port gets 1 MB byte-exact; ferry connect with a wrong password is a clear error", async (t) => {
    const port = await httpsProxy(t);
    if (port === undefined) return;
    const proxyUrl = `https://dora:tiny-pw@127.0.0.1:${port}?ca=${pki.ca.cert}&servername=localhost`;
    const forward = await startDaemon({
      name: "ferry forward",
      command: process.execPath,
      args: (p) => [FERRY, "forward", "--proxy", proxyUrl, `127.0.0.1:${p}:127.0.0.1:${web.port}`],
    });
    try {
      const size = 1_000_000;
      const r = await run("curl", ["-sS", "--fail", `http://127.0.0.1:${forward.port}/bytes/${size}`], {
        timeoutMs: 60_000,
        maxBuffer: 1024,
      });
      assert.equal(r.code, 0, `${describeRun(r)}\n${forward.output()}`);
      assert.equal(r.stdoutBytes, size);
      assert.equal(r.stdoutSha256, pseudoRandomSha256(size));
    } finally {
      await forward.stop();
    }
    const bad = await run(FERRY, [
      "connect",
      "--proxy",
      `https://dora:wrong@localhost:${port}?ca=${pki.ca.cert}`,
      "127.0.0.1",
      String(web.port),
    ]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /HTTP 40[17] .*check the user and password/);
  });

  test("the proxy's certificate is checked: no CA, or the wrong name, fails with the certificate problem named", async (t) => {
    const port = await httpsProxy(t);
    if (port === undefined) return;
    const untrusted = await connect(`https://localhost:${port}`, `127.0.0.1:${web.port}`).catch(
      (e: unknown) => e,
    );
    assert.ok(untrusted instanceof SocksError);
    assert.equal(untrusted.stage, "tls");
    assert.match(
      untrusted.message,
      /^proxy #1 \(https:\/\/localhost:\d+\): TLS handshake failed: the proxy's certificate is not trusted: .*give its CA with ca=FILE/,
    );
    const wrongName = await connect(
      `https://localhost:${port}?ca=${pki.ca.cert}&servername=proxy.example`,
      `127.0.0.1:${web.port}`,
    ).catch((e: unknown) => e);
    assert.ok(wrongName instanceof SocksError);
    assert.match(wrongName.message, /does not name this host/);
  });
});

describe("a chain Ferry → Ferry over TLS", { timeout: 120_000 }, () => {
  test("curl to the first Ferry, routed through an upstream socks5h+tls:// to the second, with a client certificate", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const pki = await makePki();
    const web = await startHttpServer();
    let inner: RunningFerry | undefined;
    let outer: RunningFerry | undefined;
    try {
      const server = await pki.issue("inner", "localhost");
      await pki.issue("edge", "edge-proxy");
      inner = await startFerry({
        listen: [
          { address: "127.0.0.1:0", tls: { ...server, clientCa: pki.ca.cert, requireClientCert: true } },
        ],
        rules: [{ allow: { users: ["edge-proxy"] } }],
      });
      // The upstream's files relative to the configuration file, as users write them.
      const configFile = join(pki.dir, "outer.yaml");
      await writeFile(
        configFile,
        [
          "upstreams:",
          "  inner:",
          `    url: "socks5h+tls://localhost:${inner.port}?ca=ca.pem&cert=edge.pem&key=edge.key"`,
          "rules:",
          "  - allow: { via: inner }",
          "",
        ].join("\n"),
      );
      outer = await startFerry({}, { file: configFile });
      const size = 2_000_000;
      const r = await run(
        "curl",
        [
          "-sS",
          "--fail",
          "--socks5-hostname",
          `127.0.0.1:${outer.port}`,
          `http://localhost:${web.port}/bytes/${size}`,
        ],
        { timeoutMs: 60_000, maxBuffer: 1024 },
      );
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdoutSha256, pseudoRandomSha256(size));
      await waitFor(() => inner!.records.length > 0 && outer!.records.length > 0, 10_000, "both records");
      const hop = inner.records[0]!;
      assert.equal(hop.tls, "TLSv1.3");
      assert.equal(hop.user, "edge-proxy");
      assert.equal(hop.method, "tls-cert");
      assert.equal(hop.target, `localhost:${web.port}`);
      assert.equal(hop.bytesDown > size, true);
      assert.equal(outer.records[0]!.replyName, "succeeded");
    } finally {
      await outer?.close();
      await inner?.close();
      await web.close();
      await pki.remove();
    }
  });
});

describe("certificate rotation with SIGHUP", { timeout: 120_000 }, () => {
  test("new connections get the new certificate, a live session goes on, a bad certificate is refused and the last good one stays", async () => {
    const pki = await makePki();
    const echo = await startEchoServer();
    const first = await pki.issue("first", "localhost");
    const second = await pki.issue("second", "localhost");
    const live = join(pki.dir, "live");
    const certFile = `${live}.pem`;
    const keyFile = `${live}.key`;
    await copyFile(first.cert, certFile);
    await copyFile(first.key, keyFile);
    const configFile = join(pki.dir, "ferry.yaml");
    // The listener is the file's (a --listen flag would replace it), on the port chosen for this run.
    const ferry = await startDaemon({
      name: "ferry serve",
      command: process.execPath,
      args: (p) => {
        writeFileSync(
          configFile,
          `listen:\n  - address: "127.0.0.1:${p}"\n    tls: { cert: live.pem, key: live.key }\n`,
        );
        return [FERRY_BIN, "serve", "--config", configFile, "--log-format", "json"];
      },
    });
    const port = ferry.port;
    const logs = (): LogLine[] =>
      ferry
        .output()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as LogLine);
    const url = `socks5h+tls://localhost:${port}?ca=${pki.ca.cert}`;
    const fingerprintOf = (s: net.Socket): string => (s as tls.TLSSocket).getPeerCertificate().fingerprint256;
    try {
      const old = await connect(url, `127.0.0.1:${echo.port}`);
      assert.equal(fingerprintOf(old), await pki.fingerprint(first.cert));

      await copyFile(second.cert, certFile);
      await copyFile(second.key, keyFile);
      const reloads = () => logs().filter((l) => /configuration reloaded|reload refused/.test(l.msg));
      process.kill(childPid(ferry.pid), "SIGHUP");
      await waitFor(() => reloads().length === 1, 15_000, "the reload");
      assert.match(
        reloads()[0]!.msg,
        new RegExp(`TLS 127\\.0\\.0\\.1:${port} certificate sha256 ${await pki.fingerprint(second.cert)}`),
      );

      const fresh = await connect(url, `127.0.0.1:${echo.port}`);
      assert.equal(fingerprintOf(fresh), await pki.fingerprint(second.cert));
      assert.equal((await echoThrough(fresh, Buffer.from("new"))).toString(), "new");
      // The session opened before the reload still carries bytes, over the old certificate's TLS.
      assert.equal((await echoThrough(old, Buffer.from("old session"))).toString(), "old session");

      // A broken certificate: the reload is refused, saying why, and the second one stays.
      await writeFile(certFile, "not a certificate\n");
      process.kill(childPid(ferry.pid), "SIGHUP");
      await waitFor(() => reloads().length === 2, 15_000, "the second reload");
      assert.match(
        reloads()[1]!.msg,
        /reload refused, the running configuration stays: .*listen 127\.0\.0\.1:\d+: tls\.cert: .*live\.pem is not a PEM certificate/,
      );
      const still = await connect(url, `127.0.0.1:${echo.port}`);
      assert.equal(fingerprintOf(still), await pki.fingerprint(second.cert));
      still.destroy();
    } finally {
      await ferry.stop();
      await echo.close();
      await pki.remove();
    }
  });
});
