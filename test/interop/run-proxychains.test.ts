import assert from "node:assert/strict";
import { after, before, describe, type TestContext, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http.js";
import { startEchoServer } from "../helpers/net.js";
import { describeRun, run } from "../helpers/process.js";
import { type RunningSshd, SSHD, sshLogin, startSshd } from "../helpers/sshd.js";
import { requireTool } from "../helpers/tools.js";

const FERRY = fileURLToPath(new URL("../../../bin/ferry", import.meta.url));

/**
 * `ferry run` for programs that are not Node: curl, ncat and ssh through a two-hop chain of Ferry
 * processes (the second with a login), by proxychains4 with the configuration ferry run writes.
 * Each session is checked in both hops' records: hop 1 carried a connection to hop 2, hop 2 (as
 * gina) one to the target.
 */
describe("ferry run under proxychains4 through a two-hop chain", { timeout: 180_000 }, () => {
  const gina = { name: "gina", password: "run-pw.9" };
  let hop1: FerryProcess;
  let hop2: FerryProcess;
  let web: TestHttpServer;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  let sshd: RunningSshd | undefined;

  before(async () => {
    hop1 = await spawnFerry();
    hop2 = await spawnFerry({ users: [gina] });
    web = await startHttpServer();
    echo = await startEchoServer();
  });
  after(async () => {
    await hop1?.stop();
    await hop2?.stop();
    await web?.close();
    await echo?.close();
    await sshd?.stop();
  });

  const chain = (): string[] => [
    "--proxy",
    hop1.url,
    "--proxy",
    `socks5h://${gina.name}:${encodeURIComponent(gina.password)}@127.0.0.1:${hop2.port}`,
  ];
  const ferryRun = (command: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}) =>
    run(process.execPath, [FERRY, "run", ...chain(), "--", ...command], { timeoutMs: 60_000, ...options });

  /** The program's connection to `target` went hop 1 → hop 2 (logged in) → target. */
  async function throughBoth(target: string, skip: [number, number]): Promise<void> {
    const last = await hop2.waitForSession((s) => s.target === target, { skip: skip[1] });
    assert.equal(last.user, gina.name);
    // Hop 2 saw its client as hop 1's outgoing connection; hop 1 logged that same connection.
    const first = await hop1.waitForSession(
      (s) => s.target === `127.0.0.1:${hop2.port}` && s.bound === last.client,
      { skip: skip[0] },
    );
    assert.equal(first.reply, 0);
  }
  const marks = (): [number, number] => [hop1.sessions().length, hop2.sessions().length];

  const tools = (t: TestContext, ...more: [string, string][]): boolean =>
    [["proxychains4", "proxychains4"] as [string, string], ...more].every(([c, p]) => requireTool(t, c, p));

  test("curl: fetched through both hops; the line on stderr names proxychains4", async (t) => {
    if (!tools(t, ["curl", "curl"])) return;
    const skip = marks();
    const r = await ferryRun(["curl", "-sS", "--max-time", "20", `${web.origin}/`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), web.greeting);
    assert.match(
      r.stderr,
      /^ferry run: curl is not a Node program: running it under proxychains4 \(strict chain of 2 proxies, names resolved by the last\)\n$/,
    );
    await throughBoth(`127.0.0.1:${web.port}`, skip);
  });

  test("curl: a name is resolved by the last hop, not locally (proxy_dns)", async (t) => {
    if (!tools(t, ["curl", "curl"])) return;
    const skip = marks();
    // Nobody can resolve it: the point is where the attempt is made.
    const r = await ferryRun(["curl", "-sS", "--max-time", "20", "http://ferry-run-test.invalid:8080/"]);
    assert.notEqual(r.code, 0);
    const line = await hop2.waitForSession((s) => s.target === "ferry-run-test.invalid:8080", {
      skip: skip[1],
    });
    assert.equal(line.user, gina.name);
  });

  test("ncat: bytes echoed through both hops", async (t) => {
    if (!tools(t, ["ncat", "ncat"])) return;
    const skip = marks();
    const r = await ferryRun(["ncat", "127.0.0.1", String(echo.port)], { input: "through two hops\n" });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout.toString(), "through two hops\n");
    await throughBoth(`127.0.0.1:${echo.port}`, skip);
  });

  test("ssh: logs in to a local sshd through both hops", async (t) => {
    if (!tools(t, ["ssh", "openssh-client"], [SSHD, "openssh-server"])) return;
    sshd ??= await startSshd();
    const skip = marks();
    const r = await ferryRun(["ssh", "-o", "LogLevel=ERROR", ...sshLogin(sshd), "echo chained"]);
    assert.equal(r.code, 0, `${describeRun(r)}\nsshd: ${sshd.output().slice(-1500)}`);
    assert.equal(r.stdout.toString(), "chained\n");
    await throughBoth(`127.0.0.1:${sshd.port}`, skip);
  });

  test("a Node program is named as such and socksified by the preload, not proxychains", async () => {
    const r = await ferryRun([process.execPath, "-e", "console.log('node')"]);
    assert.equal(r.code, 0, describeRun(r));
    assert.match(r.stderr, /^ferry run: \S+ runs Node: socksified by a preload hook/);
  });

  test("without proxychains4: a clear error with the install hint, nothing run", async () => {
    // A PATH with no proxychains4 (nor curl, which is then not known to be Node either).
    const r = await ferryRun(["curl", `${web.origin}/`], { env: { ...process.env, PATH: "/nonexistent" } });
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /curl is not a Node program, and running it through the proxy needs proxychains4, which is not installed: install proxychains4 \(Debian\/Ubuntu: apt-get install proxychains4/,
    );
    assert.match(r.stderr, /--mode env/);
  });
});
