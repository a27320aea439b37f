import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { startEchoServer, waitFor } from "../helpers/net.js";
import { echoThrough, socks5Connect } from "../helpers/policy-client.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const ferryBin = path.join(root, "bin/ferry");

interface LogLine {
  msg: string;
  [k: string]: unknown;
}

let dir: string;
let echo: Awaited<ReturnType<typeof startEchoServer>>;
let child: ChildProcess | undefined;
const logs: LogLine[] = [];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "ferry-reload-"));
  echo = await startEchoServer();
});
after(async () => {
  if (child && child.exitCode === null) {
    child.kill("SIGKILL");
    await once(child, "exit");
  }
  await echo.close();
  await rm(dir, { recursive: true, force: true });
});

const logged = (pattern: RegExp, from = 0): LogLine | undefined =>
  logs.slice(from).find((l) => pattern.test(l.msg));

async function waitLog(pattern: RegExp, from: number, what: string): Promise<LogLine> {
  await waitFor(() => logged(pattern, from) !== undefined, 30_000, what);
  return logged(pattern, from)!;
}

/** The TCP port of a listening address the server logged, e.g. "127.0.0.2:41234". */
const portOf = (where: string): number => Number(where.slice(where.lastIndexOf(":") + 1));

test("SIGHUP and `ferry reload`: a valid file swaps rules and listeners, an invalid one is refused, live relays survive", async () => {
  const config = path.join(dir, "ferry.yaml");
  const control = path.join(dir, "ctl.sock");
  await writeFile(config, 'listen: ["127.0.0.1:0"]\n');
  child = spawn(
    process.execPath,
    [ferryBin, "serve", "--config", config, "--control", control, "--log-format", "json"],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let pending = "";
  child.stderr!.on("data", (c: Buffer) => {
    pending += c.toString("utf8");
    let nl = pending.indexOf("\n");
    while (nl >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ msg: line });
      }
      nl = pending.indexOf("\n");
    }
  });
  const started = await waitLog(/^ferry listening on/, 0, "the server to listen");
  const port = portOf((started.listen as string[])[0]!);
  await waitLog(/^control socket/, 0, "the control socket");

  // A relay established under the first configuration.
  const live = await socks5Connect(port, `127.0.0.1:${echo.port}`);
  assert.equal(live.reply, 0);
  assert.equal(await echoThrough(live, "before"), "before");

  // 1. SIGHUP with a valid file that denies the echo server and adds a listener.
  await writeFile(
    config,
    `listen: ["127.0.0.1:0", "127.0.0.2:0"]\nrules:\n  - deny: { to: [127.0.0.1], ports: [${echo.port}] }\n  - allow: {}\n`,
  );
  let mark = logs.length;
  process.kill(child.pid!, "SIGHUP");
  const reloaded = await waitLog(/^configuration reloaded/, mark, "the SIGHUP reload");
  assert.match(reloaded.msg, /2 rules; 0 users; now also listening on 127\.0\.0\.2:\d+/);
  const added = (reloaded.opened as { host: string; port: number }[])[0]!.port;
  const refused = await socks5Connect(port, `127.0.0.1:${echo.port}`);
  assert.equal(refused.reply, 0x02, "the new rules apply to new requests");
  refused.socket.destroy();
  const viaNew = await socks5Connect(added, `127.0.0.1:${echo.port}`, { proxyHost: "127.0.0.2" });
  assert.equal(viaNew.reply, 0x02, "the new listener serves the new rules");
  viaNew.socket.destroy();
  assert.equal(await echoThrough(live, "after a reload"), "after a reload", "the live relay keeps going");

  // 2. `ferry reload` with an invalid file: refused, reason printed and logged, old rules stay.
  await writeFile(config, 'listen: ["127.0.0.1:0"]\nrules:\n  - deny: { to: [300.1.1.1] }\n');
  mark = logs.length;
  const bad = spawnSync(process.execPath, [ferryBin, "reload", "--control", control], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(bad.status, 1, bad.stdout + bad.stderr);
  assert.match(
    bad.stderr,
    /reload refused, the running configuration stays: .*ferry\.yaml:3: rules\.0\.deny\.to\.0: "300\.1\.1\.1"/s,
  );
  await waitLog(/^reload refused/, mark, "the refusal in the log");
  const still = await socks5Connect(port, `127.0.0.1:${echo.port}`);
  assert.equal(still.reply, 0x02, "the old (second) rules keep running");
  still.socket.destroy();

  // 3. SIGHUP with an invalid file is refused the same way.
  mark = logs.length;
  process.kill(child.pid!, "SIGHUP");
  await waitLog(/^reload refused/, mark, "the SIGHUP refusal");

  // 4. `ferry reload` with a valid file that drops the first listener and the deny rule.
  await writeFile(config, 'listen: ["127.0.0.2:0"]\n');
  const good = spawnSync(process.execPath, [ferryBin, "reload", "--control", control], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(good.status, 0, good.stdout + good.stderr);
  assert.match(
    good.stdout,
    /configuration reloaded: no rules; 0 users; stopped listening on 127\.0\.0\.1:\d+/,
  );
  const gone = net.connect({ host: "127.0.0.1", port });
  const [err] = (await once(gone, "error")) as [NodeJS.ErrnoException];
  assert.equal(err.code, "ECONNREFUSED", "the removed listener is closed");
  const allowed = await socks5Connect(added, `127.0.0.1:${echo.port}`, { proxyHost: "127.0.0.2" });
  assert.equal(allowed.reply, 0);
  allowed.socket.destroy();
  assert.equal(await echoThrough(live, "still here"), "still here", "the first relay survived every reload");
  live.socket.destroy();

  child.kill("SIGTERM");
  const [code] = await once(child, "exit");
  assert.equal(code, 0);
});
