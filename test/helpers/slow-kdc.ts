import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestRealm } from "./kdc.js";

export interface SlowKdc {
  /** A krb5.conf like the realm's, whose KDC is this proxy. */
  config: string;
  /** KDC replies passed on so far (each after the delay). */
  replies(): number;
  close(): Promise<void>;
}

/**
 * The proxy itself, run in a child process: a test that checks whether this process's event loop
 * is blocked must not depend on this event loop to move the KDC's replies. argv: KDC port, delay.
 * Prints "port N" once listening and "reply" for each reply chunk passed on.
 */
const PROXY = `
const net = require("node:net");
const [kdcPort, delayMs] = process.argv.slice(1).map(Number);
const later = (fn) => setTimeout(fn, delayMs);
const server = net.createServer((client) => {
  const kdc = net.connect({ host: "127.0.0.1", port: kdcPort });
  client.on("error", () => {});
  kdc.on("error", () => {});
  client.on("close", () => kdc.destroy());
  client.pipe(kdc);
  kdc.on("data", (chunk) => later(() => { process.stdout.write("reply\\n"); client.write(chunk); }));
  // The KDC hangs up right after its reply: pass that on after the (delayed) reply, not before.
  kdc.on("close", () => later(() => client.end()));
});
server.listen(0, "127.0.0.1", () => process.stdout.write("port " + server.address().port + "\\n"));
`;

/**
 * A TCP proxy in front of the test realm's KDC that holds each reply for `delayMs`: a slow or
 * distant KDC. The realm's krb5.conf sends every request over TCP (udp_preference_limit = 1), so
 * no UDP path is needed. Point a client at it with KRB5_CONFIG = `config`. `close()` kills the
 * proxy by PID.
 */
export async function startSlowKdc(realm: TestRealm, delayMs: number): Promise<SlowKdc> {
  const child: ChildProcess = spawn(process.execPath, ["-e", PROXY, String(realm.port), String(delayMs)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let replies = 0;
  let out = "";
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the slow KDC proxy did not start within 20 s")), 20_000);
    child.once("exit", (code) => reject(new Error(`the slow KDC proxy exited with ${code}`)));
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const lines = out.split("\n");
      out = lines.pop()!;
      for (const line of lines) {
        if (line === "reply") replies++;
        const m = /^port (\d+)$/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      }
    });
  });
  const original = readFileSync(realm.env.KRB5_CONFIG!, "utf8");
  const kdcLine = `kdc = 127.0.0.1:${realm.port}`;
  if (!original.includes(kdcLine)) throw new Error(`no "${kdcLine}" in ${realm.env.KRB5_CONFIG}`);
  const config = join(realm.dir, "krb5-slow-kdc.conf");
  writeFileSync(config, original.replace(kdcLine, `kdc = 127.0.0.1:${port}`));
  return {
    config,
    replies: () => replies,
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
    },
  };
}
