import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { connect } from "../../src/index.js";
import { DANTED, type RunningDante, startDante } from "../helpers/dante.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { sha256, startEchoServer, waitFor } from "../helpers/net.js";
import { describeRun, run, startDaemon, tempDir } from "../helpers/process.js";
import { type RunningSshd, SSHD, sshLogin, startSshd } from "../helpers/sshd.js";
import { echoThrough, selfSignedCert, startHttpsServer, type TestHttpsServer } from "../helpers/targets.js";
import { requireTool } from "../helpers/tools.js";

const FERRY = fileURLToPath(new URL("../../../bin/ferry", import.meta.url));
const payload = randomBytes(300 * 1024);

/** A Node program that uses net.connect, http.get and the built-in fetch, knowing nothing of SOCKS. */
const PROGRAM = `
import net from "node:net";
import http from "node:http";
import https from "node:https";
const [echoPort, origin, secureOrigin] = process.argv.slice(2);
const s = net.connect(Number(echoPort), "127.0.0.1");
let got = "";
s.on("data", (d) => { got += d; });
s.end("net-ok");
await new Promise((r, j) => { s.on("close", r); s.on("error", j); });
console.log("net:" + got);
const body = await new Promise((res, rej) =>
  http.get(origin + "/", (r) => { let b = ""; r.on("data", (c) => { b += c; }); r.on("end", () => res(b)); }).on("error", rej));
console.log("http:" + body.trim());
const f = await fetch(origin + "/bytes/1000");
console.log("fetch:" + (await f.arrayBuffer()).byteLength);
const tls = await new Promise((res, rej) =>
  https.get(secureOrigin + "/run", (r) => { let b = ""; r.on("data", (c) => { b += c; }); r.on("end", () => res(b)); }).on("error", rej));
console.log("https:" + tls.trim());
`;

