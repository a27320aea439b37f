import assert from "node:assert/strict";
import { once } from "node:events";
import { readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import type net from "node:net";
import { join, normalize } from "node:path";
import { after, before, describe, test } from "node:test";
import type { SessionRecord } from "../../src/server/context.js";
import { type RunningFerry, startFerry } from "../helpers/ferry.js";
import { type EchoTarget, LOOPBACK_RULES, startEchoTarget } from "../helpers/http-proxy.js";
import { listenClosable, waitFor } from "../helpers/net.js";
import { describeRun, run, tempDir } from "../helpers/process.js";
import { selfSignedCert, startHttpsServer, type TestHttpsServer } from "../helpers/targets.js";
import { requireTool } from "../helpers/tools.js";

/** No proxy settings from the environment: each tool is pointed at Ferry explicitly. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/_proxy$/i.test(k) && !/^npm_/i.test(k)) env[k] = v;
  return { ...env, ...extra };
}

const curl = (args: string[]) =>
  run("curl", ["--silent", "--show-error", "--max-time", "30", ...args], {
    timeoutMs: 60_000,
    env: cleanEnv(),
  });

/** The records that ended since `skip` for targets on `port`. */
async function recordsTo(
  ferry: RunningFerry,
  port: number,
  skip: number,
  atLeast = 1,
): Promise<SessionRecord[]> {
  const mine = () => ferry.records.slice(skip).filter((r) => r.target?.endsWith(`:${port}`));
  await waitFor(() => mine().length >= atLeast, 10_000, `${atLeast} records for port ${port}`);
  return mine();
}

describe("curl through the HTTP proxy", { timeout: 120_000 }, () => {
  let open: RunningFerry;
  let guarded: RunningFerry;
  let target: EchoTarget;
  let secure: TestHttpsServer;
  let certDir: { path: string; remove(): Promise<void> };
  let caFile: string;
  before(async () => {
    open = await startFerry({ rules: LOOPBACK_RULES });
    guarded = await startFerry(
      { rules: LOOPBACK_RULES },
      { inlineUsers: [{ name: "alice", password: "s3cret" }] },
    );
    target = await startEchoTarget();
    const tls = await selfSignedCert();
    secure = await startHttpsServer(tls);
    certDir = await tempDir("ferry-http-ca-");
    caFile = join(certDir.path, "ca.pem");
    await writeFile(caFile, tls.cert);
  });
  after(async () => {
    await open?.close();
    await guarded?.close();
    await target?.close();
    await secure?.close();
    await certDir?.remove();
  });

  test("-x http:// with a plain http:// URL: the target's bytes, one http record", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const skip = open.records.length;
    const r = await curl(["--fail", "-x", `http://127.0.0.1:${open.port}`, `${target.origin}/plain`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), "seen GET /plain\n");
    const [rec] = await recordsTo(open, target.port, skip);
    assert.deepEqual([rec!.protocol, rec!.command, rec!.status, rec!.method], ["http", "http", 200, "none"]);
  });

  test("-p (CONNECT) to an http:// target, and an https:// target through CONNECT", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const skip = open.records.length;
    const tunnelled = await curl([
      "--fail",
      "-p",
      "-x",
      `http://127.0.0.1:${open.port}`,
      `${target.origin}/tunnelled`,
    ]);
    assert.equal(tunnelled.code, 0, describeRun(tunnelled));
    assert.equal(tunnelled.stdout.toString(), "seen GET /tunnelled\n");
    const [viaConnect] = await recordsTo(open, target.port, skip);
    assert.equal(viaConnect!.command, "connect");
    const s = await curl([
      "--fail",
      "--cacert",
      caFile,
      "-x",
      `http://127.0.0.1:${open.port}`,
      `https://localhost:${secure.port}/over-tls`,
    ]);
    assert.equal(s.code, 0, describeRun(s));
    assert.equal(s.stdout.toString(), "secure /over-tls\n");
    const [rec] = await recordsTo(open, secure.port, skip);
    assert.equal(rec!.command, "connect");
    assert.equal(rec!.target, `localhost:${secure.port}`);
    assert.ok(rec!.bytesUp > 200 && rec!.bytesDown > 200, "the TLS bytes were counted");
  });

  test("a POST with a body, and a chunked response", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const post = await curl([
      "--fail",
      "-x",
      `http://127.0.0.1:${open.port}`,
      "--data-binary",
      "x=1&y=2",
      `${target.origin}/echo`,
    ]);
    assert.equal(post.code, 0, describeRun(post));
    assert.equal(post.stdout.toString(), "x=1&y=2");
    assert.equal(target.seen.at(-1)!.method, "POST");
    const chunked = await curl(["--fail", "-x", `http://127.0.0.1:${open.port}`, `${target.origin}/chunked`]);
    assert.equal(chunked.code, 0, describeRun(chunked));
    assert.equal(chunked.stdout.toString(), "one,two,three");
  });

  test("with users: no login is 407, --proxy-user passes (plain and CONNECT), a wrong one is 407", async (t) => {
    if (!requireTool(t, "curl", "curl")) return;
    const proxy = `http://127.0.0.1:${guarded.port}`;
    const code = ["-o", "/dev/null", "-w", "%{http_code}"];
    const none = await curl([...code, "-x", proxy, `${target.origin}/x`]);
    assert.equal(none.stdout.toString(), "407");
    const wrong = await curl([...code, "-x", proxy, "--proxy-user", "alice:nope", `${target.origin}/x`]);
    assert.equal(wrong.stdout.toString(), "407");
    const skip = guarded.records.length;
    const ok = await curl([
      "--fail",
      "-x",
      proxy,
      "--proxy-user",
      "alice:s3cret",
      `${target.origin}/with-login`,
    ]);
    assert.equal(ok.code, 0, describeRun(ok));
    assert.equal(ok.stdout.toString(), "seen GET /with-login\n");
    const tls = await curl([
      "--fail",
      "--cacert",
      caFile,
      "-x",
      proxy,
      "--proxy-user",
      "alice:s3cret",
      `https://localhost:${secure.port}/l`,
    ]);
    assert.equal(tls.code, 0, describeRun(tls));
    assert.equal(tls.stdout.toString(), "secure /l\n");
    const recs = await recordsTo(guarded, target.port, skip);
    assert.equal(recs[0]!.user, "alice");
  });
});

