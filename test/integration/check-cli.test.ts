import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { startFerry } from "../helpers/ferry.js";
import { startEchoServer } from "../helpers/net.js";
import { echoThrough, socks5Connect } from "../helpers/policy-client.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const ferryBin = path.join(root, "bin/ferry");
const example = path.join(root, "examples/ferry.yaml");

function ferry(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [ferryBin, ...args], { encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("ferry check on the example configuration", () => {
  test("validates alone (exit 0)", () => {
    const r = ferry("check", "--config", example);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /ferry\.yaml: valid \(1 client rules, 4 rules, 1 users, 1 groups\)/);
  });

  test("a denied range: exit 1, the rule and its line", () => {
    const r = ferry(
      "check",
      "--config",
      example,
      "--from",
      "127.0.0.1",
      "--user",
      "alice",
      "--to",
      "10.1.2.3:443",
    );
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /denied by rules\[0\] \(ferry\.yaml:15\): deny rule matched: address 10\.1\.2\.3 is in 10\.0\.0\.0\/8/,
    );
    assert.match(r.stdout, /^DENY by rules\[0\] \(ferry\.yaml:15\)$/m);
  });

  test("alice may go anywhere else: exit 0, with the per-user limit", () => {
    const r = ferry(
      "check",
      "--config",
      example,
      "--from",
      "::1",
      "--user",
      "alice",
      "--to",
      "192.0.2.80:22",
    );
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /rules\[0\] \(ferry\.yaml:15\) deny: not matched: destination 192\.0\.2\.80 is not in 10\.0\.0\.0\/8, 169\.254\.0\.0\/16/,
    );
    assert.match(r.stdout, /^ALLOW by rules\[1\] \(ferry\.yaml:16\)$/m);
    assert.match(r.stdout, /limit: bandwidth per user: 10MiB\/s each way/);
  });

  test("a user in no rule: every earlier rule says why it did not match", () => {
    const r = ferry(
      "check",
      "--config",
      example,
      "--from",
      "127.0.0.1",
      "--user",
      "bob",
      "--to",
      "www.example.com:443",
      "--resolve",
      "192.0.2.1",
    );
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /note: bob is not a configured user/);
    assert.match(r.stdout, /rules\[1\] \(ferry\.yaml:16\) allow: not matched: user bob is not one of alice/);
    assert.match(
      r.stdout,
      /rules\[2\] \(ferry\.yaml:17\) allow: not matched: user bob is in none of the groups staff/,
    );
    assert.match(r.stdout, /^DENY by rules\[3\] \(ferry\.yaml:18\)$/m);
  });

  test("a name is checked by each address it resolves to", () => {
    const r = ferry(
      "check",
      "--config",
      example,
      "--from",
      "127.0.0.1",
      "--user",
      "alice",
      "--to",
      "metadata.example.com:80",
      "--resolve",
      "169.254.169.254",
    );
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /169\.254\.169\.254: denied by rules\[0\] \(ferry\.yaml:15\)/);
    assert.match(r.stdout, /every address of metadata\.example\.com is denied/);
  });

  test("a client outside the client rules: exit 1", () => {
    const r = ferry("check", "--config", example, "--from", "192.0.2.1", "--to", "192.0.2.2:80");
    assert.equal(r.status, 1);
    assert.match(
      r.stdout,
      /clients\[0\] \(ferry\.yaml:13\) allow: not matched: client 192\.0\.2\.1 is not in 127\.0\.0\.0\/8, ::1\/128/,
    );
  });
});

describe("ferry check on broken input", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "ferry-check-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("an invalid configuration: exit 2 with the line and the fix", async () => {
    const file = path.join(dir, "bad.yaml");
    await writeFile(file, "rules:\n  - allow: { users: [a] }\n  - allow: { ports: [70000] }\n");
    const r = ferry("check", "--config", file);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /bad\.yaml:3: rules\.1\.allow\.ports\.0: "70000" is not a port or port range/);
  });

  test("a bad question: exit 2", () => {
    const r = ferry("check", "--config", example, "--from", "nowhere", "--to", "a.test:1");
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--from nowhere is not an IP address/);
  });
});

describe("the example configuration runs", () => {
  let dir: string;
  let echo: Awaited<ReturnType<typeof startEchoServer>>;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "ferry-example-"));
    await copyFile(example, path.join(dir, "ferry.yaml"));
    await copyFile(path.join(root, "examples/users.htpasswd"), path.join(dir, "users.htpasswd"));
    echo = await startEchoServer();
  });
  after(async () => {
    await echo.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("alice (password wonderland) is relayed; 10.0.0.0/8 is refused; a wrong password is refused", async () => {
    // Only the listen address is overridden, so tests never collide on port 1080.
    const running = await startFerry({}, { file: path.join(dir, "ferry.yaml") });
    try {
      const ok = await socks5Connect(running.port, `127.0.0.1:${echo.port}`, {
        user: "alice",
        password: "wonderland",
      });
      assert.equal(ok.reply, 0);
      assert.equal(await echoThrough(ok, "example"), "example");
      ok.socket.destroy();
      const denied = await socks5Connect(running.port, "10.1.2.3:443", {
        user: "alice",
        password: "wonderland",
      });
      assert.equal(denied.reply, 0x02);
      denied.socket.destroy();
      const wrong = await socks5Connect(running.port, `127.0.0.1:${echo.port}`, {
        user: "alice",
        password: "nope",
      });
      assert.equal(wrong.authStatus, 1);
      wrong.socket.destroy();
    } finally {
      await running.close();
    }
  });
});
