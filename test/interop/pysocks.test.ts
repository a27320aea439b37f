import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, type TestContext, test } from "node:test";
import { type FerryProcess, spawnFerry } from "../helpers/ferry-process.js";
import { sha256, startEchoServer } from "../helpers/net.js";
import { describeRun, run } from "../helpers/process.js";
import { requirePythonModule, requireTool, SYSTEM_PYTHON } from "../helpers/tools.js";

const payload = randomBytes(256 * 1024);

// Sends stdin through the proxy, half-closes, prints what comes back. Proxy errors exit 2 with
// the PySocks exception class on stderr, so the test can tell them apart.
const SCRIPT = `
import socket, sys, socks
kind, phost, pport, host, port, rdns, user, password = sys.argv[1:]
data = sys.stdin.buffer.read()
s = socks.socksocket()
s.settimeout(10)
s.set_proxy(getattr(socks, kind), phost, int(pport), rdns=(rdns == "1"),
            username=user or None, password=password or None)
try:
    s.connect((host, int(port)))
except socks.ProxyError as e:
    inner = getattr(e, "socket_err", None)  # PySocks wraps the real error in GeneralProxyError
    sys.stderr.write("%s: %s\\n" % (type(inner if isinstance(inner, socks.ProxyError) else e).__name__, e))
    sys.exit(2)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
out = bytearray()
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
sys.stdout.buffer.write(out)
`;

interface PyCase {
  kind: "SOCKS4" | "SOCKS5";
  host: string;
  rdns: boolean;
  user?: string;
  password?: string;
}

function pysocks(ferry: FerryProcess, port: number, c: PyCase) {
  const args = ["-c", SCRIPT, c.kind, "127.0.0.1", String(ferry.port), c.host, String(port)];
  args.push(c.rdns ? "1" : "0", c.user ?? "", c.password ?? "");
  return run(SYSTEM_PYTHON, args, { input: payload, timeoutMs: 60_000 });
}

function requirePySocks(t: TestContext): boolean {
  return requireTool(t, SYSTEM_PYTHON, "python3") && requirePythonModule(t, "socks", "python3-socks");
}

describe("PySocks (Debian's python3-socks) through `ferry serve`", { timeout: 120_000 }, () => {
  let ferry: FerryProcess;
  let echo: { port: number; close: () => Promise<void> };
  before(async () => {
    ferry = await spawnFerry();
    echo = await startEchoServer();
  });
  after(async () => {
    await ferry?.stop();
    await echo?.close();
  });

  const cases: (PyCase & { name: string; protocol: string; target: string })[] = [
    {
      name: "SOCKS4",
      kind: "SOCKS4",
      host: "127.0.0.1",
      rdns: false,
      protocol: "socks4",
      target: "127.0.0.1",
    },
    {
      name: "SOCKS4 rdns (4a)",
      kind: "SOCKS4",
      host: "localhost",
      rdns: true,
      protocol: "socks4a",
      target: "localhost",
    },
    {
      name: "SOCKS5",
      kind: "SOCKS5",
      host: "127.0.0.1",
      rdns: false,
      protocol: "socks5",
      target: "127.0.0.1",
    },
    {
      name: "SOCKS5 rdns",
      kind: "SOCKS5",
      host: "localhost",
      rdns: true,
      protocol: "socks5",
      target: "localhost",
    },
  ];
  for (const c of cases) {
    test(`${c.name}: echoed intact`, async (t) => {
      if (!requirePySocks(t)) return;
      const skip = ferry.sessions().length;
      const r = await pysocks(ferry, echo.port, { ...c, user: c.kind === "SOCKS4" ? "py-ident" : undefined });
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdoutSha256, sha256(payload));
      const s = await ferry.waitForSession(() => true, { skip });
      assert.equal(s.protocol, c.protocol);
      assert.equal(s.target, `${c.target}:${echo.port}`);
      if (c.kind === "SOCKS4") assert.equal(s.ident, "py-ident");
      assert.equal(s.bytesDown, payload.length);
    });
  }
});

describe("PySocks through `ferry serve --user`", { timeout: 120_000 }, () => {
  const dave = { name: "dave", password: "py-secret-1" };
  let ferry: FerryProcess;
  let echo: { port: number; close: () => Promise<void> };
  before(async () => {
    ferry = await spawnFerry({ users: [dave] });
    echo = await startEchoServer();
  });
  after(async () => {
    await ferry?.stop();
    await echo?.close();
  });

  test("SOCKS5 rdns with username/password: echoed intact", async (t) => {
    if (!requirePySocks(t)) return;
    const skip = ferry.sessions().length;
    const r = await pysocks(ferry, echo.port, {
      kind: "SOCKS5",
      host: "localhost",
      rdns: true,
      user: dave.name,
      password: dave.password,
    });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdoutSha256, sha256(payload));
    const s = await ferry.waitForSession(() => true, { skip });
    assert.equal(s.user, dave.name);
    assert.equal(s.method, "userpass");
    assert.equal(s.target, `localhost:${echo.port}`);
  });

  test("SOCKS5 with a wrong password: SOCKS5AuthError", async (t) => {
    if (!requirePySocks(t)) return;
    const skip = ferry.sessions().length;
    const r = await pysocks(ferry, echo.port, {
      kind: "SOCKS5",
      host: "127.0.0.1",
      rdns: false,
      user: dave.name,
      password: "not-it",
    });
    assert.equal(r.code, 2, describeRun(r));
    assert.match(r.stderr, /SOCKS5AuthError/);
    assert.equal(r.stdoutBytes, 0);
    const s = await ferry.waitForSession(() => true, { skip });
    assert.match(s.reason ?? "", /authentication failed/);
  });

  test("SOCKS4: SOCKS4Error 0x5B", async (t) => {
    if (!requirePySocks(t)) return;
    const skip = ferry.sessions().length;
    const r = await pysocks(ferry, echo.port, { kind: "SOCKS4", host: "127.0.0.1", rdns: false });
    assert.equal(r.code, 2, describeRun(r));
    assert.match(r.stderr, /SOCKS4Error: .*0x5b: Request rejected/i);
    const s = await ferry.waitForSession(() => true, { skip });
    assert.equal(s.reply, 91);
  });
});
