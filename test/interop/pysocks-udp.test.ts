import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { startFerry } from "../helpers/ferry.js";
import { requirePythonModule, requireTool, SYSTEM_PYTHON } from "../helpers/tools.js";
import { startUdpEcho } from "../helpers/udp.js";

const script = `
import socket, sys, socks
proxy_port, echo_port = int(sys.argv[1]), int(sys.argv[2])
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port)
s.settimeout(10)
for i in range(3):
    payload = ("pysocks %d" % i).encode()
    s.sendto(payload, ("127.0.0.1", echo_port))
    data, sender = s.recvfrom(4096)
    print(data.decode(), sender[0], sender[1], flush=True)
s.close()
`;

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(SYSTEM_PYTHON, ["-c", script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => {
      stdout += b;
    });
    child.stderr.on("data", (b: Buffer) => {
      stderr += b;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("PySocks sends UDP through Ferry to an echo server and gets the replies with the sender's address", async (t) => {
  if (!requireTool(t, SYSTEM_PYTHON, "python3") || !requirePythonModule(t, "socks", "python3-socks")) return;
  const echo = await startUdpEcho("127.0.0.1");
  const ferry = await startFerry({});
  try {
    const record = ferry.nextRecord();
    const result = await run([String(ferry.port), String(echo.port)]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(
      result.stdout.trim().split("\n"),
      [0, 1, 2].map((i) => `pysocks ${i} 127.0.0.1 ${echo.port}`),
    );
    assert.deepEqual(echo.received.map(String), ["pysocks 0", "pysocks 1", "pysocks 2"]);
    const r = await record;
    assert.equal(r.command, "udp");
    assert.equal(r.datagramsUp, 3);
    assert.equal(r.datagramsDown, 3);
  } finally {
    await ferry.close();
    await echo.close();
  }
});