describe("tools: ferry connect, ferry forward, ferry run", { timeout: 240_000 }, () => {
  let ferry: RunningFerry;
  let dante: RunningDante | undefined;
  let sshd: RunningSshd | undefined;
  let echo: { port: number; close: () => Promise<void> };
  let web: TestHttpServer;
  let secure: TestHttpsServer;
  let dir: { path: string; remove: () => Promise<void> };

  before(async () => {
    ferry = await startFerry();
    echo = await startEchoServer();
    web = await startHttpServer();
    dir = await tempDir("ferry-run-");
    await writeFile(join(dir.path, "program.mjs"), PROGRAM);
    const cert = await selfSignedCert();
    await writeFile(join(dir.path, "ca.pem"), cert.cert);
    secure = await startHttpsServer(cert);
  });
  after(async () => {
    await ferry?.close();
    await dante?.stop();
    await sshd?.stop();
    await echo?.close();
    await web?.close();
    await secure?.close();
    await dir?.remove();
  });
  const danteUrl = async (t: Parameters<typeof requireTool>[0]) => {
    if (!requireTool(t, DANTED, "dante-server")) return undefined;
    dante ??= await startDante({ auth: {} });
    return dante.url;
  };
  const targetsSince = (since: number) =>
    ferry.records.filter((r) => r.startedAt >= since).map((r) => r.target);

  test("ferry connect as netcat: stdin to the target, the echo to stdout, FIN passed on", async (t) => {
    const r = await run(FERRY, ["connect", "--proxy", ferry.url, "127.0.0.1", String(echo.port)], {
      input: payload,
    });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdoutSha256, sha256(payload));
    const url = await danteUrl(t);
    if (!url) return;
    // The proxy from FERRY_PROXY this time, and Dante with username/password.
    const d = await run(FERRY, ["connect", "localhost", String(echo.port)], {
      input: payload,
      env: { ...process.env, FERRY_PROXY: url },
    });
    assert.equal(d.code, 0, describeRun(d));
    assert.equal(d.stdoutSha256, sha256(payload));
  });

  test("ferry connect reports a refusal with the reply name and exits 1", async () => {
    const r = await run(FERRY, ["connect", "--proxy", ferry.url, "127.0.0.1", "1"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /connection refused/);
    const none = await run(FERRY, ["connect", "127.0.0.1", "1"], {
      env: { ...process.env, FERRY_PROXY: "", ALL_PROXY: "" },
    });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no proxy given: pass --proxy/);
  });

  test("ssh -o ProxyCommand='ferry connect ...' logs in to a local sshd through Ferry and Dante", async (t) => {
    if (!requireTool(t, SSHD, "openssh-server") || !requireTool(t, "ssh", "openssh-client")) return;
    sshd ??= await startSshd();
    const proxies = [ferry.url];
    const url = await danteUrl(t);
    if (url) proxies.push(url);
    for (const proxy of proxies) {
      const since = Date.now();
      const r = await run("ssh", [
        "-o",
        `ProxyCommand=${process.execPath} ${FERRY} connect --proxy '${proxy}' %h %p`,
        "-o",
        "LogLevel=ERROR",
        ...sshLogin(sshd),
        "echo ok",
      ]);
      assert.equal(r.code, 0, `${proxy}: ${describeRun(r)}\nsshd: ${sshd.output().slice(-1500)}`);
      assert.equal(r.stdout.toString(), "ok\n");
      if (proxy === ferry.url) {
        // Records are emitted when sessions end, a moment after ssh exits.
        await waitFor(() => targetsSince(since).length > 0, 10_000, "Ferry's session record");
        assert.deepEqual(targetsSince(since), [`127.0.0.1:${sshd.port}`]);
      }
    }
  });

  test("OpenSSH's ssh -D as the proxy: connect over socks5h and socks4a, chained behind Ferry", async (t) => {
    if (!requireTool(t, SSHD, "openssh-server") || !requireTool(t, "ssh", "openssh-client")) return;
    sshd ??= await startSshd();
    const login = sshLogin(sshd);
    const dynamic = await startDaemon({
      name: "ssh -D",
      command: "ssh",
      args: (port) => ["-N", "-D", `127.0.0.1:${port}`, "-o", "ExitOnForwardFailure=yes", ...login],
      lifetimeSec: 60,
      readyTimeoutMs: 30_000,
    });
    try {
      for (const url of [`socks5h://127.0.0.1:${dynamic.port}`, `socks4a://127.0.0.1:${dynamic.port}`]) {
        const socket = await connect(url, `localhost:${echo.port}`);
        assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload), url);
      }
      const socket = await connect(
        [ferry.url, `socks5h://127.0.0.1:${dynamic.port}`],
        `localhost:${echo.port}`,
      );
      assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload));
    } finally {
      await dynamic.stop();
    }
  });

  test("ferry forward: a local port carried through the proxy, data by hash, one log line per connection", async (t) => {
    const proxies = [ferry.url];
    const url = await danteUrl(t);
    if (url) proxies.push(url);
    for (const proxy of proxies) {
      const fwd = await startDaemon({
        name: "ferry forward",
        command: process.execPath,
        args: (port) => [
          FERRY,
          "forward",
          "--proxy",
          proxy,
          "--log-format",
          "json",
          `127.0.0.1:${port}:localhost:${echo.port}`,
        ],
        lifetimeSec: 60,
        ready: (d) =>
          waitFor(() => d.output().includes('"msg":"forwarding"'), 30_000, "the forwarding log line"),
      });
      try {
        const socket = net.connect({ host: "127.0.0.1", port: fwd.port, allowHalfOpen: true });
        assert.equal(sha256(await echoThrough(socket, payload)), sha256(payload));
        await waitFor(
          () => fwd.output().includes('"msg":"forward closed"'),
          10_000,
          "the per-connection log line",
        );
        const line = fwd
          .output()
          .split("\n")
          .find((l) => l.includes('"msg":"forward closed"'))!;
        const record = JSON.parse(line) as { bytesUp: number; bytesDown: number; target: string };
        assert.equal(record.bytesUp, payload.length);
        assert.equal(record.bytesDown, payload.length);
        assert.equal(record.target, `localhost:${echo.port}`);
        assert.doesNotMatch(fwd.output(), new RegExp(dante?.password ?? "no-password-here"));
      } finally {
        await fwd.stop();
      }
    }
  });

  test("ferry run: an unchanged Node program's net.connect, http.get and fetch go through the proxy", async (t) => {
    const since = Date.now();
    const program = [process.execPath, join(dir.path, "program.mjs"), String(echo.port), web.origin];
    program.push(`https://localhost:${secure.port}`);
    // The program trusts the test's CA the ordinary Node way; TLS runs end to end through the proxy.
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: join(dir.path, "ca.pem") };
    const r = await run(FERRY, ["run", "--proxy", ferry.url, "--", ...program], { env });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(
      r.stdout.toString(),
      `net:net-ok\nhttp:${web.greeting.trim()}\nfetch:1000\nhttps:secure /run\n`,
    );
    await waitFor(() => targetsSince(since).length >= 4, 10_000, "four session records");
    const targets = targetsSince(since);
    assert.ok(targets.includes(`127.0.0.1:${echo.port}`), `net.connect went through Ferry: ${targets}`);
    assert.ok(
      targets.filter((x) => x === `127.0.0.1:${web.port}`).length >= 2,
      `http.get and fetch went through Ferry: ${targets}`,
    );
    assert.ok(targets.includes(`localhost:${secure.port}`), `https.get went through Ferry: ${targets}`);

    const url = await danteUrl(t);
    if (!url) return;
    const d = await run(FERRY, ["run", "--proxy", url, "--", ...program], { env });
    assert.equal(d.code, 0, describeRun(d));
    assert.match(d.stdout.toString(), /^net:net-ok\n.*\nfetch:1000\nhttps:secure \/run\n$/s);
    // A wrong password fails inside the program: proof its connections go to Dante.
    const wrong = url.replace(`:${dante!.password}@`, ":wrong@");
    const w = await run(FERRY, ["run", "--proxy", wrong, "--", ...program], { env });
    assert.notEqual(w.code, 0);
    assert.match(w.stderr, /SocksError|rejected user/);
  });

  test("ferry run --mode env: other programs get ALL_PROXY and HTTPS_PROXY (curl honours them)", async (t) => {
    const r = await run(FERRY, [
      "run",
      "--mode",
      "env",
      "--proxy",
      ferry.url,
      "--",
      "sh",
      "-c",
      'echo "$ALL_PROXY $HTTPS_PROXY"',
    ]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), `${ferry.url} ${ferry.url}\n`);
    if (!requireTool(t, "curl", "curl")) return;
    const since = Date.now();
    const c = await run(FERRY, [
      "run",
      "--mode",
      "env",
      "--proxy",
      ferry.url,
      "--",
      "curl",
      "-sS",
      "--noproxy",
      "",
      `${web.origin}/`,
    ]);
    assert.equal(c.code, 0, describeRun(c));
    assert.equal(c.stdout.toString(), web.greeting);
    await waitFor(() => targetsSince(since).length > 0, 10_000, "Ferry's session record");
    assert.deepEqual(targetsSince(since), [`127.0.0.1:${web.port}`]);
  });
});