/** A static file server for a directory (what `git clone` of a dumb-HTTP repository reads). */
async function serveDirectory(
  root: string,
): Promise<{ port: number; paths: string[]; close(): Promise<void> }> {
  const paths: string[] = [];
  const server = http.createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    paths.push(path);
    const file = normalize(join(root, path));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const data = await readFile(file);
      res.writeHead(200, { "content-length": data.length }).end(data);
    } catch {
      res.writeHead(404).end();
    }
  });
  const listening = await listenClosable(server);
  return {
    port: listening.port,
    paths,
    close: listening.close,
  };
}

describe("git and npm through the HTTP proxy", { timeout: 180_000 }, () => {
  let ferry: RunningFerry;
  let dir: { path: string; remove(): Promise<void> };
  before(async () => {
    ferry = await startFerry({ rules: LOOPBACK_RULES });
    dir = await tempDir("ferry-http-tools-");
  });
  after(async () => {
    await ferry?.close();
    await dir?.remove();
  });

  test("git clone of a repository served over (dumb) HTTP, with http.proxy", async (t) => {
    if (!requireTool(t, "git", "git")) return;
    const git = (args: string[], cwd = dir.path) =>
      run(
        "git",
        ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main", ...args],
        {
          cwd,
          env: cleanEnv({ GIT_TERMINAL_PROMPT: "0", GIT_CONFIG_NOSYSTEM: "1", HOME: dir.path }),
          timeoutMs: 60_000,
        },
      );
    const work = join(dir.path, "work");
    assert.equal((await git(["init", "-q", work])).code, 0);
    const content = `cloned through ferry ${Math.random()}\n`;
    await writeFile(join(work, "README"), content);
    assert.equal((await git(["add", "README"], work)).code, 0);
    assert.equal((await git(["commit", "-q", "-m", "first"], work)).code, 0);
    const bare = join(dir.path, "served", "repo.git");
    assert.equal((await git(["clone", "-q", "--bare", work, bare])).code, 0);
    assert.equal((await git(["update-server-info"], bare)).code, 0);
    const web = await serveDirectory(join(dir.path, "served"));
    try {
      const skip = ferry.records.length;
      const clone = await git([
        "-c",
        `http.proxy=http://127.0.0.1:${ferry.port}`,
        "clone",
        "-q",
        `http://127.0.0.1:${web.port}/repo.git`,
        join(dir.path, "clone"),
      ]);
      assert.equal(clone.code, 0, describeRun(clone));
      assert.equal(await readFile(join(dir.path, "clone", "README"), "utf8"), content);
      assert.ok(web.paths.includes("/repo.git/info/refs"), `the server saw ${web.paths.join(" ")}`);
      const recs = await recordsTo(ferry, web.port, skip);
      assert.ok(recs.every((r) => r.protocol === "http" && r.reply === 0));
    } finally {
      await web.close();
    }
  });

  test("npm view against a local registry, with --proxy", async (t) => {
    if (!requireTool(t, "npm", "npm")) return;
    const name = "ferry-proxy-probe";
    const doc = {
      name,
      "dist-tags": { latest: "1.2.3" },
      versions: {
        "1.2.3": {
          name,
          version: "1.2.3",
          description: "served by a test registry on loopback",
          dist: { tarball: `http://127.0.0.1:1/${name}-1.2.3.tgz`, shasum: "0".repeat(40) },
        },
      },
    };
    const asked: string[] = [];
    const registry = http.createServer((req, res) => {
      asked.push(req.url ?? "");
      if (req.url === `/${name}`) {
        const body = JSON.stringify(doc);
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
        res.end(body);
      } else {
        res.writeHead(404, { "content-type": "application/json" }).end("{}");
      }
    });
    registry.listen(0, "127.0.0.1");
    await once(registry, "listening");
    const port = (registry.address() as net.AddressInfo).port;
    try {
      const skip = ferry.records.length;
      const userconfig = join(dir.path, "npmrc");
      await writeFile(userconfig, "");
      const r = await run(
        "npm",
        [
          "view",
          name,
          "description",
          "--registry",
          `http://127.0.0.1:${port}/`,
          "--proxy",
          `http://127.0.0.1:${ferry.port}`,
          "--cache",
          join(dir.path, "npm-cache"),
          "--userconfig",
          userconfig,
          "--no-update-notifier",
          "--fetch-retries",
          "0",
        ],
        { env: cleanEnv({ HOME: dir.path }), timeoutMs: 60_000 },
      );
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdout.toString().trim(), "served by a test registry on loopback");
      assert.deepEqual(asked, [`/${name}`]);
      const recs = await recordsTo(ferry, port, skip);
      assert.equal(recs[0]!.protocol, "http");
    } finally {
      registry.closeAllConnections();
      await new Promise<void>((r) => registry.close(() => r()));
    }
  });
});
